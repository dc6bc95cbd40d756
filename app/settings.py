"""Every setting of the reference app, read from environment variables in one place.

Each number has a range and must be finite: `FANOUT_DEADLINE_S=nan` or `inf`,
a negative pool or a zero timeout stop the app at start-up with one line that
names the variable, instead of starting and then failing every request.
pydantic (already here through FastAPI) does the parsing and gives the reasons.

The settings table of docs/reference-app.md mirrors `Settings`; keep the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass

Transport = Literal["aiohttp", "httpx2"]
TRANSPORTS: tuple[str, ...] = ("aiohttp", "httpx2")
ENV_PREFIX = "FANOUT_"
#: FANOUT_POOL_SIZE when unset, by transport. httpx2's own pool does work in proportion
#: to its connections and waiters on every call: at 1000 in flight a flood kept its loop
#: busy past the deadline (answers at 5 s for a 2 s deadline, every call failed); at 100
#: the deadline holds (benchmarks/flood.py --all). aiohttp's connector is O(1) per call.
DEFAULT_POOL_SIZE = {"aiohttp": 1000, "httpx2": 100}

#: Seconds: above zero, at most an hour, never NaN or infinity.
Seconds = Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]


class SettingsError(ValueError):
    """A setting in the environment has a value the app cannot use."""


@dataclass(frozen=True)
class Settings:
    """The app's configuration; `Settings.from_env()` is the only reader of the environment."""

    #: Base URL of the one upstream the app calls. No request can change it (no SSRF).
    upstream_url: str = "http://127.0.0.1:8001"
    #: Largest fan-out width a request may ask for; larger is a 422 (no amplification).
    max_n: Annotated[int, Field(ge=1, le=10_000)] = 1000
    #: Largest semaphore bound a request may ask for.
    max_concurrency: Annotated[int, Field(ge=1, le=10_000)] = 1000
    #: Connections in the shared async client's pool; in-flight calls never exceed it.
    #: Unset, `from_env` picks it by transport (`DEFAULT_POOL_SIZE`).
    pool_size: Annotated[int, Field(ge=1, le=10_000)] = 1000
    #: Upstream calls this process may have queued and in flight, all requests together.
    #: A request whose n would pass it is shed at once (503 with Retry-After).
    max_pending_calls: Annotated[int, Field(ge=1, le=1_000_000)] = 4000
    #: The Retry-After of a shed request, in whole seconds.
    retry_after_s: Annotated[int, Field(ge=1, le=3600)] = 1
    #: Engine under the shared `httpx2.AsyncClient`: "aiohttp" (app.transport) or
    #: "httpx2" (httpx2's own pool).
    transport: Transport = "aiohttp"
    #: Seconds one upstream call may take to connect, send and answer before it counts as
    #: failed; its wait for a pooled connection is bounded by `deadline_s` instead.
    call_timeout_s: Seconds = 5.0
    #: Seconds a whole request may take, waiting for a thread, the semaphore or the pool
    #: included; calls still running then are cancelled and reported.
    deadline_s: Seconds = 30.0
    #: How many error reasons an answer lists (the count is always complete).
    max_error_reasons: Annotated[int, Field(ge=0, le=10_000)] = 5
    #: CPU milliseconds burnt per upstream call: an injected slowdown to validate the gate.
    call_overhead_ms: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)] = 0.0
    #: Young-generation GC threshold set after start-up (with gc.freeze()); 0 keeps Python's.
    gc_threshold: Annotated[int, Field(ge=0, le=10_000_000)] = 50_000

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if not self.upstream_url.startswith(("http://", "https://")):
            raise ValueError("FANOUT_UPSTREAM_URL must start with http:// or https://")
        if self.max_pending_calls < self.max_n:
            raise ValueError(
                f"FANOUT_MAX_PENDING_CALLS ({self.max_pending_calls}) must be at least "
                f"FANOUT_MAX_N ({self.max_n}), or no request of the widest fan-out gets in"
            )
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read `FANOUT_<FIELD>` variables (for example FANOUT_MAX_N) over the defaults.

        Raises SettingsError with one line naming each refused variable and why.
        """
        env = os.environ if environ is None else environ
        values = {}
        for field in fields(cls):
            raw = env.get(variable(field.name))
            if raw is not None and raw != "":
                values[field.name] = raw
        if "pool_size" not in values:
            values["pool_size"] = DEFAULT_POOL_SIZE.get(values.get("transport", "aiohttp"), 1000)
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError(_one_line(exc, values)) from None


def variable(name: str) -> str:
    """The environment variable of a field: `deadline_s` -> `FANOUT_DEADLINE_S`."""
    return ENV_PREFIX + name.upper()


def _one_line(exc: ValidationError, given: Mapping[str, str]) -> str:
    reasons = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if loc and isinstance(loc[0], str) and loc[0] in given:
            reasons.append(f"{variable(loc[0])}={given[loc[0]]!r}: {error['msg']}")
        elif loc and isinstance(loc[0], str):
            reasons.append(f"{variable(loc[0])}: {error['msg']}")
        else:  # a rule across fields: its message names the variables
            reasons.append(str(error["msg"]).removeprefix("Value error, "))
    return "; ".join(reasons)
