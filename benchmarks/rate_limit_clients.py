"""The same fan-out done four ways against an upstream that allows 50 calls a second: what
each sends and what each gets back (the table of docs/rate-limits.md).

    .venv/bin/python benchmarks/rate_limit_clients.py [--n 100] [--samples 3] [--markdown PATH]

The service is tests/e2e/ratelimit_app/clients.py (FastAPI, httpx, aiolimiter, the OpenAI
SDK), started with a semaphore of 10 and a rate limiter of 50 calls a second; each upstream
stub answers in 20 ms and allows `rate_limit = "50/s"` (its bucket: 50 tokens, full at the
start of each sample). Each row is one `measure` of one request that makes `n` calls:

- `GET /semaphore/{n}`: `asyncio.Semaphore(10)` around a gather of httpx calls;
- `GET /limiter/{n}`: `aiolimiter.AsyncLimiter(50, 1)` around the same gather;
- `POST /ask/{n}`: n questions at once through `AsyncOpenAI(max_retries=2)`;
- `POST /ask-limited/{n}`: the same SDK calls behind `AsyncLimiter(50, 1)`.

Counts are the stub's, exact on any machine; the times are this machine's (noisy on a
shared one: read them as orders of magnitude).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx2  # noqa: E402

from pytest_fanout.artifacts import render_markdown, render_text, write_text  # noqa: E402
from pytest_fanout.diagnosis import diagnose  # noqa: E402
from pytest_fanout.limits import Behaviour  # noqa: E402
from pytest_fanout.measure import measure  # noqa: E402
from pytest_fanout.measurement import Request  # noqa: E402
from pytest_fanout.servers import Stack  # noqa: E402

APP_DIR = REPO / "tests" / "e2e" / "ratelimit_app"
LIMIT = "50/s"
SEMAPHORE = 10
ROWS = (
    ("asyncio.Semaphore(10)", "GET", "/semaphore/{n}", "quotes"),
    ("AsyncLimiter(50, 1)", "GET", "/limiter/{n}", "quotes"),
    ("AsyncOpenAI(max_retries=2)", "POST", "/ask/{n}", "openai"),
    ("AsyncOpenAI + AsyncLimiter(50, 1)", "POST", "/ask-limited/{n}", "openai"),
)
HEADERS = [
    "client",
    "calls sent",
    "answered 200",
    "answered 429",
    "retries",
    "sent/s",
    "request took",
    "finding",
]


def run(n: int, samples: int) -> list[list[object]]:
    rows: list[list[object]] = []
    with (
        Stack(
            "clients:app",
            app_dir=APP_DIR,
            upstreams={"quotes": "QUOTES_URL", "openai": "OPENAI_STUB_URL"},
            app_env={
                "OPENAI_BASE_URL": "{upstream_url:openai}/v1",
                "OPENAI_API_KEY": "sk-stub",
                "QUOTES_SEMAPHORE": str(SEMAPHORE),
                "QUOTES_RATE_PER_S": "50",
            },
            behaviour=Behaviour(delay_ms=20, rate_limit=LIMIT),
            startup_timeout=30,
        ) as stack,
        httpx2.Client(timeout=120) as client,
    ):
        assert stack.app is not None
        stack.upstreams["openai"].route(
            "POST", "/v1/chat/completions", handler="pytest_fanout.servers.sdk_answers:openai_echo"
        )
        for label, method, path, upstream in ROWS:
            m = measure(
                client,
                stack.app.url,
                Request(path.format(n=n), method=method),
                upstreams=stack.upstreams,
                app=stack.app,
                repeat=samples,
                warmup=1,
            )
            g = m.upstream(upstream)
            sent = statistics.median(g.requests_per_sample)
            rejected = statistics.median(g.rejected_per_sample)
            findings = [f.kind for f in diagnose(m) if f.kind not in ("slow-client",)]
            rows.append(
                [
                    label,
                    f"{sent:g}",
                    f"{sent - rejected:g}",
                    f"{rejected:g}",
                    f"{statistics.median(g.retries_per_sample):g}",
                    f"{g.calls_per_s:.0f}" if g.calls_per_s else "-",
                    f"{m.median_s * 1000:.0f} ms",
                    ", ".join(findings) or "-",
                ]
            )
            print(f"  {label}: {rows[-1][1:]}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="calls per request (default 100)")
    parser.add_argument("--samples", type=int, default=3, help="timed samples (default 3)")
    parser.add_argument("--markdown", default=None, help="write the table as Markdown here")
    args = parser.parse_args(argv)
    rows = run(args.n, args.samples)
    print()
    print(
        f"{args.n} calls per request, upstream {LIMIT} (burst 50), 20 ms per call; "
        f"medians of {args.samples} samples:"
    )
    print(render_text(HEADERS, rows))
    if args.markdown:
        write_text(args.markdown, render_markdown(HEADERS, rows) + "\n")
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
