"""Which kind of app an object is (servers/apps.py) and how a stream is encoded
(servers/streaming.py): pure logic, no process."""

from __future__ import annotations

import functools

import pytest
from aiohttp import web
from flask import Flask
from starlette.applications import Starlette

from pytest_fanout.servers.apps import (
    AIOHTTP,
    ASGI3,
    WSGI,
    NotAnAppError,
    app_kind,
    wsgi_threads,
)
from pytest_fanout.servers.streaming import (
    StreamError,
    encode_event,
    interval_s,
    plan_from_spec,
)


async def bare_asgi(scope, receive, send): ...


def bare_wsgi(environ, start_response): ...


class CallableAsgi:
    async def __call__(self, scope, receive, send): ...


@pytest.mark.parametrize(
    ("app", "kind"),
    [
        (Starlette(), ASGI3),
        (bare_asgi, ASGI3),
        (CallableAsgi(), ASGI3),
        (functools.partial(bare_asgi), ASGI3),
        (Flask("x"), WSGI),
        (bare_wsgi, WSGI),
        (web.Application(), AIOHTTP),
    ],
    ids=["starlette", "asgi-function", "asgi-instance", "partial", "flask", "wsgi", "aiohttp"],
)
def test_the_kind_is_read_off_the_object(app: object, kind: str) -> None:
    assert app_kind(app) == kind


@pytest.mark.parametrize(
    ("app", "found"),
    [
        (None, "found a NoneType, which is not callable"),
        (Flask, "found the class Flask, not an app"),
        (lambda scope: None, "taking one argument: an ASGI 2 app"),
        (lambda: None, "taking 0 positional argument(s)"),
    ],
    ids=["none", "class", "asgi2", "no-arguments"],
)
def test_anything_else_is_named_with_what_is_accepted(app: object, found: str) -> None:
    with pytest.raises(NotAnAppError) as caught:
        app_kind(app)
    assert found in str(caught.value)
    assert "accepted: an ASGI 3 app" in str(caught.value)


def test_wsgi_threads_come_from_the_environment() -> None:
    assert wsgi_threads({}) == 10
    assert wsgi_threads({"PYTEST_FANOUT_WSGI_THREADS": "32"}) == 32
    with pytest.raises(ValueError, match="must be a whole number from 1 to 1000"):
        wsgi_threads({"PYTEST_FANOUT_WSGI_THREADS": "0"})


def test_events_are_encoded_as_the_sse_wire_carries_them() -> None:
    assert encode_event("hi") == b"data: hi\n\n"
    assert encode_event({"event": "delta", "id": 3, "data": {"a": 1}}) == (
        b'event: delta\nid: 3\ndata: {"a":1}\n\n'
    )
    assert encode_event({"data": "two\nlines"}) == b"data: two\ndata: lines\n\n"
    with pytest.raises(StreamError, match="an event's event has a line break"):
        encode_event({"event": "a\nb"})


def test_the_pace() -> None:
    assert interval_s(None, None) == 0
    assert interval_s(250, None) == 0.25
    assert interval_s(None, 20) == 0.05
    plan = plan_from_spec({"chunks": ["a", b"b"], "tokens_per_s": 10}, handler=False)
    assert plan is not None and plan.pieces == [b"a", b"b"] and not plan.sse
    assert plan_from_spec({"json": {}}, handler=False) is None
