"""Guard: every HTTP client the test code builds reuses the one TLS context.

An httpx/httpx2 client built without `verify=` or `transport=` (and every module-level
`httpx2.get(url)`, which builds a throwaway client) loads the CA bundle again: ~65 ms of CPU
each on the 2-core machine, to talk plain HTTP on loopback; the suite had 95 such call
sites. Tests pass `verify=tls_context()` (pytest_fanout.servers.process, cached) instead.
Strings are not parsed: a pytester source stands for a user's code and stays as a user
writes it; so do the users' services under tests/e2e/*_app/ and tests/examples/<package>/."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
HTTP_MODULES = ("httpx", "httpx2")
#: What builds an SSL context unless it is given one (or a transport, which builds none).
CLIENTS = ("Client", "AsyncClient")
TRANSPORTS = ("HTTPTransport", "AsyncHTTPTransport")
#: Module-level request functions: each builds a throwaway Client.
FUNCTIONS = ("request", "stream", "get", "options", "head", "post", "put", "patch", "delete")


def _users_code(path: Path) -> bool:
    """A user's service, run in its own process: left as a user writes it."""
    parts = path.relative_to(TESTS).parts
    if any(part.endswith("_app") for part in parts[:-1]):
        return True
    return parts[0] == "examples" and len(parts) > 2


def _test_modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if ".venv" not in p.parts and not _users_code(p))


def _names(tree: ast.Module) -> tuple[set[str], dict[str, str]]:
    """The local names of the httpx modules, and of the names imported from them."""
    modules: set[str] = set()
    imported: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in HTTP_MODULES:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module in HTTP_MODULES:
            for alias in node.names:
                imported[alias.asname or alias.name] = alias.name
    return modules, imported


def _called(func: ast.expr, modules: set[str], imported: dict[str, str]) -> str | None:
    """The httpx name a call calls (`Client`, `get`, ...), or None when it is not one."""
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.attr if func.value.id in modules else None
    if isinstance(func, ast.Name):
        return imported.get(func.id)
    return None


def unshared_tls(source: str, filename: str = "<test>") -> list[str]:
    """`file:line name(...)` for each call that builds its own TLS context."""
    tree = ast.parse(source, filename)
    modules, imported = _names(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _called(node.func, modules, imported)
        if name in CLIENTS + FUNCTIONS:
            given = {"verify", "transport"}
        elif name in TRANSPORTS:
            given = {"verify"}
        else:
            continue
        keywords = {kw.arg for kw in node.keywords}
        if not keywords & given:  # a **kwargs does not count: it may not hold them
            found.append(f"{filename}:{node.lineno} {name}(...)")
    return found


def test_no_test_module_builds_its_own_tls_context() -> None:
    found: list[str] = []
    for path in _test_modules():
        found += unshared_tls(path.read_text(), str(path.relative_to(TESTS.parent)))
    fix = "pass verify=tls_context() (pytest_fanout.servers.process):\n"
    assert not found, fix + "\n".join(found)


def test_the_guard_sees_each_way_of_building_a_client() -> None:
    source = (
        "import httpx2\n"
        "import httpx as h\n"
        "from httpx2 import AsyncClient, get as fetch\n"
        "httpx2.Client(base_url=u)\n"
        "h.AsyncClient()\n"
        "AsyncClient(timeout=1)\n"
        "fetch(u)\n"
        "httpx2.post(u, json={})\n"
        "httpx2.HTTPTransport(retries=1)\n"
        "httpx2.Client(verify=ctx)\n"
        "httpx2.Client(transport=httpx2.MockTransport(f))\n"
        "httpx2.HTTPTransport(verify=ctx)\n"
        "httpx2.get(u, verify=ctx)\n"
        "httpx2.Timeout(1)\n"
        "s = 'httpx2.get(u)'\n"
        "httpx2.stream('GET', u, **options)\n"
    )
    assert unshared_tls(source) == [
        "<test>:4 Client(...)",
        "<test>:5 AsyncClient(...)",
        "<test>:6 AsyncClient(...)",
        "<test>:7 get(...)",
        "<test>:8 post(...)",
        "<test>:9 HTTPTransport(...)",
        "<test>:16 stream(...)",
    ]


def test_users_services_are_left_as_written() -> None:
    assert _users_code(TESTS / "e2e" / "stall_app" / "main.py")
    assert _users_code(TESTS / "examples" / "shop" / "service.py")
    assert not _users_code(TESTS / "examples" / "test_shop_service.py")
    assert not _users_code(TESTS / "e2e" / "test_upstreams.py")
