"""The same service written sync (Flask, WSGI, threads), the way its users write it.

- `GET /pool/{n}`: a `ThreadPoolExecutor(max_workers=4)` over `requests`: 4 calls in
  flight, not 4 a second;
- `GET /limiter/{n}`: the same pool, each call behind ratelimit's `@sleep_and_retry
  @limits(calls=4, period=1)` (one limiter the threads and the requests share): 4 calls a
  second, under a 5/s limit;
- `GET /retry-now/{n}`: retries a 429 at once, up to 3 times (a retry storm);
- `GET /retry-soon/{n}`: retries a 429 after a fixed 150 ms, whatever it asks for;
- `GET /retry-after/{n}`: retries a 429 after `retry-after-ms` (else `Retry-After`);
- `POST /ask/{n}`: n questions in threads through `OpenAI(max_retries=2)`, which reads
  `retry-after-ms` and backs off by itself;
- `POST /ask-tenacity`: tenacity's `@retry` (3 attempts) around `OpenAI(max_retries=2)`.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import requests
from flask import Flask
from ratelimit import limits, sleep_and_retry
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_fixed

QUOTES_URL = os.environ["QUOTES_URL"]
WORKERS = 4
RATE = 4
RETRIES = 3
FIXED_BACKOFF_S = 0.15
ATTEMPTS = 3
ATTEMPT_WAIT_S = 0.1

app = Flask(__name__)
llm = openai.OpenAI(max_retries=2, timeout=10)


def tally(statuses: list[int]) -> dict[str, int]:
    ok = sum(1 for s in statuses if s == 200)
    return {"ok": ok, "failed": len(statuses) - ok}


def get(i: int) -> requests.Response:
    return requests.get(f"{QUOTES_URL}/quote/{i}", timeout=10)


@app.get("/pool/<int:n>")
def pool(n: int) -> dict[str, int]:
    with ThreadPoolExecutor(max_workers=WORKERS) as executor:
        return tally([r.status_code for r in executor.map(get, range(n))])


@sleep_and_retry
@limits(calls=RATE, period=1)
def paced_get(i: int) -> requests.Response:
    return get(i)


@app.get("/limiter/<int:n>")
def limiter(n: int) -> dict[str, int]:
    with ThreadPoolExecutor(max_workers=WORKERS) as executor:
        return tally([r.status_code for r in executor.map(paced_get, range(n))])


def retrying_now(i: int) -> int:
    response = get(i)
    for _ in range(RETRIES):
        if response.status_code != 429:
            break
        response = get(i)
    return response.status_code


@app.get("/retry-now/<int:n>")
def retry_now(n: int) -> dict[str, int]:
    with ThreadPoolExecutor(max_workers=n) as executor:
        return tally(list(executor.map(retrying_now, range(n))))


def retrying_soon(i: int) -> int:
    """A fixed backoff that never reads the 429's Retry-After."""
    response = get(i)
    for _ in range(RETRIES):
        if response.status_code != 429:
            break
        time.sleep(FIXED_BACKOFF_S)
        response = get(i)
    return response.status_code


@app.get("/retry-soon/<int:n>")
def retry_soon(n: int) -> dict[str, int]:
    with ThreadPoolExecutor(max_workers=n) as executor:
        return tally(list(executor.map(retrying_soon, range(n))))


def asked_wait_s(response: requests.Response) -> float:
    if "retry-after-ms" in response.headers:
        return float(response.headers["retry-after-ms"]) / 1000
    return float(response.headers.get("retry-after", "1"))


def retrying_after(i: int) -> int:
    response = get(i)
    for _ in range(RETRIES):
        if response.status_code != 429:
            break
        time.sleep(asked_wait_s(response))
        response = get(i)
    return response.status_code


@app.get("/retry-after/<int:n>")
def retry_after(n: int) -> dict[str, int]:
    with ThreadPoolExecutor(max_workers=n) as executor:
        return tally(list(executor.map(retrying_after, range(n))))


def ask(question: str) -> int:
    try:
        llm.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
        )
    except openai.RateLimitError:
        return 429
    return 200


@app.post("/ask/<int:n>")
def ask_many(n: int) -> dict[str, int]:
    with ThreadPoolExecutor(max_workers=n) as executor:
        return tally(list(executor.map(ask, (f"question {i}" for i in range(n)))))


@retry(
    stop=stop_after_attempt(ATTEMPTS),
    wait=wait_fixed(ATTEMPT_WAIT_S),
    retry=retry_if_exception_type(openai.RateLimitError),
    reraise=True,
)
def label(text: str) -> str:
    answer = llm.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"label this: {text}"}]
    )
    return answer.choices[0].message.content


@app.post("/ask-tenacity")
def ask_tenacity() -> dict[str, int]:
    try:
        label("a review")
    except openai.RateLimitError:
        return tally([429])
    return tally([200])
