"""Sustained load without drift: Locust on /async/{n} for a bounded time, the app's memory watched.

    python benchmarks/soak.py [--duration 60] [--users 20] [--n 10]

Starts the embedded stack itself (so the app's pid is known), runs Locust as a
subprocess against it (`AsyncUser`, `--host` given, so Locust starts nothing),
samples the app's resident memory (VmRSS from /proc, no psutil) every 0.5 s
from a background thread, and checks, after the run:

- zero failed requests (and Locust's exit status 0);
- the app's RSS at the end of the load within 10% of its RSS after warm-up
  (median of the samples 10-15 s into the load vs median of the last 5 s);
- the app's in-flight count (loop probe) and the upstream's back to 0 within a
  bounded deadline: nothing is stuck;
- exact accounting: the upstream saw exactly n calls per request Locust
  counted (Locust gets `--stop-timeout`, so no request is cut off unrecorded).

Exit status 0 when every criterion holds, 1 when one fails, 2 on bad arguments.
`tests/e2e/test_soak.py` runs the same `run_soak()` for a shorter time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.procfs import status_kib  # noqa: E402
from pytest_fanout.artifacts import render_markdown  # noqa: E402
from pytest_fanout.limits import DEFAULT_APP, import_string, int_between  # noqa: E402
from pytest_fanout.load import LoadResult, LoadRunError, run_locust  # noqa: E402
from pytest_fanout.servers.process import ServerStartError  # noqa: E402
from pytest_fanout.servers.proctree import descendants_of  # noqa: E402
from pytest_fanout.servers.stack import AppServer, Stack, StubUpstreamServer  # noqa: E402

#: The hard bound on one soak run's load phase, in seconds.
MAX_DURATION_S = 60
#: Enough load time for a warm-up window and a separate end window.
MIN_DURATION_S = 20
USER_CLASS = "AsyncUser"
TABLE_HEADERS = (
    "duration",
    "users",
    "n",
    "requests",
    "failures",
    "req/s",
    "p95",
    "RSS after warm-up",
    "RSS at end",
    "change",
)


@dataclass(frozen=True)
class SoakConfig:
    """What to run and what to accept; the defaults are the benchmark's."""

    duration_s: int = 60
    users: int = 20
    n: int = 10
    #: "After warm-up": the median RSS of the samples in [start, start + window) of the load.
    warmup_start_s: float = 10.0
    warmup_window_s: float = 5.0
    #: "At the end": the median RSS of the samples in the last `end_window_s` of the load.
    end_window_s: float = 5.0
    sample_every_s: float = 0.5
    #: The largest accepted |end - warm-up| / warm-up.
    max_rss_change: float = 0.10
    #: How long in-flight counts may take to return to 0 after Locust quits.
    settle_timeout_s: float = 10.0
    #: Locust waits this long for in-flight requests at the end, so it records every one.
    stop_timeout_s: int = 10
    #: The app under test (an ASGI import string) and the directory it is imported from.
    app: str = DEFAULT_APP
    app_dir: str | None = None

    def __post_init__(self) -> None:
        if not MIN_DURATION_S <= self.duration_s <= MAX_DURATION_S:
            raise ValueError(
                f"duration_s must be between {MIN_DURATION_S} and {MAX_DURATION_S} s, "
                f"not {self.duration_s}"
            )
        if self.warmup_start_s + self.warmup_window_s > self.duration_s - self.end_window_s:
            raise ValueError("the warm-up window must end before the end window starts")


@dataclass(frozen=True)
class RssSample:
    """One reading: wall-clock time (to line up with Locust's timestamps) and RSS in KiB."""

    at: float
    rss_kib: int


def vm_rss_kib(pid: int) -> int:
    """VmRSS of one process (all its threads share it), in KiB."""
    return status_kib(pid, "VmRSS")


def app_rss_kib(pid: int) -> int:
    """The whole app's resident memory: the uvicorn process plus any descendant (usually none)."""
    total = vm_rss_kib(pid)
    for child in descendants_of(pid):
        try:
            total += vm_rss_kib(child)
        except OSError:
            continue  # it ended between the scan and the read
    return total


class RssSampler(threading.Thread):
    """Reads the app's RSS every `every_s` seconds until stopped (a sampling rate, not a wait)."""

    def __init__(self, pid: int, every_s: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.every_s = every_s
        self.samples: list[RssSample] = []
        self.error: str = ""
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.samples.append(RssSample(time.time(), app_rss_kib(self.pid)))
            except OSError as exc:  # the app died: the run's checks will say so
                self.error = str(exc)
                return
            self._stop_event.wait(self.every_s)

    def stop(self) -> list[RssSample]:
        self._stop_event.set()
        self.join(timeout=5)
        return self.samples


@dataclass
class SoakResult:
    """Everything one soak run measured, and which criteria it broke."""

    config: SoakConfig
    load: LoadResult
    samples: list[RssSample]
    load_start: float
    load_end: float
    rss_before_kib: int
    rss_idle_after_kib: int
    inflight_after: int
    upstream_inflight_after: int
    settle_s: float
    upstream_requests: int
    upstream_errors: int
    app_requests: int
    loop_lag_max_s: float
    #: The stack's processes, stopped by the time run_soak returns (a test checks they are gone).
    pids: tuple[int, ...] = ()
    sampler_error: str = ""

    def window(self, start: float, end: float) -> list[int]:
        """RSS samples taken in [start, end), wall clock: Locust's timestamps place the load."""
        return [s.rss_kib for s in self.samples if start <= s.at < end]

    @property
    def warm_samples(self) -> list[int]:
        start = self.load_start + self.config.warmup_start_s
        return self.window(start, start + self.config.warmup_window_s)

    @property
    def end_samples(self) -> list[int]:
        return self.window(self.load_end - self.config.end_window_s, self.load_end + 1e-6)

    @property
    def rss_warm_kib(self) -> float:
        return statistics.median(self.warm_samples) if self.warm_samples else float("nan")

    @property
    def rss_end_kib(self) -> float:
        return statistics.median(self.end_samples) if self.end_samples else float("nan")

    @property
    def rss_change(self) -> float:
        """(end - warm-up) / warm-up: positive is growth."""
        return (self.rss_end_kib - self.rss_warm_kib) / self.rss_warm_kib

    def failures(self) -> list[str]:
        """One line per broken criterion; empty when the run passed."""
        found = []
        total = self.load.total
        if self.load.exit_code != 0:
            found.append(f"locust exited with status {self.load.exit_code}")
        if total.requests == 0:
            found.append("locust made no requests")
        if total.failures:
            found.append(f"{total.failures} of {total.requests} requests failed")
        if self.sampler_error:
            found.append(f"RSS sampling stopped: {self.sampler_error}")
        minimum = max(3, int(self.config.warmup_window_s / self.config.sample_every_s) // 2)
        for label, samples in (("warm-up", self.warm_samples), ("end", self.end_samples)):
            if len(samples) < minimum:
                found.append(f"only {len(samples)} RSS samples in the {label} window")
        if self.warm_samples and self.end_samples:
            change = self.rss_change
            if abs(change) > self.config.max_rss_change:
                found.append(
                    f"RSS drifted {change:+.1%} (after warm-up {self.rss_warm_kib / 1024:.1f} MiB,"
                    f" at the end {self.rss_end_kib / 1024:.1f} MiB; "
                    f"limit +/-{self.config.max_rss_change:.0%})"
                )
        if self.inflight_after or self.upstream_inflight_after:
            found.append(
                f"still in flight {self.config.settle_timeout_s:g}s after the run: "
                f"app {self.inflight_after}, upstream {self.upstream_inflight_after}"
            )
        expected = self.config.n * (total.requests - total.failures)
        if self.upstream_requests != expected:
            found.append(
                f"upstream saw {self.upstream_requests} calls, expected exactly {expected} "
                f"(n={self.config.n} x {total.requests - total.failures} successful requests)"
            )
        if self.upstream_errors:
            found.append(f"the upstream answered {self.upstream_errors} calls with an error")
        return found

    @property
    def ok(self) -> bool:
        return not self.failures()

    def table(self) -> str:
        """The Markdown table of docs/soak.md, one row per run, plus the accounting lines."""
        return render_markdown(TABLE_HEADERS, [self.row()]) + "\n\n" + self.details()

    def row(self) -> list[str]:
        total = self.load.total
        return [
            f"{self.load.duration_s:.1f} s",
            str(self.config.users),
            str(self.config.n),
            str(total.requests),
            str(total.failures),
            f"{total.rps:.1f}",
            f"{total.p95_ms:.0f} ms",
            f"{self.rss_warm_kib / 1024:.1f} MiB",
            f"{self.rss_end_kib / 1024:.1f} MiB",
            f"{self.rss_change:+.1%}",
        ]

    def details(self) -> str:
        total = self.load.total
        ok = total.requests - total.failures
        exact = "exact" if self.upstream_requests == self.config.n * ok else "MISMATCH"
        return "\n".join(
            [
                f"RSS: {self.rss_before_kib / 1024:.1f} MiB before load, "
                f"{self.rss_idle_after_kib / 1024:.1f} MiB idle after; "
                f"{len(self.samples)} samples, {len(self.warm_samples)} in the warm-up window, "
                f"{len(self.end_samples)} in the end window; max "
                f"{max((s.rss_kib for s in self.samples), default=0) / 1024:.1f} MiB",
                f"accounting: upstream calls {self.upstream_requests} vs n {self.config.n} x "
                f"{ok} successful requests ({exact}); "
                f"app requests {self.app_requests} (Locust's {total.requests} + its host check)",
                f"after the run: in flight app {self.inflight_after}, upstream "
                f"{self.upstream_inflight_after} (settled in {self.settle_s:.2f} s); "
                f"loop lag max {self.loop_lag_max_s * 1000:.0f} ms",
            ]
        )


def load_window(workdir: Path) -> tuple[float, float]:
    """The load's first and last moment (wall clock) from Locust's own JSON report."""
    entries = json.loads((workdir / "locust.json").read_text())
    starts = [float(e["start_time"]) for e in entries if e.get("start_time")]
    lasts = [float(e["last_request_timestamp"]) for e in entries if e.get("last_request_timestamp")]
    if not starts or not lasts:
        raise LoadRunError("the Locust report has no timestamps: no request was made")
    return min(starts), max(lasts)


def settle(
    app: AppServer, upstream: StubUpstreamServer, timeout_s: float
) -> tuple[int, int, float]:
    """Poll until nothing is in flight in the app or the upstream; bounded by `timeout_s`."""
    began = time.monotonic()
    deadline = began + timeout_s
    while True:
        app_inflight = int(app.probe_stats()["inflight"])
        upstream_inflight = int(upstream.stats()["inflight"])
        if (app_inflight == 0 and upstream_inflight == 0) or time.monotonic() > deadline:
            return app_inflight, upstream_inflight, time.monotonic() - began
        time.sleep(0.05)  # poll interval, not synchronisation


def run_soak(config: SoakConfig, *, workdir: Path | None = None) -> SoakResult:
    """Start the stack, put /async/{n} under Locust for `config.duration_s`, measure, stop all."""
    with Stack(config.app, app_dir=config.app_dir) as stack:
        app, upstream = stack.app, stack.upstream
        assert app is not None and app.pid is not None and upstream.pid is not None
        pids = (app.pid, upstream.pid)
        app.probe_reset()
        upstream.reset()
        rss_before = app_rss_kib(app.pid)
        sampler = RssSampler(app.pid, config.sample_every_s)
        sampler.start()
        try:
            load = run_locust(
                app.url,
                users=config.users,
                run_time_s=config.duration_s,
                user_classes=[USER_CLASS],
                n=config.n,
                extra_args=["--stop-timeout", str(config.stop_timeout_s)],
                workdir=workdir,
                timeout_s=config.duration_s + config.stop_timeout_s + 60,
                name="soak",
            )
        finally:
            samples = sampler.stop()
        inflight, upstream_inflight, settle_s = settle(app, upstream, config.settle_timeout_s)
        probe = app.probe_stats()
        gauge = upstream.stats()
        rss_after = app_rss_kib(app.pid)
    assert load.workdir is not None
    start, end = load_window(load.workdir)
    return SoakResult(
        config=config,
        load=load,
        samples=samples,
        load_start=start,
        load_end=end,
        rss_before_kib=rss_before,
        rss_idle_after_kib=rss_after,
        inflight_after=inflight,
        upstream_inflight_after=upstream_inflight,
        settle_s=settle_s,
        upstream_requests=int(gauge["requests"]),
        upstream_errors=int(gauge["errors"]) + int(gauge["rejected"]) + int(gauge["dropped"]),
        app_requests=int(probe["requests"]),
        loop_lag_max_s=float(probe["loop_lag_max_s"]),
        pids=pids,
        sampler_error=sampler.error,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/soak.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--duration",
        type=int_between(MIN_DURATION_S, MAX_DURATION_S),
        default=60,
        help=f"seconds of load, {MIN_DURATION_S} to {MAX_DURATION_S} (default 60)",
    )
    parser.add_argument("--users", type=int_between(1, 200), default=20, help="Locust users")
    parser.add_argument(
        "--n", type=int_between(1, 100), default=10, help="upstream calls per request"
    )
    parser.add_argument(
        "--app",
        type=import_string,
        default=DEFAULT_APP,
        help=f"the app under test, MODULE:ATTR (default {DEFAULT_APP})",
    )
    parser.add_argument("--app-dir", default=None, help="directory the app is imported from")
    args = parser.parse_args(argv)
    config = SoakConfig(
        duration_s=args.duration, users=args.users, n=args.n, app=args.app, app_dir=args.app_dir
    )
    try:
        result = run_soak(config)
    except LoadRunError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        print("\n".join(exc.output.splitlines()[-20:]), file=sys.stderr)
        return 1
    except ServerStartError as exc:
        print(f"soak: the stack did not start: {exc}", file=sys.stderr)
        print(exc.log_tail, file=sys.stderr)
        return 1
    print(result.table())
    problems = result.failures()
    for line in problems:
        print(f"soak: FAIL: {line}")
    print("soak: PASS" if not problems else "soak: FAIL")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
