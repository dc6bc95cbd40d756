"""The plugin through pytester: loading, options, fixtures, marker, hooks, summary, messages.

Inner sessions run the repository's reference app (`fanout_app_dir` points at
the repository) against the stub upstream, in real processes.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

INI = f"""
[pytest]
fanout_app_dir = {REPO}
fanout_delay_ms = 50
"""

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
            assert pytestconfig.getini("fanout_app") == "pytest_fanout.reference_app.main:app"
            assert pytestconfig.pluginmanager.has_plugin("locust")
        """
    )
    result = run_subprocess(pytester, "--host", "http://example.invalid")
    result.assert_outcomes(passed=1)


def test_help_documents_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    for flag in ("--fanout-app", "--fanout-app-dir", "--fanout-delay-ms",
                 "--fanout-startup-timeout", "--fanout-app-factory"):
        result.stdout.fnmatch_lines([f"*{flag}*"])
    result.stdout.fnmatch_lines(["*fanout_app_env (linelist):*"])


# ---- options ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--fanout-delay-ms", "soon"), "--fanout-delay-ms (ini fanout_delay_ms) must be a "
                                        "positive number, got 'soon'"),
        (("--fanout-startup-timeout", "0"), "--fanout-startup-timeout*must be a positive*"),
        (("--fanout-app", "app.main"), "--fanout-app must be MODULE:ATTR, got 'app.main'"),
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
        """
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
    result.stdout.fnmatch_lines(["*@pytest.mark.fanout_upstream: error_rate and drop_rate must*"])


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
            "*expected 3 requests in flight at the upstream during /sync/3, saw 1: "
            "the calls ran one at a time*",
            "*expected /blocking/3 to be at least 5x faster than /sync/3, it was *x*: "
            "the two ran at the same speed: the fast path is not concurrent*",
            "*the app's event loop stalled for * ms during /blocking/3 (limit 50 ms): "
            "something blocks the loop*",
            "*expected at most 2 requests in flight at the upstream during /async/6, saw 6: "
            "the bound is not enforced*",
            "*GET /async/0 answered 422, expected 200*greater than or equal to 1*",
            "*fanout app log (last lines)*",
        ]
    )


def test_app_that_cannot_be_imported_fails_fast(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_FIXTURES)
    result = pytester.runpytest("--fanout-app", "no_such_module:app")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*pytest-fanout: app (no_such_module:app) exited with status 4 before answering: "
         "cannot import app 'no_such_module:app'*"]
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
