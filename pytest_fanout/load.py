"""Locust as a bounded SUBPROCESS, and its results as plain, comparable data.

Locust is never imported here: it monkey-patches the interpreter with gevent,
which would break pytest and httpx in the calling process. `run_locust()`
starts `python -m locust -f locustfiles/ --headless` with a `--run-time` and a
subprocess timeout, in a private work directory, and parses the JSON report
it writes (`--json-file`).

Why the JSON and not the CSV: the JSON holds each endpoint's full response
time histogram (Locust's own buckets) and its timestamps, at the moment Locust
quits; the `_stats.csv` is rewritten once a second by a background greenlet,
so its last version can miss the final second, and its percentiles are
pre-rounded. Percentiles computed here from the histogram use Locust's own
rule (`calculate_response_time_percentile`), so they equal what Locust prints.

The thresholds (`Thresholds`, `Violation`) are also defined here, as pure
functions of the numbers: the locustfiles apply them when Locust quits, and
the unit tests check them without a run.

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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_fanout.argtypes import fraction, non_negative_float
from pytest_fanout.proctree import processes_with_env

SCHEMA = 1

#: Exit statuses of a `locust -f locustfiles/` run. 0, 1 and 2 are Locust's own
#: (1: there were failed requests; 2: an unhandled exception or a usage error).
EXIT_OK = 0
EXIT_FAILED_REQUESTS = 1
EXIT_USAGE = 2
#: A threshold (--fanout-max-fail-ratio, --fanout-max-p95-ms, --fanout-min-rps) was violated.
EXIT_THRESHOLD = 3
#: The target could not be used: --host does not answer, or the embedded stack did not start.
EXIT_TARGET = 4

#: Every threshold line starts with this, so a CI log and `run_locust` can find them.
VIOLATION_PREFIX = "fanout: threshold violated: "
TOTAL_NAME = "Aggregated"
#: The environment variable that marks every process a `run_locust` call starts.
MARKER_ENV = "FANOUT_LOAD_RUN"


# ---- results ---------------------------------------------------------------


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


# ---- thresholds ------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One threshold that one row broke."""

    option: str
    metric: str
    endpoint: str
    limit: float
    value: float
    unit: str = ""

    def line(self) -> str:
        """One line naming the threshold, its limit and the measured value."""
        return (
            f"{VIOLATION_PREFIX}{self.option} {_fmt(self.limit)}{self.unit}: "
            f"{self.metric} of {self.endpoint} is {_fmt(self.value)}{self.unit}"
        )


def _fmt(value: float) -> str:
    return f"{value:.4g}" if value < 10 else f"{value:.1f}".removesuffix(".0")


@dataclass(frozen=True)
class Thresholds:
    """Limits applied to every endpoint and to the total; None means "not checked"."""

    max_fail_ratio: float | None = None
    max_p95_ms: float | None = None
    min_rps: float | None = None

    @classmethod
    def from_options(cls, options: Any) -> Thresholds:
        """From Locust's parsed options; values typed in the web UI arrive as strings."""

        def read(attr: str, kind: Any) -> float | None:
            raw = getattr(options, attr, None)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                return None
            try:
                return kind(str(raw).strip()) if isinstance(raw, str) else kind(raw)
            except argparse.ArgumentTypeError as exc:
                option = "--" + attr.replace("_", "-")
                raise ValueError(f"{option}: {exc}") from None

        return cls(
            max_fail_ratio=read("fanout_max_fail_ratio", fraction),
            max_p95_ms=read("fanout_max_p95_ms", non_negative_float),
            min_rps=read("fanout_min_rps", non_negative_float),
        )

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_fail_ratio, self.max_p95_ms, self.min_rps))

    def describe(self) -> str:
        parts = []
        if self.max_fail_ratio is not None:
            parts.append(f"--fanout-max-fail-ratio {_fmt(self.max_fail_ratio)}")
        if self.max_p95_ms is not None:
            parts.append(f"--fanout-max-p95-ms {_fmt(self.max_p95_ms)}")
        if self.min_rps is not None:
            parts.append(f"--fanout-min-rps {_fmt(self.min_rps)}")
        return ", ".join(parts) or "none"

    def check(self, rows: Iterable[EndpointResult]) -> list[Violation]:
        """Every violation, endpoint rows first, then the total."""
        found = []
        for row in rows:
            label = row.key if row.name != TOTAL_NAME else "all endpoints (total)"
            if self.max_fail_ratio is not None and row.fail_ratio > self.max_fail_ratio:
                found.append(
                    Violation(
                        "--fanout-max-fail-ratio",
                        "failure ratio",
                        label,
                        self.max_fail_ratio,
                        row.fail_ratio,
                    )
                )
            if self.max_p95_ms is not None and row.p95_ms > self.max_p95_ms:
                found.append(
                    Violation(
                        "--fanout-max-p95-ms", "p95", label, self.max_p95_ms, row.p95_ms, " ms"
                    )
                )
            if self.min_rps is not None and row.rps < self.min_rps:
                found.append(
                    Violation("--fanout-min-rps", "requests/s", label, self.min_rps, row.rps, "/s")
                )
        return found

    def to_args(self) -> list[str]:
        args = []
        if self.max_fail_ratio is not None:
            args += ["--fanout-max-fail-ratio", repr(self.max_fail_ratio)]
        if self.max_p95_ms is not None:
            args += ["--fanout-max-p95-ms", repr(self.max_p95_ms)]
        if self.min_rps is not None:
            args += ["--fanout-min-rps", repr(self.min_rps)]
        return args


# ---- the subprocess runner -------------------------------------------------


class LoadRunError(RuntimeError):
    """Locust did not produce results (it failed to start, or timed out); `.output` says why."""

    def __init__(self, message: str, output: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        self.output = output
        self.exit_code = exit_code


def default_locustfile() -> Path:
    """The repository's `locustfiles/` (FANOUT_LOCUSTFILE overrides it)."""
    configured = os.environ.get("FANOUT_LOCUSTFILE")
    if configured:
        return Path(configured)
    beside_package = Path(__file__).resolve().parent.parent / "locustfiles"
    if beside_package.is_dir():
        return beside_package
    return Path.cwd() / "locustfiles"


def marked_processes(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds MARKER_ENV=marker."""
    return processes_with_env(MARKER_ENV, marker)


def kill_marked(marker: str) -> list[int]:
    """SIGKILL whatever a run left behind; return what was found."""
    left = marked_processes(marker)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def locust_command(
    locustfile: str | os.PathLike[str],
    *,
    host: str | None,
    users: int,
    spawn_rate: float,
    run_time_s: int,
    report_prefix: str | os.PathLike[str],
    user_classes: Sequence[str] = (),
    tags: Sequence[str] = (),
    n: int | None = None,
    max_concurrent: int | None = None,
    thresholds: Thresholds | None = None,
    processes: int | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The `python -m locust ...` command line `run_locust` runs (public: tests print it)."""
    command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless"]
    command += ["--users", str(users), "--spawn-rate", f"{spawn_rate:g}"]
    command += ["--run-time", f"{run_time_s}s", "--only-summary"]
    command += ["--json-file", str(report_prefix), "--csv", str(report_prefix)]
    if host:
        command += ["--host", host]
    if tags:
        command += ["--tags", *tags]
    if n is not None:
        command += ["--fanout-n", str(n)]
    if max_concurrent is not None:
        command += ["--fanout-max-concurrent", str(max_concurrent)]
    if thresholds is not None:
        command += thresholds.to_args()
    if processes:
        command += ["--processes", str(processes)]
    command += list(extra_args)
    command += list(user_classes)
    return command


def run_locust(
    host: str | None = None,
    *,
    users: int = 10,
    spawn_rate: float | None = None,
    run_time_s: float = 5,
    user_classes: Sequence[str] = (),
    tags: Sequence[str] = (),
    n: int | None = None,
    max_concurrent: int | None = None,
    thresholds: Thresholds | None = None,
    processes: int | None = None,
    extra_args: Sequence[str] = (),
    locustfile: str | os.PathLike[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    name: str = "",
) -> LoadResult:
    """Run Locust headless for `run_time_s` seconds and return what it measured.

    With `host=None` the locustfiles start (and stop) their embedded stack.
    The run is bounded twice: Locust's `--run-time`, and `timeout_s` (default
    run time + 60 s) after which the whole process group is killed and
    LoadRunError raised. Threshold violations and failed requests do NOT
    raise: they are in `exit_code` and `violations`, for the test to assert.
    """
    run_time = max(1, math.ceil(run_time_s))
    rate = float(spawn_rate if spawn_rate is not None else users)
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="fanout-load-"))
    work.mkdir(parents=True, exist_ok=True)
    prefix = work / "locust"
    command = locust_command(
        locustfile if locustfile is not None else default_locustfile(),
        host=host,
        users=users,
        spawn_rate=rate,
        run_time_s=run_time,
        report_prefix=prefix,
        user_classes=user_classes,
        tags=tags,
        n=n,
        max_concurrent=max_concurrent,
        thresholds=thresholds,
        processes=processes,
        extra_args=extra_args,
    )
    marker = uuid.uuid4().hex
    child_env = {**os.environ, **(env or {}), MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}
    log_path = work / "locust.log"
    limit = timeout_s if timeout_s is not None else run_time + 60
    with open(log_path, "wb") as log:
        # cwd=work: no locust.conf or pyproject.toml of the caller changes the run.
        proc = subprocess.Popen(
            command,
            cwd=work,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=limit)
        except BaseException:
            _stop_group(proc)
            kill_marked(marker)
            output = log_path.read_text(errors="replace")
            raise LoadRunError(
                f"locust did not finish within {limit:g}s (run time {run_time}s): killed",
                output,
            ) from None
    output = log_path.read_text(errors="replace")
    left = kill_marked(marker)
    if left:
        raise LoadRunError(f"locust left processes behind (killed): {left}", output, code)
    report = prefix.with_name(prefix.name + ".json")
    if not report.exists():
        last = _last_line(output)
        raise LoadRunError(f"locust exited with status {code} and no report: {last}", output, code)
    endpoints, total, duration = parse_stats_json(json.loads(report.read_text()))
    return LoadResult(
        endpoints=endpoints,
        total=total,
        exit_code=code,
        duration_s=duration,
        name=name,
        host=host or _embedded_host(output),
        users=users,
        spawn_rate=rate,
        run_time_s=run_time,
        user_classes=list(user_classes),
        options={
            k: v
            for k, v in (("fanout_n", n), ("fanout_max_concurrent", max_concurrent))
            if v is not None
        },
        violations=[
            line.strip()
            for line in output.splitlines()
            if line.strip().startswith(VIOLATION_PREFIX)
        ],
        workdir=work,
        output=output,
    )


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return
            time.sleep(0.05)  # polling the exit, not synchronising
    proc.wait(timeout=5)


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if "fanout:" in line or "ERROR" in line or "error:" in line:
            return line
    return lines[-1] if lines else "(no output)"


EMBEDDED_PREFIX = "fanout: embedded stack: app "


def _embedded_host(output: str) -> str:
    for line in output.splitlines():
        if EMBEDDED_PREFIX in line:
            return line.split(EMBEDDED_PREFIX, 1)[1].split()[0]
    return ""
