"""The calls one request made, read from the stubs' call logs (`servers/calllog.py`).

The harness sends one request at a time and notes its window on
`time.monotonic()`, the clock the stubs stamp calls with (one clock for
every process of the machine): the calls that arrived inside the window are
that request's. Times here are seconds since the request was sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pytest_fanout.servers.upstream import CONTROL_PREFIX

TIMELINE_PATH = CONTROL_PREFIX + "timeline"


@dataclass(frozen=True)
class Call:
    """One upstream call: who, what, when (seconds since the request was sent)."""

    upstream: str
    method: str
    path: str
    #: The stub route's template ("/stock/{sku}"), or the path when no route matched.
    route: str
    start_s: float
    end_s: float
    #: The delay the stub applied to it (ms), an experiment's extra included.
    delay_ms: float
    #: The status answered; 0 when the connection was dropped or no answer came yet.
    status: int
    #: Same digest = same method, path, query and body.
    digest: str
    #: The stub changed its JSON answer (the independence experiment).
    perturbed: bool = False

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def key(self) -> tuple[str, str, str]:
        """(upstream, method, route): calls with one key are "the same kind of call"."""
        return (self.upstream, self.method, self.route)


@dataclass
class RequestTimeline:
    """One request to the app and the upstream calls inside it, in arrival order."""

    method: str
    path: str
    duration_s: float
    calls: list[Call]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "duration_s": self.duration_s,
            "calls": [asdict(c) for c in self.calls],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestTimeline:
        return cls(
            method=data["method"],
            path=data["path"],
            duration_s=float(data["duration_s"]),
            calls=[Call(**c) for c in data["calls"]],
        )


def fetch_calls(
    upstreams: Mapping[str, Any], since: float, until: float
) -> dict[str, list[dict[str, Any]]]:
    """Each stub's logged calls that arrived in [since, until] (monotonic seconds)."""
    out = {}
    for name, stub in upstreams.items():
        response = stub.control.get(TIMELINE_PATH, params={"since": since, "until": until})
        out[name] = response.raise_for_status().json()["calls"]
    return out


def request_timeline(
    upstreams: Mapping[str, Any], method: str, path: str, start: float, end: float
) -> RequestTimeline:
    """The timeline of the request sent at `start` and answered at `end` (monotonic)."""
    return build_timeline(fetch_calls(upstreams, start, end), method, path, start, end)


def build_timeline(
    logged: Mapping[str, list[dict[str, Any]]], method: str, path: str, start: float, end: float
) -> RequestTimeline:
    """A RequestTimeline from the stubs' raw entries (pure: unit-tested)."""
    duration = max(end - start, 0.0)
    calls = []
    for upstream, entries in logged.items():
        for entry in entries:
            arrival = entry["arrival_s"] - start
            answered = entry["answered_s"]
            # Never answered (still running, or dropped): it lasted until the request ended.
            finish = answered - start if answered else duration
            calls.append(
                Call(
                    upstream=upstream,
                    method=entry["method"],
                    path=entry["path"],
                    route=entry["route"] or entry["path"],
                    start_s=max(arrival, 0.0),
                    end_s=max(min(finish, duration), arrival),
                    delay_ms=float(entry["delay_ms"]),
                    status=int(entry["status"]),
                    digest=entry["digest"],
                    perturbed=bool(entry.get("perturbed", False)),
                )
            )
    calls.sort(key=lambda c: (c.start_s, c.upstream))
    return RequestTimeline(method=method, path=path, duration_s=duration, calls=calls)


def set_experiment(stub: Any, **settings: Any) -> None:
    """Set a stub's experiment knobs (extra_ms, extra_route, extra_routes, perturb,
    perturb_route)."""
    response = stub.control.post(TIMELINE_PATH, json=settings)
    if response.status_code == 422:
        raise ValueError(f"upstream refused {settings}: {response.json()['detail']}")
    response.raise_for_status()
