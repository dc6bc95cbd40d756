"""Secrets never leave the run: setting values become fingerprints, credentials are masked.

Why apart: a saved run travels as a CI artifact and its report lands in a pull
request. The run keeps each setting's NAME and a short, salted, slow hash of
its value (so "settings differ" still works), never the value; and every line
the gate prints or writes passes `redact`, which masks what looks like a
credential (KEY=VALUE with a secret-like key, a URL's password, a bearer token).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

#: A fingerprinted value starts with this; an old file's clear values are fingerprinted on load.
FINGERPRINT_PREFIX = "fp:"
_SALT = b"pytest-fanout settings fingerprint v1"
#: Slow on purpose (a dictionary attack costs this much per guess) and short (many values share
#: one fingerprint): enough to tell "changed", not to recover a value.
_ITERATIONS = 20_000
_HEX_CHARS = 10

#: Names that hold credentials (matched anywhere in a KEY, case-insensitive).
SECRET_WORDS = (
    r"password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|auth|credential"
    r"|private[_-]?key|session|cookie|signature|dsn"
)
_KEY_VALUE = re.compile(
    rf"(?i)(?P<key>[A-Za-z0-9_.-]*(?:{SECRET_WORDS})[A-Za-z0-9_.-]*)(?P<sep>\s*(?:=|:(?!:))\s*)(?P<value>[^\s,;&'\"<>`)]+)"
)
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^\s:/@]*):(?P<pw>[^\s/@]+)@"
)
_BEARER = re.compile(r"(?i)\b(?P<kind>bearer|basic|token)\s+(?P<value>[A-Za-z0-9._~+/=-]{8,})")
MASK = "***"


def fingerprint_value(value: str) -> str:
    """ "fp:" and a short salted PBKDF2 hash of `value` (equal values, equal fingerprints)."""
    if value.startswith(FINGERPRINT_PREFIX):
        return value
    digest = hashlib.pbkdf2_hmac("sha256", value.encode("utf-8", "replace"), _SALT, _ITERATIONS)
    return FINGERPRINT_PREFIX + digest.hex()[:_HEX_CHARS]


def fingerprint_settings(settings: Mapping[str, Any]) -> dict[str, str]:
    """{name: fingerprint of its value}: the names stay, the values do not."""
    return {str(k): fingerprint_value(str(v)) for k, v in settings.items()}


def redact(text: str) -> str:
    """`text` with every credential-looking value masked (KEY=VALUE, URL passwords, tokens)."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m['kind']} {MASK}", text)
    return _KEY_VALUE.sub(
        lambda m: m.group(0) if m["value"] == MASK else f"{m['key']}{m['sep']}{MASK}", text
    )


def redact_all(data: Any) -> Any:
    """Every string inside `data` (dicts, lists) redacted; keys too."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact(str(k)): redact_all(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact_all(v) for v in data]
    return data
