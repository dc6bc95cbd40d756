"""Every setting of the reference app, read from environment variables in one place.

The README's settings table mirrors `Settings`; keep the two in step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Literal

Transport = Literal["aiohttp", "httpx"]
TRANSPORTS: tuple[str, ...] = ("aiohttp", "httpx")


class SettingsError(ValueError):
    """A setting in the environment has a value the app cannot use."""


@dataclass(frozen=True)
class Settings:
    """The app's configuration; `Settings.from_env()` is the only reader of the environment."""

    #: Base URL of the one upstream the app calls. No request can change it (no SSRF).
    upstream_url: str = "http://127.0.0.1:8001"
    #: Largest fan-out width a request may ask for; larger is a 422 (no amplification).
    max_n: int = 1000
    #: Largest semaphore bound a request may ask for.
    max_concurrency: int = 1000
    #: Connections in the shared async client's pool; in-flight calls never exceed it.
    pool_size: int = 1000
    #: Engine under the shared `httpx.AsyncClient`: "aiohttp" (app.clients.AiohttpTransport)
    #: or "httpx" (httpcore's pool).
    transport: Transport = "aiohttp"
    #: Seconds one upstream call may take before it counts as failed.
    call_timeout_s: float = 5.0
    #: Seconds a whole fan-out may take; calls still running then are cancelled and reported.
    deadline_s: float = 30.0
    #: How many error reasons an answer lists (the count is always complete).
    max_error_reasons: int = 5
    #: CPU milliseconds burnt per upstream call: an injected slowdown to validate the gate.
    call_overhead_ms: float = 0.0
    #: Young-generation GC threshold set after start-up (with gc.freeze()); 0 keeps Python's.
    gc_threshold: int = 50_000

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read `FANOUT_<FIELD>` variables (for example FANOUT_MAX_N) over the defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in fields(cls):
            key = f"FANOUT_{field.name.upper()}"
            raw = env.get(key)
            if raw is None or raw == "":
                continue
            kind = type(field.default)
            try:
                values[field.name] = kind(raw)
            except ValueError:
                raise SettingsError(f"{key}={raw!r} is not a valid {kind.__name__}") from None
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse values that would make the app misbehave, naming the variable."""
        positive = ("max_n", "max_concurrency", "pool_size", "call_timeout_s", "deadline_s")
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"FANOUT_{name.upper()} must be positive")
        if self.call_overhead_ms < 0 or self.max_error_reasons < 0 or self.gc_threshold < 0:
            raise SettingsError(
                "FANOUT_CALL_OVERHEAD_MS, FANOUT_MAX_ERROR_REASONS and FANOUT_GC_THRESHOLD "
                "must be >= 0"
            )
        if self.transport not in TRANSPORTS:
            raise SettingsError(f"FANOUT_TRANSPORT must be one of {', '.join(TRANSPORTS)}")
        if not self.upstream_url.startswith(("http://", "https://")):
            raise SettingsError("FANOUT_UPSTREAM_URL must start with http:// or https://")
