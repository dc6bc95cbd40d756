"""Routes of a stub upstream: a method and a path template with a real answer.

`route("GET", "/stock/{sku}", json={"sku": "{sku}", "available": 3})`: a
`{name}` in the template matches one path segment and is substituted in the
string values of `json`. A `handler` is an import string of a function run in
the stub's process: it gets a `StubRequest` and returns a JSON-able value or a
`StubResponse`. Every setting left None follows the upstream's behaviour.
Everything here is validated when the route is added, so a bad route is one
line at the `route(...)` call, never a 500 found later.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_fanout.limits import (  # one limit, one list of route keys, one JSON rule
    HTTP_METHODS,
    MAX_BURST,
    MAX_DELAY_MS,
    ROUTE_KEYS,
    ConfigError,
    check_headers,
    check_rate,
    strict_json_dumps,
    strict_json_loads,
)
from pytest_fanout.servers.apps import ImportFromStringError, import_from_string
from pytest_fanout.servers.streaming import StreamError, StreamPlan, plan_from_spec

_PARAM = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEGMENT_TEXT = re.compile(r"^[^{}?#\s]*$")
#: Routes one upstream may hold.
MAX_ROUTES = 1000
#: A templated route keeps its rendered answers for this many distinct path parameters,
#: each at most `ANSWER_CACHE_BYTES` (so at most about 4 MiB a route): a load test asks the
#: same few paths again and again, and rendering is most of what such a route costs a call.
ANSWER_CACHE_SIZE = 1024
ANSWER_CACHE_BYTES = 4096
#: An HTTP header name (RFC 9110 token) and a value without CR, LF or NUL.
#: Headers the stub writes itself: a route or handler setting them would break framing.


class RouteError(ValueError):
    """A route the stub cannot use; `str()` is one line."""


class RawBody:
    """A request's raw `body` read as JSON or text: the stub's request to a handler, a
    recorded request (`upstream.requests()`)."""

    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (NaN and Infinity refused)."""
        return strict_json_loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass
class StubRequest(RawBody):
    """What a handler gets: one request as the stub upstream saw it."""

    method: str
    path: str
    path_params: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class StubResponse:
    """What a handler may return instead of a plain JSON-able value."""

    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def compile_template(template: str) -> tuple[re.Pattern[str] | None, tuple[str, ...]]:
    """(regex, parameter names) for a template with `{name}` segments; (None, ()) if literal."""
    if not isinstance(template, str) or not template.startswith("/"):
        raise RouteError(f"path template {template!r} must start with '/'")
    names: list[str] = []
    pattern = "^"
    position = 0
    for match in _PARAM.finditer(template):
        name = match[1]
        if not _NAME.match(name):
            raise RouteError(f"path template {template!r}: {{{name}}} is not a parameter name")
        if name in names:
            raise RouteError(f"path template {template!r}: {{{name}}} appears twice")
        names.append(name)
        pattern += re.escape(template[position : match.start()]) + f"(?P<{name}>[^/]+)"
        position = match.end()
    rest = template[position:]
    literal_parts = _PARAM.sub("", template)
    if not _SEGMENT_TEXT.match(literal_parts):
        raise RouteError(f"path template {template!r} has an unmatched brace, a space, '?' or '#'")
    if not names:
        return None, ()
    return re.compile(pattern + re.escape(rest) + "$"), tuple(names)


def _substitute(value: Any, params: Mapping[str, str]) -> Any:
    """`value` with every `{name}` in its strings replaced by the path parameter."""
    if isinstance(value, str):
        if "{" not in value:
            return value
        return _PARAM.sub(lambda m: params.get(m[1], m[0]), value)
    if isinstance(value, dict):
        return {k: _substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, params) for v in value]
    return value


def _has_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_PARAM.search(value))
    if isinstance(value, dict):
        return any(_has_placeholder(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_placeholder(v) for v in value)
    return False


def _finite(name: str, value: Any, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RouteError(f"{name}={value!r} is not a number")
    if not math.isfinite(value) or not low <= value <= high:
        raise RouteError(f"{name}={value!r} must be a finite number from {low:.0f} to {high:.0f}")
    return float(value)


def load_handler(spec: str) -> Callable[..., Any]:
    """Import `module:function` (from the stub's sys.path: the rootdir or fanout_app_dir)."""
    if not isinstance(spec, str):
        raise RouteError(f"handler {spec!r} must be an import string like 'module:function'")
    try:
        handler = import_from_string(spec)
    except ImportFromStringError as exc:
        raise RouteError(f"handler {spec!r} does not import: {exc}") from None
    except Exception as exc:  # the module itself raised while importing
        raise RouteError(
            f"handler {spec!r} raised on import: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(handler):
        raise RouteError(f"handler {spec!r} is not callable")
    return handler


def _body(spec: Mapping[str, Any]) -> bytes | None:
    """The route's body bytes from `body` (text, sent as UTF-8) or `body_b64` (any bytes)."""
    given = [k for k in ("json", "body", "body_b64") if spec.get(k) is not None]
    if len(given) > 1:
        raise RouteError(f"give one of json= or body=, not both ({', '.join(given)})")
    if spec.get("body") is not None:
        if not isinstance(spec["body"], str):
            raise RouteError("body must be a string")
        return spec["body"].encode()
    raw = spec.get("body_b64")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise RouteError("body_b64 must be a base64 string")
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        raise RouteError("body_b64 is not valid base64") from None


@dataclass
class Route:
    """One route, validated; `answer()` builds its body for a matched request."""

    method: str
    path: str
    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    delay_ms: float | None = None
    jitter_ms: float | None = None
    p99_ms: float | None = None
    error_rate: float | None = None
    handler: str | None = None
    #: Hold the call until its client goes away (a hung upstream): never answered.
    hang: bool = False
    #: This route's own rate limit ("5/s"; its calls also take a token of the upstream's)
    #: and its bucket's size (None: the limit's count over one second).
    rate_limit: str | None = None
    burst: int | None = None
    #: A streamed answer (events= or chunks=, paced), or a handler's pace; None otherwise.
    stream: StreamPlan | None = None
    #: Compiled at construction.
    regex: re.Pattern[str] | None = None
    params: tuple[str, ...] = ()
    function: Callable[..., Any] | None = None
    is_async: bool = False
    static_body: bytes | None = None
    templated: bool = False
    #: The answer's headers: one content-type (the route's own or the default), then the rest.
    wire_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: Rendered answers of a templated route by path parameters (bounded, see above).
    answers: dict[tuple[str, ...], bytes] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Route:
        """Build from the JSON the harness posts (every field checked; unknown ones refused)."""
        known = {*ROUTE_KEYS, "body_b64"}  # body_b64: any bytes, as JSON carries them
        unknown = sorted(set(spec) - known)
        if unknown:
            raise RouteError(f"unknown route setting(s): {', '.join(unknown)}")
        method = spec.get("method")
        if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
            raise RouteError(f"method {method!r} is not one of {', '.join(HTTP_METHODS)}")
        regex, params = compile_template(spec.get("path"))  # type: ignore[arg-type]
        status = spec.get("status", 200)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise RouteError(f"status {status!r} is not an HTTP status (100-599)")
        delay = _finite("delay_ms", spec.get("delay_ms"), 0, MAX_DELAY_MS)
        jitter = _finite("jitter_ms", spec.get("jitter_ms"), 0, MAX_DELAY_MS)
        p99 = _finite("p99_ms", spec.get("p99_ms"), 0, MAX_DELAY_MS)
        error_rate = _finite("error_rate", spec.get("error_rate"), 0, 1)
        if p99 is not None and (delay is None or delay <= 0 or p99 < delay):
            raise RouteError("p99_ms needs delay_ms > 0 (the median) and must be >= delay_ms")
        hang = spec.get("hang", False)
        if not isinstance(hang, bool):
            raise RouteError(f"hang={hang!r} must be true or false")
        rate_limit, burst = spec.get("rate_limit"), spec.get("burst")
        if burst is not None and (
            isinstance(burst, bool) or not isinstance(burst, int) or not 0 <= burst <= MAX_BURST
        ):
            raise RouteError(f"burst={burst!r} must be a whole number from 0 to {MAX_BURST}")
        try:
            check_rate(rate_limit, burst)
        except ConfigError as exc:
            raise RouteError(str(exc)) from None
        body = _body(spec)
        try:
            headers = check_headers(spec.get("headers") or {})
        except ValueError as exc:
            raise RouteError(str(exc)) from None
        route = cls(
            method=method.upper(),
            path=spec["path"],
            status=status,
            json=spec.get("json"),
            body=body,
            headers=headers,
            delay_ms=delay,
            jitter_ms=jitter,
            p99_ms=p99,
            error_rate=error_rate,
            handler=spec.get("handler"),
            hang=hang,
            rate_limit=rate_limit.strip() if rate_limit else None,
            burst=burst,
            regex=regex,
            params=params,
        )
        route.wire_headers = [
            (b"content-type", route.content_type()),
            *(pair for pair in headers if pair[0] != b"content-type"),
        ]
        try:
            route.stream = plan_from_spec(spec, handler=route.handler is not None)
        except StreamError as exc:
            raise RouteError(str(exc)) from None
        if route.handler is not None:
            route.function = load_handler(route.handler)
            route.is_async = inspect.iscoroutinefunction(route.function)
        elif route.stream is not None:
            pass  # the pieces are in route.stream
        elif route.body is not None:
            route.static_body = route.body
        else:
            value = {"ok": True} if route.json is None else route.json
            route.static_body = strict_json_dumps(value)  # checks it is JSON-able once
            route.templated = bool(params) and _has_placeholder(value)
        return route

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method and not (method == "HEAD" and self.method == "GET"):
            return None
        if self.regex is None:
            return {} if path == self.path else None
        found = self.regex.match(path)
        return found.groupdict() if found else None

    def content_type(self) -> bytes:
        for name, value in self.headers:
            if name == b"content-type":
                return value
        return b"application/json" if self.body is None else b"text/plain; charset=utf-8"

    def static_answer(self, params: Mapping[str, str]) -> bytes:
        """The body of a route without a handler."""
        if self.templated:
            key = tuple(params.values())  # in the template's order, always the same names
            answer = self.answers.get(key)
            if answer is None:
                answer = strict_json_dumps(_substitute(self.json, params))
                if len(self.answers) < ANSWER_CACHE_SIZE and len(answer) <= ANSWER_CACHE_BYTES:
                    self.answers[key] = answer
            return answer
        assert self.static_body is not None
        return self.static_body


def handler_result(result: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) from what a handler returned; a ValueError if unusable."""
    if isinstance(result, StubResponse):
        status = result.status
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"StubResponse.status {status!r} is not an HTTP status")
        headers = check_headers(
            {str(k): str(v) for k, v in result.headers.items()}, "StubResponse.headers"
        )
        if result.body is not None:
            body = result.body.encode() if isinstance(result.body, str) else bytes(result.body)
            if not any(k == b"content-type" for k, _ in headers):
                headers.append((b"content-type", b"text/plain; charset=utf-8"))
            return status, headers, body
        if not any(k == b"content-type" for k, _ in headers):
            headers.append((b"content-type", b"application/json"))
        return status, headers, strict_json_dumps(result.json)
    return 200, [(b"content-type", b"application/json")], strict_json_dumps(result)
