"""With pytest-xdist each worker runs its own stack on its own ports, and the
controller's summary shows every worker's measurements."""

from __future__ import annotations

import pytest

from tests.helpers import REPO

pytest.importorskip("xdist")


def test_two_workers_run_two_stacks(pytester: pytest.Pytester) -> None:
    pytester.makeini(f"[pytest]\nfanout_app_dir = {REPO}\nfanout_delay_ms = 50\n")
    pytester.makepyfile(
        """
        import os
        import pytest

        @pytest.mark.parametrize("n", [2, 3, 4, 5])
        def test_fan_out(fanout, n):
            m = fanout.measure(f"/async/{n}", repeat=2)
            fanout.assert_concurrency(m, peak=n, requests=n)
            print("worker", os.environ.get("PYTEST_XDIST_WORKER"), fanout.url)
        """
    )
    result = pytester.runpytest("-n", "2", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*= fan-out measurements =*"])
    rows = [line for line in result.stdout.lines if "/async/" in line and "ms" in line]
    assert sorted(r.split()[1] for r in rows) == ["/async/2", "/async/3", "/async/4", "/async/5"]
