"""A service that fans out through the real OpenAI and Anthropic SDKs, to stubs that answer
their wire formats (pytest_fanout.servers.sdk_answers), plain and streamed: the SDKs parse every
answer, and the stubs' counts are exact (three OpenAI calls and one Anthropic call in flight
at once; a streamed call counts until its last byte), and a streaming endpoint of the service
is timed to its first byte and its last."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pytest_fanout.assertions import (
    FanoutAssertionError,
    assert_cancels_on_disconnect,
    assert_streams,
)
from pytest_fanout.limits import Behaviour
from pytest_fanout.measurement import Measurement, Request
from pytest_fanout.servers import Stack
from pytest_fanout.servers.process import tls_context
from pytest_fanout.servers.sdk_answers import (
    anthropic_message_stream,
    openai_chat_completion,
    openai_chat_completion_stream,
)
from tests.helpers import measure_stack

APP_DIR = Path(__file__).parent / "llm_app"
QUESTION = {"question": "What is six times seven?"}
ANSWER = "Six times seven is 42."
MODELS = ["gpt-4o-mini", "gpt-4o", "o3-mini", "claude-sonnet-4-5"]
#: Each model's time to first byte: far longer than the SDKs need to start their calls.
TTFB_MS = 250


@pytest.fixture(scope="module")
def models() -> Iterator[Stack]:
    with Stack(
        "service:app",
        app_dir=APP_DIR,
        upstreams={"openai": "OPENAI_STUB_URL", "anthropic": "ANTHROPIC_STUB_URL"},
        app_env={
            "OPENAI_BASE_URL": "{upstream_url:openai}/v1",
            "OPENAI_API_KEY": "sk-stub",
            "ANTHROPIC_BASE_URL": "{upstream_url:anthropic}",
            "ANTHROPIC_API_KEY": "stub-key",
        },
        behaviour=Behaviour(delay_ms=TTFB_MS),
        startup_timeout=30,
    ) as stack:
        yield stack


@pytest.fixture
def stack(models: Stack) -> Stack:
    for upstream in models.upstreams.values():
        upstream.restore()
        upstream.reset()
    return models


def take(stack: Stack, client: httpx2.Client, path: str) -> Measurement:
    return measure_stack(stack, client, Request(path, method="POST", json=QUESTION))


def test_plain_answers_from_both_sdks_at_once(stack: Stack) -> None:
    openai, anthropic = stack.upstreams["openai"], stack.upstreams["anthropic"]
    openai.route(
        "POST", "/v1/chat/completions", handler="pytest_fanout.servers.sdk_answers:openai_echo"
    )
    anthropic.route(
        "POST", "/v1/messages", handler="pytest_fanout.servers.sdk_answers:anthropic_echo"
    )
    assert stack.app is not None
    with httpx2.Client(timeout=60, verify=tls_context()) as client:
        answer = client.post(stack.app.url + "/ask", json=QUESTION)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"answers": dict.fromkeys(MODELS, QUESTION["question"])}
        m = take(stack, client, "/ask")
    assert m.upstream("openai").peak_per_sample == [3, 3]  # the three models at once
    assert m.upstream("anthropic").peak_per_sample == [1, 1]
    assert not m.streamed  # a JSON answer with its length: the first-byte rule leaves it
    assert m.upstream("openai").requests_per_sample == [3, 3]  # no SDK retry
    calls = openai.requests("POST", "/v1/chat/completions")
    assert sorted(c.json()["model"] for c in calls[:3]) == sorted(MODELS[:3])
    assert calls[0].headers["authorization"] == "Bearer sk-stub"
    [claude, *_] = anthropic.requests("POST", "/v1/messages")
    assert "anthropic-version" in claude.headers  # the SDK spoke to the stub


def test_streamed_answers_count_in_flight_until_their_last_byte(stack: Stack) -> None:
    openai, anthropic = stack.upstreams["openai"], stack.upstreams["anthropic"]
    # Eight tokens each at 40 a second: each stream lasts at least 7 x 25 ms after its TTFB.
    openai.route(
        "POST",
        "/v1/chat/completions",
        events=openai_chat_completion_stream(ANSWER),
        tokens_per_s=40,
    )
    anthropic.route(
        "POST", "/v1/messages", events=anthropic_message_stream(ANSWER), tokens_per_s=40
    )
    assert stack.app is not None
    with httpx2.Client(timeout=60, verify=tls_context()) as client:
        answer = client.post(stack.app.url + "/ask-streamed", json=QUESTION)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"answers": dict.fromkeys(MODELS, ANSWER)}
        m = take(stack, client, "/ask-streamed")
    assert m.upstream("openai").peak_per_sample == [3, 3]
    assert m.upstream("anthropic").peak_per_sample == [1, 1]
    assert all(c.json()["stream"] is True for c in openai.requests())
    # Exact lower bound: no stream can end before its TTFB plus its paced tokens.
    streamed_s = TTFB_MS / 1000 + (len(openai_chat_completion_stream(ANSWER)) - 1) / 40
    assert min(m.samples) >= streamed_s


def test_an_answer_built_by_the_helper_is_what_the_sdk_reads(stack: Stack) -> None:
    stack.upstreams["openai"].route(
        "POST", "/v1/chat/completions", json=openai_chat_completion("Forty-two.")
    )
    stack.upstreams["anthropic"].route(
        "POST", "/v1/messages", handler="pytest_fanout.servers.sdk_answers:anthropic_echo"
    )
    assert stack.app is not None
    answer = httpx2.post(
        stack.app.url + "/ask", json=QUESTION, timeout=60, verify=tls_context()
    ).json()
    assert answer["answers"]["gpt-4o"] == "Forty-two."
    assert answer["answers"]["claude-sonnet-4-5"] == QUESTION["question"]


# A streamed answer's handler ends just after its last byte: the next request of the same
# measurement waits for it without calling it another test's (no FanoutWarning).
@pytest.mark.filterwarnings("error::pytest_fanout.measurement.FanoutWarning")
def test_a_streaming_endpoint_is_timed_to_its_first_and_last_byte(stack: Stack) -> None:
    anthropic = stack.upstreams["anthropic"]
    # Ten events at 10 a second after a 50 ms TTFB: the first token (the third event) comes
    # at about 250 ms, the last byte at about 950 ms.
    events = anthropic_message_stream(ANSWER)
    anthropic.route("POST", "/v1/messages", events=events, delay_ms=50, tokens_per_s=10)
    with httpx2.Client(timeout=60, verify=tls_context()) as client:
        streamed = take(stack, client, "/first-answer")
        buffered = take(stack, client, "/first-answer-buffered")
    assert len(streamed.first_byte_per_sample) == len(streamed.samples) == 2
    # Exact lower bounds: no first token before its TTFB and two paced events.
    assert min(streamed.first_byte_per_sample) >= 0.05 + 2 * 0.1 * 0.9
    assert min(streamed.samples) >= 0.05 + (len(events) - 1) * 0.1 * 0.9
    assert_streams(streamed)  # first byte at ~25% of the answer's time
    # From the headers, exact: both are sent chunked, so the gate judges both first bytes
    # (the buffered one's is its last: assert_streams, not the headers, tells them apart).
    assert streamed.streamed and buffered.streamed
    with pytest.raises(FanoutAssertionError, match="the answer is buffered, not streamed"):
        assert_streams(buffered)  # first byte with the last
    data = streamed.to_dict()
    assert data["first_byte_median_s"] == streamed.first_byte_median_s
    assert Measurement.from_dict(data).first_byte_per_sample == streamed.first_byte_per_sample
    assert Measurement.from_dict(data).streamed


def test_the_sdks_when_the_gateways_caller_hangs_up(stack: Stack) -> None:
    """The caller hangs up at 100 ms, before any model's first byte (250 ms). The service's
    ordinary endpoint reads all four streams to the end for nobody; its streaming endpoint,
    which Starlette cancels, is measured as the model upstream sees it."""
    openai, anthropic = stack.upstreams["openai"], stack.upstreams["anthropic"]
    openai.route(
        "POST",
        "/v1/chat/completions",
        events=openai_chat_completion_stream(ANSWER),
        tokens_per_s=40,
    )
    anthropic.route(
        "POST", "/v1/messages", events=anthropic_message_stream(ANSWER), tokens_per_s=40
    )
    assert stack.app is not None
    with httpx2.Client(timeout=60, verify=tls_context()) as client:

        def hang_up(path: str) -> Measurement:
            return measure_stack(
                stack, client, Request(path, method="POST", json=QUESTION), disconnect_after_s=0.1
            )

        ordinary = hang_up("/ask-streamed")
        streamed = hang_up("/first-answer")
    assert ordinary.upstream("openai").after_disconnect_per_sample == [3, 3]
    assert ordinary.upstream("anthropic").after_disconnect_per_sample == [1, 1]
    with pytest.raises(FanoutAssertionError, match="6 calls to 'openai' ran on after the caller"):
        assert_cancels_on_disconnect(ordinary)
    # Starlette cancels the streaming body; the SDK's stream context closes its response,
    # so the model upstream sees the connection close and stops (cut), nothing runs on.
    assert streamed.upstream("anthropic").after_disconnect_per_sample == [0, 0]
    assert streamed.upstream("anthropic").cut_per_sample == [1, 1]
    assert_cancels_on_disconnect(streamed)
