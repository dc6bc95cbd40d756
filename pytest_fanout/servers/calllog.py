"""The stub upstream's per-call log: when each call arrived and was answered, bounded.

A waterfall needs the order of calls in time, which counts cannot give. Each
entry holds the arrival and answer instants on `time.monotonic()` (one clock
for every process of the machine, so the harness can place the calls inside
the window of the request it sent), the method, path, route template, the
delay applied (extra included), the status and a digest of the request (method,
path, query, body): two calls with the same digest asked the same thing.

It also holds the two experiment knobs the timeline needs (`timeline/`):
an extra delay added to the calls of one route (or all), to measure how much
of it the endpoint pays, and `perturb`, which changes the JSON answers of one
route, to see whether the app's later calls depend on them.
Memory: at most `max_calls` entries of fixed size.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from pytest_fanout.limits import MAX_DELAY_MS, strict_json_dumps, strict_json_loads
from pytest_fanout.servers.ratelimit import asked_wait_s

#: Calls kept (the oldest go first).
DEFAULT_MAX_CALLS = 10_000
#: The most calls a stub keeps, whatever it is told.
MAX_CALLS = 1_000_000
#: Largest extra delay an experiment may add to (or take off) one call (ms).
MAX_EXTRA_MS = 10_000.0
#: The most routes one experiment may change at once on one stub.
MAX_EXTRA_ROUTES = 1_000

# arrival_s, answered_s (0.0 until answered; the end: the answer's last byte sent or the
# connection seen closed, whichever first), method, path, route template ("" when no
# route matched: `select` folds the path's ids then), delay_ms applied, status (0 until
# answered), digest, answer perturbed, cut (the client went away before the answer), and
# the wait (s) a 429 answer asked for (None: not a 429, or it asked for none).
Call = list[Any]
#: An ASGI `send`.
Send = Callable[[dict[str, Any]], Awaitable[None]]


#: A path segment that is an id: digits, or 8+ hex digits and '-' with a digit among them.
_ID = re.compile(r"/(?=[^/]*\d)(?:\d+|[0-9a-fA-F-]{8,})(?=/|$)")


def path_template(path: str) -> str:
    """A path without a stub route, its ids folded: "/items/33" -> "/items/{id}", so the
    calls of one loop group together."""
    return _ID.sub("/{id}", path)


def route_key(method: str, template: str) -> str:
    """How the experiments name a route: "GET /stock/{sku}"."""
    return f"{method} {template}"


class CallLog:
    """A bounded deque of calls plus the experiment settings (`extra_ms`, `perturb`)."""

    def __init__(self, max_calls: int = DEFAULT_MAX_CALLS) -> None:
        self.calls: deque[Call] = deque(maxlen=max_calls)
        #: Calls seen since the last clear, including those the bound dropped.
        self.seen = 0
        #: Extra delay (ms) added to the calls of `extra_route` ("" = every call); negative
        #: makes them faster (never below 0).
        self.extra_ms = 0.0
        self.extra_route = ""
        #: {route key: extra ms} on top: several routes of one stub changed at once (the
        #: critical path's experiments change every target in each run).
        self.extra_routes: dict[str, float] = {}
        #: Change the JSON answers of `perturb_route` ("" = every call) when `perturb`.
        self.perturb = False
        self.perturb_route = ""

    def arrive(self, method: str, path: str, query: bytes, body: bytes) -> Call:
        """Log a call as it arrives (its route and delay come with `plan`)."""
        # Python's own hash of the request: compared only within this process (the calls
        # of one request, or of runs a moment apart), where it is stable; cheap.
        digest = hash((method, path, query, body))  # hex when read
        call = [time.monotonic(), 0.0, method, path, "", 0.0, 0, digest, False, False, None]
        self.seen += 1
        self.calls.append(call)
        return call

    def plan(self, call: Call, template: str | None, delay_ms: float) -> float:
        """Record the call's route; return its delay with the experiment's extra added."""
        call[4] = template or ""  # folded from the path when read, off the hot path
        extra = self.extra_ms if self.extra_ms and self._targets(self.extra_route, call) else 0.0
        if self.extra_routes:
            key = route_key(call[2], template or path_template(call[3]))
            extra += self.extra_routes.get(key, 0.0)
        if extra:
            delay_ms = min(max(delay_ms + extra, 0.0), MAX_DELAY_MS)
        call[5] = delay_ms
        return delay_ms

    def shape(self, call: Call, answer: bytes) -> bytes:
        """The answer to send: perturbed when the experiment asks for it and it is JSON."""
        if not self.perturb or not self._targets(self.perturb_route, call):
            return answer
        try:
            changed = strict_json_dumps(perturb_json(strict_json_loads(answer)))
        except ValueError:
            return answer
        call[8] = changed != answer
        return changed

    def stamping(self, call: Call, send: Send) -> Send:
        """`send` that stamps the call answered as its last body message is handed over,
        before the client can read it: the app can never start a call on another stub
        before this one is over in the log, however slowly the bytes go out."""

        async def stamped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                if not call[1] and not message.get("more_body"):  # not after a `cut`
                    call[1] = time.monotonic()
            elif message.get("status") == 429:  # the wait it asks for (retry facts)
                call[10] = asked_wait_s(message.get("headers", ()))
            await send(message)

        return stamped

    def stamp(self, call: Call, status: int, headers: Any) -> None:
        """A whole answer is handed over (as `stamping` does for its messages): the call is
        answered now unless it was cut, and a 429 notes the wait it asks for."""
        if status == 429:
            call[10] = asked_wait_s(headers)
        if not call[1]:
            call[1] = time.monotonic()

    def cut(self, call: Call) -> bool:
        """The call's connection closed: unless it was answered, the call ends now (the
        client, a cancelled task, no longer waits for it), whatever the stub still does.
        True when it was cut so."""
        if call[1]:
            return False
        call[1] = time.monotonic()
        call[9] = True
        return True

    def late(self, since: float, after: float, grace_s: float = 0.0) -> dict[str, int]:
        """Calls that arrived from `since` on and ran past `after` (+ `grace_s`): still in
        flight then (not ended, or ended later), or begun after it. `cut`: how many of all
        the calls from `since` ended by their connection closing (cancelled by the app)."""
        late = cut = 0
        limit = after + grace_s
        for call in list(self.calls):
            if call[0] < since:
                continue
            cut += call[9]
            if call[0] > after or not call[1] or call[1] > limit:
                late += 1
        return {"late": late, "cut": cut}

    def answer(self, call: Call, status: int) -> None:
        """The call is over with `status` (stamped now unless its last byte already was)."""
        if not call[1]:
            call[1] = time.monotonic()
        call[6] = status

    def _targets(self, route: str, call: Call) -> bool:
        if not route:
            return True
        return route == route_key(call[2], call[4] or path_template(call[3]))

    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Apply {extra_ms, extra_route, extra_routes, perturb, perturb_route, max_calls},
        checked first."""
        unknown = sorted(set(settings) - {*self.settings(), "max_calls"})
        if unknown:
            raise ValueError(f"unknown timeline setting(s): {', '.join(unknown)}")
        extra = settings.get("extra_ms", self.extra_ms)
        if isinstance(extra, bool) or not isinstance(extra, int | float):
            raise ValueError(f"extra_ms={extra!r} is not a number")
        if not -MAX_EXTRA_MS <= extra <= MAX_EXTRA_MS:
            raise ValueError(
                f"extra_ms={extra!r} must be from {-MAX_EXTRA_MS:.0f} to {MAX_EXTRA_MS:.0f}"
            )
        routes = settings.get("extra_routes", self.extra_routes)
        if not isinstance(routes, dict) or len(routes) > MAX_EXTRA_ROUTES:
            raise ValueError(f"extra_routes must be an object of at most {MAX_EXTRA_ROUTES} routes")
        for key, value in routes.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not isinstance(key, str) or not number or not abs(value) <= MAX_EXTRA_MS:
                raise ValueError(
                    f"extra_routes[{key!r}]={value!r}: give 'GET /x': ms within"
                    f" +/-{MAX_EXTRA_MS:.0f}"
                )
        for name in ("extra_route", "perturb_route"):
            if not isinstance(settings.get(name, ""), str):
                raise ValueError(f"{name} must be a string like 'GET /stock/{{sku}}'")
        perturb = settings.get("perturb", self.perturb)
        if not isinstance(perturb, bool):
            raise ValueError("perturb must be true or false")
        size = settings.get("max_calls", self.calls.maxlen)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_CALLS:
            raise ValueError(f"max_calls={size!r} must be a whole number from 0 to {MAX_CALLS}")
        self.extra_ms = float(extra)
        self.extra_route = settings.get("extra_route", self.extra_route)
        self.extra_routes = {key: float(value) for key, value in routes.items()}
        self.perturb = perturb
        self.perturb_route = settings.get("perturb_route", self.perturb_route)
        if size != self.calls.maxlen:
            self.calls = deque(self.calls, maxlen=size)
        return self.settings()

    def settings(self) -> dict[str, Any]:
        return {
            "extra_ms": self.extra_ms,
            "extra_route": self.extra_route,
            "extra_routes": dict(self.extra_routes),
            "perturb": self.perturb,
            "perturb_route": self.perturb_route,
        }

    def clear(self) -> None:
        self.calls.clear()
        self.seen = 0

    def select(self, since: float | None = None, until: float | None = None) -> list[dict]:
        """Calls that arrived in [since, until] (monotonic seconds), in arrival order."""
        out = []
        for call in list(self.calls):
            if since is not None and call[0] < since:
                continue
            if until is not None and call[0] > until:
                continue
            out.append(
                {
                    "arrival_s": call[0],
                    "answered_s": call[1],
                    "method": call[2],
                    "path": call[3],
                    "route": call[4] or path_template(call[3]),
                    "delay_ms": call[5],
                    "status": call[6],
                    "digest": f"{call[7] & 0xFFFFFFFFFFFFFFFF:016x}",
                    "perturbed": call[8],
                    "cut": call[9],
                    "asked_s": call[10],
                }
            )
        return out


def perturb_json(value: Any) -> Any:
    """The same shape with every number changed (+1) and every string lengthened ("x"):
    an app whose next call depends on this answer sends a different request."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [perturb_json(v) for v in value]
    if isinstance(value, dict):
        return {k: perturb_json(v) for k, v in value.items()}
    return value
