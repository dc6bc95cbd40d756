"""The gate inside pytest, end to end: real inner sessions, real app and upstream processes.

Save a baseline, compare the same code with it (passes), compare with the
injected slowdown switched on (FANOUT_CALL_OVERHEAD_MS=2: the run fails with
a REGRESSION line although its test passed), and bad input as one line.
No timing is asserted here: the verdicts come from the gate's own statistics.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reference_shapes import SHAPES_CONFTEST

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

INI = f"""
[pytest]
fanout_app_dir = {REPO}
"""

# The user's performance test: one case, "test_perf.py::test_gather /async/20".
PERF_TEST = """
def test_gather(fanout):
    m = fanout.measure("/async/20", repeat=8)
    fanout.assert_concurrency(m, 20, requests=20)
"""

CASE = "test_perf.py::test_gather /async/20"


def inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=180)


@pytest.mark.slow
def test_save_compare_same_code_then_slowdown(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(SHAPES_CONFTEST)  # the reference app's path shapes (efficiency)
    pytester.makepyfile(test_perf=PERF_TEST)
    monkeypatch.delenv("FANOUT_CALL_OVERHEAD_MS", raising=False)
    base = pytester.path / "baseline.json"

    # 1. Save: the JSON holds the case with every sample.
    saved = inner(pytester, f"--fanout-save={base}", "--fanout-report-md=main.md")
    saved.assert_outcomes(passed=1)
    assert saved.ret == 0
    saved.stdout.fnmatch_lines([f"fanout gate: saved 1 case(s) to {base}"])
    data = json.loads(base.read_text())
    assert [c["id"] for c in data["cases"]] == [CASE]
    assert len(data["cases"][0]["record"]["samples"]) == 8
    assert "### pytest-fanout measurements" in (pytester.path / "main.md").read_text()

    # 2. Same code against it: passes, verdict table printed, no regression line.
    same = inner(
        pytester, f"--fanout-compare={base}", "--fanout-save=now.json", "--fanout-report-md=pr.md"
    )
    same.assert_outcomes(passed=1)
    assert same.ret == 0, same.stdout.str()
    same.stdout.fnmatch_lines(
        ["*fan-out regression gate*", f"{CASE}*median*", "*efficiency*", "*gate passed*"]
    )
    assert "REGRESSION" not in same.stdout.str()
    assert ":white_check_mark:" in (pytester.path / "pr.md").read_text()
    comparison = json.loads((pytester.path / "now.json").read_text())["comparison"]
    assert comparison["failed"] is False
    [case] = comparison["cases"]
    assert case["verdict"] == "same", case
    # The same code: its median is "same", or not gated when the machine was busier in one
    # of the two runs (the app's wait for a CPU says so, on a loaded runner): never flagged.
    median = next(m for m in case["metrics"] if m["metric"] == "median")
    busier = "the machine was busier in" in (median["not_judged"] or "")
    assert (median["gated"] and not median["regressed"]) or busier, median

    # 3. The slowdown switched on in the app: the test passes, the session fails.
    monkeypatch.setenv("FANOUT_CALL_OVERHEAD_MS", "2")
    slow = inner(
        pytester, f"--fanout-compare={base}", "--fanout-save=slow.json", "--fanout-report-md=s.md"
    )
    slow.assert_outcomes(passed=1)
    assert slow.ret == pytest.ExitCode.TESTS_FAILED
    regressions = [line for line in slow.outlines if line.startswith("REGRESSION ")]
    assert len(regressions) == 1
    assert regressions[0].startswith(f"REGRESSION {CASE}: median ")
    assert "limit median+10%" in regressions[0]
    slow.stdout.fnmatch_lines(
        [
            "*settings differ (values not shown): only in this run FANOUT_CALL_OVERHEAD_MS*",
            "*gate FAILED: 1 regression*",
        ]
    )
    assert "**regression** :x:" in (pytester.path / "s.md").read_text()

    # 4. The same verdict and exit status without pytest: fanout compare OLD NEW.
    done = subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", "compare", str(base), "slow.json"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert [line for line in done.stdout.splitlines() if line.startswith("REGRESSION ")] == (
        regressions
    )

    # 5. Report-only rules: the regression is shown, the run passes.
    monkeypatch.delenv("FANOUT_CALL_OVERHEAD_MS")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_fanout.cli",
            "compare",
            str(base),
            "slow.json",
            "--fail-on",
            "none",
        ],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "regression" in done.stdout


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("", ["--fanout-compare=nope.json"], "baseline {dir}/nope.json does not exist"),
        ("{broken", ["--fanout-compare=b.json"], "baseline {dir}/b.json is not valid JSON (line 1"),
        (
            '{"benchmarks": []}',
            ["--fanout-compare=b.json"],
            "baseline {dir}/b.json is not a pytest-fanout results file",
        ),
        (
            '{"schema": "pytest-fanout/results", "schema_version": 7, "cases": []}',
            ["--fanout-compare=b.json"],
            "baseline {dir}/b.json has schema version 7",
        ),
        (
            '{"schema": "pytest-fanout/results", "schema_version": 1, "cases": [{"id": "x", '
            '"kind": "measurement", "record": {"path": "/a", "samples": [0.1], "n": "20"}}]}',
            ["--fanout-compare=b.json"],
            "baseline {dir}/b.json: case 1 (x) is not a valid measurement record: n: Input",
        ),
        (
            '{"schema": "pytest-fanout/results", "schema_version": 1, "cases": [{"id": "x", '
            '"kind": "measurement", "record": {"path": "/a", "samples": [NaN]}}]}',
            ["--fanout-compare=b.json"],
            "baseline {dir}/b.json is refused: NaN is not a number a results file may hold",
        ),
        ("[" * 100_000, ["--fanout-compare=b.json"], "is nested too deeply"),
        ("", ["--fanout-compare=/dev/zero"], "baseline /dev/zero is not a regular file"),
        ("", ["--fanout-fail-on=efficiency+10%"], "efficiency is worse when it drops"),
        ("", ["--fanout-fail-on=speed-10%"], "unknown metric 'speed'"),
        ("", ["--fanout-alpha=5"], "alpha '5' must be between 0 and 0.5"),
        ("", ["--fanout-save=."], "is a directory, give a file"),
    ],
    ids=[
        "missing",
        "corrupt",
        "other-schema",
        "other-version",
        "string-n",
        "nan",
        "deep-nesting",
        "dev-zero",
        "bad-sign",
        "bad-metric",
        "bad-alpha",
        "save-to-dir",
    ],
)
def test_bad_input_is_one_line_before_any_test(
    pytester: pytest.Pytester, setup: str, args: list[str], message: str
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_perf=PERF_TEST)
    if setup:
        (pytester.path / "b.json").write_text(setup)
    result = inner(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.strip()]
    assert len(errors) == 1, result.errlines
    assert errors[0].startswith("ERROR: pytest-fanout gate: ")
    assert message.format(dir=pytester.path) in errors[0]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert "fanout_server" not in result.stdout.str()  # no test ran, no server started


def test_fail_on_from_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI + "fanout_fail_on = p95-3%\n")
    pytester.makepyfile(test_perf="def test_nothing():\n    pass\n")
    result = inner(pytester, "--fanout-save=x.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "p95 is worse when it rises, write p95+3%" in result.stderr.str()


def test_a_run_without_measurements_saves_an_empty_run_and_reports_missing_cases(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_perf="def test_nothing():\n    pass\n")
    baseline = {
        "schema": "pytest-fanout/results",
        "schema_version": 1,
        "cases": [
            {
                "id": CASE,
                "kind": "measurement",
                "record": {
                    "path": "/async/20",
                    "samples": [0.11, 0.12, 0.11],
                    "n": 20,
                    "concurrency": 20,
                    "upstream_delay_s": 0.1,
                },
            },
        ],
    }
    (pytester.path / "b.json").write_text(json.dumps(baseline))
    result = inner(pytester, "--fanout-compare=b.json", "--fanout-save=out/now.json")
    result.assert_outcomes(passed=1)
    # Nothing was compared (a renamed suite looks the same): never "passed", its own status.
    assert result.ret == 6
    result.stdout.fnmatch_lines(
        [
            f"{CASE}*not gated",
            "*in the baseline, not measured in this run*",
            "fanout gate FAILED: 1 not gated; no case was gated: 1 in the baseline, not measured*",
            "fanout gate: no case was gated: * the run fails (exit 6; --fanout-allow-ungated*",
        ]
    )
    assert json.loads(Path(pytester.path / "out" / "now.json").read_text())["cases"] == []
    accepted = inner(pytester, "--fanout-compare=b.json", "--fanout-allow-ungated")
    assert accepted.ret == 0
    accepted.stdout.fnmatch_lines(["fanout gate passed: 1 not gated; no case was gated: *"])


LOAD_TEST = """
def test_load(fanout_load):
    result = fanout_load(users=4, run_time_s=3, n=5, user_classes=["AsyncUser"])
    assert result.exit_code == 0, result.output[-2000:]
"""


def test_locust_results_are_saved_and_compared(pytester: pytest.Pytester) -> None:
    """A real Locust run saved by --fanout-save, then `fanout compare` of the file with itself."""
    pytester.makeini(INI)
    pytester.makepyfile(test_load=LOAD_TEST)
    base = pytester.path / "load.json"

    saved = inner(pytester, f"--fanout-save={base}")
    saved.assert_outcomes(passed=1)
    assert saved.ret == 0, saved.stdout.str()
    saved.stdout.fnmatch_lines([f"fanout gate: saved 2 case(s) to {base}"])
    cases = json.loads(base.read_text())["cases"]
    assert [(c["id"], c["kind"]) for c in cases] == [
        ("test_load.py::test_load GET /async/5", "locust"),
        ("test_load.py::test_load Aggregated", "locust"),
    ]
    stats = cases[0]["record"]["stats"]
    assert stats["requests"] > 0
    # Locust's own response-time histogram: one count per timed request.
    assert 0 < sum(stats["histogram"].values()) <= stats["requests"]

    done = subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", "compare", str(base), str(base)],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fanout gate passed: 2 same" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("test_load.py")]
    assert [(row[2], row[3], row[-1]) for row in rows[:1]] == [("/async/5", "load-p95", "same")]
    assert "catches changes of at least" in done.stdout
    assert "REGRESSION" not in done.stdout
