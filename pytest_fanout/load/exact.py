"""Exact latency: HdrHistogram helpers, and how a run's exact numbers reach a `LoadResult`.

Locust rounds response times into buckets of about two significant figures
and computes percentiles from them. The Locust side of the harness
(`pytest_fanout.load.arrival`) also records every latency, in microseconds,
into an HdrHistogram (3 significant figures over 1 us .. 1 h), merges the
workers' histograms on the master, and writes them next to Locust's JSON
report as `<json-file prefix>.fanout.json`::

    {"schema": 1,
     "endpoints": {"GET /async/10": "<encoded HdrHistogram>", ...,
                   "Aggregated": "<encoded>"},
     "open_model": {...OpenModelResult.to_dict()} or null}

`apply_exact()` then replaces each row's percentiles, min, max, mean and
histogram with the exact ones. Pure Python, no Locust import: pytest and the
`fanout` command use it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from pytest_fanout.load.results import TOTAL_NAME, EndpointResult, OpenModelResult

__all__ = [
    "EXACT_SUFFIX",
    "apply_exact",
    "decode",
    "encode",
    "exact_row",
    "new_histogram",
    "read_exact_file",
    "record_ms",
    "summary_ms",
]

#: `<--json-file prefix>` + this: the file the Locust side writes its exact numbers to.
EXACT_SUFFIX = ".fanout.json"
SCHEMA = 1

_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000  # one hour: any latency a bounded run can see
_SIGNIFICANT_FIGURES = 3


def new_histogram() -> HdrHistogram:
    """An empty histogram of latencies in microseconds, 3 significant figures."""
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _SIGNIFICANT_FIGURES)


def record_ms(histogram: HdrHistogram, ms: float) -> None:
    """Record one latency given in milliseconds (clamped into the histogram's range)."""
    us = int(round(ms * 1000))
    histogram.record_value(min(max(us, _LOWEST_US), _HIGHEST_US))


def encode(histogram: HdrHistogram) -> str:
    """The histogram compressed and base64-encoded (HdrHistogram's V2 format), as text."""
    encoded = histogram.encode()
    return encoded.decode("ascii") if isinstance(encoded, bytes) else encoded


def decode(encoded: str) -> HdrHistogram:
    """A histogram from its encoded (compressed, base64) form, as `encode()` wrote it."""
    histogram = new_histogram()
    if encoded:
        histogram.decode_and_add(encoded)
    return histogram


def summary_ms(histogram: HdrHistogram) -> dict[str, float]:
    """count, min, mean, p50, p95, p99 and max of a histogram, in milliseconds."""
    count = histogram.get_total_count()
    if not count:
        return dict.fromkeys(("count", "min", "mean", "p50", "p95", "p99", "max"), 0.0)
    values = histogram.get_percentile_to_value_dict([50.0, 95.0, 99.0])
    return {
        "count": float(count),
        "min": histogram.get_min_value() / 1000,
        "mean": histogram.get_mean_value() / 1000,
        "p50": values[50.0] / 1000,
        "p95": values[95.0] / 1000,
        "p99": values[99.0] / 1000,
        "max": histogram.get_max_value() / 1000,
    }


def _buckets_ms(histogram: HdrHistogram) -> dict[str, int]:
    """{"ms": count} over the histogram's recorded buckets (what the gate's tests sample)."""
    buckets: dict[str, int] = {}
    for item in histogram.get_recorded_iterator():
        ms = histogram.get_highest_equivalent_value(item.value_iterated_to) / 1000
        key = str(int(ms)) if float(ms).is_integer() else repr(ms)
        buckets[key] = buckets.get(key, 0) + item.count_added_in_this_iter_step
    return buckets


def exact_row(row: EndpointResult, histogram: HdrHistogram) -> EndpointResult:
    """`row` with its latency figures taken from the exact histogram (requests, rps kept)."""
    if not histogram.get_total_count():
        return row
    s = summary_ms(histogram)
    return dataclasses.replace(
        row,
        p50_ms=s["p50"],
        p95_ms=s["p95"],
        p99_ms=s["p99"],
        avg_ms=s["mean"],
        min_ms=s["min"],
        max_ms=s["max"],
        histogram=_buckets_ms(histogram),
        exact=True,
    )


def read_exact_file(prefix: str | Path) -> dict[str, Any] | None:
    """The Locust side's exact numbers written beside `<prefix>.json`, or None if absent."""
    path = Path(f"{prefix}{EXACT_SUFFIX}")
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("schema") != SCHEMA:
        return None
    return data


def apply_exact(
    endpoints: Mapping[str, EndpointResult],
    total: EndpointResult,
    exact: Mapping[str, Any] | None,
) -> tuple[dict[str, EndpointResult], EndpointResult, OpenModelResult | None]:
    """Rows with exact latency where the exact file has a histogram for them, and the open
    model's counts (None for a closed-model run, or when there is no exact file)."""
    if not exact:
        return dict(endpoints), total, None
    histograms = exact.get("endpoints", {})
    rows = {
        key: exact_row(row, decode(histograms[key])) if key in histograms else row
        for key, row in endpoints.items()
    }
    if TOTAL_NAME in histograms:
        total = exact_row(total, decode(histograms[TOTAL_NAME]))
    open_model = exact.get("open_model")
    return rows, total, OpenModelResult.from_dict(open_model) if open_model else None
