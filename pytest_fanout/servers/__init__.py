"""Servers in child processes: the runner, the stub upstream, the app under its probe.

* `process`: `ServerProcess`, an ASGI app under uvicorn in its own process
  group, on a socket the parent bound; readiness polled, log tail kept;
* `child`: the entry point that process runs (`python -m pytest_fanout.servers.child`);
* `apps`: which kind of web app an object is (ASGI 3, WSGI, aiohttp) and how it is served;
* `probe`: the loop probe wrapped around the app (lag, in flight);
* `upstream`: the stub upstream (raw ASGI, exact gauges), with `routes` (real answers,
  handlers), `streaming` (SSE events or chunks, paced), `recorder` (the requests it
  saw, bounded) and `connections` (TCP connections counted at uvicorn's protocol level);
* `stub_server`: `StubUpstreamServer`, one stub in a child process, its control API as methods;
* `sdk_answers`: the OpenAI and Anthropic wire formats, plain and streamed, for its routes;
* `stack`: named stubs and the app together, the app pointed at each stub;
* `cleanup`: the one process-group killer and the one registry of live children;
* `proctree`: which processes live (from /proc), for tests and Locust runs.
"""

from __future__ import annotations

from pytest_fanout.servers.process import LOOPBACK, ServerProcess, ServerStartError
from pytest_fanout.servers.routes import RouteError, StubRequest, StubResponse
from pytest_fanout.servers.stack import (
    DEFAULT_APP,
    AppServer,
    RecordedRequest,
    Stack,
    StubUpstreamServer,
)
from pytest_fanout.servers.streaming import StubStream
from pytest_fanout.servers.upstream import Behaviour, ConfigError

__all__ = [
    "DEFAULT_APP",
    "LOOPBACK",
    "AppServer",
    "Behaviour",
    "ConfigError",
    "RecordedRequest",
    "RouteError",
    "ServerProcess",
    "ServerStartError",
    "Stack",
    "StubRequest",
    "StubResponse",
    "StubStream",
    "StubUpstreamServer",
]
