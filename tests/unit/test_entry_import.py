"""The pytest entry point is light: loading the plugin imports no server, framework or Locust.

pytest loads `pytest_fanout` in every run of every project where it is installed;
the heavy libraries wait until a fanout fixture or option is used. The cost itself
is a benchmark (benchmarks/entry_import.py), not a timed test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

HEAVY = ("uvicorn", "fastapi", "starlette", "locust", "gevent", "httpx2", "pydantic", "aiohttp")


def test_the_pytest11_entry_point_names_the_package() -> None:
    [entry] = [e for e in metadata.entry_points(group="pytest11") if e.name == "pytest_fanout"]
    assert entry.value == "pytest_fanout"


def test_importing_the_entry_point_and_its_plugins_imports_nothing_heavy() -> None:
    code = (
        "import json, sys\n"
        "import pytest_fanout, pytest_fanout.plugin, pytest_fanout.gate.plugin,"
        " pytest_fanout.load.plugin\n"
        "from pytest_fanout.spec import resolve\n"
        "resolve({}, start='.')\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == []


def test_a_public_name_loads_its_module_on_first_use() -> None:
    # Measurement is light data (no httpx2); Fanout sends requests (httpx2 with it).
    code = (
        "import json, sys\n"
        "import pytest_fanout\n"
        "before = 'httpx2' in sys.modules\n"
        "pytest_fanout.Measurement\n"
        "data = 'httpx2' in sys.modules\n"
        "pytest_fanout.Fanout\n"
        "print(json.dumps([before, data, 'httpx2' in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == [False, False, True]


def test_the_measurement_data_loads_without_httpx2_or_the_servers() -> None:
    # The gate reads saved runs without the measuring machinery: Measurement is plain data.
    code = (
        "import json, sys\n"
        "heavy = ('httpx2', 'pytest_fanout.servers', 'pytest_fanout.measure')\n"
        "import pytest_fanout.measurement\n"
        "alone = [m for m in heavy if m in sys.modules]\n"
        "import pytest_fanout.gate.runs, pytest_fanout.gate.report, pytest_fanout.gate.verdict\n"
        "print(json.dumps([alone, [m for m in heavy if m in sys.modules]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == [[], []]


def test_a_session_that_uses_no_fanout_fixture_imports_nothing_heavy(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(
        f"""
        import sys

        def pytest_sessionfinish(session):
            heavy = [m for m in {HEAVY!r} if m in sys.modules]
            print("HEAVY:", heavy)
        """
    )
    pytester.makepyfile("def test_plain():\n    assert 1 + 1 == 2\n")
    # Ours alone: other installed plugins (locust's, schemathesis') import their own.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess("-s", "-p", "pytest_fanout")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*HEAVY: []"])
