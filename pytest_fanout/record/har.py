"""Exchanges from a HAR file (the HTTP Archive browsers and proxies export).

Each entry whose URL starts with an upstream's base URL becomes an exchange of
that upstream: its method, its path below the base, the response's status,
headers and content (text, or base64 as HAR marks it), and the entry's `time`
(milliseconds, the whole exchange) as its latency. Anything malformed is one
line naming the file and the entry. Bounded before anything is held: the file's
size (`MAX_HAR_BYTES`, checked before it is parsed), its entries
(`MAX_RECORDED_EXCHANGES`), an answer's headers (`MAX_RECORDED_HEADERS`), its
nesting (`strict_json_loads`) and each body kept (`MAX_RECORDED_BODY`: a longer
one is not decoded). An entry with status 0 (the
browser got no answer: blocked, aborted) is not an exchange and is left out.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pytest_fanout.limits import (
    MAX_HAR_BYTES,
    MAX_RECORDED_BODY,
    MAX_RECORDED_EXCHANGES,
    MAX_RECORDED_HEADERS,
    strict_json_loads,
)
from pytest_fanout.record.traffic import Exchange


class HarError(ValueError):
    """A HAR file that cannot be read; `str()` is one line."""


def _base(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/")


def _body(content: Any) -> bytes | None:
    """The content's bytes; None when longer than a route may hold (not decoded then)."""
    text = content.get("text", "") or ""
    if not isinstance(text, str):
        raise TypeError("content.text")
    if content.get("encoding") == "base64":
        if len(text) > (MAX_RECORDED_BODY + 2) // 3 * 4 + 4:
            return None
        body = base64.b64decode(text, validate=True)
    else:
        if len(text) > MAX_RECORDED_BODY:
            return None
        body = text.encode()
    return None if len(body) > MAX_RECORDED_BODY else body


def _entry(entry: Any, where: str) -> tuple[str, str, int, tuple, bytes | None, float]:
    try:
        request, response = entry["request"], entry["response"]
        method, url, status = request["method"], request["url"], response["status"]
        listed = response.get("headers", [])
        if len(listed) > MAX_RECORDED_HEADERS:
            raise HarError(
                f"{where}: {len(listed)} response headers is above the limit of"
                f" {MAX_RECORDED_HEADERS} an answer"
            )
        headers = tuple((h["name"], h["value"]) for h in listed)
        body = _body(response.get("content", {}))
        latency = float(entry.get("time", 0.0))
    except HarError:
        raise
    except (KeyError, TypeError, AttributeError) as exc:
        raise HarError(f"{where}: not a HAR entry (missing or wrong {exc})") from None
    except (binascii.Error, ValueError, UnicodeError) as exc:
        raise HarError(f"{where}: unreadable content: {exc}") from None
    if not isinstance(method, str) or not isinstance(url, str) or not isinstance(status, int):
        raise HarError(f"{where}: method, url or status has the wrong type")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers):
        raise HarError(f"{where}: a response header's name or value is not a string")
    return method, url, status, headers, body, latency


def exchanges_from_har(path: str | Path, upstreams: Mapping[str, str]) -> dict[str, list[Exchange]]:
    """name -> the exchanges of that upstream (base URL) in the file, in its order."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            # Its size first (nothing read); then never more than the bound (a pipe or a
            # file growing meanwhile has no true size).
            too_big = os.fstat(file.fileno()).st_size > MAX_HAR_BYTES
            raw = b"" if too_big else file.read(MAX_HAR_BYTES + 1)
        if too_big or len(raw) > MAX_HAR_BYTES:
            raise HarError(
                f"{path}: larger than the limit of {MAX_HAR_BYTES // (1024 * 1024)} MiB a HAR"
                " file (export fewer requests, or filter it to the upstreams recorded)"
            )
        data = strict_json_loads(raw.decode("utf-8-sig"))
    except FileNotFoundError:
        raise HarError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, HarError):
            raise
        raise HarError(f"{path}: not a HAR file (not JSON: {exc})") from None
    log = data.get("log") if isinstance(data, dict) else None
    entries = log.get("entries") if isinstance(log, dict) else None
    if not isinstance(entries, list):
        raise HarError(f"{path}: not a HAR file (no log.entries list)")
    if len(entries) > MAX_RECORDED_EXCHANGES:
        raise HarError(
            f"{path}: {len(entries)} entries is above the limit of {MAX_RECORDED_EXCHANGES:,}"
            " (export fewer requests)"
        )
    bases = {name: _base(url) for name, url in upstreams.items()}
    found: dict[str, list[Exchange]] = {name: [] for name in upstreams}
    for index, entry in enumerate(entries):
        where = f"{path}: entry {index}"
        method, url, status, headers, body, latency = _entry(entry, where)
        if status == 0:
            continue  # no answer came (HAR's status 0): nothing to repeat
        scheme, netloc, full_path = _base(url)
        raw_path = urlsplit(url).path or "/"
        for name, (b_scheme, b_netloc, b_path) in bases.items():
            if (scheme, netloc) != (b_scheme, b_netloc):
                continue
            if full_path != b_path and not raw_path.startswith(b_path + "/"):
                continue
            below = raw_path[len(b_path) :] or "/"
            found[name].append(
                Exchange(
                    method.upper(),
                    below,
                    status,
                    headers,
                    body or b"",
                    latency,
                    source=where,
                    body_dropped=body is None,
                )
            )
            break
    return found
