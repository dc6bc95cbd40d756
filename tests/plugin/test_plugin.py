"""The plugin through pytester: loading, options, fixtures, marker, hooks, summary, messages.

Inner sessions run the repository's reference app (`fanout_app_dir` points at
the repository) against the stub upstream, in real processes.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers import REPO
from tests.reference_shapes import SHAPES_CONFTEST

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

INI = f"""
[pytest]
fanout_app_dir = {REPO}
fanout_delay_ms = 50
"""

#: The reference app's path shapes (its test set-up implements the path-shape hook).
SHAPES = SHAPES_CONFTEST

USES_FIXTURES = """
def test_stack_answers(fanout_upstream, fanout_server):
    import httpx
    assert httpx.get(fanout_server.url + "/healthz").json() == {"status": "ok"}
    assert fanout_upstream.stats()["requests"] == 0
"""


def run_subprocess(pytester: pytest.Pytester, *args: str, autoload: bool = True):
    env_before = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    if autoload:
        os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    else:
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        return pytester.runpytest_subprocess(*args, timeout=120)
    finally:
        if env_before is None:
            os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
        else:
            os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = env_before


# ---- loading ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "autoload"),
    [
        ((), True),  # the pytest11 entry point
        (("-p", "pytest_fanout"), False),  # explicit, autoload off
        (("-p", "pytest_fanout"), True),  # both at once: no "already registered"
        (("-p", "no:locust"), True),  # without locust's own plugin
    ],
    ids=["entry-point", "dash-p-no-autoload", "both", "without-locust-plugin"],
)
def test_plugin_loads(pytester: pytest.Pytester, args: tuple[str, ...], autoload: bool) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(USES_FIXTURES)
    result = run_subprocess(pytester, *args, autoload=autoload)
    result.assert_outcomes(passed=1)
    assert "already registered" not in result.stderr.str()


def test_without_the_plugin_the_fixtures_are_missing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_FIXTURES)
    result = run_subprocess(pytester, autoload=False)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'fanout_upstream' not found*"])


def test_coexists_with_locusts_plugin(pytester: pytest.Pytester) -> None:
    """locust's pytest plugin (--host, fixtures session/fastsession) loads beside ours."""
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        def test_both(pytestconfig, fanout_server):
            assert pytestconfig.getoption("--host") == "http://example.invalid"
            from pytest_fanout import FanoutSession
            assert FanoutSession.of(pytestconfig).spec.app == "pytest_fanout.reference_app.main:app"
            assert pytestconfig.pluginmanager.has_plugin("locust")
        """
    )
    result = run_subprocess(pytester, "--host", "http://example.invalid")
    result.assert_outcomes(passed=1)


def test_help_documents_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    for flag in (
        "--fanout-app",
        "--fanout-app-dir",
        "--fanout-delay-ms",
        "--fanout-startup-timeout",
        "--fanout-request-timeout",
        "--fanout-app-factory",
    ):
        result.stdout.fnmatch_lines([f"*{flag}*"])
    result.stdout.fnmatch_lines(["*fanout_app_env (linelist):*", "*fanout_upstreams (linelist):*"])


# ---- options ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--fanout-delay-ms", "soon"),
            "--fanout-delay-ms: 'soon' is not a number",
        ),
        (("--fanout-delay-ms", "inf"), "--fanout-delay-ms: inf must be a finite number >= 0*"),
        (("--fanout-delay-ms", "nan"), "--fanout-delay-ms: nan must be a finite number*"),
        (("--fanout-delay-ms", "-1"), "--fanout-delay-ms: -1 must be a finite number >= 0*"),
        (
            ("--fanout-startup-timeout", "0"),
            "--fanout-startup-timeout: 0 must be > 0",
        ),
        (
            ("--fanout-request-timeout", "inf"),
            "--fanout-request-timeout: inf must be a finite number >= 0",
        ),
        (("--fanout-request-timeout", "1e400"), "--fanout-request-timeout*must be a finite*"),
        (
            ("--fanout-app", "app.main"),
            "--fanout-app: 'app.main' is not an import string like app.main:app*",
        ),
    ],
)
def test_bad_option_values_are_one_line(
    pytester: pytest.Pytester, args: tuple[str, ...], message: str
) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "Traceback" not in result.stderr.str()


def test_ini_options_configure_the_stack(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        f"""
        [pytest]
        fanout_app_dir = {REPO}
        fanout_delay_ms = 7
        fanout_app_env =
            FANOUT_MAX_N=12
        """
    )
    pytester.makepyfile(
        """
        def test_ini(fanout, fanout_upstream):
            assert fanout_upstream.behaviour().delay_ms == 7
            assert fanout.get("/async/12").status_code == 200
            assert fanout.get("/async/13").status_code == 422
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_command_line_beats_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        def test_cli(fanout_upstream):
            assert fanout_upstream.behaviour().delay_ms == 3
        """
    )
    pytester.runpytest("--fanout-delay-ms", "3").assert_outcomes(passed=1)


# ---- fixtures, marker, hooks, summary ---------------------------------------


def test_fixtures_marker_hooks_and_summary(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(
        SHAPES
        + """
SEEN = []

def pytest_fanout_server_setup(server, config):
    if server.name == "app":
        server.env["FANOUT_MAX_N"] = "30"

def pytest_fanout_measurement(measurement, item):
    SEEN.append((item.name, measurement.path, measurement.upstream_peak_inflight))
"""
    )
    pytester.makepyfile(
        """
        import pytest
        from conftest import SEEN

        def test_measure(fanout):
            m = fanout.measure("/async/10", repeat=2, warmup=1)
            assert len(m.samples) == 2
            assert m.upstream_requests == 10 and m.upstream_peak_inflight == 10
            assert m.ideal_s == pytest.approx(0.05)
            assert 0 < m.efficiency <= 1.05
            assert "efficiency=" in repr(m)

        def test_server_hook_changed_the_env(fanout):
            assert fanout.get("/async/31").status_code == 422

        @pytest.mark.fanout_upstream(delay_ms=200, max_inflight=3)  # 200 ms: all 6 overlap
        def test_marker(fanout, fanout_upstream):
            assert fanout_upstream.behaviour().max_inflight == 3
            body = fanout.get("/async/6").json()
            assert body["status_codes"].count(429) == 3

        def test_marker_was_undone(fanout_upstream):
            behaviour = fanout_upstream.behaviour()
            assert (behaviour.delay_ms, behaviour.max_inflight) == (50, 0)

        def test_measurement_hook_saw_it():
            assert SEEN == [("test_measure", "/async/10", 10)]
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        [
            "*= fan-out measurements =*",
            "test*path*median*p95*upstream peak*efficiency*loop lag*",
            "test_measure*/async/10*ms*ms*10*",
        ]
    )


def test_configure_changes_are_undone_after_each_test(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        def test_change(fanout):
            fanout.upstream.configure(delay_ms=1, error_rate=1)

        def test_restored(fanout):
            assert fanout.upstream.behaviour().error_rate == 0
            assert fanout.get("/async/3").json()["errors"]["count"] == 0
        """
    )
    pytester.runpytest().assert_outcomes(passed=2)


def test_bad_marker_is_a_clear_failure(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.fanout_upstream(error_rate=7)
        def test_bad(fanout):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*@pytest.mark.fanout_upstream: error_rate=7.0 must be between 0 and 1"]
    )
    assert "During handling" not in result.stdout.str()


# ---- failure messages --------------------------------------------------------


def test_failure_messages_and_log_tail(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        def test_peak(fanout):
            m = fanout.measure("/sync/3", repeat=1, warmup=0)
            fanout.assert_concurrency(m, peak=3)

        def test_speedup(fanout):
            slow = fanout.measure("/sync/3", repeat=1, warmup=0)
            fast = fanout.measure("/blocking/3", repeat=1, warmup=0)
            fanout.assert_speedup(fast, slow, at_least=5)

        def test_blocking(fanout):
            m = fanout.measure("/blocking/3", repeat=1, warmup=0)
            fanout.assert_no_blocking(m)

        def test_bound(fanout):
            m = fanout.measure("/async/6", repeat=1, warmup=0)
            fanout.assert_concurrency(m, at_most=2)

        def test_status(fanout):
            fanout.measure("/async/0", repeat=1, warmup=0)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=5)
    result.stdout.fnmatch_lines(
        [
            "*expected 3 calls in flight at once at the upstream during /sync/3, the held "
            "probe saw at most 1 (waves *: the calls ran one at a time*",
            "*expected /blocking/3 to be at least 5x faster than /sync/3, it was *x*: "
            "the two ran at the same speed: the fast path is not concurrent*",
            "*the app's event loop was held for * ms during /blocking/3 (limit 40 ms): "
            "something blocks the loop*",
            "*expected at most 2 requests in flight at the upstream during /async/6, saw 6 "
            "(the held probe's waves *): the bound is not enforced*",
            "*GET /async/0 answered 422, expected 200*greater than or equal to 1*",
            "*fanout app log (last lines)*",
        ]
    )


def test_app_that_cannot_be_imported_fails_fast(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_FIXTURES)
    result = pytester.runpytest("--fanout-app", "no_such_module:app")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*pytest-fanout: app (no_such_module:app) exited with status 4 before answering: "
            "cannot import app 'no_such_module:app'*"
        ]
    )
    assert result.duration < 30


def test_app_raising_at_startup_fails_fast_with_its_log(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        broken_app="""
        from contextlib import asynccontextmanager
        from fastapi import FastAPI

        @asynccontextmanager
        async def lifespan(app):
            raise RuntimeError("database is not there")
            yield

        app = FastAPI(lifespan=lifespan)
        """
    )
    pytester.makepyfile(USES_FIXTURES)
    result = pytester.runpytest("--fanout-app", "broken_app:app")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*pytest-fanout: app (broken_app:app) exited with status 3 before answering: "
            "RuntimeError: database is not there*",
            "*| *Application startup failed*",
        ]
    )


def test_load_result_hook(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(
        """
        SEEN = []

        def pytest_fanout_load_result(result, item):
            SEEN.append((item.name, sorted(result.to_dict())[:1]))
        """
    )
    pytester.makepyfile(
        """
        from conftest import SEEN

        def test_load(fanout_load):
            result = fanout_load(users=2, run_time_s=2, n=2, user_classes=["AsyncUser"])
            assert result.endpoint("/async/").requests > 0

        def test_hook_saw_it():
            assert [name for name, _ in SEEN] == ["test_load"]
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


# ---- named upstreams -------------------------------------------------------------------

TWO_UPSTREAMS_APP = """
import asyncio
import os
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app):
    async with httpx.AsyncClient(base_url=os.environ["STOCK_URL"]) as stock, \\
            httpx.AsyncClient(base_url=os.environ["PRICE_URL"]) as price:
        app.state.stock, app.state.price = stock, price
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/order/{n}")
async def order(n: int, body: dict) -> dict:
    counts = await asyncio.gather(*(app.state.stock.get(f"/s/{i}") for i in range(n)))
    quote = await app.state.price.post("/quote", json=body)
    return {"stock": [c.json()["left"] for c in counts], "total": quote.json()["total"]}


@app.get("/env")
def env() -> dict:
    return {k: v for k, v in os.environ.items() if k.endswith("_URL")}
"""

TWO_UPSTREAMS_INI = """
[pytest]
fanout_app = two_app:app
fanout_delay_ms = 100
fanout_upstreams =
    stock STOCK_URL
    price PRICE_URL
fanout_app_env =
    PRICE_V2_URL={upstream_url:price}/v2
"""


def test_named_upstreams_fixtures_marker_and_gauges(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(two_app=TWO_UPSTREAMS_APP)
    pytester.makeini(TWO_UPSTREAMS_INI)
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def routed(fanout, fanout_upstreams):
            fanout_upstreams["stock"].route("GET", "/s/{i}", json={"left": 5})
            fanout_upstreams["price"].route("POST", "/quote", json={"total": 42})
            return fanout

        def test_fixtures(fanout_upstreams, fanout_upstream, fanout):
            assert list(fanout_upstreams) == ["stock", "price"]
            assert fanout_upstream is fanout_upstreams["stock"] is fanout.upstream
            env = fanout.get("/env").json()
            assert env["STOCK_URL"] == fanout_upstreams["stock"].url
            assert env["PRICE_URL"] == fanout_upstreams["price"].url
            assert env["PRICE_V2_URL"] == fanout_upstreams["price"].url + "/v2"
            assert "FANOUT_UPSTREAM_URL" not in env

        @pytest.mark.fanout_upstream(upstream="price", delay_ms=250)
        @pytest.mark.fanout_upstream(delay_ms=50)
        def test_measure_post_with_per_upstream_gauges(routed, fanout_upstreams):
            assert fanout_upstreams["price"].behaviour().delay_ms == 250
            assert fanout_upstreams["stock"].behaviour().delay_ms == 50
            m = routed.measure("/order/6", method="POST", json={"basket": 1}, repeat=2,
                               ideal_s=0.05 + 0.25)
            assert m.method == "POST" and m.upstream_names == ["stock", "price"]
            routed.assert_concurrency(m, peak=6, requests=6)  # the default: the first
            routed.assert_concurrency(m, peak=1, requests=1, upstream="price")
            assert m.upstream("price").requests_per_sample == [1, 1]
            assert m.upstream("stock").peak_inflight == 6
            assert m.upstream("price").connections_opened == 0
            bodies = [r.json() for r in fanout_upstreams["price"].requests("POST", "/quote")]
            assert bodies == [{"basket": 1}] * 4  # warm-up, held probe, 2 samples
            assert 0.3 < m.efficiency <= 1.05
            with pytest.raises(AssertionError, match="at upstream 'price' during POST /order/6"):
                routed.assert_concurrency(m, peak=2, upstream="price")

        def test_marker_routes_and_recordings_were_undone(fanout_upstreams):
            for upstream in fanout_upstreams.values():
                assert upstream.behaviour().delay_ms == 100
                assert upstream.requests() == []
            import httpx
            assert httpx.get(fanout_upstreams["stock"].url + "/s/1").json() == {"ok": True}
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_measure_post_with_per_upstream_gauges*POST /order/6*"])


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        (
            "fanout_upstreams =\n    stock\n",
            "tox.ini: fanout_upstreams: 'stock' is not NAME=ENVVAR like inventory=INVENTORY_URL",
        ),
        (
            "fanout_upstreams =\n    st@ck STOCK_URL\n",
            "tox.ini: fanout_upstreams: 'st@ck STOCK_URL' is not NAME=ENVVAR*: 'st@ck' is not"
            " an upstream name*",
        ),
        (
            "fanout_upstreams =\n    stock 1URL\n",
            "tox.ini: fanout_upstreams: *: '1URL' is not an environment variable name",
        ),
        (
            "fanout_upstreams =\n    a A_URL\n    a B_URL\n",
            "tox.ini: fanout_upstreams: upstream 'a' is named twice",
        ),
        (
            "fanout_upstreams =\n    a A_URL\n    b A_URL\n",
            "tox.ini: fanout_upstreams: A_URL is given to two upstreams (a and b)",
        ),
        (
            "fanout_app_env =\n    STOCK_URL=$FANOUT_UPSTREAM_URL\n",
            "tox.ini: fanout_app_env: 'STOCK_URL=$FANOUT_UPSTREAM_URL': "
            "$FANOUT_UPSTREAM_URL is not expanded (no shell variables here); "
            "write {upstream_url:NAME} for an upstream's URL",
        ),
        (
            "fanout_app_env =\n    X=${HOME}\n",
            "tox.ini: fanout_app_env: 'X=${HOME}': ${HOME} is not*",
        ),
        (
            "fanout_app_env =\n    X={upstream_url:nope}\n",
            "tox.ini: fanout_app_env: 'X={upstream_url:"
            "nope}': {upstream_url:nope}: no upstream named 'nope' (the upstreams: default)",
        ),
        (
            "fanout_app_env =\n    X={url}\n",
            "tox.ini: fanout_app_env: 'X={url}': unknown placeholder {url}*",
        ),
        (
            "fanout_app_env =\n    no-equals-sign\n",
            "tox.ini: fanout_app_env: 'no-equals-sign' is not KEY=VALUE",
        ),
        (
            "fanout_app_factory = maybe\n",
            "tox.ini: fanout_app_factory: 'maybe' is not true or false",
        ),
        (
            "fanout_request_timeout = 0\n",
            "tox.ini: fanout_request_timeout: 0 must be > 0",
        ),
    ],
    ids=[
        "no-variable",
        "bad-name",
        "bad-variable",
        "name-twice",
        "variable-twice",
        "dollar",
        "dollar-brace",
        "unknown-upstream",
        "unknown-placeholder",
        "not-key-value",
        "factory-maybe",
        "timeout-zero",
    ],
)
def test_bad_upstream_ini_is_one_line_before_any_test(
    pytester: pytest.Pytester, ini: str, message: str
) -> None:
    pytester.makeini(f"[pytest]\nfanout_app_dir = {REPO}\n{ini}")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "Traceback" not in result.stderr.str()
    assert len([line for line in result.stderr.lines if line.strip()]) == 1


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('upstream="nope", delay_ms=5', "no upstream named 'nope' (the upstreams: default)"),
        ("max_inflight=float('inf')", "max_inflight=inf must be a finite number"),
        ("delay_ms=float('nan')", "delay_ms=nan must be a finite number"),
        ("jitter_ms=-1", "jitter_ms=-1.0 must be between 0 and 3600000"),
        ("p99_ms=1", "p99_ms must be 0 (off) or at least delay_ms (the median)"),
        ('colour="red"', "unknown setting(s): colour"),
        ("7", "takes keyword arguments only"),
    ],
    ids=["unknown-upstream", "inf", "nan", "negative", "p99-under-median", "unknown", "args"],
)
def test_bad_marker_is_one_error_line_without_starting_anything(
    pytester: pytest.Pytester, marker: str, message: str
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.fanout_upstream({marker})
        def test_bad(fanout):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*@pytest.mark.fanout_upstream: {message}"])
    assert "OverflowError" not in result.stdout.str()
    assert "During handling" not in result.stdout.str()
    assert "fanout app log" not in result.stdout.str()  # nothing was started for it


def test_raising_handler_is_in_the_stub_log_tail_on_the_report(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        stub_handlers="""
        def quote(request):
            raise ValueError("no price for " + request.path_params["sku"])
        """
    )
    pytester.makepyfile(
        """
        def test_handler(fanout_upstream):
            import httpx
            fanout_upstream.route("GET", "/price/{sku}", handler="stub_handlers:quote")
            answer = httpx.get(fanout_upstream.url + "/price/ab-1")
            assert answer.status_code == 200, answer.json()["detail"]
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: handler stub_handlers:quote raised ValueError: no price for ab-1",
            "*fanout upstream log (last lines)*",
            "*stub upstream: handler stub_handlers:quote raised on GET /price/ab-1*",
            "*ValueError: no price for ab-1",
        ]
    )


def test_path_shape_hook_gives_the_ideal(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(optionalhook=True)
        def pytest_fanout_path_shape(path):
            return (8, 4) if path == "/async_sem/8/4" else None
        """
    )
    pytester.makepyfile(
        """
        def test_shape(fanout):
            known = fanout.measure("/async_sem/8/4", repeat=1)
            assert (known.n, known.concurrency) == (8, 4)
            assert abs(known.ideal_s - 0.1) < 1e-9  # 50 ms x 2 waves
            unknown = fanout.measure("/async/3", repeat=1)
            assert unknown.n is None and unknown.ideal_s is None and unknown.efficiency is None
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)
    # The same conftest without the plugin: optionalhook keeps pytest from refusing it.
    result = pytester.runpytest("-p", "no:pytest_fanout", "-p", "no:fanout", "-k", "nothing")
    assert "unknown hook" not in result.stdout.str() + result.stderr.str()


def test_the_command_line_beats_the_ini_which_beats_tool_fanout(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.fanout]
        app = "file:app"
        delay_ms = 30
        app_env = { MODE = "file" }
        [tool.fanout.upstreams.stock]
        env = "STOCK_URL"
        routes = [{ method = "GET", path = "/s/{i}", json = { left = 1 } }]
        """
    )
    pytester.makeini("[pytest]\nfanout_delay_ms = 20\nfanout_upstreams =\n    stock=MY_STOCK\n")
    pytester.makepyfile(
        """
        from pytest_fanout import FanoutSession

        def test_spec(pytestconfig):
            spec = FanoutSession.of(pytestconfig).spec
            assert spec.app == "cli:app"  # the command line
            assert spec.delay_ms == 20  # the ini
            assert spec.upstream_env_names() == {"stock": "MY_STOCK"}  # the ini, NAME=ENV
            assert spec.routes()["stock"][0]["json"] == {"left": 1}  # the file's routes kept
            assert spec.app_env == {"MODE": "file"}
            assert pytestconfig.pluginmanager.get_plugin("fanout_session") is not None
        """
    )
    result = pytester.runpytest_subprocess("--fanout-app", "cli:app")
    result.assert_outcomes(passed=1)
