"""Answers in the wire formats of the model APIs, for stub routes: no hand-written JSON.

A service that calls OpenAI's chat completions or Anthropic's messages through
their SDKs (`AsyncOpenAI(base_url=...)`, `AsyncAnthropic(base_url=...)`) gets
answers its SDK parses, plain or streamed (server-sent events):

    openai.route("POST", "/v1/chat/completions", json=openai_chat_completion("Hi"))
    openai.route("POST", "/v1/chat/completions",
                 events=openai_chat_completion_stream("Hi there"), tokens_per_s=50)
    anthropic.route("POST", "/v1/messages", json=anthropic_message("Hi"))
    anthropic.route("POST", "/v1/messages",
                    events=anthropic_message_stream("Hi there"), chunk_delay_ms=20)

A text is cut into word tokens (each with its trailing space); give a list to
choose the tokens. The handlers `openai_echo` and `anthropic_echo` answer
with the last user message, streamed when the request asks (`"stream": true`),
so one route serves both kinds of call:

    openai.route("POST", "/v1/chat/completions",
                 handler="pytest_fanout.servers.sdk_answers:openai_echo", delay_ms=300)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from pytest_fanout.servers.routes import StubRequest
from pytest_fanout.servers.streaming import StubStream

__all__ = [
    "anthropic_echo",
    "anthropic_message",
    "anthropic_message_stream",
    "openai_chat_completion",
    "openai_chat_completion_stream",
    "openai_echo",
    "tokens_of",
]

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
#: A fixed creation time: the same call gives the same bytes every run.
CREATED = 1_700_000_000
_TOKEN = re.compile(r"\s*\S+\s*|\s+")


def tokens_of(text: str | Sequence[str]) -> list[str]:
    """`text` cut into word tokens (joined, they give `text` back); a list as it is."""
    if isinstance(text, str):
        return _TOKEN.findall(text) or [""]
    tokens = list(text)
    if not all(isinstance(t, str) for t in tokens):
        raise TypeError("tokens must be strings")
    return tokens


# ---- OpenAI: chat completions ------------------------------------------------------------


def openai_chat_completion(
    text: str | Sequence[str],
    *,
    model: str = OPENAI_MODEL,
    id: str = "chatcmpl-stub",
    prompt_tokens: int = 10,
    finish_reason: str = "stop",
) -> dict[str, Any]:
    """The body of `POST /v1/chat/completions` answering `text` (one choice)."""
    tokens = tokens_of(text)
    return {
        "id": id,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(tokens), "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        },
    }


def openai_chat_completion_stream(
    text: str | Sequence[str],
    *,
    model: str = OPENAI_MODEL,
    id: str = "chatcmpl-stub",
    finish_reason: str = "stop",
) -> list[Any]:
    """The server-sent events of a streamed chat completion: a role chunk, one chunk per
    token, a finish chunk, then `[DONE]` (pass to `route(events=...)`)."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "data": {
                "id": id,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        }

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": token}) for token in tokens_of(text)]
    events.append(chunk({}, finish_reason))
    events.append("[DONE]")
    return events


def _last_user_text(request: StubRequest, default: str) -> str:
    try:
        messages = request.json().get("messages") or []
    except (ValueError, AttributeError):
        return default
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # content blocks
                return "".join(
                    b.get("text", "") for b in content if isinstance(b, dict) and "text" in b
                )
    return default


def _wants_stream(request: StubRequest) -> tuple[bool, str | None]:
    try:
        body = request.json()
    except ValueError:
        return False, None
    if not isinstance(body, dict):
        return False, None
    model = body.get("model")
    return bool(body.get("stream")), model if isinstance(model, str) else None


def _echo(
    request: StubRequest,
    default_model: str,
    answer: Callable[..., dict[str, Any]],
    stream: Callable[..., list[Any]],
) -> dict[str, Any] | StubStream:
    """The last user message back in one API's shape: `stream`'s events when the request
    asks (`"stream": true`), else `answer`'s body; the request's model, or the default."""
    wants_stream, model = _wants_stream(request)
    text = _last_user_text(request, "")
    model = model or default_model
    if wants_stream:
        return StubStream(events=stream(text, model=model))
    return answer(text, model=model)


def openai_echo(request: StubRequest) -> dict[str, Any] | StubStream:
    """A stub handler: the last user message back, streamed when the request asks."""
    return _echo(request, OPENAI_MODEL, openai_chat_completion, openai_chat_completion_stream)


# ---- Anthropic: messages -----------------------------------------------------------------


def anthropic_message(
    text: str | Sequence[str],
    *,
    model: str = ANTHROPIC_MODEL,
    id: str = "msg_stub",
    input_tokens: int = 10,
    stop_reason: str = "end_turn",
) -> dict[str, Any]:
    """The body of `POST /v1/messages` answering `text` (one text block)."""
    tokens = tokens_of(text)
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "".join(tokens)}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": len(tokens)},
    }


def anthropic_message_stream(
    text: str | Sequence[str],
    *,
    model: str = ANTHROPIC_MODEL,
    id: str = "msg_stub",
    input_tokens: int = 10,
    stop_reason: str = "end_turn",
) -> list[dict[str, Any]]:
    """The server-sent events of a streamed message: message_start, a text block's start,
    one delta per token, its stop, message_delta and message_stop."""
    tokens = tokens_of(text)

    def event(name: str, **data: Any) -> dict[str, Any]:
        return {"event": name, "data": {"type": name, **data}}

    start = anthropic_message([], model=model, id=id, input_tokens=input_tokens)
    start.update(content=[], stop_reason=None)
    start["usage"]["output_tokens"] = 1
    return [
        event("message_start", message=start),
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        *(
            event("content_block_delta", index=0, delta={"type": "text_delta", "text": token})
            for token in tokens
        ),
        event("content_block_stop", index=0),
        event(
            "message_delta",
            delta={"stop_reason": stop_reason, "stop_sequence": None},
            usage={"output_tokens": len(tokens)},
        ),
        event("message_stop"),
    ]


def anthropic_echo(request: StubRequest) -> dict[str, Any] | StubStream:
    """A stub handler: the last user message back, streamed when the request asks."""
    return _echo(request, ANTHROPIC_MODEL, anthropic_message, anthropic_message_stream)
