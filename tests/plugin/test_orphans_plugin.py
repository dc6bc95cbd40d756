"""`fanout.measure(..., disconnect_after_s=)` and the two assertions through the fixture, in
an inner pytest session on the reference app (whose endpoints run to their end whether or
not the caller is still there)."""

from __future__ import annotations

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

INI = f"""
[pytest]
fanout_app_dir = {REPO}
fanout_delay_ms = 300
"""

TESTS = """
import pytest


def test_hang_up(fanout):
    m = fanout.measure("/async/3", repeat=2, disconnect_after_s=0.05)
    assert m.disconnect_after_s == 0.05 and m.disconnect_grace_s == 0.1
    assert m.upstream().after_disconnect_per_sample == [3, 3]
    with pytest.raises(AssertionError, match="6 calls to 'default' ran on after the caller "
                       "hung up on GET /async/3 at 50 ms"):
        fanout.assert_cancels_on_disconnect(m)
    assert "work after disconnect" in fanout.diagnose(m)[0].message


def test_answered(fanout):
    m = fanout.measure("/async/3", repeat=2)
    assert m.upstream().orphaned_per_sample == [0, 0]
    fanout.assert_no_orphans(m)
"""


def test_the_fixture_hangs_up_and_counts(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_inner=TESTS)
    result = pytester.runpytest_subprocess("-p", "pytest_fanout", "-q", timeout=120)
    result.assert_outcomes(passed=2)
