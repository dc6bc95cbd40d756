"""The capacity search: the highest arrival rate at which a path still meets its SLO.

The search is pure logic over a `step(rate) -> StepResult` function (the
`fanout capacity` command's step is `run_step`, one open-model Locust run; the
unit tests pass a fake):

1. step the rate up by `factor` from `start_rps` until a step breaks the SLO
   (or `max_rps` passes), stepping down instead if the first step breaks it;
2. narrow down by bisection between the highest rate that passed and the
   lowest that failed, until they are within `precision` of each other;
3. never start a step the remaining budget cannot pay for (its cost is
   estimated from the steps so far, `step_cost_s` before the first).

A step breaks the SLO when its p95 (exact, from each request's intended
start) is over the limit, too many requests failed, too many starts were
dropped (no free user in time), or the load generator could not even start
the requests at the asked rate (then the figure would be about the
generator, not the service).
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_fanout.artifacts import render_markdown, render_text, write_figure, write_text
from pytest_fanout.artifacts import write_json as write_json_file
from pytest_fanout.limits import LIMIT_SETTLE_S
from pytest_fanout.load.target import NoAnswer, first_answer, host_problem

__all__ = [
    "AppRequests",
    "CapacityResult",
    "LimitCap",
    "SearchSettings",
    "Slo",
    "StepError",
    "StepPlan",
    "StepResult",
    "capacity_table",
    "have_matplotlib",
    "limit_caps",
    "limit_note",
    "load_limit_lines",
    "path_problem",
    "pool_size",
    "run_step",
    "search",
    "settled_app",
    "write_json",
    "write_markdown",
    "write_png",
]


@dataclass(frozen=True)
class Slo:
    """What a rate must meet: p95 latency, failure ratio, dropped starts, rate achieved."""

    p95_ms: float
    max_fail_ratio: float = 0.01
    max_dropped_ratio: float = 0.01
    #: The share of the asked rate the generator must have started.
    min_achieved: float = 0.95

    def broken_by(self, step: StepResult) -> str | None:
        """Why `step` breaks the SLO (the first reason, one phrase), or None if it meets it."""
        if step.requests == 0:
            return "no request was answered"
        if step.dropped_ratio > self.max_dropped_ratio:
            return (
                f"{step.dropped_ratio:.1%} of starts dropped (no free user in time) "
                f"> {self.max_dropped_ratio:.1%}"
            )
        if step.fail_ratio > self.max_fail_ratio:
            return f"failure ratio {step.fail_ratio:.3g} > {self.max_fail_ratio:g}"
        if step.p95_ms > self.p95_ms:
            return f"p95 {step.p95_ms:.0f} ms > {self.p95_ms:g} ms"
        if step.achieved_rps < self.min_achieved * step.rate:
            return (
                f"the generator started only {step.achieved_rps:.1f}/s "
                f"(< {self.min_achieved:.0%} of {step.rate:g}/s)"
            )
        return None


@dataclass(frozen=True)
class StepResult:
    """One step: a steady run at one arrival rate."""

    rate: float
    achieved_rps: float
    p95_ms: float
    requests: int
    failures: int = 0
    dropped_ratio: float = 0.0
    p99_ms: float = 0.0
    #: Filled in by `search`: whether it met the SLO and, if not, why.
    ok: bool = False
    reason: str = ""

    @property
    def fail_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fail_ratio"] = round(self.fail_ratio, 6)
        for key in ("rate", "achieved_rps", "p95_ms", "p99_ms", "dropped_ratio"):
            data[key] = round(data[key], 3)
        return data


@dataclass(frozen=True)
class SearchSettings:
    start_rps: float = 5.0
    factor: float = 2.0
    #: Bisection stops once (lowest failing - highest passing) <= precision x highest passing.
    precision: float = 0.1
    max_rps: float = 5000.0
    #: What one step is expected to cost before any has run (run time + start-up).
    step_cost_s: float = 8.0
    #: Stepping down stops below this rate (the path cannot meet the SLO at all).
    min_rps: float = 0.5


@dataclass
class CapacityResult:
    """The search's outcome for one path."""

    path: str
    slo: Slo
    steps: list[StepResult] = field(default_factory=list)
    #: Why the search ended before it was precise (the budget, max_rps), or "".
    stopped_early: str = ""
    #: The upstream rate limit that caps the capacity, in words (`limit_note`), or "".
    limited_by: str = ""

    @property
    def passed(self) -> list[StepResult]:
        return [s for s in self.steps if s.ok]

    @property
    def capacity(self) -> StepResult | None:
        """The highest rate that met the SLO (None: not even the lowest step did)."""
        return max(self.passed, key=lambda s: s.rate, default=None)

    @property
    def first_failure(self) -> StepResult | None:
        """The lowest rate that broke the SLO above the capacity (None: none broke it)."""
        floor = self.capacity.rate if self.capacity else 0.0
        failed = [s for s in self.steps if not s.ok and s.rate > floor]
        return min(failed, key=lambda s: s.rate, default=None)

    @property
    def capacity_rps(self) -> float | None:
        return self.capacity.rate if self.capacity else None

    def to_dict(self) -> dict[str, Any]:
        capacity, failure = self.capacity, self.first_failure
        return {
            "path": self.path,
            "capacity_rps": capacity.rate if capacity else None,
            "p95_ms": round(capacity.p95_ms, 3) if capacity else None,
            "first_failed_rps": failure.rate if failure else None,
            "why": failure.reason if failure else "",
            "stopped_early": self.stopped_early,
            "limited_by": self.limited_by,
            "slo": asdict(self.slo),
            "steps": [s.to_dict() for s in self.steps],
        }


@dataclass(frozen=True)
class AppRequests:
    """What the app's own probe counted over a run: the requests it began (`began`) and, of
    those, the ones still running or cancelled when read (`unfinished`). A request a load
    generator cut off as it stopped still reaches the app and makes its upstream calls, so
    the calls divide by the requests the app began, not by the ones Locust saw answered."""

    began: int
    unfinished: int = 0

    @classmethod
    def between(cls, before: dict[str, Any], after: dict[str, Any]) -> AppRequests:
        """From two readings of `AppServer.probe_stats()` (`before` may be {})."""
        began = int(after.get("requests", 0)) - int(before.get("requests", 0))
        cancelled = int(after.get("cancelled", 0)) - int(before.get("cancelled", 0))
        return cls(max(began, 0), max(int(after.get("inflight", 0)) + max(cancelled, 0), 0))

    @property
    def finished(self) -> int:
        """The requests that ran to their end (all their upstream calls made)."""
        return max(self.began - self.unfinished, 0)


#: How often `settled_app` reads the app's probe while requests are still in flight.
SETTLE_POLL_S = 0.05


def settled_app(
    read: Callable[[], dict[str, Any]],
    before: dict[str, Any],
    *,
    wait_s: float = LIMIT_SETTLE_S,
    sleep: Callable[[float], Any] = time.sleep,
) -> AppRequests:
    """The app's requests since `before` (a `probe_stats()` reading), read once none is in
    flight (polled every `SETTLE_POLL_S`, at most `wait_s`): the requests a load generator
    cut off as it stopped finish in the app, their calls with them."""
    deadline = time.monotonic() + wait_s
    after = read()
    for _ in range(int(wait_s / SETTLE_POLL_S) + 1):
        if not after.get("inflight") or time.monotonic() >= deadline:
            break
        sleep(SETTLE_POLL_S)
        after = read()
    return AppRequests.between(before, after)


@dataclass(frozen=True)
class LimitCap:
    """An upstream's rate limit as a cap on the requests/s of one path: it allows `per_s`
    calls a second and each request calls it `calls_per_request` times; `most_per_request`,
    when larger, is the most it can be (some requests were counted that had not made all
    their calls: in flight or cancelled when read), and the figure is a range."""

    upstream: str
    limit: str
    per_s: float
    calls_per_request: float
    most_per_request: float | None = None
    #: The bucket's tokens (0: not known): a step shorter than it takes to spend them can
    #: pass above the cap.
    burst: int = 0

    @property
    def exact(self) -> bool:
        most = self.most_per_request
        return most is None or most <= self.calls_per_request

    @property
    def calls(self) -> float:
        """Calls per request (at least this many when not `exact`)."""
        return self.calls_per_request

    @property
    def cap_rps(self) -> float:
        """At most this many requests a second (from the fewest calls a request can make)."""
        return self.per_s / self.calls

    def times(self) -> str:
        """`once`, `twice`, `3 times`, `1.5 times on average`; `between 2.5 and 4.7 times` or
        `at least 2.5 times` where it cannot be exact."""
        calls = self.calls
        most = self.most_per_request
        if most is not None and not self.exact:
            if math.isinf(most):  # no request read had made all its calls
                return f"at least {calls:.2g} times"
            return f"between {calls:.2g} and {most:.2g} times"
        if calls.is_integer():
            return {1: "once", 2: "twice"}.get(int(calls), f"{calls:.0f} times")
        return f"{calls:.2g} times on average"


def limit_caps(
    limits: dict[str, dict[str, Any]],
    calls: dict[str, int],
    requests: int,
    finished: int | None = None,
) -> list[LimitCap]:
    """The caps of the upstreams with a rate limit (`limits`: the stubs' `limits()`), from
    the calls each got (`calls`) for `requests` requests to the path, of which `finished`
    (default: all) made all their calls; tightest first."""
    caps = []
    for name, found in limits.items():
        per_s = found.get("per_s") if isinstance(found, dict) else None
        made = calls.get(name, 0)
        if not per_s or not requests or not made:
            continue
        most = None
        if finished is not None and finished < requests:
            most = made / finished if finished else math.inf
        limit = str(found.get("rate_limit", ""))
        burst = int(found.get("burst") or 0)
        caps.append(LimitCap(name, limit, float(per_s), made / requests, most, burst))
    return sorted(caps, key=lambda c: c.cap_rps)


#: A limit is named when the capacity found reaches at least this share of its cap (below
#: that, something else broke the SLO first).
CAP_SHARE = 0.5
#: ... and at most this multiple of it (the search's precision and a burst's head start);
#: and not when a rate below this share of it already broke the SLO.
CAP_OVER = 1.2
CAP_BELOW = 0.8


def limit_note(result: CapacityResult, caps: list[LimitCap]) -> str:
    """ "capacity 48 req/s: upstream 'quotes' allows 50/s and each request calls it once",
    when the tightest limit lies between the capacity and the rate that broke the SLO (or
    the capacity is at or past it); "" otherwise."""
    if not caps:
        return ""
    cap = caps[0]
    capacity, failure = result.capacity, result.first_failure
    found = capacity.rate if capacity else 0.0
    if not CAP_SHARE * cap.cap_rps <= found <= CAP_OVER * cap.cap_rps:
        return ""  # far below it something else broke the SLO; far above, 429s were no harm
    if failure is not None and failure.rate < CAP_BELOW * cap.cap_rps:
        return ""  # broke below the limit: the limit did not decide it
    # Above the cap only on the bucket's head start: a step of T s at r req/s passes while
    # r x calls x T <= burst + per_s x T, which a longer run does not.
    carried = (
        f": the steps above it met the SLO only while the bucket's burst of {cap.burst} calls "
        "lasted, which a longer run spends"
        if found > cap.cap_rps and cap.burst
        else ""
    )
    return (
        f"capacity {found:g} req/s: upstream {cap.upstream!r} allows {cap.limit} and each "
        f"request calls it {cap.times()} (at most {cap.cap_rps:.3g} req/s{carried})"
    )


def load_limit_lines(
    stats: dict[str, dict[str, Any]],
    requests: int,
    rps: float,
    app: AppRequests | None = None,
) -> list[str]:
    """After a Locust run on the embedded stack: for each stub with a rate limit (`stats`:
    name -> the stub's stats, with its `limits`), a line naming the cap its limit puts on
    the service, when it refused calls or the run came within `CAP_SHARE` of the cap.
    `requests` is what Locust counted; `app`, when read, what the app began and finished
    (the calls of the requests cut off at the end are counted with them)."""
    lines = []
    for name, found in stats.items():
        calls = int(found.get("requests", 0))
        # the 429s its rate limit sent, not max_inflight's or a route's (older stubs: all)
        rejected = int(found.get("limited", found.get("rejected", 0)))
        limit = {name: found.get("limits", {})}
        if app is not None and app.began:
            caps = limit_caps(limit, {name: calls}, app.began, app.finished)
        else:  # the app's probe unread: Locust's answered requests (older behaviour)
            caps = limit_caps(limit, {name: calls}, requests)
        if not caps:
            continue
        cap = caps[0]
        if not rejected and rps < CAP_SHARE * cap.cap_rps:
            continue
        refused = f"answered 429 to {rejected} of {calls} calls" if rejected else "refused no call"
        lines.append(
            f"fanout: upstream {name!r} {refused}; it allows {cap.limit} and each request calls "
            f"it {cap.times()}: at most {cap.cap_rps:.3g} req/s here (this run: {rps:.3g}/s)"
        )
    return lines


def _round_rate(rate: float) -> float:
    """Rates on a readable grid: 3 significant figures."""
    if rate <= 0:
        return 0.0
    digits = 2 - int(math.floor(math.log10(rate)))
    return round(rate, max(digits, 0)) if digits > 0 else float(round(rate, digits))


def search(
    path: str,
    step: Callable[[float], StepResult],
    slo: Slo,
    budget_s: float,
    settings: SearchSettings = SearchSettings(),  # noqa: B008 (frozen, shared safely)
    *,
    clock: Callable[[], float] = time.monotonic,
) -> CapacityResult:
    """Step up until the SLO breaks, then bisect; every step paid for out of `budget_s`."""
    result = CapacityResult(path, slo)
    deadline = clock() + budget_s
    costs: list[float] = []

    def affordable() -> bool:
        expected = max(costs) if costs else settings.step_cost_s
        return deadline - clock() >= expected

    def run(rate: float) -> bool:
        began = clock()
        measured = step(rate)
        costs.append(clock() - began)
        reason = slo.broken_by(measured)
        checked = StepResult(
            **{**asdict(measured), "rate": rate, "ok": reason is None, "reason": reason or ""}
        )
        result.steps.append(checked)
        return checked.ok

    low: float | None = None  # highest rate that passed
    high: float | None = None  # lowest rate that failed
    rate = _round_rate(min(settings.start_rps, settings.max_rps))
    # 1. Up (or down, when the first step already fails) by `factor`.
    while affordable():
        if run(rate):
            low = rate
            if high is not None or rate >= settings.max_rps:
                break
            rate = _round_rate(min(rate * settings.factor, settings.max_rps))
            if rate <= low:
                break
        else:
            high = rate
            if low is not None:
                break
            rate = _round_rate(rate / settings.factor)
            if rate < settings.min_rps:
                break
    # 2. Bisection between the two.
    while low is not None and high is not None and high - low > settings.precision * low:
        if not affordable():
            break
        middle = _round_rate((low + high) / 2)
        if middle in (low, high):
            break
        if run(middle):
            low = middle
        else:
            high = middle
    if not affordable() and not _settled(low, high, settings):
        result.stopped_early = "budget"
    elif low is not None and high is None and low >= settings.max_rps:
        result.stopped_early = f"max rate {settings.max_rps:g}/s met the SLO"
    return result


def _settled(low: float | None, high: float | None, settings: SearchSettings) -> bool:
    if low is None or high is None:
        return False
    return high - low <= settings.precision * low


# ---- running the search: one Locust step per rate, the host checks, the reports ----------
# (`fanout capacity` parses the flags and prints; this is what it runs.)

#: Start-up and shut-down of one Locust step on top of its run time (about 1 s measured).
STEP_OVERHEAD_S = 2.0
MIN_STEP_S = 2
#: With expect_workers: how long each step's master waits for its workers.
WORKERS_MAX_WAIT_S = 60
LOCUSTFILE = Path(__file__).with_name("capacity_locustfile.py")


class StepError(Exception):
    """A step's Locust run gave no results."""


class TargetGone(Exception):
    """The target stopped answering during the search (the app process died, or --host no
    longer answers): its end is the result, not a capacity; `str()` is one line."""


def target_gone(step: StepResult, host: str, death: Callable[[], str | None] | None) -> str:
    """Why the target can no longer be loaded after `step` (one phrase), or "": the app
    process's death (`ServerProcess.death`) when it is ours, else, after a step whose every
    request failed, --host no longer answering."""
    ended = death() if death is not None else None
    if ended:
        return f"the app process died ({ended})"
    if step.requests and step.failures >= step.requests:
        problem = host_problem(host)
        if problem:
            return problem
    return ""


def pool_size(rate: float, slo_p95_ms: float, max_users: int) -> int:
    """Users for a step: twice the requests in flight at the SLO (Little's law), plus 10."""
    return min(max_users, math.ceil(2 * rate * slo_p95_ms / 1000) + 10)


@dataclass(frozen=True)
class StepPlan:
    """How each step runs: its length, its pool's cap, where Locust's workers are."""

    step_s: int
    max_users: int
    processes: int | None = None
    #: With a number: each step's Locust is a master that waits for this many workers.
    expect_workers: int | None = None
    master_bind_host: str = "127.0.0.1"
    master_bind_port: int = 5557

    def master_args(self) -> list[str]:
        """With expect_workers, each step's Locust is a master the workers connect to."""
        if not self.expect_workers:
            return []
        return [
            "--master",
            "--expect-workers",
            str(self.expect_workers),
            "--expect-workers-max-wait",
            str(WORKERS_MAX_WAIT_S),
            "--master-bind-host",
            self.master_bind_host,
            "--master-bind-port",
            str(self.master_bind_port),
        ]


def run_step(host: str, path: str, rate: float, slo: Slo, plan: StepPlan) -> tuple[StepResult, int]:
    """One open-model Locust run of `path` at `rate`: what it measured, and its users."""
    from pytest_fanout.load.runner import LoadRunError, run_locust

    users = pool_size(rate, slo.p95_ms, plan.max_users)
    try:
        result = run_locust(
            host,
            users=users,
            spawn_rate=4 * users,  # the pool is up in a quarter second
            run_time_s=plan.step_s,
            user_classes=["CapacityUser"],
            processes=plan.processes,
            locustfile=LOCUSTFILE,
            extra_args=[
                "--fanout-arrival-rate",
                f"{rate:g}",
                "--fanout-capacity-path",
                path,
                *plan.master_args(),
            ],
            name=f"capacity {path} {rate:g}/s",
        )
    except LoadRunError as exc:
        raise StepError(f"{path} at {rate:g}/s: {exc}") from None
    total, open_model = result.total, result.open_model
    measured = StepResult(
        rate=rate,
        achieved_rps=open_model.achieved_rps if open_model else 0.0,
        p95_ms=total.p95_ms,
        p99_ms=total.p99_ms,
        requests=total.requests,
        failures=total.failures,
        dropped_ratio=open_model.dropped_ratio if open_model else 0.0,
    )
    return measured, users


def path_problem(host: str, path: str) -> str:
    """Why `path` cannot be searched (one phrase), or "": a client error (404, 405, 422...)
    to one GET will be the answer to every request of the search, so stop before it. The
    GET is the host check's (load/target.py): certificates are not verified, as the steps'
    users do not verify them."""
    if not path.startswith("/"):
        return f"--path {path!r} must start with '/'"
    try:
        answer = first_answer(host.rstrip("/") + path)
    except ValueError as exc:
        return f"GET {path} at {host}: not a URL: {exc}"
    except NoAnswer as exc:
        if exc.timed_out:
            return ""  # slow is for the search to measure, not a wrong path
        return f"GET {path} at {host} failed: {exc}"
    if answer is None:
        return ""  # TLS without an HTTP answer: the steps will say what they get
    status, reason = answer
    if 400 <= status < 500 and status != 429:
        return (
            f"GET {path} at {host} answers {status} {reason}: "
            "every request of the search would fail; check --path"
        )
    return ""


_HEADERS = ["path", "capacity (req/s)", "p95 there (ms)", "first failing (req/s)", "why"]


def capacity_table(results: list[CapacityResult]) -> str:
    """path, capacity (requests/s), p95 there, the first rate that failed, and why."""
    return render_text(_HEADERS, _rows(results))


def write_markdown(
    results: list[CapacityResult],
    path: str | Path,
    *,
    slo: Slo,
    step_s: int,
    budget_s: float,
    target: str,
) -> None:
    """The table as Markdown, under one line saying what was asked and where it ran."""
    machine = _machine()
    lines = [
        f"SLO: p95 <= {slo.p95_ms:g} ms from the intended start, failures <= "
        f"{slo.max_fail_ratio:g}, dropped starts <= {slo.max_dropped_ratio:g}; "
        f"{step_s} s steps, budget {budget_s:g} s; {target}; "
        f"{machine['system']} {machine['machine']}, {machine['cpus']} CPUs, "
        f"Python {machine['python']}.",
        "",
        render_markdown(_HEADERS, _rows(results)),
    ]
    notes = [f"- `{r.path}`: {r.limited_by}" for r in results if r.limited_by]
    if notes:
        lines += ["", *notes]
    write_text(path, "\n".join(lines) + "\n")


def _rows(results: list[CapacityResult]) -> list[list[object]]:
    rows: list[list[object]] = []
    for result in results:
        capacity, failure = result.capacity, result.first_failure
        why = failure.reason if failure else (result.stopped_early or "-")
        rows.append(
            [
                result.path,
                capacity.rate if capacity else None,
                capacity.p95_ms if capacity else None,
                failure.rate if failure else None,
                why,
            ]
        )
    return rows


def write_json(results: list[CapacityResult], path: str | Path) -> None:
    """One object per path; the machine it ran on goes with each (figures are per machine)."""
    machine = _machine()
    data = [{**result.to_dict(), "machine": machine} for result in results]
    write_json_file(path, data)


def _machine() -> dict[str, Any]:
    import os

    return {
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def write_png(results: list[CapacityResult], path: str | Path) -> None:
    """p95 against arrival rate per path (log-log), the SLO as a line, each knee marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    figure, axes = plt.subplots(figsize=(8, 5))
    slo_ms = results[0].slo.p95_ms if results else None
    for result in results:
        steps = sorted(result.steps, key=lambda s: s.rate)
        if not steps:
            continue
        (line,) = axes.plot(
            [s.rate for s in steps],
            [max(s.p95_ms, 0.1) for s in steps],
            marker="o",
            label=result.path,
        )
        failed = [s for s in steps if not s.ok]
        axes.scatter(
            [s.rate for s in failed],
            [max(s.p95_ms, 0.1) for s in failed],
            marker="x",
            s=80,
            color=line.get_color(),
            zorder=3,
        )
        knee = result.capacity
        if knee is not None:
            axes.scatter(
                [knee.rate],
                [max(knee.p95_ms, 0.1)],
                s=160,
                facecolors="none",
                edgecolors=line.get_color(),
                linewidths=2,
                zorder=3,
            )
            axes.annotate(
                f"{knee.rate:g}/s",
                (knee.rate, max(knee.p95_ms, 0.1)),
                textcoords="offset points",
                xytext=(6, -14),
                color=line.get_color(),
            )
    if slo_ms is not None:
        axes.axhline(slo_ms, color="grey", linestyle="--", label=f"SLO p95 {slo_ms:g} ms")
    axes.set_xscale("log")
    axes.set_yscale("log")
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_formatter(ticker.ScalarFormatter())
        axis.set_minor_formatter(ticker.NullFormatter())
    axes.set_xlabel("arrival rate (requests/s)")
    axes.set_ylabel("p95 from the intended start (ms)")
    axes.set_title("p95 against arrival rate (circled: the capacity; x: broke the SLO)")
    axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    try:
        write_figure(path, figure, dpi=100)
    finally:
        plt.close(figure)


def have_matplotlib() -> bool:
    """True when --png can draw (matplotlib is the `bench` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
