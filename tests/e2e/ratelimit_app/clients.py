"""A user's async service (FastAPI) that fans out to a rate-limited quotes API and to an
OpenAI-compatible API, each route written the way its users write it.

- `GET /semaphore/{n}`: `asyncio.Semaphore(4)` around a gather: bounds calls in flight,
  not calls per second;
- `GET /limiter/{n}`: aiolimiter's `AsyncLimiter(4, 1)` around a gather: 4 calls a second,
  under a 5/s limit;
- `GET /retry-now/{n}`: retries a 429 at once, up to 3 times (a retry storm);
- `GET /retry-soon/{n}`: retries a 429 after a fixed 150 ms, whatever it asks for;
- `GET /retry-after/{n}`: retries a 429 after the wait it asks for (`retry-after-ms`,
  else `Retry-After`);
- `POST /ask/{n}`: n questions at once through `AsyncOpenAI(max_retries=2)`, which reads
  `retry-after-ms` and backs off by itself; `POST /ask-limited/{n}`: the same behind an
  `AsyncLimiter`;
- `POST /ask-tenacity`: one question, tenacity's `@retry` (3 attempts) around the same
  SDK call, which retries twice itself: the layers multiply.

Each route answers 200 with what it got: {"ok": ..., "failed": ...}.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager

import httpx
import openai
from aiolimiter import AsyncLimiter
from fastapi import FastAPI
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_fixed

QUOTES_URL = os.environ["QUOTES_URL"]
#: The service's own limits, as its authors chose them (settings: the docs' table runs
#: it with a semaphore of 10 and 50 calls a second, benchmarks/rate_limits.py).
SEMAPHORE = int(os.environ.get("QUOTES_SEMAPHORE", "4"))
RATE = int(os.environ.get("QUOTES_RATE_PER_S", "4"))
LIMITER = AsyncLimiter(RATE, 1)
LLM_LIMITER = AsyncLimiter(RATE, 1)
RETRIES = 3
FIXED_BACKOFF_S = 0.15
#: tenacity's attempts and wait between them (kept short for the tests).
ATTEMPTS = 3
ATTEMPT_WAIT_S = 0.1


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with (
        httpx.AsyncClient(base_url=QUOTES_URL, timeout=10) as quotes,
        openai.AsyncOpenAI(max_retries=2, timeout=10) as llm,
    ):
        app.state.quotes, app.state.llm = quotes, llm
        yield


app = FastAPI(lifespan=lifespan)


def tally(statuses: list[int]) -> dict[str, int]:
    ok = sum(1 for s in statuses if s == 200)
    return {"ok": ok, "failed": len(statuses) - ok}


async def quote(i: int) -> int:
    return (await app.state.quotes.get(f"/quote/{i}")).status_code


@app.get("/semaphore/{n}")
async def semaphore(n: int) -> dict[str, int]:
    bound = asyncio.Semaphore(SEMAPHORE)

    async def one(i: int) -> int:
        async with bound:
            return await quote(i)

    return tally(await asyncio.gather(*(one(i) for i in range(n))))


@app.get("/limiter/{n}")
async def limiter(n: int) -> dict[str, int]:
    async def one(i: int) -> int:
        async with LIMITER:
            return await quote(i)

    return tally(await asyncio.gather(*(one(i) for i in range(n))))


@app.get("/retry-now/{n}")
async def retry_now(n: int) -> dict[str, int]:
    async def one(i: int) -> int:
        status = await quote(i)
        for _ in range(RETRIES):
            if status != 429:
                break
            status = await quote(i)
        return status

    return tally(await asyncio.gather(*(one(i) for i in range(n))))


@app.get("/retry-soon/{n}")
async def retry_soon(n: int) -> dict[str, int]:
    """A fixed backoff that never reads the 429's Retry-After."""

    async def one(i: int) -> int:
        status = await quote(i)
        for _ in range(RETRIES):
            if status != 429:
                break
            await asyncio.sleep(FIXED_BACKOFF_S)
            status = await quote(i)
        return status

    return tally(await asyncio.gather(*(one(i) for i in range(n))))


def asked_wait_s(response: httpx.Response) -> float:
    """The wait a 429 asks for: retry-after-ms (OpenAI's), else Retry-After (seconds)."""
    if "retry-after-ms" in response.headers:
        return float(response.headers["retry-after-ms"]) / 1000
    return float(response.headers.get("retry-after", "1"))


@app.get("/retry-after/{n}")
async def retry_after(n: int) -> dict[str, int]:
    async def one(i: int) -> int:
        response = await app.state.quotes.get(f"/quote/{i}")
        for _ in range(RETRIES):
            if response.status_code != 429:
                break
            await asyncio.sleep(asked_wait_s(response))
            response = await app.state.quotes.get(f"/quote/{i}")
        return response.status_code

    return tally(await asyncio.gather(*(one(i) for i in range(n))))


async def ask(question: str) -> int:
    try:
        await app.state.llm.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
        )
    except openai.RateLimitError:
        return 429
    return 200


@app.post("/ask/{n}")
async def ask_many(n: int) -> dict[str, int]:
    return tally(await asyncio.gather(*(ask(f"question {i}") for i in range(n))))


@app.post("/ask-limited/{n}")
async def ask_limited(n: int) -> dict[str, int]:
    async def one(i: int) -> int:
        async with LLM_LIMITER:
            return await ask(f"question {i}")

    return tally(await asyncio.gather(*(one(i) for i in range(n))))


@retry(
    stop=stop_after_attempt(ATTEMPTS),
    wait=wait_fixed(ATTEMPT_WAIT_S),
    retry=retry_if_exception_type(openai.RateLimitError),
    reraise=True,
)
async def label(text: str) -> str:
    answer = await app.state.llm.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"label this: {text}"}]
    )
    return answer.choices[0].message.content


@app.post("/ask-tenacity")
async def ask_tenacity() -> dict[str, int]:
    try:
        await label("a review")
    except openai.RateLimitError:
        return tally([429])
    return tally([200])
