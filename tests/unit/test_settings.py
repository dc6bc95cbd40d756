"""The app's settings come from FANOUT_* variables and refuse unusable values by name."""

from __future__ import annotations

import pytest

from app.settings import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.max_n == 1000
    assert settings.upstream_url == "http://127.0.0.1:8001"
    assert settings.transport == "aiohttp"


def test_values_are_read_and_typed() -> None:
    settings = Settings.from_env(
        {"FANOUT_MAX_N": "50", "FANOUT_CALL_TIMEOUT_S": "0.5", "FANOUT_TRANSPORT": "httpx"}
    )
    assert (settings.max_n, settings.call_timeout_s, settings.transport) == (50, 0.5, "httpx")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FANOUT_MAX_N": "lots"}, "FANOUT_MAX_N='lots' is not a valid int"),
        ({"FANOUT_MAX_N": "0"}, "FANOUT_MAX_N must be positive"),
        ({"FANOUT_TRANSPORT": "curl"}, "FANOUT_TRANSPORT must be one of"),
        ({"FANOUT_UPSTREAM_URL": "file:///etc/passwd"}, "must start with http"),
        ({"FANOUT_CALL_OVERHEAD_MS": "-1"}, "must be >= 0"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Settings.from_env(env)
