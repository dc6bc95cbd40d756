"""Recorded routes written into the `[tool.fanout]` stack spec of a TOML file.

tomlkit edits the file in place, so its comments, order and every other table
stay as they were: each recorded upstream's `routes` under
`[tool.fanout.upstreams.NAME]` is replaced (its `env` and behaviour kept; a
new upstream gets `env = "NAME_URL"`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from pytest_fanout.artifacts import write_text


class SpecFileError(ValueError):
    """The spec file cannot be read or written; `str()` is one line."""


def default_env(name: str) -> str:
    return name.upper().replace("-", "_") + "_URL"


def _has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_null(v) for v in value)
    return False


def _tomlable(route: Mapping[str, Any]) -> dict[str, Any]:
    """TOML has no null: a JSON answer holding one is written as its JSON text (`body`,
    with its content type), which the stub sends byte for byte."""
    route = dict(route)
    if "json" in route and _has_null(route["json"]):
        value = route.pop("json")
        route["body"] = json.dumps(value, separators=(",", ":"), allow_nan=False)
        route["headers"] = {"content-type": "application/json", **route.get("headers", {})}
    return route


def inline_route(route: Mapping[str, Any]) -> Any:
    """The route as the inline table written into the file (`traffic` checks it so)."""
    table = tomlkit.inline_table()
    table.update(_tomlable(route))
    return table


def _table(parent: Any, key: str, path: Path, *, where: str = "", super_table: bool = False) -> Any:
    """parent[key], made a table when missing; a SpecFileError when it is something else."""
    if key not in parent:
        parent[key] = tomlkit.table(is_super_table=super_table)
    value = parent[key]
    if not isinstance(value, dict):
        raise SpecFileError(f"{path}: {where}{key} is not a table")
    return value


def write_routes(path: str | Path, routes: Mapping[str, list[dict[str, Any]]]) -> None:
    """Put each upstream's `routes` into the file's [tool.fanout.upstreams.NAME] tables."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        document = tomlkit.parse(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecFileError(f"{path}: cannot be read: {exc}") from None
    except TOMLKitError as exc:
        raise SpecFileError(f"{path}: is not valid TOML: {exc}") from None
    tool = _table(document, "tool", path, super_table=True)
    fanout = _table(tool, "fanout", path, where="tool.")
    upstreams = _table(fanout, "upstreams", path, where="tool.fanout.", super_table=True)
    for name, recorded in routes.items():
        if name not in upstreams:
            upstreams[name] = tomlkit.table()
            upstreams[name]["env"] = default_env(name)
        table = _table(upstreams, name, path, where="tool.fanout.upstreams.")
        array = tomlkit.array()
        array.extend(inline_route(route) for route in recorded)
        array.multiline(True)
        table["routes"] = array
    try:
        # Atomic: a failed write (disk full, a file-size limit) leaves the user's file whole.
        # Not masked as text (that would break TOML): the routes were masked when recorded.
        write_text(path, tomlkit.dumps(document), mask=False)
    except OSError as exc:
        raise SpecFileError(f"{path}: cannot be written: {exc.strerror or exc}") from None
