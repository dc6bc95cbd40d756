"""A user's service that asks several models at once through the real SDKs.

`POST /ask` asks three OpenAI models and one Claude model the same question,
all at once (`asyncio.gather` over one `AsyncOpenAI` and one
`AsyncAnthropic`, built in the lifespan); `POST /ask-streamed` does the same
with streamed answers, read to the end; `POST /first-answer` streams Claude's
tokens on to its own caller as they come. The SDKs find their base URLs and
keys in OPENAI_BASE_URL / OPENAI_API_KEY and ANTHROPIC_BASE_URL /
ANTHROPIC_API_KEY, as in production.
"""

import asyncio
from contextlib import asynccontextmanager

from anthropic import AsyncAnthropic
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from openai import AsyncOpenAI
from pydantic import BaseModel

OPENAI_MODELS = ["gpt-4o-mini", "gpt-4o", "o3-mini"]
CLAUDE = "claude-sonnet-4-5"


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with AsyncOpenAI() as openai, AsyncAnthropic() as anthropic:
        app.state.openai, app.state.anthropic = openai, anthropic
        yield


app = FastAPI(lifespan=lifespan)


class Question(BaseModel):
    question: str


async def ask_openai(model: str, question: str) -> str:
    answer = await app.state.openai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}]
    )
    return answer.choices[0].message.content


async def ask_claude(question: str) -> str:
    answer = await app.state.anthropic.messages.create(
        model=CLAUDE, max_tokens=256, messages=[{"role": "user", "content": question}]
    )
    return answer.content[0].text


async def stream_openai(model: str, question: str) -> str:
    stream = await app.state.openai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], stream=True
    )
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    return "".join(parts)


async def stream_claude(question: str) -> str:
    async with app.state.anthropic.messages.stream(
        model=CLAUDE, max_tokens=256, messages=[{"role": "user", "content": question}]
    ) as stream:
        return "".join([text async for text in stream.text_stream])


@app.post("/ask")
async def ask(q: Question) -> dict:
    answers = await asyncio.gather(
        *(ask_openai(m, q.question) for m in OPENAI_MODELS), ask_claude(q.question)
    )
    return {"answers": dict(zip([*OPENAI_MODELS, CLAUDE], answers, strict=True))}


@app.post("/ask-streamed")
async def ask_streamed(q: Question) -> dict:
    answers = await asyncio.gather(
        *(stream_openai(m, q.question) for m in OPENAI_MODELS), stream_claude(q.question)
    )
    return {"answers": dict(zip([*OPENAI_MODELS, CLAUDE], answers, strict=True))}


@app.post("/first-answer")
async def first_answer(q: Question) -> StreamingResponse:
    async def tokens():
        async with app.state.anthropic.messages.stream(
            model=CLAUDE, max_tokens=256, messages=[{"role": "user", "content": q.question}]
        ) as stream:
            async for text in stream.text_stream:
                yield text

    return StreamingResponse(tokens(), media_type="text/plain")


@app.post("/first-answer-buffered")
async def first_answer_buffered(q: Question) -> StreamingResponse:
    """The same answer, read to its end before any of it is sent on (the mistake)."""
    text = await stream_claude(q.question)
    return StreamingResponse(iter([text]), media_type="text/plain")
