"""A saved file is not trusted: type, size, JSON, finite numbers, nesting, schema; and the
statistics scale to 100,000 samples in a case and, linearly, to 100,000 cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_fanout.artifacts import fingerprint_value
from pytest_fanout.gate import GateConfig, GateError, Run, compare_runs
from pytest_fanout.gate.runs import collect_context
from pytest_fanout.gate.schema import SchemaError, read_json
from pytest_fanout.gate.verdict import MIN_RESAMPLES, RESAMPLE_BUDGET
from pytest_fanout.measurement import Measurement

REPO = Path(__file__).resolve().parents[2]


def valid(record: dict | None = None) -> dict:
    base = {"path": "/async/20", "samples": [0.11, 0.12, 0.11], "n": 20, "concurrency": 20}
    return {
        "schema": "pytest-fanout/results",
        "schema_version": 1,
        "cases": [
            {"id": "t /async/20", "kind": "measurement", "record": {**base, **(record or {})}}
        ],
    }


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"n": "20"}, "case 1 (t /async/20) is not a valid measurement record: n: Input should be"),
        ({"n": 0}, "n: Input should be greater than or equal to 1"),
        ({"samples": [0.1, -1]}, "samples.1: Input should be greater than or equal to 0"),
        ({"upstream_delay_s": "0.1"}, "upstream_delay_s: Input should be a valid number"),
        ({"app_cpu_per_sample": [True]}, "app_cpu_per_sample.0: Input should be a valid number"),
        # The samples the A/B gate took itself (`ab_pool`) are checked like the test's own.
        ({"ab_pool": {"samples": ["x"]}}, "ab_pool.samples.0: Input should be a valid number"),
        ({"ab_pool": {"samples": [0.1], "app_cpu_per_sample": [-1]}}, "greater than or equal"),
        ({"ab_pool": {"samples": [0.1], "processes": "3"}}, "ab_pool.processes: Input should"),
        ({"ab_pool": []}, "ab_pool: Input should be"),
        # Every held probe's structure (`held_probes=`): counts, like `structure`'s.
        ({"structures": "x"}, "structures: Input should be a valid list"),
        ({"structures": [{"meteo": [-1]}]}, "greater than or equal"),
        # How the cpu was reckoned: a count, or the gate could not tell two methods apart.
        ({"cpu_method": "2"}, "cpu_method: Input should be a valid integer"),
        ({"cpu_method": -1}, "cpu_method: Input should be greater than or equal to 0"),
    ],
)
def test_a_record_of_the_wrong_shape_is_one_line(
    tmp_path: Path, record: dict, message: str
) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(valid(record)))
    with pytest.raises(GateError) as info:
        Run.load(path)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_refused(tmp_path: Path, token: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(valid()).replace("0.12", token))
    with pytest.raises(GateError, match="is refused: .* (is not a number|overflows)"):
        Run.load(path)


def test_deep_nesting_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(GateError, match="nested too deeply"):
        Run.load(path)


def test_only_a_regular_file_under_the_cap_is_read(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="is not a regular file"):
        Run.load("/dev/zero")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(GateError, match="is not a regular file"):
        Run.load(fifo)  # no writer: must not block
    big = tmp_path / "big.json"
    big.write_text(json.dumps(valid()) + " " * 2000)
    with pytest.raises(SchemaError, match="over the 0 MiB limit"):
        read_json(big, "baseline big.json", max_bytes=1000)


def test_fanout_compare_refuses_dev_zero_with_exit_2(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(valid()))
    done = subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", "compare", "/dev/zero", str(good)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "fanout compare: error: baseline /dev/zero is not a regular file (a device, FIFO or socket)"
    ]


def _measurements(cases: int, samples: int, shift: float = 0.0) -> list[Measurement]:
    return [
        Measurement(
            path=f"/async/{i}",
            samples=[0.1 + shift + (j % 97) / 10_000 for j in range(samples)],
            app_cpu_per_sample=[0.004 + (j % 89) / 1_000_000 for j in range(samples)],
            n=20,
            concurrency=20,
            upstream_delay_s=0.1,
            test="t.py::test_many",
        )
        for i in range(cases)
    ]


def test_one_case_of_100000_samples_compares_in_seconds() -> None:
    base = Run.from_measurements(_measurements(1, 100_000))
    now = Run.from_measurements(_measurements(1, 100_000, shift=0.05))
    start = time.perf_counter()
    comparison = compare_runs(base, now, GateConfig.from_options(None).for_ab())
    seconds = time.perf_counter() - start
    assert [v.verdict for v in comparison.verdicts] == ["regression"]
    assert seconds < 20, f"{seconds:.1f} s for 100,000 samples a side (was 107 s)"


def test_50000_cases_compare_in_linear_time() -> None:
    """A large suite compares in time linear in its cases: 50,000 cost at most 20 times what
    5,000 cost in the same run (linear is 10x, a quadratic step would be 100x), a ratio a
    busy runner cannot break, as an absolute bound in seconds could. Both sizes are past
    the resampling budget (no interval past 2,000 cases), so the two do the same work a
    case; 100,000 then cost twice 50,000 (11 CPU-s for 10,000 and 100,000, 2026-12-06)."""
    [template] = Run.from_measurements(_measurements(1, 10)).cases
    config = GateConfig.from_options(None).for_ab()
    assert RESAMPLE_BUDGET // 5_000 < MIN_RESAMPLES

    def compare_seconds(count: int) -> float:
        cases = [
            type(template)(f"t.py::test_many /async/{i}", template.kind, template.record)
            for i in range(count)
        ]
        base, now = Run(cases, {}), Run(cases, {})
        # The process's CPU time, not the clock: a runner busy with other workers (CI at
        # -n 4 read 14.0 s against 0.63 s by the clock, 22x) slows the clock, not the work.
        start = time.process_time()
        comparison = compare_runs(base, now, config)
        seconds = time.process_time() - start
        assert comparison.counts()["same"] == count
        return seconds

    small, large = compare_seconds(5_000), compare_seconds(50_000)
    assert large < 20 * small, f"{large:.1f} s for 50,000 cases, {small:.1f} s for 5,000"


def test_the_context_records_the_app_servers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANOUT_CALL_OVERHEAD_MS", "0")
    monkeypatch.setenv("FANOUT_MAX_N", "500")
    context = collect_context(
        REPO,
        app_env={
            "FANOUT_CALL_OVERHEAD_MS": "2",
            "FANOUT_UPSTREAM_URL": "http://127.0.0.1:41234",
            "PRICING_TIMEOUT_S": "2",
        },
        hide=["http://127.0.0.1:41234"],
    )
    # Names, and a fingerprint of each value (never the value: a saved run travels).
    assert context["settings"] == {
        "FANOUT_CALL_OVERHEAD_MS": fingerprint_value("2"),  # the app's override, not "0"
        "FANOUT_MAX_N": fingerprint_value("500"),
        "PRICING_TIMEOUT_S": fingerprint_value("2"),
    }
    assert fingerprint_value("2") != fingerprint_value("0")
    assert set(context["fingerprint"]) == {"cpu_model", "cores", "python", "os", "package"}
