"""Crafted results files: a number past any measurement, a string that cannot be written back.

Each is refused by the reader in ONE line: `fanout compare` exits 2, never 1 (its regression
status), never a traceback; the same files through `Run.load` are one GateError line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_fanout.gate import GateError, Run
from pytest_fanout.measurement import Measurement


def good_run() -> dict:
    m = Measurement(path="/async/5", samples=[0.11, 0.12, 0.11, 0.12, 0.11], test="t.py::test_a")
    return Run.from_measurements([m], {}).to_dict()


def crafted(kind: str) -> str:
    text = json.dumps(good_run())
    if kind == "huge int":
        return text.replace('"upstream_jitter_s": 0.0', '"upstream_jitter_s": ' + "9" * 100_000)
    if kind == "huge float":
        return text.replace('"upstream_jitter_s": 0.0', '"upstream_jitter_s": 1e300')
    if kind == "lone surrogate in a case id":
        return text.replace('"t.py::test_a /async/5"', '"t.py::test_a \\ud800 /async/5"', 1)
    if kind == "lone surrogate in a key":
        return text.replace('"context": {}', '"context": {"\\udfff": 1}')
    raise AssertionError(kind)


KINDS = ["huge int", "huge float", "lone surrogate in a case id", "lone surrogate in a key"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_reader_refuses_in_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(crafted(kind), encoding="utf-8")
    with pytest.raises(GateError) as info:
        Run.load(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    message.encode("utf-8")  # the message itself can be printed


@pytest.mark.parametrize("kind", KINDS)
def test_fanout_compare_exits_2_in_one_line(tmp_path: Path, kind: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(crafted(kind), encoding="utf-8")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(good_run()))
    for old, new in ((bad, good), (good, bad)):
        done = subprocess.run(
            [sys.executable, "-m", "pytest_fanout.cli", "compare", str(old), str(new)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr and "is refused" in done.stderr


def test_a_sane_file_with_a_paired_surrogate_escape_still_loads(tmp_path: Path) -> None:
    text = json.dumps(good_run()).replace("t.py::test_a", "t.py::test_\\ud83d\\ude00", 1)
    path = tmp_path / "ok.json"
    path.write_text(text)
    assert Run.load(path).cases[0].id.startswith("t.py::test_\U0001f600")


def test_an_old_file_with_clear_settings_loads_with_fingerprints_only(tmp_path: Path) -> None:
    from pytest_fanout.artifacts import fingerprint_value
    from pytest_fanout.gate import GateConfig, compare_runs

    data = good_run()
    data["context"] = {
        "settings": {"FANOUT_DB_PASSWORD": "hunter2-old", "FANOUT_MAX_N": "500"},
        "argv": ["--fanout-save=x.json", "DB_PASSWORD=hunter2-old"],
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = Run.load(path)
    assert "hunter2-old" not in json.dumps(old.to_dict())
    now = Run.from_dict(good_run())
    now.context = {
        "settings": {
            "FANOUT_DB_PASSWORD": fingerprint_value("rotated"),
            "FANOUT_MAX_N": fingerprint_value("500"),
        }
    }
    notes = compare_runs(old, now, GateConfig.from_options(None)).notes
    assert "settings differ (values not shown): changed FANOUT_DB_PASSWORD" in notes
