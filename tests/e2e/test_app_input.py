"""Bad input to the app: every one is a 422 that names the parameter and the reason.

The app runs in-process (FastAPI's TestClient, lifespan on) against a real
stub upstream process on loopback, with small caps (n <= 50, concurrency
<= 20). The stub's request count proves that a rejected request never reaches
the upstream. docs/bad-input.md has the same cases as a table.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from pytest_fanout.limits import Behaviour
from pytest_fanout.servers.stack import StubUpstreamServer

MAX_N = 50
MAX_CONCURRENCY = 20
N_ROUTES = ["/sync/{}", "/async/{}", "/async_sem/{}/5", "/blocking/{}"]
HUGE = str(10**30)
VERY_LONG = "9" * 5000


@pytest.fixture(scope="module")
def upstream() -> Iterator[StubUpstreamServer]:
    with StubUpstreamServer(Behaviour(delay_ms=0)) as running:
        yield running  # type: ignore[misc]


@pytest.fixture(scope="module")
def client(upstream: StubUpstreamServer) -> Iterator[TestClient]:
    settings = Settings(upstream_url=upstream.url, max_n=MAX_N, max_concurrency=MAX_CONCURRENCY)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def quiet(upstream: StubUpstreamServer) -> StubUpstreamServer:
    upstream.reset()
    return upstream


# (value of n, the pydantic error type, words of the message)
BAD_N: list[tuple[str, str, str]] = [
    ("0", "greater_than_equal", "greater than or equal to 1"),
    ("-1", "greater_than_equal", "greater than or equal to 1"),
    ("-0", "greater_than_equal", "greater than or equal to 1"),
    (str(MAX_N + 1), "less_than_equal", f"less than or equal to {MAX_N}"),
    (HUGE, "less_than_equal", f"less than or equal to {MAX_N}"),
    (f"-{HUGE}", "greater_than_equal", "greater than or equal to 1"),
    (VERY_LONG, "int_parsing_size", "exceeded maximum size"),
    ("abc", "int_parsing", "valid integer"),
    ("1.5", "int_parsing", "valid integer"),
    ("1e3", "int_parsing", "valid integer"),
    ("0x10", "int_parsing", "valid integer"),
    ("nan", "int_parsing", "valid integer"),
    ("inf", "int_parsing", "valid integer"),
    ("true", "int_parsing", "valid integer"),
    ("%00", "int_parsing", "valid integer"),
    ("%EF%BC%95", "int_parsing", "valid integer"),  # a fullwidth digit five
    ("5_1", "less_than_equal", f"less than or equal to {MAX_N}"),  # 51 once parsed
]


@pytest.mark.parametrize("route", N_ROUTES)
@pytest.mark.parametrize(("value", "kind", "words"), BAD_N, ids=[b[0][:12] for b in BAD_N])
def test_bad_n_is_422_with_the_reason(
    client: TestClient, quiet: StubUpstreamServer, route: str, value: str, kind: str, words: str
) -> None:
    response = client.get(route.format(value))
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["path", "n"]
    assert error["type"] == kind
    assert words in error["msg"]
    assert quiet.stats()["requests"] == 0  # rejected before any upstream call


BAD_MAX_CONCURRENT: list[tuple[str, str, str]] = [
    ("0", "greater_than_equal", "greater than or equal to 1"),
    ("-3", "greater_than_equal", "greater than or equal to 1"),
    (str(MAX_CONCURRENCY + 1), "less_than_equal", f"less than or equal to {MAX_CONCURRENCY}"),
    (HUGE, "less_than_equal", f"less than or equal to {MAX_CONCURRENCY}"),
    (VERY_LONG, "int_parsing_size", "exceeded maximum size"),
    ("x", "int_parsing", "valid integer"),
    ("2.5", "int_parsing", "valid integer"),
]


@pytest.mark.parametrize(
    ("value", "kind", "words"), BAD_MAX_CONCURRENT, ids=[b[0][:12] for b in BAD_MAX_CONCURRENT]
)
def test_bad_max_concurrent_is_422_with_the_reason(
    client: TestClient, quiet: StubUpstreamServer, value: str, kind: str, words: str
) -> None:
    response = client.get(f"/async_sem/10/{value}")
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["path", "max_concurrent"]
    assert (error["type"], words in error["msg"]) == (kind, True)
    assert quiet.stats()["requests"] == 0


def test_both_parameters_bad_reports_both(client: TestClient) -> None:
    response = client.get(f"/async_sem/0/{HUGE}")
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [
        ["path", "n"],
        ["path", "max_concurrent"],
    ]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/sync/", 404),  # n missing
        ("/async_sem/5", 404),  # max_concurrent missing
        ("/async/5/6", 404),
        ("/nope", 404),
    ],
)
def test_missing_parts_and_unknown_paths_are_404(
    client: TestClient, quiet: StubUpstreamServer, path: str, status: int
) -> None:
    assert client.get(path).status_code == status
    assert quiet.stats()["requests"] == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405(client: TestClient, method: str) -> None:
    assert client.request(method, "/async/5").status_code == 405


@pytest.mark.parametrize(
    ("value", "n"),
    [("+5", 5), ("05", 5), ("%205", 5), ("5_0", MAX_N), ("1", 1), (str(MAX_N), MAX_N)],
)
def test_lenient_integer_forms_are_accepted_within_the_cap(
    client: TestClient, quiet: StubUpstreamServer, value: str, n: int
) -> None:
    """Pydantic's lax int parsing takes '+5', '05', ' 5' and '5_0'; the cap applies after."""
    response = client.get(f"/async/{value}")
    assert response.status_code == 200, response.text
    assert response.json()["n"] == n
    assert quiet.stats()["requests"] == n
