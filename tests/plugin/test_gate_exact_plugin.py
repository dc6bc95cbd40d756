"""The gate's exact counts on real services (real app and stub processes, --fanout-save then
--fanout-compare, as a user runs them): a pull request that builds an HTTP client per request
is a regression named by its connections, first in the REGRESSION line; its fix is not; a
structure that varies between requests of unchanged code is "not gated", never a verdict.
No timing is asserted: the words come from exact counts."""

from __future__ import annotations

import json

import pytest

pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning"),
    pytest.mark.slow,
]

INI = """
[pytest]
fanout_app = shop.service:app
fanout_app_dir = .
fanout_delay_ms = 20
"""

HEAD = '''
"""A user's service: five prices gathered at one upstream."""
import asyncio
import os
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

URL = os.environ["FANOUT_UPSTREAM_URL"]
'''

# The base: one client for the app's life, its pool reused by every request.
SHARED = (
    HEAD
    + """

@asynccontextmanager
async def lifespan(app: FastAPI):
    async with httpx.AsyncClient(base_url=URL) as client:
        app.state.client = client
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/prices")
async def prices() -> dict:
    client = app.state.client
    answers = await asyncio.gather(*(client.get(f"/price/{i}") for i in range(5)))
    return {"codes": [a.status_code for a in answers]}
"""
)

# The pull request: a client built (and closed) per request, five new connections each time.
PER_REQUEST = (
    HEAD
    + """

app = FastAPI()


@app.get("/prices")
async def prices() -> dict:
    async with httpx.AsyncClient(base_url=URL) as client:
        answers = await asyncio.gather(*(client.get(f"/price/{i}") for i in range(5)))
    return {"codes": [a.status_code for a in answers]}
"""
)

# State that outlives the request (as a limiter's does): every other request sends two calls,
# then the third; the others send all three at once. The code never changes between runs.
ALTERNATING = (
    HEAD
    + """

@asynccontextmanager
async def lifespan(app: FastAPI):
    async with httpx.AsyncClient(base_url=URL) as client:
        app.state.client, app.state.seen = client, 0
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/prices")
async def prices() -> dict:
    client = app.state.client
    app.state.seen += 1
    if app.state.seen % 2:
        answers = await asyncio.gather(*(client.get(f"/price/{i}") for i in range(3)))
    else:
        answers = list(await asyncio.gather(client.get("/price/0"), client.get("/price/1")))
        answers.append(await client.get("/price/2"))
    return {"codes": [a.status_code for a in answers]}
"""
)

# Its fix: the three calls always gathered.
STEADY = ALTERNATING.replace("if app.state.seen % 2:", "if True:")

TEST = """
def test_prices(fanout):
    fanout.measure("/prices", repeat=REPEAT PROBES)
"""

CASE = "test_prices.py::test_prices /prices"
#: The exact rules alone, where a comparison must pass whatever the machine's load.
EXACT = "--fanout-fail-on=structure+0,connections+0"


def setup(pytester: pytest.Pytester, service: str, repeat: int = 5, probes: int = 1) -> None:
    pytester.makeini(INI)
    package = pytester.path / "shop"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "service.py").write_text(service)
    more = f", held_probes={probes}" if probes != 1 else ""
    test = TEST.replace("REPEAT", str(repeat)).replace(" PROBES", more)
    pytester.makepyfile(test_prices=test)


def inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=180)


def test_a_client_per_request_is_a_regression_named_by_its_connections(
    pytester: pytest.Pytester,
) -> None:
    setup(pytester, SHARED)
    saved = inner(pytester, "--fanout-save=base.json")
    saved.assert_outcomes(passed=1)
    gauges = json.loads((pytester.path / "base.json").read_text())["cases"][0]["record"]
    [(upstream, counts)] = gauges["upstream_gauges"].items()
    assert counts["connections"] == [0] * 5  # the shared pool: no new connection per request

    # The pull request: the exact count regressed, named first, with its evidence.
    setup(pytester, PER_REQUEST)
    head = inner(pytester, "--fanout-compare=base.json", "--fanout-save=head.json")
    head.assert_outcomes(passed=1)
    assert head.ret == pytest.ExitCode.TESTS_FAILED, head.stdout.str()
    [line] = [line for line in head.outlines if line.startswith("REGRESSION ")]
    assert line.startswith(
        f"REGRESSION {CASE}: connections per request[{upstream}] 0 -> 5 "
        "(a client built per request?) (+5, limit connections+0, exact)"
    ), line

    # The fix (the shared client again): gated on connections, same, no such words. The
    # exact rules only: a 2-core machine shared with other jobs moves the median.
    setup(pytester, SHARED)
    fixed = inner(pytester, "--fanout-compare=base.json", EXACT)
    fixed.assert_outcomes(passed=1)
    assert fixed.ret == 0, fixed.stdout.str()
    text = fixed.stdout.str()
    assert "REGRESSION" not in text and "a client built per request" not in text
    assert "not gated: connections" not in text
    fixed.stdout.fnmatch_lines([f"*connections per request[[]{upstream}]*0*0*exact*"])


def test_a_structure_that_varies_between_requests_is_not_gated(pytester: pytest.Pytester) -> None:
    setup(pytester, ALTERNATING, repeat=4, probes=3)
    inner(pytester, "--fanout-save=base.json").assert_outcomes(passed=1)
    record = json.loads((pytester.path / "base.json").read_text())["cases"][0]["record"]
    [upstream] = record["structure"]
    assert sorted(str(s[upstream]) for s in record["structures"]) == ["[2, 1]", "[2, 1]", "[3]"]

    again = inner(pytester, "--fanout-compare=base.json", EXACT)
    again.assert_outcomes(passed=1)
    text = again.stdout.str()
    assert again.ret == 0, text
    assert "REGRESSION" not in text and "improvement" not in text
    assert "the structure varied between samples ([2, 1] x2, [3] x1) in the base" in text
    again.stdout.fnmatch_lines([f"*gate passed*not gated: structure rounds[[]{upstream}] in 1*"])

    # Its fix: the calls always gathered, [3] in every probe: judged, no such words.
    setup(pytester, STEADY, repeat=4, probes=3)
    inner(pytester, "--fanout-save=steady.json").assert_outcomes(passed=1)
    steady = inner(pytester, "--fanout-compare=steady.json", EXACT)
    steady.assert_outcomes(passed=1)
    assert steady.ret == 0 and "varied" not in steady.stdout.str()
    assert "not gated: structure" not in steady.stdout.str()
