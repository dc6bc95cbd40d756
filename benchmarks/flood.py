"""A flood against the app's admission control: every answer in time, memory bounded.

    python benchmarks/flood.py                       # 200 clients, /async/1000, <= 2000 answers
    python benchmarks/flood.py --concurrency 100 --requests 500 --seconds 20 --n 1000
    python benchmarks/flood.py --route sync --n 5    # /sync/5: the wait for a thread
    python benchmarks/flood.py --route async_sem --transport httpx2
    python benchmarks/flood.py --all                 # every route, both transports: the table
    python benchmarks/flood.py --max-pending-calls 1000000   # the bound off, for contrast

Starts the stub upstream and the app in their own processes (so the app's pid
is known), then `--concurrency` clients send `GET /async/{n}` (or `/sync/{n}`,
`/async_sem/{n}/{max_concurrent}`; `--transport` picks the app's engine) in a
closed loop, ignoring Retry-After as a flood does, until `--requests` answers are in
or `--seconds` have passed: both bounds hold. It reports the concurrency, the
answers (200, 503, anything else), the app's shed count, p50/p99/max answer
time, and the app's peak resident memory (VmHWM), and checks:

- every answer came within FANOUT_DEADLINE_S plus `--margin-s`;
- every 503 carries Retry-After; nothing but 200 and 503 was answered;
- exact accounting: the 503s are the app's `shed`, the 200s its `admitted`
  (from its `GET /stats`), the upstream never had more calls in flight than
  FANOUT_MAX_PENDING_CALLS and saw at most n per admitted request;
- afterwards nothing is pending in the app or in flight at the upstream.

Exit status 0 when every check holds, 1 when one fails, 2 on bad arguments.
`tests/e2e/test_flood.py` runs the same `run_flood()`, small.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2  # noqa: E402

from app.settings import TRANSPORTS  # noqa: E402
from benchmarks.procfs import status_kib  # noqa: E402
from pytest_fanout.artifacts import render_markdown  # noqa: E402
from pytest_fanout.limits import DEFAULT_APP, Behaviour, int_between, positive_float  # noqa: E402
from pytest_fanout.measurement import percentile  # noqa: E402
from pytest_fanout.servers.process import ServerStartError  # noqa: E402
from pytest_fanout.servers.stack import Stack  # noqa: E402

#: Hard bounds on one flood, whatever the arguments.
MAX_SECONDS = 120
MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 1000
#: How long in-flight counts may take to come back to 0 after the flood.
SETTLE_S = 30.0
#: The routes a flood can take, by name.
ROUTES = {
    "sync": "/sync/{n}",
    "async": "/async/{n}",
    "async_sem": "/async_sem/{n}/{max_concurrent}",
}
#: n of /sync under --all: five sequential calls (1000 would take 100 s at 100 ms each).
SYNC_N = 5
#: --all: (route, n, transport) of each row of the table in docs/performance.md.
ALL_ROWS = [
    ("sync", SYNC_N, "aiohttp"),
    ("async", 0, "aiohttp"),
    ("async_sem", 0, "aiohttp"),
    ("async", 0, "httpx2"),
    ("async_sem", 0, "httpx2"),
]


@dataclass(frozen=True)
class FloodConfig:
    """What to flood, how hard, for how long; the defaults are the benchmark's."""

    concurrency: int = 200
    #: Answers to collect at most (requests are counted before they are sent).
    requests: int = 2000
    #: Seconds after which no new request is sent (in-flight ones still finish).
    seconds: float = 30.0
    n: int = 1000
    #: The route flooded, with `{n}` in it.
    route: str = "/async/{n}"
    delay_ms: float = 100.0
    deadline_s: float = 2.0
    #: FANOUT_MAX_PENDING_CALLS; None keeps the app's default.
    max_pending_calls: int | None = None
    #: FANOUT_TRANSPORT: the async client's engine ("aiohttp" or "httpx2").
    transport: str = "aiohttp"
    #: The semaphore's bound of `/async_sem/{n}/{max_concurrent}`.
    max_concurrent: int = 50
    #: More FANOUT_* settings for the app.
    app_env: dict[str, str] = field(default_factory=dict)
    #: An answer later than deadline_s + margin_s breaks the promise.
    margin_s: float = 1.0
    app: str = DEFAULT_APP
    app_dir: str | None = None

    @property
    def path(self) -> str:
        return self.route.format(n=self.n, max_concurrent=self.max_concurrent)

    def env(self) -> dict[str, str]:
        env = {
            "FANOUT_DEADLINE_S": f"{self.deadline_s:g}",
            "FANOUT_TRANSPORT": self.transport,
            **self.app_env,
        }
        if self.max_pending_calls is not None:
            env["FANOUT_MAX_PENDING_CALLS"] = str(self.max_pending_calls)
        return env


@dataclass(frozen=True)
class Answer:
    """One answer as the client saw it: status (None: no answer), seconds, Retry-After."""

    status: int | None
    seconds: float
    retry_after: str | None = None
    error: str | None = None


@dataclass
class FloodResult:
    """Everything one flood measured."""

    config: FloodConfig
    answers: list[Answer]
    duration_s: float
    app_stats: dict[str, int]
    upstream_stats: dict[str, int]
    rss_before_kib: int
    rss_peak_kib: int
    rss_after_kib: int
    pending_after: int
    upstream_inflight_after: int

    def count(self, status: int | None) -> int:
        return sum(1 for a in self.answers if a.status == status)

    @property
    def ok(self) -> int:
        return self.count(200)

    @property
    def shed(self) -> int:
        return self.count(503)

    @property
    def other(self) -> int:
        return len(self.answers) - self.ok - self.shed

    def seconds(self, status: int | None = None) -> list[float]:
        return [a.seconds for a in self.answers if status is None or a.status == status]

    def quantile_s(self, q: float, status: int | None = None) -> float:
        values = self.seconds(status)
        return percentile(values, q) if values else float("nan")

    @property
    def limit_s(self) -> float:
        return self.config.deadline_s + self.config.margin_s

    def failures(self) -> list[str]:
        """One line per broken check; empty when the flood held."""
        found = []
        late = [a for a in self.answers if a.seconds > self.limit_s]
        if late:
            found.append(
                f"{len(late)} of {len(self.answers)} answers came after {self.limit_s:g}s "
                f"(deadline {self.config.deadline_s:g}s + margin), the slowest in "
                f"{max(a.seconds for a in late):.2f}s"
            )
        if self.other:
            kinds = sorted(
                {str(a.status or a.error) for a in self.answers if a.status not in (200, 503)}
            )
            found.append(f"{self.other} answers were neither 200 nor 503: {', '.join(kinds)}")
        no_retry = [a for a in self.answers if a.status == 503 and not a.retry_after]
        if no_retry:
            found.append(f"{len(no_retry)} answers 503 carried no Retry-After")
        if self.shed != self.app_stats["shed"]:
            found.append(
                f"clients saw {self.shed} answers 503, "
                f"the app counted {self.app_stats['shed']} shed"
            )
        if self.ok != self.app_stats["admitted"]:
            found.append(
                f"clients saw {self.ok} answers 200, the app admitted {self.app_stats['admitted']}"
            )
        bound = self.app_stats["max_pending_calls"]
        if self.upstream_stats["peak_inflight"] > bound:
            found.append(
                f"the upstream had {self.upstream_stats['peak_inflight']} calls in flight, "
                f"over the bound of {bound}"
            )
        if self.upstream_stats["requests"] > self.config.n * self.ok:
            found.append(
                f"the upstream saw {self.upstream_stats['requests']} calls, more than "
                f"n={self.config.n} x {self.ok} admitted requests"
            )
        if self.pending_after or self.upstream_inflight_after:
            found.append(
                f"still pending {SETTLE_S:g}s after the flood: app {self.pending_after} calls, "
                f"upstream {self.upstream_inflight_after} in flight"
            )
        return found

    def table(self) -> str:
        """The row for docs/performance.md, then the accounting."""
        headers = (
            "concurrency", "path", "transport", "answers", "200", "503 (shed)", "other", "p50",
            "p99", "max", "deadline", "peak RSS",
        )  # fmt: skip
        row = (
            self.config.concurrency,
            self.config.path,
            self.config.transport,
            len(self.answers),
            self.ok,
            self.shed,
            self.other,
            f"{self.quantile_s(50):.3f} s",
            f"{self.quantile_s(99):.3f} s",
            f"{max(self.seconds(), default=float('nan')):.3f} s",
            f"{self.config.deadline_s:g} s",
            f"{self.rss_peak_kib / 1024:.1f} MiB",
        )
        lines = [
            render_markdown(headers, [row]),
            "",
            f"{len(self.answers)} answers in {self.duration_s:.1f} s; answers 200: p50 "
            f"{self.quantile_s(50, 200):.3f} s, p99 {self.quantile_s(99, 200):.3f} s; "
            f"answers 503: p99 {self.quantile_s(99, 503):.3f} s",
            f"app: {self.app_stats}",
            f"upstream: {self.upstream_stats['requests']} calls, peak in flight "
            f"{self.upstream_stats['peak_inflight']} (bound {self.app_stats['max_pending_calls']})",
            f"app RSS: {self.rss_before_kib / 1024:.1f} MiB before, peak "
            f"{self.rss_peak_kib / 1024:.1f} MiB, {self.rss_after_kib / 1024:.1f} MiB after",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {
            "config": asdict(self.config),
            "answers": [asdict(a) for a in self.answers],
            "duration_s": self.duration_s,
            "app_stats": self.app_stats,
            "upstream_stats": self.upstream_stats,
            "rss_kib": {
                "before": self.rss_before_kib,
                "peak": self.rss_peak_kib,
                "after": self.rss_after_kib,
            },
        }


async def flood(url: str, config: FloodConfig) -> tuple[list[Answer], float]:
    """`concurrency` closed-loop clients until `requests` are sent or `seconds` have passed."""
    answers: list[Answer] = []
    issued = 0
    started = time.monotonic()
    stop_at = started + config.seconds
    limits = httpx2.Limits(
        max_connections=config.concurrency, max_keepalive_connections=config.concurrency
    )
    timeout = httpx2.Timeout(config.deadline_s + config.margin_s + 30)

    async with httpx2.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:

        async def one_client() -> None:
            nonlocal issued
            while issued < config.requests and time.monotonic() < stop_at:
                issued += 1
                begin = time.perf_counter()
                try:
                    response = await client.get(config.path)
                except httpx2.HTTPError as exc:
                    answers.append(
                        Answer(None, time.perf_counter() - begin, error=type(exc).__name__)
                    )
                    continue
                answers.append(
                    Answer(
                        response.status_code,
                        time.perf_counter() - begin,
                        response.headers.get("retry-after"),
                    )
                )

        await asyncio.gather(*(one_client() for _ in range(config.concurrency)))
    return answers, time.monotonic() - started


def _settle(stack: Stack) -> tuple[int, int]:
    """Poll until nothing is pending in the app and nothing in flight upstream (bounded)."""
    assert stack.app is not None
    deadline = time.monotonic() + SETTLE_S
    with httpx2.Client(base_url=stack.app.url, timeout=10) as client:
        while True:
            pending = int(client.get("/stats").raise_for_status().json()["pending_calls"])
            inflight = int(stack.upstream.stats()["inflight"])
            if (pending == 0 and inflight == 0) or time.monotonic() > deadline:
                return pending, inflight
            time.sleep(0.05)  # poll interval, not synchronisation


def run_flood(config: FloodConfig) -> FloodResult:
    """Start the stack, flood it, read every count, stop it."""
    with Stack(
        config.app,
        behaviour=Behaviour(delay_ms=config.delay_ms),
        app_env=config.env(),
        app_dir=config.app_dir,
    ) as stack:
        app = stack.app
        assert app is not None and app.pid is not None
        stack.upstream.reset()
        rss_before = status_kib(app.pid, "VmRSS")
        answers, duration = asyncio.run(flood(app.url, config))
        pending, inflight = _settle(stack)
        with httpx2.Client(base_url=app.url, timeout=10) as client:
            app_stats = client.get("/stats").raise_for_status().json()
        return FloodResult(
            config=config,
            answers=answers,
            duration_s=duration,
            app_stats=app_stats,
            upstream_stats=stack.upstream.stats(),
            rss_before_kib=rss_before,
            rss_peak_kib=status_kib(app.pid, "VmHWM"),
            rss_after_kib=status_kib(app.pid, "VmRSS"),
            pending_after=pending,
            upstream_inflight_after=inflight,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/flood.py", description=__doc__.split("\n")[0]
    )
    defaults = FloodConfig()
    parser.add_argument(
        "--concurrency", type=int_between(1, MAX_CONCURRENCY), default=defaults.concurrency,
        help=f"clients at once (default {defaults.concurrency})",
    )  # fmt: skip
    parser.add_argument(
        "--requests", type=int_between(1, MAX_REQUESTS), default=defaults.requests,
        help=f"answers to collect at most (default {defaults.requests})",
    )  # fmt: skip
    parser.add_argument(
        "--seconds", type=int_between(1, MAX_SECONDS), default=int(defaults.seconds),
        help=f"no new request after this (default {defaults.seconds:g})",
    )  # fmt: skip
    parser.add_argument(
        "--n", type=int_between(1, 10_000), default=defaults.n,
        help=f"upstream calls per request, /async/N (default {defaults.n})",
    )  # fmt: skip
    parser.add_argument(
        "--delay-ms", type=positive_float, default=defaults.delay_ms,
        help=f"the stub upstream's delay (default {defaults.delay_ms:g})",
    )  # fmt: skip
    parser.add_argument(
        "--deadline-s", type=positive_float, default=defaults.deadline_s,
        help=f"FANOUT_DEADLINE_S (default {defaults.deadline_s:g})",
    )  # fmt: skip
    parser.add_argument(
        "--max-pending-calls", type=int_between(1, 1_000_000), default=None,
        help="FANOUT_MAX_PENDING_CALLS (default: the app's)",
    )  # fmt: skip
    parser.add_argument(
        "--margin-s", type=positive_float, default=defaults.margin_s,
        help=f"an answer later than deadline + margin fails (default {defaults.margin_s:g})",
    )  # fmt: skip
    parser.add_argument(
        "--route", choices=sorted(ROUTES), default="async",
        help="the route flooded (default async): sync, async or async_sem",
    )  # fmt: skip
    parser.add_argument(
        "--transport", choices=TRANSPORTS, default=defaults.transport,
        help=f"FANOUT_TRANSPORT, the async client's engine (default {defaults.transport})",
    )  # fmt: skip
    parser.add_argument(
        "--max-concurrent", type=int_between(1, 10_000), default=defaults.max_concurrent,
        help=f"async_sem's bound (default {defaults.max_concurrent})",
    )  # fmt: skip
    parser.add_argument(
        "--all", action="store_true",
        help="one flood per row of the table in docs/performance.md: "
        f"{', '.join(r for r, _, _ in ALL_ROWS)}"
        f" (/sync with n={SYNC_N})",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also save every answer here")
    args = parser.parse_args(argv)
    rows = ALL_ROWS if args.all else [(args.route, args.n, args.transport)]
    results = []
    for route, n, transport in rows:
        if args.all and route != "sync":
            n = args.n
        app_env = {"FANOUT_MAX_N": str(n)} if n > 1000 else {}
        config = FloodConfig(
            concurrency=args.concurrency,
            requests=args.requests,
            seconds=args.seconds,
            n=n,
            route=ROUTES[route],
            delay_ms=args.delay_ms,
            deadline_s=args.deadline_s,
            max_pending_calls=args.max_pending_calls,
            app_env=app_env,
            margin_s=args.margin_s,
            transport=transport,
            max_concurrent=args.max_concurrent,
        )
        try:
            results.append(run_flood(config))
        except ServerStartError as exc:
            print(f"flood: the stack did not start: {exc}", file=sys.stderr)
            print(exc.log_tail, file=sys.stderr)
            return 1
        print(results[-1].table(), "", sep="\n", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps([r.to_dict() for r in results], indent=1))
    problems = [
        f"{r.config.path} ({r.config.transport}): {line}" for r in results for line in r.failures()
    ]
    for line in problems:
        print(f"flood: FAIL: {line}")
    print("flood: PASS" if not problems else "flood: FAIL")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
