"""Servers in child processes: the runner, the stub upstream, the app under its probe.

* `process`: `ServerProcess`, an ASGI app under uvicorn in its own process
  group, on a socket the parent bound; readiness polled, log tail kept;
* `child`: the entry point that process runs (`python -m pytest_fanout.servers.child`);
* `apps`: which kind of web app an object is (ASGI 3, WSGI, aiohttp) and how it is served;
* `probe`: the loop probe wrapped around the app (lag, in flight), `stallwatch` (its
  sampler of the stacks that block the loop) and `callstacks` (those stacks read as
  one line: the user's own code and the call it was in);
* `upstream`: the stub upstream (raw ASGI, exact gauges), with `routes` (real answers,
  handlers), `streaming` (SSE events or chunks, paced), `recorder` (the requests it
  saw, bounded) and `connections` (TCP connections counted as the server accepts them);
* `stubhttp`: the stub's own HTTP/1.1 server (httptools, uvloop), no ASGI per item call;
* `stub_server`: `StubUpstreamServer`, one stub in a child process, its control API as methods;
* `sdk_answers`: the OpenAI and Anthropic wire formats, plain and streamed, for its routes;
* `stack`: the stack of servers: named stubs and the app together, the app pointed at
  each stub (a `pytest_fanout.spec.StackSpec` builds one);
* `cleanup`: the one process-group killer and the one registry of live children;
* `proctree`: which processes live (from /proc), for tests and Locust runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_fanout.limits import lazy_names

if TYPE_CHECKING:
    from pytest_fanout.limits import DEFAULT_APP, Behaviour, ConfigError
    from pytest_fanout.servers.process import (
        LOOPBACK,
        ServerDiedError,
        ServerProcess,
        ServerStartError,
    )
    from pytest_fanout.servers.routes import RouteError, StubRequest, StubResponse
    from pytest_fanout.servers.stack import (
        AppServer,
        RecordedRequest,
        Stack,
        StubUpstreamServer,
    )
    from pytest_fanout.servers.streaming import StubStream

#: Each public name loads with its module on first use (pytest imports this package
#: at start-up: pytest_fanout.limits.lazy_names).
__getattr__ = lazy_names(
    __name__,
    {
        "LOOPBACK": "pytest_fanout.servers.process",
        "ServerProcess": "pytest_fanout.servers.process",
        "ServerStartError": "pytest_fanout.servers.process",
        "ServerDiedError": "pytest_fanout.servers.process",
        "RouteError": "pytest_fanout.servers.routes",
        "StubRequest": "pytest_fanout.servers.routes",
        "StubResponse": "pytest_fanout.servers.routes",
        "DEFAULT_APP": "pytest_fanout.limits",
        "AppServer": "pytest_fanout.servers.stack",
        "RecordedRequest": "pytest_fanout.servers.stack",
        "Stack": "pytest_fanout.servers.stack",
        "StubUpstreamServer": "pytest_fanout.servers.stack",
        "StubStream": "pytest_fanout.servers.streaming",
        "Behaviour": "pytest_fanout.limits",
        "ConfigError": "pytest_fanout.limits",
    },
)

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
    "ServerDiedError",
    "Stack",
    "StubRequest",
    "StubResponse",
    "StubStream",
    "StubUpstreamServer",
]
