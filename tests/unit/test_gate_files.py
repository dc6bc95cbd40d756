"""Saved runs on disk, and `fanout compare` on them: the schema, bad files, verdicts, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_fanout.gate import SCHEMA_VERSION, GateError, Run
from pytest_fanout.gate.runs import SCHEMA, collect_context
from pytest_fanout.measurement import Measurement

REPO = Path(__file__).resolve().parents[2]
TEST = "tests/test_perf.py::test_gather"


def a_run(median_s: float = 0.110, paths: tuple[str, ...] = ("/async/20",)) -> Run:
    ms = []
    for path in paths:
        n = int(path.split("/")[2])
        values = [median_s + 0.0005 * ((i * 7) % 10 - 5) for i in range(10)]
        ms.append(
            Measurement(
                path=path,
                samples=values,
                n=n,
                concurrency=n,
                upstream_delay_s=0.1,
                upstream_jitter_s=0.0,
                test=TEST,
                upstream_requests_per_sample=[n] * 10,
                upstream_peak_per_sample=[n] * 10,
            )
        )
    return Run.from_measurements(ms, collect_context(REPO))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---- the schema ------------------------------------------------------------------------


def test_a_saved_run_holds_samples_statistics_upstream_and_context(tmp_path: Path) -> None:
    saved = a_run().save(tmp_path / "deep" / "run.json")
    data = json.loads(saved.read_text())
    assert data["schema"] == SCHEMA and data["schema_version"] == SCHEMA_VERSION
    [case] = data["cases"]
    assert case["id"] == f"{TEST} /async/20" and case["kind"] == "measurement"
    record = case["record"]
    assert len(record["samples"]) == 10
    for derived in ("median_s", "p95_s", "ideal_s", "efficiency", "overhead_per_call_s"):
        assert isinstance(record[derived], float)
    assert record["upstream_delay_s"] == 0.1 and record["n"] == 20
    context = data["context"]
    assert context["python"] and context["cpu_count"] >= 1
    assert context["packages"]["pytest"] and "pytest-fanout" in context["packages"]
    assert len(context["git"]["commit"]) == 40


def test_a_saved_run_loads_back_the_same(tmp_path: Path) -> None:
    run = a_run(paths=("/async/20", "/async/50"))
    loaded = Run.load(run.save(tmp_path / "run.json"))
    assert [c.id for c in loaded.cases] == [c.id for c in run.cases]
    assert loaded.cases[1].measurement().samples == run.cases[1].measurement().samples
    assert loaded.source == str(tmp_path / "run.json")


def test_a_repeated_case_gets_a_numbered_id() -> None:
    m = Measurement(path="/async/20", samples=[0.1], test=TEST)
    run = Run.from_measurements([m, m, m])
    assert [c.id for c in run.cases] == [
        f"{TEST} /async/20",
        f"{TEST} /async/20 #2",
        f"{TEST} /async/20 #3",
    ]


def test_no_git_no_commit(tmp_path: Path) -> None:
    assert collect_context(tmp_path)["git"] is None


# ---- bad files: one clear line each ----------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON (line 1, column 2"),
        ("", "is not valid JSON"),
        ('{"machine_info": {}, "benchmarks": []}', "is not a pytest-fanout results file"),
        ("[1, 2]", "is not a pytest-fanout results file"),
        (
            json.dumps({"schema": SCHEMA, "schema_version": 99, "cases": []}),
            "has schema version 99; this pytest-fanout reads version 1",
        ),
        (json.dumps({"schema": SCHEMA, "schema_version": 1}), "has no list of cases"),
        (
            json.dumps({"schema": SCHEMA, "schema_version": 1, "cases": [{"id": "x"}]}),
            "case 1 needs a string id, a string kind and a record object",
        ),
        (
            json.dumps(
                {
                    "schema": SCHEMA,
                    "schema_version": 1,
                    "cases": [
                        {"id": "x", "kind": "measurement", "record": {"path": "/a", "samples": []}}
                    ],
                }
            ),
            "case 1 (x) is not a valid measurement record: samples",
        ),
        (
            json.dumps(
                {
                    "schema": SCHEMA,
                    "schema_version": 1,
                    "cases": [
                        {
                            "id": "x",
                            "kind": "measurement",
                            "record": {"path": "/a", "samples": ["fast"]},
                        }
                    ],
                }
            ),
            "case 1 (x) is not a valid measurement record: samples",
        ),
    ],
)
def test_a_bad_baseline_is_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(GateError) as info:
        Run.load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_directory_or_binary_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="is a directory"):
        Run.load(tmp_path)
    binary = tmp_path / "b.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(GateError, match="cannot read baseline"):
        Run.load(binary)


def test_an_unwritable_target_is_one_line(tmp_path: Path) -> None:
    blocker = write(tmp_path / "file", "x")
    with pytest.raises(GateError, match="cannot write"):
        a_run().save(blocker / "run.json")


# ---- fanout compare OLD NEW: a real process ---------------------------------------------


def fanout_compare(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", "compare", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def test_compare_same_code_passes(tmp_path: Path) -> None:
    old = a_run().save(tmp_path / "old.json")
    new = a_run().save(tmp_path / "new.json")
    done = fanout_compare(str(old), str(new))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fanout gate passed: 1 same" in done.stdout
    assert "REGRESSION" not in done.stdout


def test_compare_slower_fails_with_one_line_per_case(tmp_path: Path) -> None:
    old = a_run(0.110, ("/async/20", "/async/50")).save(tmp_path / "old.json")
    new = a_run(0.160, ("/async/20", "/async/50")).save(tmp_path / "new.json")
    md = tmp_path / "out" / "report.md"
    done = fanout_compare(
        str(old), str(new), "--report-md", str(md), "--report-json", str(tmp_path / "cmp.json")
    )
    assert done.returncode == 1
    lines = [line for line in done.stdout.splitlines() if line.startswith("REGRESSION ")]
    assert len(lines) == 2
    assert lines[0].startswith(f"REGRESSION {TEST} /async/20: median 110 ms -> 160 ms (+45.6%")
    assert "**regression** :x:" in md.read_text()
    assert json.loads((tmp_path / "cmp.json").read_text())["failed"] is True


def test_compare_report_only_passes_on_a_regression(tmp_path: Path) -> None:
    old = a_run(0.110).save(tmp_path / "old.json")
    new = a_run(0.160).save(tmp_path / "new.json")
    done = fanout_compare(str(old), str(new), "--fail-on", "none")
    assert done.returncode == 0
    assert "regression" in done.stdout and "report only" in done.stdout


def test_compare_faster_passes(tmp_path: Path) -> None:
    old = a_run(0.160).save(tmp_path / "old.json")
    new = a_run(0.110).save(tmp_path / "new.json")
    done = fanout_compare(str(old), str(new))
    assert done.returncode == 0
    assert "fanout gate passed: 1 improvement" in done.stdout


def test_compare_cases_on_one_side_are_reported(tmp_path: Path) -> None:
    old = a_run(paths=("/async/20", "/async/50")).save(tmp_path / "old.json")
    new = a_run(paths=("/async/20", "/async/30")).save(tmp_path / "new.json")
    done = fanout_compare(str(old), str(new))
    assert done.returncode == 0
    assert "fanout gate passed: 1 same, 2 not gated" in done.stdout


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("missing", [], "baseline {old} does not exist"),
        ("corrupt", [], "baseline {old} is not valid JSON"),
        ("other", [], "baseline {old} is not a pytest-fanout results file"),
        ("ok", ["--fail-on", "latency+5%"], "unknown metric 'latency'"),
        ("ok", ["--alpha", "2"], "alpha '2' must be between 0 and 0.5"),
    ],
)
def test_compare_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, setup: str, extra: list[str], message: str
) -> None:
    old = tmp_path / "old.json"
    new = a_run().save(tmp_path / "new.json")
    if setup == "ok":
        a_run().save(old)
    elif setup == "corrupt":
        old.write_text('{"schema": "pytest-fanout/results", ')
    elif setup == "other":
        old.write_text('{"benchmarks": []}')
    done = fanout_compare(str(old), str(new), *extra)
    assert done.returncode == 2
    assert done.stderr.startswith("fanout compare: error: ")
    assert message.format(old=old) in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr + done.stdout


def test_compare_a_missing_new_file_names_it(tmp_path: Path) -> None:
    old = a_run().save(tmp_path / "old.json")
    done = fanout_compare(str(old), str(tmp_path / "nope.json"))
    assert done.returncode == 2
    assert f"results {tmp_path / 'nope.json'} does not exist" in done.stderr
