"""Rate limits through the plugin (issue 33): the marker, the ini key and the flag set the
same `rate_limit`/`burst`; a bad one is one line before anything starts; the assertions
are on the `fanout` fixture. Inner sessions run the reference app (its /async/10 gathers
10 calls and answers 200 with the failed ones counted) against a real stub."""

from __future__ import annotations

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

INI = f"""
[pytest]
fanout_app_dir = {REPO}
fanout_delay_ms = 20
"""

#: 5 per minute: nothing refills within a sample, so the counts are exact at any load.
MEASURED = """
import pytest
from pytest_fanout import FanoutAssertionError


def check(fanout):
    m = fanout.measure("/async/10", n=10, concurrency=10, repeat=2)
    g = m.upstream()
    assert g.rejected_per_sample == [5, 5]
    assert g.rate_limit == "5/min"
    with pytest.raises(FanoutAssertionError, match="which allows 5/min: 10 of 20 answered 429"):
        fanout.assert_within_limits(m)
    fanout.assert_backs_off(m)


@pytest.mark.fanout_upstream(rate_limit="5/min", burst=5)
def test_marker(fanout):
    check(fanout)


def test_configure(fanout, fanout_upstream):
    fanout_upstream.configure(rate_limit="5/min", burst=5)
    check(fanout)


def test_route(fanout, fanout_upstream):
    fanout_upstream.route("GET", "/items/{i}", rate_limit="5/min", burst=5)
    m = fanout.measure("/async/10", n=10, concurrency=10, repeat=2)
    assert m.upstream().rejected_per_sample == [5, 5]
    assert list(m.upstream().route_limits) == ["GET /items/{i}"]
"""


def test_marker_configure_and_route(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(MEASURED)
    pytester.runpytest_subprocess(timeout=120).assert_outcomes(passed=3)


def test_flag_and_ini_set_every_stub(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI + "fanout_rate_limit = 7/min\n")
    pytester.makepyfile(
        """
        def test_limit(fanout_upstream):
            assert fanout_upstream.behaviour().rate_limit == "5/min"
            assert fanout_upstream.behaviour().burst == 5
        """
    )
    result = pytester.runpytest_subprocess(
        "--fanout-rate-limit", "5/min", "--fanout-burst", "5", timeout=120
    )
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--fanout-rate-limit", "fast"), "*rate_limit='fast' is not a rate limit like '50/s'*"),
        (("--fanout-rate-limit", "0/s"), "*rate_limit='0/s' must allow at least 1 call*"),
        (
            ("--fanout-rate-limit", "5/s", "--fanout-burst", "99999999"),
            "*99999999 is above the limit of 1,000,000*",
        ),
    ],
)
def test_bad_limit_is_one_line(pytester: pytest.Pytester, args: tuple[str, ...], message: str):
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "Traceback" not in result.stderr.str()


def test_bad_marker_is_one_line(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.fanout_upstream(rate_limit="-1/s")
        def test_x(fanout_upstream):
            pass
        """
    )
    result = pytester.runpytest_subprocess(timeout=120)
    result.assert_outcomes(errors=1)  # at set-up, before any process starts
    result.stdout.fnmatch_lines(["*fanout_upstream: rate_limit='-1/s' must allow at least 1*"])
