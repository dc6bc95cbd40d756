"""`fanout record` writes only what the stack will read, and holds only what it will write.

Issue 32, items 5, 10 and 14. Each test failed before the fix (commit f12b6fa): the
recorder wrote `delay_ms = inf`, status 999, a CRLF header value, a NaN JSON answer and
1,500 one-off routes that every later run refused; a HAR answer nested 400 deep was a
RecursionError (exit 1, nothing written); any HAR size and entry count was parsed; and
the recording proxy held every answer's body whole. Every written route here is read
back as the stack reads it (tomllib, `spec.check_route`, the stub's `Route.from_spec`).
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from pytest_fanout.cli import main
from pytest_fanout.limits import (
    MAX_HAR_BYTES,
    MAX_RECORDED_BODY,
    MAX_RECORDED_EXCHANGES,
    Behaviour,
)
from pytest_fanout.record.har import exchanges_from_har
from pytest_fanout.record.proxy import RecordingProxy
from pytest_fanout.record.traffic import Exchange, RecordError, routes_from
from pytest_fanout.servers import StubUpstreamServer
from pytest_fanout.servers.process import tls_context
from pytest_fanout.servers.routes import MAX_ROUTES, Route
from pytest_fanout.spec import check_route

BASE = "http://api.test"


def entry(
    method: str,
    path: str,
    status: int = 200,
    text: str = "{}",
    ms: Any = 5.0,
    headers: tuple[tuple[str, str], ...] = (),
) -> dict[str, Any]:
    return {
        "request": {"method": method, "url": BASE + path},
        "response": {
            "status": status,
            "headers": [{"name": k, "value": v} for k, v in headers],
            "content": {"mimeType": "application/json", "text": text},
        },
        "time": ms,
    }


def record(tmp_path: Path, har_text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run `fanout record --har` in this process: (exit status, stderr)."""
    (tmp_path / "s.har").write_text(har_text)
    code = main(
        [
            "record",
            "--upstream",
            f"api={BASE}",
            "--har",
            str(tmp_path / "s.har"),
            "--spec",
            str(tmp_path / "pyproject.toml"),
        ]
    )
    return code, capsys.readouterr().err


def har(entries: list[dict[str, Any]]) -> str:
    return json.dumps({"log": {"entries": entries}})


def written(tmp_path: Path) -> list[dict[str, Any]]:
    """The routes in the file, each read and checked as the stack reads it."""
    data = tomllib.loads((tmp_path / "pyproject.toml").read_text())
    routes = data["tool"]["fanout"]["upstreams"]["api"]["routes"]
    for route in routes:
        check_route(dict(route))
        Route.from_spec(route)
    return routes


# ---- item 5: what the stack refuses is refused, naming the entry ---------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            # 1e999: a number JSON allows, that float() makes infinite
            har([entry("GET", "/a"), entry("GET", "/x", ms=77777)]).replace("77777", "1e999"),
            "s.har: entry 1 (GET /x): delay_ms=inf must be a finite number",
        ),
        (
            har([entry("GET", "/a"), entry("GET", "/x", status=999)]),
            "s.har: entry 1 (GET /x): status 999 is not an HTTP status",
        ),
        (
            har([entry("GET", "/x", headers=(("x-a", "b\r\nx-injected: 1"),))]),
            "s.har: entry 0 (GET /x): headers: the value of 'x-a' holds CR, LF or NUL",
        ),
        (
            har([entry("GET", "/x", headers=(("x:a", "b"),))]),
            "s.har: entry 0 (GET /x): headers: 'x:a' is not an HTTP header name",
        ),
        (
            har([entry("GET", "/x", ms=4e6)]),
            "s.har: entry 0 (GET /x): delay_ms=4000000.0 must be a finite number from 0",
        ),
    ],
    ids=["time-1e999", "status-999", "crlf-header", "colon-in-name", "delay-above-limit"],
)
def test_item5_what_the_stack_refuses_is_one_line_naming_the_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: str
) -> None:
    code, err = record(tmp_path, text, capsys)
    assert code == 2, err
    assert line in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "pyproject.toml").exists()  # nothing half-written


def test_item5_a_nan_json_answer_is_kept_as_the_text_the_stub_sends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = record(
        tmp_path,
        har(
            [entry("GET", "/n", text='{"v": NaN}', headers=(("content-type", "application/json"),))]
        ),
        capsys,
    )
    assert code == 0, err
    (route,) = written(tmp_path)
    assert route["body"] == '{"v": NaN}' and "json" not in route


def test_item5_paths_that_differ_by_an_id_fold_into_one_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = [entry("GET", f"/users/{n}", text=f'{{"n": {n}}}') for n in range(1500)]
    entries += [entry("GET", "/users/me"), entry("GET", "/orders/7")]  # one of a kind: literal
    entries += [entry("GET", f"/a/{n}/b/{n + 1}") for n in range(3)]
    code, err = record(tmp_path, har(entries), capsys)
    assert code == 0, err
    routes = {r["path"]: r for r in written(tmp_path)}
    assert set(routes) == {"/users/{id}", "/users/me", "/orders/7", "/a/{id}/b/{id2}"}
    assert routes["/users/{id}"]["json"] == {"n": 1499}  # the last answer


def test_item5_more_routes_than_the_stub_holds_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = [entry("GET", f"/p/k{n}") for n in range(MAX_ROUTES + 1)]  # not ids: no folding
    code, err = record(tmp_path, har(entries), capsys)
    assert code == 2, err
    assert f"api: {MAX_ROUTES + 1} routes" in err and f"limit of {MAX_ROUTES}" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "pyproject.toml").exists()
    # At the limit it is written, and every route loads.
    code, err = record(tmp_path, har(entries[:MAX_ROUTES]), capsys)
    assert code == 0, err
    assert len(written(tmp_path)) == MAX_ROUTES


def test_item5_a_har_past_its_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.har"
    with path.open("wb") as file:
        file.truncate(MAX_HAR_BYTES + 1)  # sparse: costs no disk and must cost no memory
    code = main(["record", "--upstream", f"api={BASE}", "--har", str(path), "--spec", "x.toml"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "larger than the limit of 128 MiB a HAR file" in err
    assert len(err.strip().splitlines()) == 1, err


def test_item5_a_har_with_more_entries_than_the_limit_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = {"request": {"method": "GET", "url": "http://elsewhere.test/"}, "response": {"status": 1}}
    code, err = record(tmp_path, har([one] * (MAX_RECORDED_EXCHANGES + 1)), capsys)
    assert code == 2, err
    assert f"{MAX_RECORDED_EXCHANGES + 1} entries is above the limit of 100,000" in err


def test_item5_a_har_body_past_what_a_route_holds_is_not_kept(tmp_path: Path) -> None:
    big = "x" * (MAX_RECORDED_BODY + 1)
    (tmp_path / "s.har").write_text(har([entry("GET", "/big", text=big), entry("GET", "/ok")]))
    found = exchanges_from_har(tmp_path / "s.har", {"api": BASE})["api"]
    assert [(e.path, len(e.body), e.body_dropped) for e in found] == [
        ("/big", 0, True),
        ("/ok", 2, False),
    ]


# ---- item 14: nesting ------------------------------------------------------------------------


@pytest.mark.parametrize("deep", [65, 400, 5000])
def test_item14_a_deeply_nested_answer_is_kept_as_its_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], deep: int
) -> None:
    text = "[" * deep + "]" * deep
    code, err = record(
        tmp_path,
        har([entry("GET", "/deep", text=text, headers=(("content-type", "application/json"),))]),
        capsys,
    )
    assert code == 0, err
    (route,) = written(tmp_path)
    assert route["body"] == text


def test_item14_a_har_file_nested_past_json_s_depth_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = record(tmp_path, '{"log": ' + "[" * 100_000 + "]" * 100_000 + "}", capsys)
    assert code == 2, err
    assert "not a HAR file (not JSON: JSON nested too deeply)" in err


# ---- item 10: the proxy holds what it will write, bounded in bytes as well as count --------


@pytest.fixture(scope="module")
def big_upstream() -> Iterator[StubUpstreamServer]:
    """A real upstream whose answers are 512 KiB, twice what a route may hold."""
    with StubUpstreamServer(Behaviour(delay_ms=0)) as server:
        server.route("GET", "/big/{n}", body="b" * (512 * 1024))
        server.route("GET", "/small/{n}", body="s" * 1000)
        yield server


async def _through(proxy: RecordingProxy, port: int, paths: list[str]) -> list[int]:
    """Drive the proxy as uvicorn would (lifespan, then one request per path): the bytes of
    each answer it passed on."""
    startup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    life = asyncio.create_task(proxy({"type": "lifespan"}, startup.get, started.put))
    assert (await started.get())["type"] == "lifespan.startup.complete"
    sizes = []
    for path in paths:
        got: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any], got: list[dict[str, Any]] = got) -> None:
            got.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [],
            "server": ("127.0.0.1", port),
        }
        await proxy(scope, receive, send)
        sizes.append(sum(len(m.get("body", b"")) for m in got))
    await startup.put({"type": "lifespan.shutdown"})
    await life
    return sizes


def held(proxy: RecordingProxy) -> int:
    return sum(len(e.body) for e in proxy.exchanges["big"])


def test_item10_the_proxy_holds_at_most_what_it_will_write(
    big_upstream: StubUpstreamServer,
) -> None:
    proxy = RecordingProxy({1: ("big", big_upstream.url)})
    paths = [f"/big/{n % 3}" for n in range(24)] + ["/small/1"] * 5
    sizes = asyncio.run(_through(proxy, 1, paths))
    assert sizes == [512 * 1024] * 24 + [1000] * 5  # the app still gets every answer whole
    kept = proxy.exchanges["big"]
    assert len(kept) == 29  # every exchange counted: its status and latency
    # A 512 KiB body cannot be written (a route holds 256 KiB): none is held. Of the small
    # ones only the last (the one a route repeats) is held: before, 12 MiB + 5,000 B.
    assert held(proxy) == 1000
    assert [e.body_dropped for e in kept[:24]] == [True] * 24
    routes = routes_from(kept, "big")
    assert {r["path"]: r.get("body") for r in routes} == {
        "/big/{id}": None,
        "/small/1": "s" * 1000,
    }


def test_item10_the_proxy_bytes_bound_keeps_answers_without_their_body(
    big_upstream: StubUpstreamServer,
) -> None:
    proxy = RecordingProxy({1: ("big", big_upstream.url)}, max_bytes=4500)
    asyncio.run(_through(proxy, 1, [f"/small/{n}" for n in range(10)]))
    kept = proxy.exchanges["big"]
    assert len(kept) == 10
    assert proxy.held_bytes <= 4500 and held(proxy) <= 4500
    assert proxy.bodies_dropped["big"] == 10 - held(proxy) // 1000 > 0


def test_routes_from_names_the_exchange_whose_answer_the_stack_refuses() -> None:
    good = Exchange("GET", "/x", 200, (), b"{}", 5.0, source="pricing: exchange 0")
    bad = Exchange("GET", "/x", 200, (("x-a", "1\n2"),), b"{}", 5.0, source="pricing: exchange 1")
    with pytest.raises(RecordError, match=r"^pricing: exchange 1 \(GET /x\): headers: "):
        routes_from([good, bad], "pricing")


# ---- the adversarial pass (docs/reliability.md rows 52-57) -----------------------------------


def test_a_percent_encoded_or_unicode_path_is_recorded_as_the_stub_matches_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = [entry("GET", "/caf%C3%A9/%C3%BC", text='{"a": 1}'), entry("GET", "/na\u00efve")]
    code, err = record(tmp_path, har(entries), capsys)
    assert code == 0, err
    routes = written(tmp_path)
    assert [r["path"] for r in routes] == ["/caf\u00e9/\u00fc", "/na\u00efve"]
    with StubUpstreamServer() as stub:  # a real stub answers what the app will ask for
        for route in routes:
            stub.route(**route)
        assert httpx2.get(
            stub.url + "/caf%C3%A9/%C3%BC", timeout=30, verify=tls_context()
        ).json() == {"a": 1}
        assert (
            httpx2.get(stub.url + "/na%C3%AFve", timeout=30, verify=tls_context()).status_code
            == 200
        )


def test_a_secret_in_a_path_segment_becomes_a_parameter_never_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXBhcnQ"
    entries = [entry("GET", f"/v1/keys/{key}/charges/{jwt}"), entry("GET", "/v1/plain")]
    code, err = record(tmp_path, har(entries), capsys)
    assert code == 0, err
    text = (tmp_path / "pyproject.toml").read_text()
    assert key not in text and jwt not in text
    paths = [r["path"] for r in written(tmp_path)]
    assert paths == ["/v1/keys/{secret}/charges/{secret2}", "/v1/plain"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            har([entry("GET", "/a", headers=tuple((f"x-h{n}", "v") for n in range(257)))]),
            "s.har: entry 0: 257 response headers is above the limit of 256 an answer",
        ),
        (
            har([entry("GET", "/a\ud800")]),
            "s.har: entry 0 (GET /a\\ud800): cannot be written as TOML",
        ),
        (
            har([entry("GET", "/a", headers=(("x-n", 5),))]),  # type: ignore[arg-type]
            "s.har: entry 0: a response header's name or value is not a string",
        ),
    ],
    ids=["257-headers", "lone-surrogate-in-path", "number-as-header-value"],
)
def test_crafted_har_entries_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: str
) -> None:
    (tmp_path / "s.har").write_text(text, encoding="utf-8", errors="surrogatepass")
    spec = str(tmp_path / "pyproject.toml")
    code = main(
        ["record", "--upstream", f"api={BASE}", "--har", str(tmp_path / "s.har"), "--spec", spec]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert line in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "pyproject.toml").exists()


def test_an_entry_without_an_answer_is_left_out_and_a_bom_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Browsers export blocked or aborted requests with status 0, and some tools write a BOM.
    text = "\ufeff" + har([entry("GET", "/blocked", status=0), entry("GET", "/ok")])
    code, err = record(tmp_path, text, capsys)
    assert code == 0, err
    assert [r["path"] for r in written(tmp_path)] == ["/ok"]


def test_a_secret_in_an_html_form_field_is_masked_in_a_recorded_body(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = (
        '<form><input type="hidden" name="csrf_token" value="SECRETcsrf1">'
        "<input value='SECRETauth2' name='authenticity_token'>"
        '<input name="q" value="shoes"></form><meta name="csrf-token" content="SECRETmeta3">'
    )
    page = entry("GET", "/form", text=html, headers=(("content-type", "text/html"),))
    code, err = record(tmp_path, har([page]), capsys)
    assert code == 0, err
    (route,) = written(tmp_path)
    assert "SECRET" not in (tmp_path / "pyproject.toml").read_text()
    assert 'name="q" value="shoes"' in route["body"]  # an ordinary field is kept
