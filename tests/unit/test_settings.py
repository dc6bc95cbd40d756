"""The app's settings come from FANOUT_* variables and refuse unusable values by name.

Every number must be finite and in range: NaN, infinity, negatives and zero
timeouts stop the app at start-up with one line naming the variable (issue 11).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest

from app.settings import Settings, SettingsError, variable
from pytest_fanout.limits import DEFAULT_APP
from tests.helpers import REPO


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.max_n == 1000
    assert settings.upstream_url == "http://127.0.0.1:8001"
    assert settings.transport == "aiohttp"
    assert settings.max_pending_calls >= settings.max_n


def test_values_are_read_and_typed() -> None:
    settings = Settings.from_env(
        {
            "FANOUT_MAX_N": "50",
            "FANOUT_CALL_TIMEOUT_S": "0.5",
            "FANOUT_TRANSPORT": "httpx2",
            "FANOUT_MAX_PENDING_CALLS": "120",
            "FANOUT_RETRY_AFTER_S": "3",
            "FANOUT_DEADLINE_S": "",  # empty: the default
            "OTHER": "ignored",
        }
    )
    assert (settings.max_n, settings.call_timeout_s, settings.transport) == (50, 0.5, "httpx2")
    assert (settings.max_pending_calls, settings.retry_after_s) == (120, 3)
    assert settings.deadline_s == Settings().deadline_s


NUMBERS = [f.name for f in fields(Settings) if isinstance(f.default, int | float)]


def test_every_number_is_covered_here() -> None:
    assert set(NUMBERS) == {
        "max_n",
        "max_concurrency",
        "pool_size",
        "max_pending_calls",
        "retry_after_s",
        "call_timeout_s",
        "deadline_s",
        "max_error_reasons",
        "call_overhead_ms",
        "gc_threshold",
    }


@pytest.mark.parametrize("name", NUMBERS)
@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "-1", "1e400", "lots", "1" * 30])
def test_no_number_takes_nan_infinity_a_negative_or_a_huge_value(name: str, raw: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({variable(name): raw})
    line = str(refused.value)
    assert line.startswith(f"{variable(name)}={raw!r}: "), line
    assert "\n" not in line


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FANOUT_DEADLINE_S": "nan"}, "FANOUT_DEADLINE_S='nan': Input should be a finite number"),
        ({"FANOUT_CALL_TIMEOUT_S": "inf"}, "FANOUT_CALL_TIMEOUT_S='inf': Input should be a finite"),
        ({"FANOUT_DEADLINE_S": "0"}, "FANOUT_DEADLINE_S='0': Input should be greater than 0"),
        ({"FANOUT_DEADLINE_S": "3601"}, "FANOUT_DEADLINE_S='3601': Input should be less than or"),
        ({"FANOUT_MAX_N": "lots"}, "FANOUT_MAX_N='lots': Input should be a valid integer"),
        ({"FANOUT_MAX_N": "1.5"}, "FANOUT_MAX_N='1.5': Input should be a valid integer"),
        ({"FANOUT_MAX_N": "0"}, "FANOUT_MAX_N='0': Input should be greater than or equal to 1"),
        ({"FANOUT_POOL_SIZE": "-5"}, "FANOUT_POOL_SIZE='-5': Input should be greater than or"),
        ({"FANOUT_CALL_OVERHEAD_MS": "-1"}, "FANOUT_CALL_OVERHEAD_MS='-1': Input should be great"),
        ({"FANOUT_RETRY_AFTER_S": "0"}, "FANOUT_RETRY_AFTER_S='0': Input should be greater than"),
        ({"FANOUT_TRANSPORT": "curl"}, "FANOUT_TRANSPORT='curl': Input should be 'aiohttp' or"),
        ({"FANOUT_UPSTREAM_URL": "file:///etc/passwd"}, "FANOUT_UPSTREAM_URL must start with"),
        (
            {"FANOUT_MAX_N": "100", "FANOUT_MAX_PENDING_CALLS": "99"},
            "FANOUT_MAX_PENDING_CALLS (99) must be at least FANOUT_MAX_N (100)",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    assert str(refused.value).startswith(message), str(refused.value)


def test_every_bad_variable_is_named_on_the_one_line() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"FANOUT_DEADLINE_S": "nan", "FANOUT_POOL_SIZE": "0"})
    line = str(refused.value)
    assert "FANOUT_DEADLINE_S='nan'" in line and "FANOUT_POOL_SIZE='0'" in line
    assert "\n" not in line


def test_settings_built_in_code_are_checked_too() -> None:
    with pytest.raises(ValueError, match="finite number"):
        Settings(deadline_s=float("nan"))


@pytest.mark.parametrize(
    ("variable_name", "raw"), [("FANOUT_DEADLINE_S", "nan"), ("FANOUT_CALL_TIMEOUT_S", "inf")]
)
def test_uvicorn_refuses_to_start_with_one_line(variable_name: str, raw: str) -> None:
    """Plain uvicorn on the shipped app exits 1 with one line naming the variable."""
    env = {"PATH": "/usr/bin:/bin", variable_name: raw}
    done = subprocess.run(
        [sys.executable, "-m", "uvicorn", DEFAULT_APP, "--port", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"app: refusing to start: {variable_name}='{raw}': Input should be a finite number"
    ]
