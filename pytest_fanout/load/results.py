"""Locust results as plain, comparable data: per endpoint and in total.

`LoadResult.to_dict()` has this stable, JSON-serialisable shape (schema 1)::

    {
      "kind": "locust",            # a load result, not a Measurement
      "schema": 1,
      "name": "test_async_beats_sync",
      "host": "http://127.0.0.1:41234",
      "users": 10, "spawn_rate": 10.0, "run_time_s": 6,
      "user_classes": ["AsyncUser", "SyncUser"],   # [] = Locust's default set
      "options": {"fanout_n": 10, "fanout_max_concurrent": 5},
      "exit_code": 0,              # 0 ok, 1 failed requests, 3 threshold violated, ...
      "violations": [],            # the "fanout: threshold violated: ..." lines
      "duration_s": 5.93,          # first request to last, what requests/s divide by
      "endpoints": {               # key "METHOD name", sorted
        "GET /async/10": {"method": "GET", "name": "/async/10",
                          "requests": 412, "failures": 0, "fail_ratio": 0.0,
                          "rps": 69.5, "p50_ms": 110, "p95_ms": 130, "p99_ms": 150,
                          "avg_ms": 112.4, "min_ms": 101, "max_ms": 180,
                          "histogram": {"110": 380, "120": 20, "130": 12}}
      },
      "total": {...the same keys, method "", name "Aggregated"}
    }

Times are milliseconds (Locust's unit), rates per second. `LoadResult.from_dict`
reads it back. "histogram" is Locust's own response-time histogram of the row
({"ms": count}, Locust's rounded buckets, string keys as JSON needs): it lets
the regression gate test whole distributions, not one percentile, against
the noise. It is left out when empty, and a dict without it (written before it
existed) still reads.

When the Locust side wrote its exact numbers (`load/exact.py`), a row's
latency figures and histogram come from an HdrHistogram instead and the row
says `"exact": true`; an arrival-rate run adds `"open_model"` (target and
achieved rate, scheduled, started and dropped starts: `OpenModelResult`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_fanout.limits import ExitCode

SCHEMA = 1
TOTAL_NAME = "Aggregated"

#: Exit statuses of a `locust -f locustfiles/` run: the one set of `pytest_fanout.limits.ExitCode`.
EXIT_OK = ExitCode.OK
EXIT_FAILED_REQUESTS = ExitCode.FAILED
EXIT_USAGE = ExitCode.USAGE
EXIT_THRESHOLD = ExitCode.THRESHOLD
EXIT_TARGET = ExitCode.TARGET_UNUSABLE


@dataclass(frozen=True)
class EndpointResult:
    """One row of a load run: an endpoint, or the total ("Aggregated")."""

    method: str
    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float = 0.0
    min_ms: float = 0.0
    max_ms: float = 0.0
    #: Response times {"ms": count} (Locust's buckets); {} when not known.
    histogram: dict[str, int] = field(default_factory=dict, repr=False, hash=False)
    #: True: the latency figures and histogram come from an exact HdrHistogram
    #: (`load/exact.py`), not Locust's rounded buckets.
    exact: bool = False

    @property
    def key(self) -> str:
        return f"{self.method} {self.name}".strip()

    @property
    def fail_ratio(self) -> float:
        if self.requests:
            return self.failures / self.requests
        return 1.0 if self.failures else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        ordered = {k: data[k] for k in ("method", "name", "requests", "failures")}
        ordered["fail_ratio"] = round(self.fail_ratio, 6)
        for k in ("rps", "p50_ms", "p95_ms", "p99_ms", "avg_ms", "min_ms", "max_ms"):
            ordered[k] = round(data[k], 3)
        if self.histogram:
            ordered["histogram"] = _sorted_histogram(self.histogram)
        if self.exact:
            ordered["exact"] = True
        return ordered

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EndpointResult:
        names = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in names}
        values["histogram"] = _sorted_histogram(data.get("histogram") or {})
        return cls(**values)


def _histogram_key(ms: float) -> str:
    """A bucket's JSON key: "110" for 110.0, the float's repr otherwise."""
    value = float(ms)
    return str(int(value)) if value.is_integer() else repr(value)


def _sorted_histogram(histogram: Mapping[Any, Any]) -> dict[str, int]:
    """String keys in increasing response time: the same histogram always writes the same JSON."""
    merged: dict[float, int] = {}
    for bucket, hits in histogram.items():
        merged[float(bucket)] = merged.get(float(bucket), 0) + int(hits)
    return {_histogram_key(ms): hits for ms, hits in sorted(merged.items()) if hits}


@dataclass(frozen=True)
class OpenModelResult:
    """An arrival-rate (open-model) run: the schedule, and how much of it was kept.

    `scheduled` starts were due; `started` began (on time, or late within the
    start grace); `dropped` could not start in time because no user was free.
    Latencies of such a run are measured from each request's intended start.
    """

    target_rps: float
    achieved_rps: float
    scheduled: int
    started: int
    dropped: int
    arrivals: str = "constant"
    grace_ms: float = 0.0
    users: int = 0
    workers: int = 1

    @property
    def dropped_ratio(self) -> float:
        return self.dropped / self.scheduled if self.scheduled else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["achieved_rps"] = round(self.achieved_rps, 3)
        data["dropped_ratio"] = round(self.dropped_ratio, 6)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpenModelResult:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class LoadResult:
    """What one Locust run measured, per endpoint and in total."""

    endpoints: dict[str, EndpointResult]
    total: EndpointResult
    exit_code: int
    duration_s: float
    name: str = ""
    host: str = ""
    users: int = 0
    spawn_rate: float = 0.0
    run_time_s: int = 0
    user_classes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    #: The arrival schedule's counts; None for a closed-model run.
    open_model: OpenModelResult | None = None
    #: Not part of to_dict(): where the reports and logs of this run are.
    workdir: Path | None = None
    output: str = ""

    def endpoint(self, prefix: str) -> EndpointResult:
        """The one endpoint whose name (or "METHOD name") starts with `prefix`, e.g. "/async/"."""
        found = [e for e in self.endpoints.values() if e.name.startswith(prefix) or e.key == prefix]
        if len(found) != 1:
            known = ", ".join(self.endpoints) or "none"
            raise KeyError(f"{len(found)} endpoints match {prefix!r} (endpoints: {known})")
        return found[0]

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        data = self._to_dict()
        if self.open_model is not None:
            data["open_model"] = self.open_model.to_dict()
        return data

    def _to_dict(self) -> dict[str, Any]:
        return {
            "kind": "locust",
            "schema": SCHEMA,
            "name": self.name,
            "host": self.host,
            "users": self.users,
            "spawn_rate": self.spawn_rate,
            "run_time_s": self.run_time_s,
            "user_classes": list(self.user_classes),
            "options": dict(self.options),
            "exit_code": self.exit_code,
            "violations": list(self.violations),
            "duration_s": round(self.duration_s, 3),
            "endpoints": {k: self.endpoints[k].to_dict() for k in sorted(self.endpoints)},
            "total": self.total.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadResult:
        if data.get("kind") != "locust":
            raise ValueError("not a load result (kind != 'locust')")
        return cls(
            endpoints={k: EndpointResult.from_dict(v) for k, v in data["endpoints"].items()},
            total=EndpointResult.from_dict(data["total"]),
            exit_code=int(data["exit_code"]),
            duration_s=float(data["duration_s"]),
            name=data.get("name", ""),
            host=data.get("host", ""),
            users=int(data.get("users", 0)),
            spawn_rate=float(data.get("spawn_rate", 0.0)),
            run_time_s=int(data.get("run_time_s", 0)),
            user_classes=list(data.get("user_classes", [])),
            options=dict(data.get("options", {})),
            violations=list(data.get("violations", [])),
            open_model=(
                OpenModelResult.from_dict(data["open_model"]) if data.get("open_model") else None
            ),
        )

    def table(self) -> str:
        """A small text table: endpoint, requests, failures, requests/s, p50/p95/p99."""
        head = (
            f"{'endpoint':<28} {'reqs':>6} {'fails':>6} {'req/s':>8} "
            f"{'p50':>6} {'p95':>6} {'p99':>6}"
        )
        rows = [head]
        for row in [*(self.endpoints[k] for k in sorted(self.endpoints)), self.total]:
            rows.append(
                f"{row.key:<28} {row.requests:>6} {row.failures:>6} {row.rps:>8.1f} "
                f"{row.p50_ms:>6.0f} {row.p95_ms:>6.0f} {row.p99_ms:>6.0f}"
            )
        return "\n".join(rows)


def percentile_from_histogram(histogram: Mapping[float, int], count: int, q: float) -> float:
    """Locust's own percentile rule over its bucketed response times (q in 0..1)."""
    wanted = int(count * q)
    processed = 0
    for bucket in sorted(histogram, reverse=True):
        processed += histogram[bucket]
        if count - processed <= wanted:
            return bucket
    return 0


def _row(
    method: str, name: str, entries: list[Mapping[str, Any]], duration: float
) -> EndpointResult:
    histogram: dict[float, int] = {}
    for entry in entries:
        for bucket, hits in entry.get("response_times", {}).items():
            key = float(bucket)
            histogram[key] = histogram.get(key, 0) + int(hits)
    requests = sum(int(e["num_requests"]) for e in entries)
    failures = sum(int(e["num_failures"]) for e in entries)
    timed = requests - sum(int(e.get("num_none_requests", 0)) for e in entries)
    total_time = sum(float(e.get("total_response_time", 0)) for e in entries)
    minimums = [e["min_response_time"] for e in entries if e.get("min_response_time") is not None]
    return EndpointResult(
        method=method,
        name=name,
        requests=requests,
        failures=failures,
        rps=requests / duration if duration > 0 else 0.0,
        p50_ms=percentile_from_histogram(histogram, timed, 0.50),
        p95_ms=percentile_from_histogram(histogram, timed, 0.95),
        p99_ms=percentile_from_histogram(histogram, timed, 0.99),
        avg_ms=total_time / timed if timed else 0.0,
        min_ms=float(min(minimums)) if minimums else 0.0,
        max_ms=float(max((e.get("max_response_time") or 0) for e in entries)) if entries else 0.0,
        histogram=_sorted_histogram(histogram),
    )


def parse_stats_json(
    entries: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, EndpointResult], EndpointResult, float]:
    """Per-endpoint rows, the total row and the duration, from Locust's `--json-file` list.

    Requests/s divide by the span from the first entry's start to the last
    request, the same span for every endpoint (as Locust's "req/s" does).
    """
    starts = [float(e["start_time"]) for e in entries if e.get("start_time")]
    lasts = [float(e["last_request_timestamp"]) for e in entries if e.get("last_request_timestamp")]
    duration = (max(lasts) - min(starts)) if starts and lasts else 0.0
    endpoints = {}
    for entry in entries:
        row = _row(entry.get("method") or "", entry["name"], [entry], duration)
        endpoints[row.key] = row
    total = _row("", TOTAL_NAME, list(entries), duration)
    return endpoints, total, duration
