"""Open-model load and exact latency, on the Locust side (imported inside Locust only).

Locust is a closed model: a user sends again only once answered, so a slow
service slows its own load down and the latency hides the queue (coordinated
omission). With `--fanout-arrival-rate R`, requests start on a schedule
instead, R per second for the whole run (evenly spaced, or Poisson with
`--fanout-arrivals poisson`), whether or not earlier ones have answered:

* The users are the pool of requests that may be in flight at once (k6's
  pre-allocated VUs): every task of every user class is gated, it waits for a
  start from the schedule, runs, and frees its user.
* Each process that runs users (a LocalRunner, each worker) runs one schedule
  at its share of R: R x its users / all users. A worker learns the total from
  Locust's `spawning_complete`, which the master sends once every worker has
  spawned, so all schedules begin together with their pools ready.
* A start that finds no free user waits (first in, first out); if none frees
  up within `--fanout-start-grace-ms` it is DROPPED and counted (k6's dropped
  iterations). `--fanout-max-dropped-ratio` is a threshold on them.
* Latency is measured from the INTENDED start: the first request of each start
  is charged the wait between its intended and its actual start.

Every latency, in either model, is also recorded exactly (HdrHistogram, per
endpoint and in total). Workers send their histograms and counts to the master
with Locust's messaging API (`runner.send_message`, every second and a final
one at stop); the master merges them. The process that owns the test prints
the summary when Locust quits and writes `<--json-file>.fanout.json`, which
`run_locust` reads into the `LoadResult` (`load/exact.py`).

The harness calls `exact_rows()` and `dropped_violations()` from its
threshold check, so thresholds judge the exact, intended-start latency.
"""

from __future__ import annotations

import functools
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from gevent.queue import Queue
from hdrh.histogram import HdrHistogram
from locust import constant, events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from pytest_fanout.artifacts import render_text, write_json
from pytest_fanout.limits import FINAL_REPORT_WAIT_S, MAX_WAITING_STARTS, ExitCode
from pytest_fanout.load.exact import (
    EXACT_SUFFIX,
    SCHEMA,
    encode,
    exact_row,
    new_histogram,
    record_ms,
)
from pytest_fanout.load.exact import summary_ms as _summary_ms
from pytest_fanout.load.results import TOTAL_NAME, EndpointResult, OpenModelResult
from pytest_fanout.load.thresholds import Thresholds, Violation
from pytest_fanout.spec import OPTIONS, add_options, value_of

__all__ = [
    "ARRIVALS",
    "DEFAULT_GRACE_MS",
    "REPORT_MESSAGE",
    "dropped_violations",
    "exact_rows",
    "open_model_result",
]

ARRIVALS: tuple[str, ...] = OPTIONS["arrivals"].choices or ()
DEFAULT_GRACE_MS: float = OPTIONS["start_grace_ms"].default
#: The open model's options (pytest_fanout.spec.OPTIONS), added by this module.
ARRIVAL_KEYS = ("arrival_rate", "arrivals", "start_grace_ms", "max_dropped_ratio")
#: The custom message a worker sends its histograms and counts in.
REPORT_MESSAGE = "fanout_exact_report"
#: The master asks its workers to stop and send their final reports while it still listens.
FINAL_MESSAGE = "fanout_stop_and_report"
REPORT_INTERVAL_S = 1.0
#: Starts made in a row, when behind schedule, before the schedule yields to the others.
YIELD_EVERY = 64


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---- options ------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kwargs: Any) -> None:
    # Declared in pytest_fanout.spec.OPTIONS; the open model is command-line only.
    add_options(parser.add_argument, prefix="fanout-", front_end="locust", keys=ARRIVAL_KEYS)


def _rate(environment: Environment) -> float | None:
    return value_of(environment.parsed_options, "arrival_rate")


# ---- the schedule and the pool --------------------------------------------------


@dataclass
class _Start:
    intended: float  # time.monotonic() of the intended start
    late: bool  # no user was free when it was due


@dataclass
class _Schedule:
    """One process's arrival schedule: a greenlet putting starts in a FIFO the users take from.

    Every scheduled start ends up started or dropped, except those the end of
    the run cut off before a user could take them (not counted at all). The
    achieved rate divides the starts made by the time they took: from the
    first intended start to the last moment one was made or dropped, plus one
    interval (n evenly spaced starts span n intervals), so a generator that
    falls behind shows a lower rate.
    """

    rate: float
    arrivals: str
    grace_s: float
    queue: Queue = field(default_factory=Queue)
    idle: int = 0
    scheduled: int = 0
    started: int = 0
    dropped: int = 0
    began: float | None = None
    #: When the last start was made (actual time) or dropped (its intended time).
    last: float | None = None
    ended: bool = False
    greenlet: Any = None
    rng: random.Random = field(default_factory=random.Random)

    def begin(self, rate: float) -> None:
        self.rate = rate
        if self.greenlet is None and rate > 0:
            self.began = time.monotonic()
            self.greenlet = gevent.spawn(self._run)

    def _gap(self) -> float:
        if self.arrivals == "poisson":
            return self.rng.expovariate(self.rate)
        return 1.0 / self.rate

    def _run(self) -> None:
        assert self.began is not None
        due = self.began
        while True:
            now = time.monotonic()
            if due > now:
                gevent.sleep(due - now)
            elif self.scheduled % YIELD_EVERY == 0:
                # Behind schedule: still let the users, --run-time and signals run.
                gevent.sleep(0)
            self._expire(time.monotonic())
            self.scheduled += 1
            if self.queue.qsize() >= MAX_WAITING_STARTS:
                self._drop(_Start(due, late=True))  # no user could take it in time anyway
            else:
                # Late when every free user already has a start waiting for it.
                self.queue.put(_Start(due, late=self.queue.qsize() >= self.idle))
            due += self._gap()

    def _drop(self, start: _Start) -> None:
        self.dropped += 1
        self.last = max(self.last or start.intended, start.intended)

    def _expired(self, start: _Start, now: float) -> bool:
        return start.late and now - start.intended > self.grace_s

    def _expire(self, now: float) -> None:
        """Drop the waiting starts that no user took within the grace."""
        while not self.queue.empty() and self._expired(self.queue.peek_nowait(), now):
            self._drop(self.queue.get_nowait())

    def take(self) -> _Start:
        """Block until a start is due for this (free) user; skip the ones that expired."""
        while True:
            self.idle += 1
            try:
                start = self.queue.get()
            finally:
                self.idle -= 1
            now = time.monotonic()
            if self._expired(start, now):
                self._drop(start)
                continue
            self.started += 1
            self.last = now
            return start

    def end(self) -> None:
        """Stop scheduling; starts still waiting are dropped if expired, else cut off."""
        if self.ended:
            return
        self.ended = True
        if self.greenlet is not None:
            self.greenlet.kill(block=True)
        now = time.monotonic()
        while not self.queue.empty():
            start = self.queue.get_nowait()
            if self._expired(start, now):
                self._drop(start)
            else:
                self.scheduled -= 1  # cut off by the end of the run: neither made nor dropped

    def counts(self) -> dict[str, float]:
        window = 0.0
        if self.began is not None and self.last is not None and self.rate > 0:
            window = self.last - self.began + 1 / self.rate
        return {
            "scheduled": self.scheduled,
            "started": self.started,
            "dropped": self.dropped,
            "rate": self.rate,
            "achieved_rps": self.started / window if window > 0 else 0.0,
        }


# ---- this process's state ---------------------------------------------------------


@dataclass
class _State:
    histograms: dict[str, HdrHistogram] = field(default_factory=dict)
    schedule: _Schedule | None = None
    #: The lag (ms) of the start each user greenlet is running, until its first request.
    lag_ms: dict[Any, float] = field(default_factory=dict)
    #: On the master: the latest counts of each worker, and who sent a final report.
    workers: dict[str, dict[str, float]] = field(default_factory=dict)
    final: set[str] = field(default_factory=set)
    reporter: Any = None
    rate: float | None = None
    arrivals: str = "constant"
    grace_ms: float = DEFAULT_GRACE_MS
    users: int = 0
    summarised: bool = False
    #: On a worker: its final report is sent (once, whoever asked first).
    final_sent: bool = False

    def record(self, key: str, ms: float) -> None:
        for name in (key, TOTAL_NAME):
            histogram = self.histograms.get(name)
            if histogram is None:
                histogram = self.histograms[name] = new_histogram()
            record_ms(histogram, ms)


_STATE = _State()


def _gated(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A task that first waits for a start from the schedule (the user is then busy)."""

    @functools.wraps(task)
    def run(holder: Any) -> Any:
        schedule = _STATE.schedule
        if schedule is None:
            return task(holder)
        start = schedule.take()
        current = gevent.getcurrent()
        _STATE.lag_ms[current] = max(0.0, (time.monotonic() - start.intended) * 1000)
        try:
            return task(holder)
        finally:
            _STATE.lag_ms.pop(current, None)

    run.fanout_gated = True  # type: ignore[attr-defined]
    return run


def _taskset_classes(user_classes: Iterable[type]) -> list[str]:
    return [
        f"{user_class.__name__}.{getattr(task, '__name__', task)}"
        for user_class in user_classes
        for task in getattr(user_class, "tasks", [])
        if hasattr(task, "tasks")
    ]


def _gate_user_classes(user_classes: Iterable[type]) -> None:
    """Gate every plain @task function; the pool's users do not wait between tasks."""
    for user_class in user_classes:
        tasks = getattr(user_class, "tasks", [])
        user_class.tasks = [
            task if hasattr(task, "tasks") or getattr(task, "fanout_gated", False) else _gated(task)
            for task in tasks
        ]
        user_class.wait_time = constant(0)


# ---- listeners -------------------------------------------------------------------


#: The runner of this process (spawning_complete does not pass the environment).
_RUNNER: dict[str, Any] = {}


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs: Any) -> None:
    runner = _RUNNER["runner"] = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message(REPORT_MESSAGE, _on_worker_report)
    if isinstance(runner, WorkerRunner):
        runner.register_message(FINAL_MESSAGE, _on_final_asked)
    if isinstance(runner, WorkerRunner) or environment.parsed_options is None:
        return
    if _rate(environment) is not None:
        nested = _taskset_classes(environment.user_classes)
        if nested:
            _say(
                "fanout: error: --fanout-arrival-rate gates @task functions, not TaskSets: "
                + ", ".join(nested)
            )
            raise SystemExit(ExitCode.USAGE)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kwargs: Any) -> None:
    global _STATE
    _STATE = _State()
    rate = _rate(environment)
    _STATE.rate = rate
    _STATE.arrivals = str(value_of(environment.parsed_options, "arrivals"))
    _STATE.grace_ms = float(value_of(environment.parsed_options, "start_grace_ms"))
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        return  # the master runs no users: it merges what the workers send
    if rate is not None:
        _gate_user_classes(environment.user_classes)
        _STATE.schedule = _Schedule(0.0, _STATE.arrivals, _STATE.grace_ms / 1000)
    if isinstance(runner, WorkerRunner):
        _STATE.reporter = gevent.spawn(_report_every_second, runner)


@events.spawning_complete.add_listener
def _on_spawning_complete(user_count: int, **_kwargs: Any) -> None:
    """The pool is ready: begin (or re-share) this process's part of the schedule."""
    schedule, rate = _STATE.schedule, _STATE.rate
    _STATE.users = user_count
    if schedule is None or rate is None:
        return
    runner = _RUNNER.get("runner")
    # A worker's share follows its part of the pool; a LocalRunner holds all of it.
    mine = runner.target_user_count if isinstance(runner, WorkerRunner) else user_count
    schedule.begin(rate * mine / user_count if user_count else 0.0)


@events.request.add_listener
def _on_request(request_type: str, name: str, response_time: float | None, **_kwargs: Any) -> None:
    if response_time is None:
        return
    # Only the first request of a start is charged the start's lag.
    lag = _STATE.lag_ms.pop(gevent.getcurrent(), 0.0)
    _STATE.record(f"{request_type} {name}".strip(), response_time + lag)


@events.test_stopping.add_listener
def _on_test_stopping(environment: Environment, **_kwargs: Any) -> None:
    """No more starts once the users are being stopped (they could not be taken)."""
    if _STATE.schedule is not None:
        _STATE.schedule.end()


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    if _STATE.schedule is not None:
        _STATE.schedule.end()
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        if _STATE.reporter is not None:
            _STATE.reporter.kill(block=True)
            _STATE.reporter = None
        if not _STATE.final_sent:
            _STATE.final_sent = True
            _send_report(runner, final=True)
    elif isinstance(runner, MasterRunner) and _STATE.workers:
        _collect_final_reports(runner)


def _on_final_asked(environment: Environment, **_kwargs: Any) -> None:
    """The master's run is over: stop this worker's users (its test_stop sends the final
    report) now, while the master still listens."""
    if _STATE.final_sent:
        return
    environment.runner.stop()


def _collect_final_reports(runner: MasterRunner, bound_s: float = FINAL_REPORT_WAIT_S) -> None:
    """A headless master's --run-time ends in Locust's `quit()`: it stops itself, tells the
    workers to quit and stops listening half a second later, so on a busy runner their
    final reports (sent as they stop) came too late ("0 of 2 workers sent their final
    numbers"). Here, while it still listens, the master asks them to stop and report, and
    waits for every report, bounded (a worker that died never sends one: the summary then
    says how many did)."""
    missing = [w for w in _STATE.workers if w not in _STATE.final]
    if not missing:
        return
    runner.send_message(FINAL_MESSAGE)
    deadline = time.monotonic() + bound_s
    while len(_STATE.final) < len(_STATE.workers) and time.monotonic() < deadline:
        gevent.sleep(0.05)  # yields to the master's message listener


# ---- worker -> master -----------------------------------------------------------


def _report_every_second(runner: WorkerRunner) -> None:
    while True:
        gevent.sleep(REPORT_INTERVAL_S)
        _send_report(runner, final=False)


def _send_report(runner: WorkerRunner, *, final: bool) -> None:
    """The histograms recorded since the last report (then reset), and cumulative counts."""
    histograms = {}
    for key, histogram in _STATE.histograms.items():
        if histogram.get_total_count():
            histograms[key] = encode(histogram)
            histogram.reset()
    schedule = _STATE.schedule
    runner.send_message(
        REPORT_MESSAGE,
        {
            "histograms": histograms,
            "counts": schedule.counts() if schedule is not None else None,
            "final": final,
        },
    )


def _on_worker_report(environment: Environment, msg: Any, **_kwargs: Any) -> None:
    data = msg.data or {}
    for key, encoded in data.get("histograms", {}).items():
        histogram = _STATE.histograms.get(key)
        if histogram is None:
            histogram = _STATE.histograms[key] = new_histogram()
        histogram.decode_and_add(encoded)
    if data.get("counts") is not None:
        _STATE.workers[msg.node_id] = data["counts"]
    if data.get("final"):
        _STATE.final.add(msg.node_id)


# ---- what the owner of the test reads ------------------------------------------------


def open_model_result(environment: Environment) -> OpenModelResult | None:
    """The open model's counts so far (merged over workers on a master); None if closed."""
    if _STATE.rate is None:
        return None
    if isinstance(environment.runner, MasterRunner):
        parts = list(_STATE.workers.values())
    else:
        parts = [_STATE.schedule.counts()] if _STATE.schedule is not None else []
    return OpenModelResult(
        target_rps=_STATE.rate,
        achieved_rps=sum(p["achieved_rps"] for p in parts),
        scheduled=int(sum(p["scheduled"] for p in parts)),
        started=int(sum(p["started"] for p in parts)),
        dropped=int(sum(p["dropped"] for p in parts)),
        arrivals=_STATE.arrivals,
        grace_ms=_STATE.grace_ms,
        users=_STATE.users,
        workers=max(1, len(parts)),
    )


def exact_rows(rows: Iterable[EndpointResult]) -> list[EndpointResult]:
    """Locust's rows with their latency taken from the exact histograms, where recorded."""
    result = []
    for row in rows:
        histogram = _STATE.histograms.get(TOTAL_NAME if row.name == TOTAL_NAME else row.key)
        result.append(exact_row(row, histogram) if histogram is not None else row)
    return result


def dropped_violations(environment: Environment, thresholds: Thresholds) -> list[Violation]:
    """--fanout-max-dropped-ratio against the schedule's dropped starts (open model only)."""
    result = open_model_result(environment)
    if result is None:
        return []
    return thresholds.check_dropped(result.scheduled, result.dropped)


# ---- when Locust quits -----------------------------------------------------------------


def _summary_lines(environment: Environment) -> list[str]:
    lines = []
    result = open_model_result(environment)
    if result is not None:
        lines.append(
            f"fanout: open model: target {result.target_rps:g}/s ({result.arrivals}), achieved "
            f"{result.achieved_rps:.1f}/s; {result.scheduled} starts scheduled, {result.started} "
            f"started, {result.dropped} dropped ({result.dropped_ratio:.1%}); pool "
            f"{result.users} users, {result.workers} process(es), start grace "
            f"{result.grace_ms:g} ms"
        )
        if isinstance(environment.runner, MasterRunner) and len(_STATE.final) < len(_STATE.workers):
            lines.append(
                f"fanout: warning: {len(_STATE.final)} of {len(_STATE.workers)} workers sent "
                "their final numbers before quitting"
            )
    if not _STATE.histograms:
        return lines
    since = "from each request's intended start" if result is not None else "response times"
    lines.append(f"fanout: exact latency (HdrHistogram, ms, {since}):")
    keys = sorted(k for k in _STATE.histograms if k != TOTAL_NAME) + [TOTAL_NAME]
    table = []
    for key in keys:
        if key not in _STATE.histograms:
            continue
        s = _summary_ms(_STATE.histograms[key])
        table.append([key, int(s["count"]), s["p50"], s["p95"], s["p99"], s["max"]])
    lines += render_text(["endpoint", "count", "p50", "p95", "p99", "max"], table).splitlines()
    return lines


def _write_exact_file(environment: Environment) -> None:
    prefix = getattr(environment.parsed_options, "json_file", None)
    if not prefix:
        return
    result = open_model_result(environment)
    data = {
        "schema": SCHEMA,
        "endpoints": {
            key: encode(histogram)
            for key, histogram in sorted(_STATE.histograms.items())
            if histogram.get_total_count()
        },
        "open_model": result.to_dict() if result is not None else None,
    }
    write_json(Path(f"{prefix}{EXACT_SUFFIX}"), data, indent=None)


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_kwargs: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or _STATE.summarised:
        return  # (Locust can run its shutdown twice on SIGTERM: say it once)
    _STATE.summarised = True
    if _STATE.schedule is not None:
        _STATE.schedule.end()
    for line in _summary_lines(environment):
        _say(line)
    _write_exact_file(environment)
