"""The ground floor: every value, bound, default and name the rest of the package reads.

Parsers (argparse types that end bad input as one line), the upper bounds of
every count, rate, size and duration an option takes, the defaults of the
stack, the names of its keys, the stub's behaviour settings (a plain value,
checked here so that a spec is checked before anything starts), the exit
codes, and the lazy-name loader the packages' faces share. It imports nothing
of the project: `spec`, `servers`, `gate`, `load` and every front end read it,
and it reads none of them, so no value is declared twice and no import climbs.

A rate of 1e9 starts per second, a million workers or a year-long step is a
typing mistake, not a test: accepted, it grows a process until the kernel
kills it. Each bound here is far above any real run on one machine; the docs'
"Limits" page lists them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from enum import IntEnum
from typing import Any

# ---- the stall sampler's pseudo-frames ---------------------------------------------------------

#: The file of a sampled stack's pseudo-frame that names a C function the innermost frame is
#: calling (`time.sleep`), written by the app's stall watch and read by the harness.
BUILTIN_FILE = "<built-in>"
#: The function of the pseudo-frame of a sample taken while the garbage collector ran.
GC_FUNCTION = "garbage collection"

# ---- exit codes ------------------------------------------------------------------------------


class ExitCode(IntEnum):
    """What a run's exit status says, one number one meaning everywhere (docs, "Exit codes").

    0, 1 and 2 are also Locust's own (1: failed requests, 2: a usage error or an
    unhandled exception), so the harness keeps their sense. Under pytest, the plugin
    uses pytest's own exit codes (0-5), plus `TARGET_UNUSABLE` when --fanout-ab's base
    app cannot start and `NOT_GATED` (6, above pytest's) when the gate compared nothing
    it could gate."""

    #: Everything asked for ran, and every check held.
    OK = 0
    #: It ran, and a check did not hold: failed requests (Locust), a regression
    #: (`fanout compare`), an answer that was not the expected one (`fanout measure`).
    FAILED = 1
    #: Bad input, nothing was run: a flag, a [tool.fanout] value, a rule, a file.
    USAGE = 2
    #: A load threshold was violated (--fanout-max-p95-ms, --fanout-min-rps, ...).
    THRESHOLD = 3
    #: The target cannot be used: --host does not answer, the app, a stub or the base
    #: commit's app (--fanout-ab) did not start, a port is taken.
    TARGET_UNUSABLE = 4
    #: The regression gate compared nothing it could gate (a renamed suite, another
    #: machine's baseline and no portable metric); --fanout-allow-ungated accepts it.
    NOT_GATED = 6
    #: Stopped by Ctrl-C (128 + SIGINT), every process it started stopped too.
    INTERRUPTED = 130


# ---- the stack's defaults and names ----------------------------------------------------------

#: The reference app, as installed from the wheel and (editable) in the repository.
DEFAULT_APP = "pytest_fanout.reference_app.main:app"
#: The name and variable of the one upstream a stack has when none is named.
DEFAULT_UPSTREAM = "default"
DEFAULT_UPSTREAM_ENV = "FANOUT_UPSTREAM_URL"
DEFAULT_DELAY_MS = 100.0
DEFAULT_STARTUP_TIMEOUT_S = 10.0
#: Seconds a request to the app may take when no timeout is given.
DEFAULT_REQUEST_TIMEOUT_S = 60.0
#: Seconds a load run (Locust, `fanout capacity`) waits for --host's first answer before it
#: says, in one line, that the host does not answer (any HTTP status is an answer, and so is
#: a TLS handshake whose certificate does not verify: load/target.py).
HOST_CHECK_TIMEOUT_S = 5.0
#: A call that ended this soon after the endpoint's answer reached the harness is not an
#: orphan: the stub sees a cancelled call's connection close a moment after the app closed
#: it, on another process's clock turn, while the app's answer is on its way (an orphan of
#: `asyncio.gather` runs on for the rest of its upstream's latency, far longer).
ORPHAN_GRACE_S = 0.05
#: Calls still running this long after the caller hung up count as work after the
#: disconnect (`measure(..., disconnect_after_s=)`): time for the app to see it and cancel.
DEFAULT_DISCONNECT_GRACE_S = 0.1
#: The longest `disconnect_after_s` / `disconnect_grace_s` (seconds).
MAX_DISCONNECT_S = 600.0
#: Held probes one measurement may send (`measure(..., held_probes=)`): each is one request.
MAX_HELD_PROBES = 20
#: The longest a stub holds a call of a hung upstream or route (`hang = true`) when its
#: client never goes away (seconds): the run ends first.
HANG_MAX_S = 3600.0
#: Bytes of one answer of the app the harness reads (its body, as sent on the wire): read
#: as a stream and refused past this, never held whole (`max_answer_bytes`): 64 MiB.
DEFAULT_MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: How the probe's CPU per request is reckoned, saved with every measurement
#: (`Measurement.cpu_method`): the gate compares cpu only between runs of the same one.
#: 0: the whole process (saved with no `probe_cpu_per_sample`); 1: less the probe's watchdog
#: and its lag ticks, the ticks priced without the server's own timers (about 0.5 ms a
#: second of wall time stayed in); 2: priced with them (servers/probe.py, TICK_OUTLIER).
CPU_METHOD = 2
#: The app's environment variable that switches the probe's stack sampler off.
STACK_SAMPLING_ENV = "PYTEST_FANOUT_STACKS"
#: The prefix of the stub's settings in a child's environment (`Behaviour.to_env`).
STUB_ENV_PREFIX = "PYTEST_FANOUT_STUB_"

#: Names an upstream may have (an ini line, a TOML table name, a flag).
UPSTREAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
IMPORT_STRING = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
#: Everything `StubUpstreamServer.route(...)` takes (tests/unit/test_spec.py keeps them equal).
ROUTE_KEYS = (
    "method",
    "path",
    "status",
    "json",
    "body",
    "headers",
    "delay_ms",
    "jitter_ms",
    "p99_ms",
    "error_rate",
    "handler",
    "events",
    "chunks",
    "chunk_delay_ms",
    "tokens_per_s",
    "hang",
    "rate_limit",
    "burst",
)

#: Consecutive held waves of one call, all to one route, that make `sequential` without
#: the user's `n`: a loop (two calls in turn may be dependent stages).
SEQUENTIAL_MIN_RUN = 3
#: Calls one at a time were spaced out by something else (a rate limiter, a sleep between
#: calls) when every sample spent, apart from all its upstreams' delays and the app's CPU,
#: PACED_WAIT_FACTOR times those delays and this long: an awaited loop waits only for
#: answers (and, on a loaded runner, for a CPU: the factor keeps that out).
PACED_MIN_WAIT_S = 0.05
PACED_WAIT_FACTOR = 2.0
#: ... and that pace is the upstream's own rate limit (no finding: the limit asks for it)
#: when, with no 429 from the limit, the calls came at this share of it or more.
PACED_NEAR_LIMIT = 0.5
#: The held probe at a rate-limited upstream holds its first wave of one call this many of
#: the limit's intervals (1 / its rate): a limiter's next call, paced near the limit, comes
#: meanwhile and joins the wave, where an awaited loop's next call cannot come while its
#: call is held. Gathered calls behind aiolimiter read "[1] x 30: sequential" without it
#: (30 calls, 50 ms each, AsyncLimiter(10, 1) against 10/s: the limiter's next call came
#: 100 ms after the last, past the 30 ms quiet window). At most HELD_PACED_MAX_MS: a probe
#: of a loop that awaits pays it once.
HELD_PACED_INTERVALS = 2.5
HELD_PACED_MAX_MS = 2000.0
#: `slow-client` blames the client's CPU for a timed peak below the held one only when
#: issuing the held wave costs at least this share of the delay (the app's CPU per request
#: over its calls, an over-estimate): less, and the CPU cannot explain it (a limiter's
#: pace carried over between requests, a lock, a busy runner).
SLOW_CLIENT_MIN_SHARE = 0.5
#: The default pool of httpx (Limits(max_connections=100)) and aiohttp (TCPConnector(
#: limit=100)): a held wave of exactly this many, spilling calls of the same routes into the
#: next wave, is `pool-cap` without the user's `n` (a gather the default pool capped).
DEFAULT_CLIENT_POOL = 100
#: How long a `fanout` command that failed to measure waits for the app's log to name a
#: cause (s): uvicorn logs a 500's exception after it has sent the answer.
APP_LOG_WAIT_S = 0.5
#: A streamed answer whose first byte came after the upstreams' last is `buffered-stream`
#: when the upstreams' bytes spread over at least this long (from their first byte to their
#: last) and this share of the time to the answer's first byte: less, and it could not have
#: begun much sooner.
BUFFERED_MIN_SPREAD_S = 0.01
BUFFERED_MIN_SHARE = 0.1

# ---- bounds ----------------------------------------------------------------------------------

#: Requests (starts) per second: an open-model arrival rate, a capacity search's rates.
MAX_RATE_RPS = 100_000.0
#: Users (requests in flight) of one run or one step.
MAX_USERS = 100_000
#: Locust worker processes of one run.
MAX_PROCESSES = 256
#: Seconds of one run, one step or one search: a day.
MAX_DURATION_S = 86_400.0
#: Milliseconds of an upstream delay: an hour; more is a mistake, not a slow upstream.
MAX_DELAY_MS = 3_600_000.0
#: Milliseconds a scheduled start may wait for a free user: ten minutes.
MAX_GRACE_MS = 600_000.0
#: Scheduled starts that may wait for a free user at once (load/arrival.py); past it a start
#: is dropped at once: no user could take it within any grace, and the queue's memory stays
#: bounded when the service stalls under a high rate (as many as the most users of a run).
MAX_WAITING_STARTS = 100_000
#: A stub's rate limit (`rate_limit = "50/s"`): the most calls per second it may allow, and
#: the largest `burst` (tokens of its bucket); a rate limit is a fact of an API, not a load.
MAX_RATE_LIMIT_PER_S = 1_000_000.0
MAX_BURST = 1_000_000
#: How early a call may reach a rate-limited stub and still be within its limit (s). A client
#: that paces its calls exactly at the limit (aiolimiter's AsyncLimiter(5, 1) against 5/s) sends
#: them on its own clock; each reaches the stub a loopback hop later, and the hop varies on a
#: busy machine, so an exact bucket refused 1 call in 8 of such a client in every run. The
#: rate allowed over any long stretch stays exact: a client faster than the limit is refused.
RATE_LIMIT_JITTER_S = 0.010
#: Upstream calls per request, and a semaphore's bound (the reference app's own cap).
MAX_CALLS = 10_000
#: Timed requests of one measurement.
MAX_REPEAT = 10_000
#: A stub's cap on calls in flight (0 = no cap), and on requests it records.
MAX_INFLIGHT = 1_000_000
#: Named upstreams of one stack: each is a process (about 35 MB and 0.3 s of CPU to start).
MAX_UPSTREAMS = 64
#: A count threshold (`--fanout-min-completed`).
MAX_THRESHOLD_COUNT = 10**12
#: Bytes of one request body the stub reads (control or item): 16 MiB.
MAX_ITEM_BODY = 16 * 1024 * 1024
#: Bytes of one request's head (request line and headers) the stub's own server accepts;
#: more is a 431 (servers/stubhttp.py).
MAX_HEAD_BYTES = 1024 * 1024
#: Complete requests the stub's server queues behind the one being answered (pipelining)
#: before it stops reading the connection: memory stays bounded against any client.
MAX_PIPELINED = 16
#: The stub's recorded requests: kept (the oldest go first), bytes of each body kept, bytes
#: all kept records may hold together, and the largest such total accepted (1 GiB).
DEFAULT_MAX_RECORDS = 10_000
DEFAULT_MAX_BODY = 64 * 1024
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_BYTES_LIMIT = 1024 * 1024 * 1024
#: `fanout record`: a HAR file's size (bytes), refused before it is parsed (json holds a
#: file as objects of several times its size); its entries, and the exchanges a recording
#: proxy keeps per upstream; the bytes of one answer's body a route may hold (a longer one
#: is not kept: the route keeps its status); the bytes of bodies and headers the proxy
#: holds in all (past them an answer is kept without its body); the nesting of a recorded
#: JSON answer (deeper is kept as its text, which the stub sends byte for byte); the
#: headers of one recorded answer.
MAX_HAR_BYTES = 128 * 1024 * 1024
MAX_RECORDED_EXCHANGES = 100_000
MAX_RECORDED_BODY = 256 * 1024
MAX_RECORDED_BYTES = 64 * 1024 * 1024
MAX_RECORDED_DEPTH = 64
#: Response headers of one recorded answer (a real one has a few dozen).
MAX_RECORDED_HEADERS = 256
#: Seconds a Locust master waits, at most, for its workers' final reports before its summary
#: (load/arrival.py): a worker on a busy runner sends its report well within it, one that died
#: never sends one, so the wait is bounded and the summary says how many workers reported.
FINAL_REPORT_WAIT_S = 5.0
#: How long a rate limit's line (Locust's at its end, `fanout capacity`'s after each step)
#: waits for the app to finish the requests the load generator cut off, so their upstream
#: calls and the requests that made them are counted together (polled, not slept).
LIMIT_SETTLE_S = 10.0
#: Seconds `fanout critical-path --budget-s` may give its experiment: ten minutes. About 20
#: runs of one request find the weights in seconds; a longer budget is a typo (ms for s),
#: and the command holds a stack, and the terminal, until it is spent.
MAX_BUDGET_S = 600.0

# ---- the A/B gate's own samples (gate/ab.py): bounded in count and in time ----------------
#: Samples a side in one block: each block runs on a fresh app process per side, so the
#: process-to-process variation lands inside the test, on both sides.
AB_BLOCK_SAMPLES = 4
#: Untimed calls on each fresh process before its block (connections, lazy imports).
AB_BLOCK_WARMUP = 2
#: Most samples a side the A/B gate takes itself for one measurement (past it, the metric
#: that needs more is "not gated: cpu (needed N samples a side, the bound is M)").
AB_POOL_MAX_SAMPLES = 48
#: Most seconds the A/B gate spends on its own samples for one measurement (blocks started
#: past it are not taken: the metric is judged on what was taken, or not gated).
AB_POOL_MAX_S = 300.0

# ---- save/compare on a machine busier in one run (gate/verdict.py) ---------------------------
#: The wall-clock timings (median, p95, first-byte, efficiency, overhead) of two saved runs are
#: not gated when one side's app waited for a CPU this share of its samples' wall time beyond
#: what the other side's machine would have made it wait (its CPU time times the other side's
#: wait per CPU second), unless the change holds without that wait: five points. Measured on a
#: 2-core runner (docs/gating.md): runs of the same code whose medians were 10% or more apart
#: had 7.8 points or more of it; code adding 40 ms of CPU a request, beside the same load,
#: 0.3 to 6.6 (its share alone rose from 9.6% to 38%).
BUSY_WAIT_SHARE = 0.05

# ---- argparse types: text in, a checked value or one ArgumentTypeError line out ---------------


def _integer(text: str, what: str = "an integer") -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (inf and nan would make a delay hang forever)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


def fraction(text: str) -> float:
    """A number between 0 and 1."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return value


def http_status(text: str) -> int:
    """An HTTP status code, 100 to 599."""
    value = _integer(text, "an HTTP status")
    if not 100 <= value <= 599:
        raise argparse.ArgumentTypeError(f"{value} is not an HTTP status (100-599)")
    return value


def port_number(text: str) -> int:
    """A TCP port, 0 (pick a free one) to 65535."""
    value = _integer(text, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


def parse_import_string(raw: Any) -> str:
    """MODULE:ATTRIBUTE (the one rule); whether it imports is the child's to say."""
    if not isinstance(raw, str) or not IMPORT_STRING.match(raw):
        raise ValueError(f"{raw!r} is not an import string like app.main:app (MODULE:ATTR)")
    return raw


def import_string(text: str) -> str:
    """`parse_import_string` as an argparse type."""
    try:
        return parse_import_string(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type for an integer in [low, high] (keeps a benchmark's run bounded)."""

    def parse(text: str) -> int:
        value = _integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} must be between {low} and {high}")
        return value

    return parse


def bounded(parse: Callable[[str], float], high: float, unit: str = "") -> Callable[[str], float]:
    """`parse`, then refuse a value above `high` in one line that names the bound."""

    shown = f"{int(high):,}" if high == int(high) else f"{high:,g}"

    def check(text: str) -> float:
        value = parse(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"{text} is above the limit of {shown}{unit}")
        return value

    check.__name__ = getattr(parse, "__name__", "value")
    return check


rate_rps = bounded(positive_float, MAX_RATE_RPS, "/s")
threshold_rate = bounded(non_negative_float, MAX_RATE_RPS, "/s")
users = bounded(positive_int, MAX_USERS, " users")
processes = bounded(positive_int, MAX_PROCESSES, " processes")
duration_s = bounded(positive_float, MAX_DURATION_S, " s")
delay_ms = bounded(non_negative_float, MAX_DELAY_MS, " ms")
grace_ms = bounded(non_negative_float, MAX_GRACE_MS, " ms")
whole_seconds = bounded(positive_int, MAX_DURATION_S, " s")
disconnect_s = bounded(positive_float, MAX_DISCONNECT_S, " s")
latency_ms = bounded(positive_float, MAX_DELAY_MS, " ms")
calls = bounded(positive_int, MAX_CALLS)
repeats = bounded(positive_int, MAX_REPEAT)
inflight = bounded(non_negative_int, MAX_INFLIGHT)
threshold_count = bounded(positive_int, MAX_THRESHOLD_COUNT)
answer_bytes = bounded(positive_int, MAX_BYTES_LIMIT, " bytes")


def check_load_run(
    *, users: int, spawn_rate: float, run_time_s: float, processes: int | None
) -> None:
    """A ValueError in one line when a Locust run's size is past a limit (or not positive)."""
    for name, value, high in (
        ("users", users, MAX_USERS),
        ("spawn_rate", spawn_rate, MAX_RATE_RPS),
        ("run_time_s", run_time_s, MAX_DURATION_S),
        ("processes", processes or 1, MAX_PROCESSES),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{name}={value!r} must be a number > 0")
        if not value <= high:  # NaN fails here too
            raise ValueError(f"{name}={value!r} is above the limit of {high:,g}")


# ---- JSON, strictly: no NaN or Infinity, no RecursionError -----------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def strict_json_loads(data: bytes | str) -> Any:
    """json.loads without NaN/Infinity; a bad document or deep nesting is ONE ValueError line
    (every JSON the harness reads from a user: a flag's body, a route, a stub's control body)."""
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"is not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def strict_json_dumps(value: Any) -> bytes:
    """Compact JSON bytes; NaN, Infinity and non-JSON values are a ValueError."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not JSON-able: {exc}") from None
    except RecursionError:
        raise ValueError("not JSON-able: nested too deeply") from None


# ---- {upstream_url:NAME} in the app's environment ---------------------------------------------

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SHELL_VARIABLE = re.compile(r"\$(\{?[A-Za-z_][A-Za-z0-9_]*\}?)")


def expand_placeholders(value: str, urls: Mapping[str, str]) -> str:
    """`value` with `{upstream_url:NAME}` (and `{upstream_url}`, the first upstream)
    replaced by that upstream's URL. A `$VAR`, an unknown placeholder or name is a
    ValueError in one line: nothing here is a shell, and a literal `$...` would only
    surface as a 500 at measure time."""
    shell = _SHELL_VARIABLE.search(value)
    if shell:
        raise ValueError(
            f"${shell[1]} is not expanded (no shell variables here); "
            "write {upstream_url:NAME} for an upstream's URL"
        )

    def substitute(match: re.Match[str]) -> str:
        key, _, name = match[1].partition(":")
        if key != "upstream_url":
            raise ValueError(
                f"unknown placeholder {match[0]}: the only one is {{upstream_url:NAME}}"
            )
        if not name:
            return next(iter(urls.values()))
        if name not in urls:
            raise ValueError(
                f"{match[0]}: no upstream named {name!r} (the upstreams: {', '.join(urls)})"
            )
        return urls[name]

    return _PLACEHOLDER.sub(substitute, value)


# ---- HTTP headers a stub answers with --------------------------------------------------------

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE = re.compile(r"^[^\r\n\x00]*$")
#: Headers that frame the body: the stub writes them itself.
_FRAMING_HEADERS = ("content-length", "transfer-encoding", "connection")


def check_headers(headers: Any, what: str = "headers") -> list[tuple[bytes, bytes]]:
    """Header pairs as bytes, or a one-line ValueError: names are HTTP tokens, values hold
    no CR, LF or NUL, and framing headers (Content-Length, ...) are the stub's to write.
    The spec checks a declared route's headers with it before anything starts."""
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValueError(f"{what} must map strings to strings, got {headers!r}")
    pairs = []
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{what}: {name!r} is not an HTTP header name")
        if not _HEADER_VALUE.match(value):
            raise ValueError(f"{what}: the value of {name!r} holds CR, LF or NUL")
        if name.lower() in _FRAMING_HEADERS:
            raise ValueError(f"{what}: {name!r} is set by the stub itself from the body")
        try:
            pairs.append((name.lower().encode(), value.encode("latin-1")))
        except UnicodeEncodeError:
            raise ValueError(f"{what}: the value of {name!r} is not Latin-1 text") from None
    return pairs


# ---- the stub's behaviour: a value, checked where it is declared -------------------------------


class ConfigError(ValueError):
    """A behaviour setting the stub cannot use."""


#: Seconds of each unit a rate limit may be given in ("50/s", "3000/min", "100/h").
_RATE_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE_TEXT = re.compile(r"^\s*([-+]?\d+)\s*/\s*([a-z]+)\s*$")


def parse_rate(text: Any, key: str = "rate_limit") -> tuple[int, float]:
    """A rate limit as an API states it, "50/s", "3000/min" or "100/h": (count, per_s), the
    calls allowed in each `per_s` seconds. Anything else is one ConfigError line naming `key`."""
    found = _RATE_TEXT.match(text) if isinstance(text, str) else None
    if found is None or found[2] not in _RATE_UNITS:
        raise ConfigError(f"{key}={text!r} is not a rate limit like '50/s', '3000/min' or '100/h'")
    count, per_s = int(found[1]), _RATE_UNITS[found[2]]
    if count < 1:
        raise ConfigError(f"{key}={text!r} must allow at least 1 call (leave it out for no limit)")
    if count / per_s > MAX_RATE_LIMIT_PER_S:
        raise ConfigError(
            f"{key}={text!r} is above the limit of {MAX_RATE_LIMIT_PER_S:,.0f} calls/s"
        )
    return count, per_s


def default_burst(count: int, per_s: float) -> int:
    """The bucket's size when no `burst` is given: the calls the limit allows in one second,
    at least 1 ("3000/min": 50; "100/h": 1)."""
    return max(1, int(count / per_s))


def check_rate(
    rate_limit: Any, burst: Any, key: str = "rate_limit", burst_key: str = "burst"
) -> None:
    """A rate limit and its burst together: a burst needs a limit."""
    if rate_limit:
        parse_rate(rate_limit, key)
    elif burst:
        raise ConfigError(f"{burst_key}={burst!r} needs a {key} (the rate its bucket refills at)")


#: name -> (low, high) for every numeric setting: finite and in range, or refused.
_RANGES: dict[str, tuple[float, float]] = {
    "delay_ms": (0, MAX_DELAY_MS),
    "jitter_ms": (0, MAX_DELAY_MS),
    "p99_ms": (0, MAX_DELAY_MS),
    "error_rate": (0, 1),
    "error_status": (100, 599),
    "drop_rate": (0, 1),
    "max_inflight": (0, MAX_INFLIGHT),
    "burst": (0, MAX_BURST),
    "record_requests": (0, MAX_INFLIGHT),
    "record_body_bytes": (0, MAX_ITEM_BODY),
    "record_total_bytes": (0, MAX_BYTES_LIMIT),
    "seed": (0, 2**63 - 1),
}


def _convert(name: str, kind: type, value: Any) -> float | int:
    """A setting's value from JSON or an environment string, finite and in range (a
    switch: true or false; a text: a rate limit, "" for none)."""
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}={value!r} is not a rate limit like '50/s'")
        if value.strip():
            parse_rate(value, name)
        return value.strip()  # type: ignore[return-value]
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} must be true or false")
        return value
    if isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is not a number")
    if isinstance(value, str):
        try:
            value = float(value) if kind is float else int(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not a valid {kind.__name__}") from None
    if not isinstance(value, int | float):
        raise ConfigError(f"{name}={value!r} is not a number")
    if not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")
    if kind is int:
        if value != int(value):
            raise ConfigError(f"{name}={value!r} must be a whole number")
        value = int(value)
    else:
        value = float(value)
    low, high = _RANGES[name]
    if not low <= value <= high:
        raise ConfigError(f"{name}={value!r} must be between {low:.0f} and {high:.0f}")
    return value


@dataclass
class Behaviour:
    """How a stub upstream answers; changed at run time by POST /__upstream__/config."""

    delay_ms: float = DEFAULT_DELAY_MS
    jitter_ms: float = 0.0
    #: With delay_ms, makes the delay log-normal: median delay_ms, 99th percentile p99_ms.
    #: 0 = a fixed delay.
    p99_ms: float = 0.0
    #: Fraction of item calls answered with `error_status` instead of 200.
    error_rate: float = 0.0
    error_status: int = 500
    #: Fraction of item calls whose connection is closed mid-response.
    drop_rate: float = 0.0
    #: In-flight calls above this get 429 at once (a rate-limited upstream); 0 = no cap.
    max_inflight: int = 0
    #: Calls allowed per second, minute or hour ("50/s", "3000/min", "100/h"; "" = none): a
    #: token bucket of `burst` tokens (0: the limit's count over one second, at least 1),
    #: refilled at the rate; a call past it gets 429 at once, with Retry-After.
    rate_limit: str = ""
    burst: int = 0
    #: Requests kept for `requests()` (the last N), bytes of each body kept, and bytes all
    #: kept requests may hold together (headers included). Counts never depend on these.
    record_requests: int = DEFAULT_MAX_RECORDS
    record_body_bytes: int = DEFAULT_MAX_BODY
    record_total_bytes: int = DEFAULT_MAX_BYTES
    #: Seed of the stub's random choices (jitter, log-normal delay, error and drop rates);
    #: 0 = unseeded.
    seed: int = 0
    #: Hold every call until its client goes away (a hung upstream), bounded by HANG_MAX_S.
    hang: bool = False

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply `changes` (validated first, so a bad one changes nothing)."""
        known = {f.name: type(f.default) for f in fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        candidate = asdict(self)
        for name, value in changes.items():
            candidate[name] = _convert(name, known[name], value)
        checked = Behaviour(**candidate)
        checked.validate()
        for name, value in candidate.items():
            setattr(self, name, value)

    def validate(self) -> None:
        for f in fields(self):
            _convert(f.name, type(f.default), getattr(self, f.name))
        if self.p99_ms and self.p99_ms < self.delay_ms:
            raise ConfigError("p99_ms must be 0 (off) or at least delay_ms (the median)")
        check_rate(self.rate_limit, self.burst)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Behaviour:
        """Read PYTEST_FANOUT_STUB_<SETTING> variables: how the harness configures a child."""
        env = os.environ if environ is None else environ
        behaviour = cls()
        changes = {
            f.name: env[STUB_ENV_PREFIX + f.name.upper()]
            for f in fields(cls)
            if env.get(STUB_ENV_PREFIX + f.name.upper())
        }
        behaviour.update(changes)
        return behaviour

    def to_env(self) -> dict[str, str]:
        return {STUB_ENV_PREFIX + k.upper(): str(v) for k, v in asdict(self).items()}


#: Every `Behaviour` setting an upstream's table may give (checked by `Behaviour` itself).
BEHAVIOUR_KEYS = tuple(f.name for f in fields(Behaviour))


# ---- the packages' faces: public names loaded on first use -----------------------------------


def lazy_names(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """`__getattr__` for `package` (PEP 562): each public name is imported from the module
    `where[name]` the first time it is read, then kept in the package. Used by the
    top-level package, `gate`, `load` and `servers`, which pytest imports at start-up. No
    `__dir__` lists them: pluggy reads every name `dir()` gives a plugin, which would load
    them all."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
