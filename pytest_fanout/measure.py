"""How a measurement is taken: a `Request` sent to a running stack, with exact gauges.

What it gives, `Measurement`, and the request value are plain data in
`pytest_fanout.measurement`; here is the machinery that needs httpx2 and the
servers: sending, settling the stubs and the app between samples, the held
probe, and one message for a wrong status.

The held probe is one extra, untimed request per measurement, sent after the
warm-up with every stub in hold mode (`servers/hold.py`): each stub answers
its calls in waves, once the app has nothing more to send, so the wave sizes
are the concurrency the code allows, whatever the client's speed or the
runner's load.
"""

from __future__ import annotations

import math
import socket
import time
import warnings
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import httpx2

from pytest_fanout.limits import (
    DEFAULT_DISCONNECT_GRACE_S,
    DEFAULT_MAX_ANSWER_BYTES,
    MAX_DISCONNECT_S,
    MAX_HELD_PROBES,
    ORPHAN_GRACE_S,
)
from pytest_fanout.measurement import (
    DELAY_KEYS,
    GAUGE_KEYS,
    LIFETIME_KEYS,
    FanoutWarning,
    Measurement,
    MeasurementError,
    PathShape,
    Request,
    has_rate_limit,
)
from pytest_fanout.servers.held import AppNeverIdle, HoldBoundError, hold_all, hold_settings
from pytest_fanout.servers.process import ServerDiedError, tls_context

#: How long a sample waits for calls of an earlier test to end when no timeout is given.
DEFAULT_IDLE_WAIT_S = 30.0


class MeasureClient(httpx2.Client):
    """The harness's client to the app: an httpx2 client that also carries the bound of one
    answer's body (`max_answer_bytes`); its read timeout is the request timeout, which
    `send_request` makes a deadline for the whole answer. Any httpx2 client still works
    (the default bound then)."""

    def __init__(
        self, *args: Any, max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES, **kwargs: Any
    ) -> None:
        kwargs.setdefault("verify", tls_context())  # one per process, not one a test
        super().__init__(*args, **kwargs)
        self.max_answer_bytes = max_answer_bytes


def send_request(
    client: httpx2.Client, app: Any, base_url: str, request: Request, **extra: Any
) -> httpx2.Response:
    """Send `request` once to the app at `base_url` (`extra`: more httpx2 keywords, as
    `params=`); the harness's own failures as one-line errors: the app process died (with
    its exit), the answer did not end within the request timeout (a deadline for the whole
    answer, not per read: an app that trickles a byte at a time is cut there), or its body
    passed `max_answer_bytes` (read as a stream, never held past it)."""
    __tracebackhide__ = True
    label = request.label
    gone = _death(app, wait_s=0)
    if gone:
        raise MeasurementError(
            f"the app process died ({gone}) before {label}", _tail(app)
        ) from None
    limit = client.timeout.read
    max_bytes = getattr(client, "max_answer_bytes", DEFAULT_MAX_ANSWER_BYTES)
    try:
        return _timed_request(
            client,
            request.method,
            base_url + request.path,
            deadline_s=limit,
            max_bytes=max_bytes,
            **request.kwargs(),
            **extra,
        )
    except AnswerTooLarge as exc:
        raise MeasurementError(
            f"{label}: the answer's body passed {max_bytes:,} bytes ({exc.read:,} read"
            f"{' once decoded' if exc.decoded else ''}; max_answer_bytes, "
            "--fanout-max-answer-bytes): not read further",
            _tail(app),
        ) from None
    except AnswerDeadline as exc:
        raise MeasurementError(
            f"{label} was still sending its answer {limit:g} s after the request "
            f"({exc.read:,} bytes of its body so far; the request timeout, "
            "--fanout-request-timeout, is a deadline for the whole answer)",
            _tail(app),
        ) from None
    except httpx2.TimeoutException:
        raise MeasurementError(
            f"{label} did not answer within {limit:g} s (the request timeout, "
            "--fanout-request-timeout)",
            _tail(app),
        ) from None
    except httpx2.TransportError as exc:
        died = _death(app)
        if died:
            raise MeasurementError(
                f"the app process died ({died}) during {label}", _tail(app)
            ) from None
        raise MeasurementError(
            f"{label}: the app did not answer: {type(exc).__name__}: {exc}", _tail(app)
        ) from None


class AnswerDeadline(Exception):
    """The answer was still coming when the request's deadline passed."""

    def __init__(self, read: int) -> None:
        super().__init__(f"{read} bytes read by the deadline")
        self.read = read


class AnswerTooLarge(Exception):
    """The answer's body passed its bound (`max_answer_bytes`), as sent or once decoded."""

    def __init__(self, read: int, decoded: bool = False) -> None:
        super().__init__(f"{read} bytes read, over the bound")
        self.read = read
        self.decoded = decoded


#: Content-Encodings whose decoded size is counted while the answer streams (zlib's);
#: httpx2 decodes them when the answer is built, so a small compressed body can be huge.
_ZLIB_ENCODINGS = ("gzip", "x-gzip", "deflate")


class _DecodedSize:
    """Counts the bytes a gzip/deflate body decodes to, chunk by chunk, holding none of
    them: a 64 KiB "gzip bomb" of zeros is 64 MiB once httpx2 decodes it."""

    def __init__(self, headers: httpx2.Headers, bound: int) -> None:
        encoding = headers.get("content-encoding", "").strip().lower()
        self.bound = bound
        self.total = 0
        zlib_coded = encoding in _ZLIB_ENCODINGS
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 32) if zlib_coded else None
        self._raw_deflate = encoding == "deflate"

    def feed(self, chunk: bytes) -> None:
        """Add `chunk`'s decoded size; AnswerTooLarge once past the bound (a body that does
        not decode is left to httpx2's own error)."""
        if self._zlib is None:
            return
        data = chunk
        try:
            while data and self.total <= self.bound:  # each pass consumes input or adds 64 KiB
                self.total += len(self._zlib.decompress(data, 65536))
                data = self._zlib.unconsumed_tail
        except zlib.error:
            if self._raw_deflate and not self.total:  # a raw deflate stream (no header)
                self._zlib, self._raw_deflate = zlib.decompressobj(-zlib.MAX_WBITS), False
                self.feed(chunk)
                return
            self._zlib = None
            return
        if self.total > self.bound:
            raise AnswerTooLarge(self.total, decoded=True)


#: Where a timed answer keeps its times: seconds from the send to the body's first and
#: last byte. A streaming endpoint is judged by both: a change that delays the first token
#: is a regression even when the total stays.
_FIRST_BYTE = "fanout.first_byte_s"
_LAST_BYTE = "fanout.last_byte_s"
#: Whether the app streamed the answer: read from the headers as they came on the wire
#: (the answer rebuilt from the body has a length of its own).
_STREAMED = "fanout.streamed"


def _timed_request(
    client: httpx2.Client,
    method: str,
    url: str,
    *,
    deadline_s: float | None = None,
    max_bytes: int | None = None,
    **kwargs: Any,
) -> httpx2.Response:
    """`client.request(...)`, with _FIRST_BYTE and _LAST_BYTE in the answer's extensions
    (an empty body's first byte is its last). The body is read as a stream: AnswerTooLarge
    once it passes `max_bytes`, AnswerDeadline once `deadline_s` from the send passed with
    the answer unfinished (the client's read timeout bounds each wait for a byte, so a
    silent app is cut by it; a trickling one by this)."""
    request = client.build_request(method, url, **kwargs)
    start = time.perf_counter()
    deadline = start + deadline_s if deadline_s is not None else math.inf
    streamed = client.send(request, stream=True)
    first: float | None = None
    chunks = []
    size = 0
    decoded = _DecodedSize(streamed.headers, max_bytes) if max_bytes is not None else None
    try:
        for chunk in streamed.iter_raw():
            now = time.perf_counter()
            if first is None and chunk:
                first = now - start
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise AnswerTooLarge(size)
            if decoded is not None:
                decoded.feed(chunk)
            if now > deadline:
                raise AnswerDeadline(size)
            chunks.append(chunk)
    finally:
        streamed.close()
    last = time.perf_counter() - start
    if last > (deadline - start):  # the headers came after it (the body was empty)
        raise AnswerDeadline(size)
    return httpx2.Response(
        streamed.status_code,
        headers=streamed.headers,
        content=b"".join(chunks),
        request=request,
        extensions={
            **streamed.extensions,
            _FIRST_BYTE: last if first is None else first,
            _LAST_BYTE: last,
            _STREAMED: _chunked(streamed.headers),
        },
    )


def unexpected_status(request: Request, response: httpx2.Response, during: str = "") -> str:
    """`POST /x answered 301, expected 200: ...` with the start of the body, and where a
    redirect pointed (its body is often empty: a missing trailing slash, say); another
    success (Litestar's POST answers 201) names the option that accepts it."""
    status, expected = response.status_code, request.expect_status
    where = response.headers.get("location") if 300 <= status < 400 else None
    note = f" (a redirect to {where}; the harness does not follow it)" if where else ""
    if 200 <= status < 300 and 200 <= expected < 300:
        note = f" (if {status} is this route's success, say expect_status={status})"
    return (
        f"{request.label} answered {status}{note}, expected {expected}{during}: "
        f"{response.text[:300]}"
    )


def check_status(
    response: httpx2.Response, request: Request, during: str = "", log_tail: str = ""
) -> None:
    """Raise MeasurementError (`unexpected_status`) unless `response` has the request's
    expected status."""
    __tracebackhide__ = True
    if response.status_code != request.expect_status:
        raise MeasurementError(unexpected_status(request, response, during), log_tail)


def _refused_note(stubs: Mapping[str, Any]) -> str:
    """What the upstreams refused in the request that just failed (the stubs' counters of
    the sample): a service that fails on a 429 is told so, not left to read its log."""
    refused = []
    for name, stub in stubs.items():
        stats = stub.stats()
        rejected, calls = int(stats.get("rejected", 0)), int(stats.get("requests", 0))
        if rejected:
            limit = (stats.get("limits") or {}).get("rate_limit")
            why = f" (its rate limit {limit})" if limit else ""
            refused.append(f"'{name}' answered 429 to {rejected} of {calls} calls{why}")
    if not refused:
        return ""
    return f" (in that request upstream {', '.join(refused)}: the service did not handle a 429)"


def _chunked(headers: httpx2.Headers) -> bool:
    encoding = headers.get("transfer-encoding", "")
    return "chunked" in encoding.lower() and "content-length" not in headers


def _streamed(response: httpx2.Response) -> bool:
    """Did the app stream this answer (chunked, no Content-Length), if `_timed_request` sent it?"""
    return bool(response.extensions.get(_STREAMED, False))


def _first_byte_s(response: httpx2.Response) -> float | None:
    """Seconds from the send to the body's first byte, if `_timed_request` sent it."""
    value = response.extensions.get(_FIRST_BYTE)
    return float(value) if value is not None else None


def _tail(app: Any) -> str:
    return app.log_tail() if app is not None and hasattr(app, "log_tail") else ""


def _death(app: Any, wait_s: float = 2.0) -> str | None:
    """How the app process ended (`ServerProcess.death`), or None if it runs (or is no
    process of ours: a sampler's stand-in)."""
    death = getattr(app, "death", None)
    return death(wait_s) if death is not None else None


def _app_idle(app: Any, wait_s: float, label: str, *, own: bool = False) -> None:
    """Wait (bounded) until the app serves no request of an earlier test: one still running
    would keep calling the upstreams during this sample. With `own`, what may still run is
    this measurement's previous sample (a streamed answer's handler can end after its last
    byte left): waited for without a warning."""
    __tracebackhide__ = True
    busy = app.probe_stats().get("inflight", 0)
    if not busy:
        return
    if own:
        deadline = time.monotonic() + wait_s
        while app.probe_stats().get("inflight", 0) and time.monotonic() < deadline:
            time.sleep(0.005)  # polling the probe, bounded by the deadline
        if app.probe_stats().get("inflight", 0):
            raise MeasurementError(
                f"the app still ran the previous call of {label} {wait_s:g} s after "
                "answering it: cannot measure it exactly"
            )
        return
    deadline = time.monotonic() + wait_s
    while app.probe_stats().get("inflight", 0):
        if time.monotonic() > deadline:
            raise MeasurementError(
                f"{busy} request(s) of an earlier test were still running in the app after "
                f"{wait_s:g} s: cannot measure {label} exactly"
            )
        time.sleep(0.01)  # polling the probe, bounded by the deadline
    warnings.warn(
        FanoutWarning(
            f"{busy} request(s) of an earlier test were still running in the app: waited "
            f"for them before measuring {label}"
        ),
        stacklevel=4,
    )


def _settle(upstreams: Mapping[str, Any], wait_s: float, label: str) -> None:
    """Zero every gauge, first waiting (bounded) for calls still in flight from before."""
    __tracebackhide__ = True
    for name, upstream in upstreams.items():
        answer = upstream.reset(wait_idle_s=wait_s)
        busy = answer.get("in_flight_before", 0)
        if not answer.get("idle", True):
            raise MeasurementError(
                f"{busy} call(s) of an earlier test were still in flight at upstream {name!r} "
                f"after {wait_s:g} s: cannot measure {label} exactly"
            )
        if busy:
            warnings.warn(
                FanoutWarning(
                    f"{busy} call(s) of an earlier test were still in flight at upstream "
                    f"{name!r}: waited for them before measuring {label}"
                ),
                stacklevel=4,
            )


def _late_calls(
    stubs: Mapping[str, Any],
    app: Any,
    window: tuple[float, float],
    grace_s: float,
    wait_s: float,
    label: str,
) -> dict[str, tuple[int, int]]:
    """Per upstream, (late, cut): the calls of the request sent and answered (or hung up on) in
    `window` that ran past its end + `grace_s`: still in flight at the stub then (a call
    ends at its answer's last byte or when its connection closed), or begun after it.
    Counted once the app has ended the request and every stub is idle (both waited for,
    bounded by `wait_s`), so the next sample starts clean and calls begun late count.
    `cut`: the request's calls whose connection the app closed before their answer."""
    __tracebackhide__ = True
    if app is not None:
        _app_idle(app, wait_s, label, own=True)
    since, after = window
    counts = {}
    for name, stub in stubs.items():
        answer = stub.late(since, after, grace_s=grace_s, wait_idle_s=wait_s)
        if not answer.get("idle", True):
            raise MeasurementError(
                f"{answer.get('in_flight_before', 0)} call(s) of {label} were still in flight "
                f"at upstream {name!r} {wait_s:g} s after it ended: cannot measure it exactly"
            )
        counts[name] = (int(answer.get("late", 0)), int(answer.get("cut", 0)))
    return counts


def _hung(exc: MeasurementError, stubs: Mapping[str, Any], label: str) -> MeasurementError:
    """`exc` explained when calls to a hung upstream (`hang = true`) were still held as the
    request failed: the `no-timeout` finding, and the held calls released (answered 504),
    so the app's request ends; `exc` itself otherwise."""
    from pytest_fanout.diagnosis import no_timeout

    held = {name: int(stub.stats().get("hung_now", 0)) for name, stub in stubs.items()}
    held = {name: count for name, count in held.items() if count}
    if not held:
        return exc
    for name in held:
        stubs[name].release_hung()
    waited = str(exc).splitlines()[0] if str(exc) else "the request failed"
    return MeasurementError(no_timeout(label, held, waited).message, exc.log_tail)


def hang_up(app_url: str, request: Request, after_s: float) -> tuple[float, float]:
    """Send `request` on a connection of its own and close it `after_s` seconds later (or
    when the app closes it first), reading and dropping whatever the app sends meanwhile:
    a caller that goes away. Returns (sent, hung up) on time.monotonic()."""
    __tracebackhide__ = True
    built = httpx2.Request(request.method, app_url + request.path, **request.kwargs())
    body = built.read()
    head = [f"{built.method} {built.url.raw_path.decode('ascii')} HTTP/1.1".encode()]
    head += [name + b": " + value for name, value in built.headers.raw]
    wire = b"\r\n".join(head) + b"\r\n\r\n" + body
    host, port = built.url.host, built.url.port or 80
    try:
        conn = socket.create_connection((host, port), timeout=10)
    except OSError as exc:
        raise MeasurementError(f"{request.label}: cannot connect to the app: {exc}") from None
    with conn:
        sent = time.monotonic()
        deadline = sent + after_s
        try:
            conn.sendall(wire)
            # Bounded: each recv waits at most until the deadline, and an empty read (the
            # app closed) ends it.
            while (left := deadline - time.monotonic()) > 0:
                conn.settimeout(left)
                try:
                    if not conn.recv(65536):
                        break
                except TimeoutError:
                    break
        except OSError:
            pass  # the app closed first: the hang-up is now
        hung_up = time.monotonic()
    return sent, hung_up


def measure(client: httpx2.Client, app_url: str, request: Request, **options: Any) -> Measurement:
    """Send `request` warmup + repeat times, one at a time, with exact upstream gauges (see
    `_measure` for the options). A server of the stack that died while it was measured, the
    app or a stub, is one line naming it and the request (MeasurementError, with its log
    tail), wherever the harness met its death: a request, a probe read, a stub's gauges."""
    __tracebackhide__ = True
    try:
        return _measure(client, app_url, request, **options)
    except ServerDiedError as exc:
        raise MeasurementError(f"{exc} during {request.label}", exc.log_tail) from None


def _measure(
    client: httpx2.Client,
    app_url: str,
    request: Request,
    *,
    upstreams: Mapping[str, Any],
    app: Any = None,
    repeat: int = 5,
    warmup: int = 1,
    n: int | None = None,
    concurrency: int | None = None,
    ideal_s: float | None = None,
    shape: PathShape | None = None,
    idle_wait_s: float | None = None,
    held_probe: bool = True,
    held_probes: int = 1,
    disconnect_after_s: float | None = None,
    disconnect_grace_s: float = DEFAULT_DISCONNECT_GRACE_S,
    progress: Callable[[str], None] | None = None,
) -> Measurement:
    """Send `request` warmup + repeat times, one at a time, with exact upstream gauges.

    `upstreams` maps names to StubUpstreamServers, the default (whose delay
    gives the ideal time) first. Before each sample every gauge is zeroed
    after the upstream is idle. `app` is an AppServer whose loop probe is read
    (None: no probe). `n`/`concurrency` come from the arguments, else from
    `shape(path)`; `ideal_s` overrides. With `held_probe` (the default), one
    more request after the warm-up is sent with the stubs in hold mode: its
    waves are `Measurement.structure`. `held_probes` > 1 sends the others after the
    timed samples (`Measurement.structures`: every probe's): the gate then sees a structure
    that varies between requests of unchanged code (a limiter whose state outlives one).

    After each request the calls it left running are counted per upstream
    (`orphaned`, `_late_calls`) and waited for. With `disconnect_after_s`, every
    request (warm-up included) is hung up on that long after it was sent, and the calls
    still running `disconnect_grace_s` after the hang-up are counted (`after_disconnect`).
    `progress` (`fanout measure`'s printer; None: silent) is told the held probe and each
    request as they end: a large fan-out takes seconds a step.
    """
    __tracebackhide__ = True
    if repeat < 1 or warmup < 0:
        raise ValueError("repeat must be >= 1 and warmup >= 0")
    if isinstance(held_probes, bool) or not isinstance(held_probes, int) or held_probes < 1:
        raise ValueError(f"held_probes must be an integer >= 1, got {held_probes!r}")
    if held_probes > MAX_HELD_PROBES:
        raise ValueError(f"held_probes is at most {MAX_HELD_PROBES}, got {held_probes!r}")
    if ideal_s is not None and not (math.isfinite(ideal_s) and ideal_s > 0):
        raise ValueError(f"ideal_s must be a finite number > 0, got {ideal_s!r}")
    for name, value in (("n", n), ("concurrency", concurrency)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not upstreams:
        raise ValueError("measure() needs at least one upstream")
    for name, value in (
        ("disconnect_after_s", disconnect_after_s),
        ("disconnect_grace_s", disconnect_grace_s),
    ):
        if value is not None and not (
            isinstance(value, int | float) and 0 <= value <= MAX_DISCONNECT_S
        ):
            raise ValueError(
                f"{name} must be a number from 0 to {MAX_DISCONNECT_S:g}, got {value!r}"
            )
    stubs = dict(upstreams)
    if n is None and concurrency is None and shape is not None:
        known = shape(request.path)
        if known is not None:
            n, concurrency = known
    if n is not None and concurrency is None:
        concurrency = n
    if n is not None and concurrency is not None:
        concurrency = min(concurrency, n)
    first = next(iter(stubs.values()))
    behaviour = first.behaviour()
    result = Measurement(
        path=request.path,
        samples=[],
        n=n,
        concurrency=concurrency,
        upstream_gauges={name: {key: [] for key in GAUGE_KEYS} for name in stubs},
        ideal_given_s=ideal_s,
        upstream_delay_s=behaviour.delay_ms / 1000,
        upstream_jitter_s=behaviour.jitter_ms / 1000,
        warmup=warmup,
        request=request,
        disconnect_after_s=disconnect_after_s,
        disconnect_grace_s=disconnect_grace_s if disconnect_after_s is not None else None,
    )
    late_key = "orphaned" if disconnect_after_s is None else "after_disconnect"
    grace = ORPHAN_GRACE_S if disconnect_after_s is None else disconnect_grace_s
    late_total: dict[str, int] = {}
    timeout = client.timeout.read
    wait_s = idle_wait_s if idle_wait_s is not None else (timeout or DEFAULT_IDLE_WAIT_S)
    label = request.label
    for index in range(warmup + repeat):
        if index == warmup and held_probe:
            start = time.perf_counter()
            began = time.monotonic()
            try:
                result.structure, result.structure_note = _held_probe(
                    client, app, app_url, request, stubs, wait_s, index > 0
                )
            except MeasurementError as exc:
                raise _hung(exc, stubs, label) from None
            result.structure_probe_s = time.perf_counter() - start
            if result.structure:
                result.structure_routes = _held_routes(stubs, began, time.monotonic())
            if progress is not None:
                waves = "; ".join(f"{k} {v}" for k, v in result.structure.items()) or "none"
                progress(f"  {label}: held probe {result.structure_probe_s:.2f} s, waves {waves}")
            _late_calls(stubs, app, (began, time.monotonic()), grace, wait_s, label)
        if app is not None:
            _app_idle(app, wait_s, label, own=index > 0)
        _settle(stubs, wait_s, label)
        if app is not None:
            if index == warmup:
                app.probe_price()  # the probe's ticks priced afresh: off every sample's CPU
            app.probe_reset()
        if disconnect_after_s is not None:
            sent, answered = hang_up(app_url, request, disconnect_after_s)
            elapsed, response = answered - sent, None
        else:
            sent = time.monotonic()
            start = time.perf_counter()
            try:
                response = send_request(client, app, app_url, request)
            except MeasurementError as exc:
                raise _hung(exc, stubs, label) from None
            elapsed = time.perf_counter() - start
            answered = time.monotonic()
            if response.status_code != request.expect_status:
                check_status(response, request, _refused_note(stubs))
        if progress is not None:
            step = (
                f"warm-up {index + 1}/{warmup}"
                if index < warmup
                else f"sample {index - warmup + 1}/{repeat}"
            )
            progress(f"  {label}: {step} {elapsed * 1000:.0f} ms")
        if index < warmup:
            _late_calls(stubs, app, (sent, answered), grace, wait_s, label)
            continue
        result.samples.append(elapsed)
        first = _first_byte_s(response) if response is not None else None
        result.first_byte_per_sample.append(first or elapsed)
        result.streamed = result.streamed or (response is not None and _streamed(response))
        result.sample_windows.append((sent, answered))
        if response is not None and _streamed(response):
            ends = _upstream_bytes(stubs, sent, answered)
            if ends is not None:
                result.upstream_first_byte_per_sample.append(ends[0])
                result.upstream_first_end_per_sample.append(ends[1])
                result.upstream_last_byte_per_sample.append(ends[2])
        for name, stub in stubs.items():
            stats = stub.stats()
            gauges = result.upstream_gauges[name]
            for key in GAUGE_KEYS:
                gauges[key].append(int(stats.get(key, 0)))
            for key in DELAY_KEYS:
                if key in stats:  # the delays really applied: the ideal time
                    gauges.setdefault(key, []).append(float(stats[key]))
            if "limits" in stats:  # the rate limits and caps in force (for messages)
                result.upstream_limits[name] = stats["limits"]
            sample = len(result.samples) - 1
            for wait in stats.get("retry_waits", ()):  # retries of a 429: asked vs waited
                result.upstream_retry_waits.setdefault(name, []).append([sample, *wait])
            for key in LIFETIME_KEYS:
                if key in stats:  # connections still open: a client never closed
                    gauges.setdefault(key, []).append(int(stats[key]))
        default = next(iter(result.upstream_gauges.values()))
        result.upstream_requests_per_sample.append(default["requests"][-1])
        result.upstream_peak_per_sample.append(default["peak_inflight"][-1])
        if app is not None:
            probe = app.probe_stats()
            result.loop_lag_per_sample.append(probe["loop_lag_max_s"])
            result.app_cpu_per_sample.append(probe.get("cpu_s", 0.0))
            own = probe.get("process_cpu_s", 0.0) - probe.get("cpu_s", 0.0)
            result.probe_cpu_per_sample.append(max(0.0, own))
            result.app_wait_per_sample.append(probe.get("wait_s"))
            result.app_gc_per_sample.append(probe.get("gc_s", 0.0))
            added = int(probe.get("threads_peak", 0)) - int(probe.get("threads_start", 0))
            result.app_threads_per_sample.append(max(0, added))
            result.keep_stalls(probe.get("stalls_detail", []))
        if response is not None:
            result.app_errors += _reported_errors(response)
        late = _late_calls(stubs, app, (sent, answered), grace, wait_s, label)
        for name, (count, cut) in late.items():
            gauges = result.upstream_gauges[name]
            gauges.setdefault(late_key, []).append(count)
            gauges.setdefault("cut", []).append(cut)
            late_total[name] = late_total.get(name, 0) + count
    if held_probe and held_probes > 1 and result.structure:
        result.structures = [result.structure]
        for _ in range(held_probes - 1):
            began = time.monotonic()
            try:
                more, _note = _held_probe(client, app, app_url, request, stubs, wait_s, True)
            except MeasurementError as exc:
                raise _hung(exc, stubs, label) from None
            _late_calls(stubs, app, (began, time.monotonic()), grace, wait_s, label)
            if not more:
                break  # the app never went idle: the probes taken so far
            result.structures.append(more)
    if disconnect_after_s is None:
        _warn_orphans(late_total, label)
    return result


def _warn_orphans(orphaned: Mapping[str, int], label: str) -> None:
    """One warning for the calls a measurement left running after its answers: this
    endpoint's own (not an earlier test's), waited for before each next sample."""
    counts = ", ".join(f"{count} at upstream {name!r}" for name, count in orphaned.items() if count)
    if counts:
        warnings.warn(
            FanoutWarning(
                f"{label} left calls running after it answered ({counts}, over the samples): "
                "orphaned calls, waited for before each next sample "
                "(m.upstream(name).orphaned; fanout.assert_no_orphans)"
            ),
            stacklevel=3,
        )


def _held_probe(
    client: httpx2.Client,
    app: Any,
    app_url: str,
    request: Request,
    stubs: Mapping[str, Any],
    wait_s: float,
    after_own: bool = False,
) -> tuple[dict[str, list[int]], str]:
    """One request with every stub holding its calls: ({upstream: wave sizes}, ""). An app
    that never goes idle (a thread busy outside the request) gives ({}, why) and a
    FanoutWarning: the timed samples still measure it. `after_own`: a warm-up request of
    this measurement came just before (its handler may still end)."""
    __tracebackhide__ = True
    if app is not None:
        _app_idle(app, wait_s, request.label, own=after_own)
    _settle(stubs, wait_s, request.label)
    settings = hold_settings(app_pid=getattr(app, "pid", None) or None)
    try:
        with hold_all(stubs, settings) as held:
            response = send_request(client, app, app_url, request)
    except AppNeverIdle as exc:
        note = (
            f"structure not taken: the app never went idle during the held probe of "
            f"{request.label} ({exc}); measured with the timed samples only"
        )
        warnings.warn(FanoutWarning(note), stacklevel=3)
        return {}, note
    except HoldBoundError as exc:
        raise MeasurementError(f"the held probe of {request.label}: {exc}") from None
    if response.status_code != request.expect_status:  # the log tail only when needed
        limited = [n for n, stub in stubs.items() if has_rate_limit(stub.stats().get("limits"))]
        if limited and 200 <= response.status_code < 300 <= request.expect_status:
            # A service that fails on a 429, measured failing (expect_status=502): the held
            # probe refuses no call, so it succeeds there; its waves are the structure still.
            return {name: waves.waves for name, waves in held.items()}, ""
        refusals = "; it applies no rate limit, so no call was refused" if limited else ""
        during = (
            " (the held probe: its upstream calls held until the app sent no more, then "
            f"answered together{refusals})"
        )
        check_status(response, request, during, _tail(app))
    return {name: waves.waves for name, waves in held.items()}, ""


def _logged_calls(stub: Any, since: float, until: float) -> list[dict[str, Any]]:
    """`stub`'s logged calls that arrived in [since, until]; [] for a stand-in without a
    call log (a unit test's fake)."""
    call_log = getattr(stub, "call_log", None)
    return call_log(since, until) if call_log is not None else []


def _held_routes(stubs: Mapping[str, Any], since: float, until: float) -> dict[str, list[str]]:
    """The held probe's calls at each upstream by route ("GET /item/{id}"), in arrival
    order: at one stub a wave is released before the next one's calls come, so the first
    `waves[0]` calls are the first wave's, and so on."""
    return {
        name: [f"{c['method']} {c['route']}" for c in _logged_calls(stub, since, until)]
        for name, stub in stubs.items()
    }


def _upstream_bytes(
    stubs: Mapping[str, Any], sent: float, answered: float
) -> tuple[float, float, float] | None:
    """Seconds from `sent` to the upstreams' first byte (a call's arrival plus the delay its
    stub applied, at most its end), to the first call's end and to their last byte (the
    last call's answer ended) among the calls of the request sent then: the stubs stamp
    them on the same clock. None when no call was answered in the window."""
    firsts, lasts = [], []
    for stub in stubs.values():
        for c in _logged_calls(stub, sent, answered):
            end = c.get("answered_s") or 0.0
            if not end or c.get("cut"):
                continue
            lasts.append(end - sent)
            firsts.append(min(c["arrival_s"] + c.get("delay_ms", 0.0) / 1000, end) - sent)
    return (min(firsts), min(lasts), max(lasts)) if lasts else None


def _reported_errors(response: httpx2.Response) -> int:
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        return 0
    if isinstance(errors, dict) and isinstance(errors.get("count"), int):
        return errors["count"]
    return 0
