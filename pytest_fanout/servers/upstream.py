"""The stub upstream: a raw ASGI app that answers after a delay and counts what it sees.

No framework sits in the hot path, so it is never the bottleneck of a
measurement. Its gauge (requests seen, in flight now, PEAK in flight) is what
makes concurrency assertions exact instead of timing guesses. Control and
stats live under `/__upstream__/`; every other GET path is "an item".

Per-request overrides, as query parameters: `delay_ms`, `status`, `fault`
(`drop` closes the connection mid-response).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import parse_qsl

CONTROL_PREFIX = "/__upstream__/"
ITEM_BODY = b'{"ok":true}'
JSON_HEADERS = [(b"content-type", b"application/json")]
ENV_PREFIX = "FANOUT_STUB_"
_ITEM_HEADERS = [*JSON_HEADERS, (b"content-length", str(len(ITEM_BODY)).encode())]


class ConfigError(ValueError):
    """A behaviour setting the stub cannot use."""


@dataclass
class Behaviour:
    """How the stub answers; changed at run time by POST /__upstream__/config."""

    delay_ms: float = 100.0
    jitter_ms: float = 0.0
    #: Fraction of item calls answered with `error_status` instead of 200.
    error_rate: float = 0.0
    error_status: int = 500
    #: Fraction of item calls whose connection is closed mid-response.
    drop_rate: float = 0.0
    #: In-flight calls above this get 429 at once (a rate-limited upstream); 0 = no cap.
    max_inflight: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply `changes` (validated first, so a bad one changes nothing)."""
        known = {f.name: type(f.default) for f in fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        candidate = asdict(self)
        for name, value in changes.items():
            kind = known[name]
            try:
                candidate[name] = kind(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{name}={value!r} is not a valid {kind.__name__}") from None
        checked = Behaviour(**candidate)
        checked.validate()
        for name, value in candidate.items():
            setattr(self, name, value)

    def validate(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ConfigError("delay_ms and jitter_ms must be >= 0")
        if not (0 <= self.error_rate <= 1 and 0 <= self.drop_rate <= 1):
            raise ConfigError("error_rate and drop_rate must be between 0 and 1")
        if not 100 <= self.error_status <= 599:
            raise ConfigError("error_status must be an HTTP status (100-599)")
        if self.max_inflight < 0:
            raise ConfigError("max_inflight must be >= 0 (0 means no cap)")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Behaviour:
        """Read FANOUT_STUB_<SETTING> variables: how the harness configures a child process."""
        env = os.environ if environ is None else environ
        behaviour = cls()
        changes = {
            f.name: env[ENV_PREFIX + f.name.upper()]
            for f in fields(cls)
            if env.get(ENV_PREFIX + f.name.upper())
        }
        behaviour.update(changes)
        return behaviour

    def to_env(self) -> dict[str, str]:
        return {ENV_PREFIX + k.upper(): str(v) for k, v in asdict(self).items()}


@dataclass
class Gauge:
    """What the stub has seen since the last reset."""

    requests: int = 0
    inflight: int = 0
    peak_inflight: int = 0
    completed: int = 0
    errors: int = 0
    rejected: int = 0
    dropped: int = 0


class StubUpstream:
    """The ASGI app. One instance per process; its gauge is exact because the loop is single."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.gauge = Gauge()
        self._random = random.Random()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path.startswith(CONTROL_PREFIX):
                await self._control(scope, receive, send)
            else:
                await self._item(scope, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _item(self, scope: dict, send: Any) -> None:
        gauge, behaviour = self.gauge, self.behaviour
        gauge.requests += 1
        if behaviour.max_inflight and gauge.inflight >= behaviour.max_inflight:
            gauge.rejected += 1
            await _reply(send, 429, b'{"error":"too many requests in flight"}')
            return
        gauge.inflight += 1
        if gauge.inflight > gauge.peak_inflight:
            gauge.peak_inflight = gauge.inflight
        try:
            raw_query = scope["query_string"]
            query = dict(parse_qsl(raw_query.decode("latin-1"))) if raw_query else {}
            delay_ms = _number(query.get("delay_ms"), behaviour.delay_ms)
            if behaviour.jitter_ms:
                delay_ms += self._random.uniform(0, behaviour.jitter_ms)
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            if query.get("fault") == "drop" or self._chance(behaviour.drop_rate):
                gauge.dropped += 1
                await _drop(send)
                return
            status = int(_number(query.get("status"), 200))
            if self._chance(behaviour.error_rate):
                status = behaviour.error_status
            if status >= 400:
                gauge.errors += 1
            await _reply(send, status, ITEM_BODY)
            gauge.completed += 1
        finally:
            gauge.inflight -= 1

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self._random.random() < rate

    async def _control(self, scope: dict, receive: Any, send: Any) -> None:
        action = scope["path"][len(CONTROL_PREFIX) :].strip("/")
        method = scope["method"]
        if action == "stats" and method == "GET":
            await _reply(send, 200, self.stats_json())
        elif action == "reset" and method == "POST":
            self.gauge = Gauge(inflight=self.gauge.inflight)
            self.gauge.peak_inflight = self.gauge.inflight
            await _reply(send, 200, self.stats_json())
        elif action == "config" and method == "GET":
            await _reply(send, 200, json.dumps(asdict(self.behaviour)).encode())
        elif action == "config" and method == "POST":
            try:
                changes = json.loads(await _body(receive) or b"{}")
                if not isinstance(changes, dict):
                    raise ConfigError("the body must be a JSON object")
                self.behaviour.update(changes)
            except (ValueError, ConfigError) as exc:
                await _reply(send, 422, json.dumps({"detail": str(exc)}).encode())
                return
            await _reply(send, 200, json.dumps(asdict(self.behaviour)).encode())
        else:
            await _reply(send, 404, b'{"detail":"unknown control path or method"}')

    def stats_json(self) -> bytes:
        return json.dumps(asdict(self.gauge)).encode()


def _number(raw: str | None, default: float) -> float:
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        return default


async def _reply(send: Any, status: int, body: bytes) -> None:
    if body is ITEM_BODY:
        headers = _ITEM_HEADERS  # the hot path: built once
    else:
        headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drop(send: Any) -> None:
    """Promise a body, send half of it, then fail: uvicorn closes the connection."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*JSON_HEADERS, (b"content-length", b"100")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"ok":', "more_body": True})
    raise ConnectionAbortedError("stub upstream: connection dropped on purpose")


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def app_from_env() -> StubUpstream:
    """Factory for a child process: behaviour from FANOUT_STUB_* variables."""
    return StubUpstream(Behaviour.from_env())
