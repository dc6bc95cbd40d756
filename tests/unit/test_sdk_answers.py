"""The model-API answers are what the SDKs' own types accept, and stream into the same text."""

from __future__ import annotations

import json

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from pytest_fanout.servers.routes import StubRequest
from pytest_fanout.servers.sdk_answers import (
    anthropic_echo,
    anthropic_message,
    anthropic_message_stream,
    openai_chat_completion,
    openai_chat_completion_stream,
    openai_echo,
    tokens_of,
)
from pytest_fanout.servers.streaming import StubStream, encode_event

TEXT = "Six times seven is 42."


def test_tokens_join_back_into_the_text() -> None:
    assert tokens_of(TEXT) == ["Six ", "times ", "seven ", "is ", "42."]
    assert "".join(tokens_of("  spaced  out ")) == "  spaced  out "
    assert tokens_of(["a", "b"]) == ["a", "b"]
    with pytest.raises(TypeError):
        tokens_of([1])  # type: ignore[list-item]


def test_openai_answers_parse_as_the_sdk_types() -> None:
    completion = ChatCompletion.model_validate(openai_chat_completion(TEXT, model="gpt-4o"))
    assert completion.choices[0].message.content == TEXT
    assert completion.model == "gpt-4o"
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    *chunks, done = openai_chat_completion_stream(TEXT)
    assert done == "[DONE]"
    parsed = [ChatCompletionChunk.model_validate(c["data"]) for c in chunks]
    assert "".join(c.choices[0].delta.content or "" for c in parsed) == TEXT
    assert parsed[-1].choices[0].finish_reason == "stop"


def test_anthropic_answers_parse_as_the_sdk_types() -> None:
    message = Message.model_validate(anthropic_message(TEXT))
    assert message.content[0].text == TEXT  # type: ignore[union-attr]
    events = anthropic_message_stream(TEXT)
    adapter = TypeAdapter(RawMessageStreamEvent)
    parsed = [adapter.validate_python(e["data"]) for e in events]
    assert [e["event"] for e in events] == [p.type for p in parsed]
    deltas = [p.delta.text for p in parsed if p.type == "content_block_delta"]  # type: ignore[union-attr]
    assert "".join(deltas) == TEXT
    # Each event's name and data on the wire, as the SDK's SSE decoder reads them.
    wire = encode_event(events[0]).decode()
    assert wire.startswith("event: message_start\ndata: {")
    assert json.loads(wire.split("data: ", 1)[1])["type"] == "message_start"


def request(body: dict) -> StubRequest:
    return StubRequest("POST", "/v1/x", {}, {}, {}, json.dumps(body).encode())


def test_echo_handlers_answer_the_last_user_message_streamed_when_asked() -> None:
    body = {
        "model": "m1",
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
        ],
    }
    plain = openai_echo(request(body))
    assert isinstance(plain, dict)
    assert plain["choices"][0]["message"]["content"] == "second"
    assert plain["model"] == "m1"
    streamed = anthropic_echo(request({**body, "stream": True}))
    assert isinstance(streamed, StubStream) and streamed.events is not None
    assert anthropic_echo(request(body))["content"][0]["text"] == "second"  # type: ignore[index]
