"""The machine fingerprint: is a saved baseline's wall time comparable with this run's?

Why apart: raw latency (median, p95, CPU per request) only travels between
runs of the same machine and software. Every saved run records the fingerprint
below; the comparison gates latency against a baseline only when both
fingerprints are equal, and otherwise says which field differs.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

#: The fields of a fingerprint, in the order a "differs" line names them.
FINGERPRINT_FIELDS = ("cpu_model", "cores", "python", "os", "package")


def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; elsewhere what `platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@lru_cache(maxsize=1)
def machine_fingerprint() -> dict[str, Any]:
    """CPU model, cores, Python, OS and this package's version: what a saved run records."""
    try:
        package = metadata.version("pytest-fanout")
    except metadata.PackageNotFoundError:
        package = "unknown"
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "package": package,
    }


def fingerprint_difference(base: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """Why raw latency of the two runs is not comparable, in a few words; None when it is.

    `base` and `now` are run contexts (their "fingerprint" entry is read).
    """
    old, new = base.get("fingerprint"), now.get("fingerprint")
    if not isinstance(old, Mapping):
        return "the baseline records no machine fingerprint (saved by an older pytest-fanout)"
    if not isinstance(new, Mapping):
        return "this run records no machine fingerprint"
    diffs = [
        f"{key} {old.get(key)!s} -> {new.get(key)!s}"
        for key in FINGERPRINT_FIELDS
        if old.get(key) != new.get(key)
    ]
    return "the machine differs: " + ", ".join(diffs) if diffs else None
