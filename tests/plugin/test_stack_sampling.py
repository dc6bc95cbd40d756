"""The plugin names the line that blocks the loop, and stops sampling when told so."""

from __future__ import annotations

import pytest

SERVICE = """
import time

from fastapi import FastAPI

app = FastAPI()


@app.get("/slow")
async def slow() -> dict:
    time.sleep(0.25)
    return {}
"""

TESTS = """
def test_slow_does_not_block(fanout):
    m = fanout.measure("/slow", repeat=1, warmup=0)
    fanout.assert_no_blocking(m)
"""


def _setup(pytester: pytest.Pytester, sampling: str | None) -> None:
    service_dir = pytester.mkpydir("shop")
    (service_dir / "service.py").write_text(SERVICE)
    ini = "[pytest]\nfanout_app = shop.service:app\nfanout_app_dir = .\n"
    if sampling is not None:
        ini += f"fanout_stack_sampling = {sampling}\n"
    pytester.makeini(ini)
    pytester.makepyfile(test_shop=TESTS)


def test_the_failure_names_the_blocking_line(pytester: pytest.Pytester) -> None:
    _setup(pytester, None)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*was held for * during /slow (limit 40 ms): something blocks the loop at "
            "shop/service.py:11 in slow -> time.sleep (longest stall * ms)*"
        ]
    )


def test_the_option_switches_sampling_off(pytester: pytest.Pytester) -> None:
    _setup(pytester, "on")  # the command line wins over the ini file
    result = pytester.runpytest("--fanout-stack-sampling", "off")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*(limit 40 ms): something blocks the loop, such as*"])
    result.stdout.no_fnmatch_line("*time.sleep*")


def test_a_bad_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    _setup(pytester, "sometimes")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *fanout_stack_sampling: 'sometimes' is not on or off"])


def test_the_fixture_diagnoses_a_measurement(pytester: pytest.Pytester) -> None:
    _setup(pytester, None)
    pytester.makepyfile(
        test_shop="""
        def test_diagnose(fanout):
            m = fanout.measure("/slow", repeat=1, warmup=0)
            (finding,) = fanout.diagnose(m)
            assert finding.kind == "blocks-loop"
            assert not finding.exact
            assert finding.message.startswith(
                "blocks the loop: shop/service.py:11 in slow -> time.sleep (held it "
            )
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*test_diagnose*/slow*blocks the loop: shop/service.py:11 in slow -> time.sleep"]
    )
