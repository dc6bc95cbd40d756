"""Exchanges from a HAR file (the HTTP Archive browsers and proxies export).

Each entry whose URL starts with an upstream's base URL becomes an exchange of
that upstream: its method, its path below the base, the response's status,
headers and content (text, or base64 as HAR marks it), and the entry's `time`
(milliseconds, the whole exchange) as its latency. Anything malformed is one
line naming the file and the entry.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pytest_fanout.record.traffic import Exchange


class HarError(ValueError):
    """A HAR file that cannot be read; `str()` is one line."""


def _base(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/")


def _entry(entry: Any, where: str) -> tuple[str, str, int, tuple, bytes, float]:
    try:
        request, response = entry["request"], entry["response"]
        method, url, status = request["method"], request["url"], response["status"]
        headers = tuple((h["name"], h["value"]) for h in response.get("headers", []))
        content = response.get("content", {})
        text = content.get("text", "") or ""
        body = (
            base64.b64decode(text, validate=True)
            if content.get("encoding") == "base64"
            else text.encode()
        )
        latency = float(entry.get("time", 0.0))
    except (KeyError, TypeError, AttributeError) as exc:
        raise HarError(f"{where}: not a HAR entry (missing or wrong {exc})") from None
    except (binascii.Error, ValueError) as exc:
        raise HarError(f"{where}: unreadable content: {exc}") from None
    if not isinstance(method, str) or not isinstance(url, str) or not isinstance(status, int):
        raise HarError(f"{where}: method, url or status has the wrong type")
    return method, url, status, headers, body, latency


def exchanges_from_har(path: str | Path, upstreams: Mapping[str, str]) -> dict[str, list[Exchange]]:
    """name -> the exchanges of that upstream (base URL) in the file, in its order."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise HarError(f"{path}: not a HAR file (not JSON: {exc})") from None
    entries = data.get("log", {}).get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise HarError(f"{path}: not a HAR file (no log.entries list)")
    bases = {name: _base(url) for name, url in upstreams.items()}
    found: dict[str, list[Exchange]] = {name: [] for name in upstreams}
    for index, entry in enumerate(entries):
        method, url, status, headers, body, latency = _entry(entry, f"{path}: entry {index}")
        scheme, netloc, full_path = _base(url)
        raw_path = urlsplit(url).path or "/"
        for name, (b_scheme, b_netloc, b_path) in bases.items():
            if (scheme, netloc) != (b_scheme, b_netloc):
                continue
            if full_path != b_path and not raw_path.startswith(b_path + "/"):
                continue
            below = raw_path[len(b_path) :] or "/"
            found[name].append(Exchange(method.upper(), below, status, headers, body, latency))
            break
    return found
