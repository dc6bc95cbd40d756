"""Reading a saved results file without trusting it: size, type, JSON, then the schema.

Why apart: the file comes from another machine or another version, maybe
from an attacker's pull request. Before anything uses it, it must be a
regular file under a size cap (never /dev/zero, a FIFO or 5 GB), plain JSON
with finite numbers (no NaN, no Infinity, no nesting deep enough to exhaust
the parser), and every case must match its pydantic model, so that a string
`n` or a negative sample is one line naming the case and the field, not a
TypeError after the tests ran.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

#: Largest results file the gate reads (a 1,000-case suite saves about 1 MB).
MAX_FILE_BYTES = 64 * 1024 * 1024
SCHEMA = "pytest-fanout/results"
SCHEMA_VERSION = 1


class SchemaError(ValueError):
    """The file is not a results file the gate can use; `str()` is one line."""


Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, strict=True)]
Positive = Annotated[int, Field(ge=1, strict=True)]


class _Open(BaseModel):
    """Unknown fields are kept (newer writers, derived statistics): only known ones are checked."""

    model_config = ConfigDict(extra="allow", strict=True)


class PoolRecord(_Open):
    """The samples the A/B gate took itself on fresh app processes (`ab_pool`, gate/ab.py)."""

    samples: list[Seconds]
    app_cpu_per_sample: list[Seconds] = []
    first_byte_per_sample: list[Seconds] = []
    processes: Count = 0
    needed: Count = 0
    short: str = ""


class MeasurementRecord(_Open):
    """A `Measurement.to_dict()`: the fields the gate's metrics read."""

    path: str
    samples: Annotated[list[Seconds], Field(min_length=1)]
    n: Positive | None = None
    concurrency: Positive | None = None
    upstream_delay_s: Seconds | None = None
    upstream_jitter_s: Seconds = 0.0
    app_cpu_per_sample: list[Seconds] = []
    #: How app_cpu_per_sample was reckoned (`limits.CPU_METHOD`); absent in older files.
    cpu_method: Count | None = None
    #: Per sample, the app's wait for a CPU (None: not known); absent in older files.
    app_wait_per_sample: list[Seconds | None] = []
    loop_lag_per_sample: list[Annotated[float, Field(allow_inf_nan=False)]] = []
    upstream_requests_per_sample: list[Count] = []
    upstream_peak_per_sample: list[Count] = []
    status_code: Count = 200
    app_errors: Count = 0
    test: str = ""
    #: The app streamed its answer (the first-byte rule judges it); absent in older files.
    streamed: bool = False
    first_byte_per_sample: list[Seconds] = []
    #: Per upstream, the wave sizes of a held probe request (exact); absent in older files.
    structure: dict[str, list[Count]] | None = None
    #: Every held probe's structure when a test sent several (`held_probes=`).
    structures: list[dict[str, list[Count]]] = []
    #: Per upstream, per gauge, one number a sample (counts, and the delays applied in ms).
    upstream_gauges: dict[str, dict[str, list[Seconds]]] = {}
    #: A/B: the samples the gate took itself where the test's repeat was too few for a rule.
    ab_pool: PoolRecord | None = None


def _number_key(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"histogram bucket {text!r} is not a number of ms") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"histogram bucket {text!r} is not a finite, non-negative number of ms")
    return text


class LoadStats(_Open):
    """A Locust row (`EndpointResult.to_dict()`)."""

    requests: Count
    failures: Count
    rps: Seconds
    p95_ms: Seconds
    histogram: dict[str, Count] = {}

    def model_post_init(self, context: Any) -> None:
        for key in self.histogram:
            _number_key(key)


class LoadRecord(_Open):
    stats: LoadStats


class CaseModel(_Open):
    id: str
    kind: str
    record: dict[str, Any]


class RunFile(_Open):
    schema_: Literal["pytest-fanout/results"] = Field(alias="schema")
    schema_version: int
    created: str = ""
    context: dict[str, Any] = {}
    cases: list[dict[str, Any]]


_MEASUREMENTS = TypeAdapter(list[MeasurementRecord])
_LOAD_RECORDS = TypeAdapter(list[LoadRecord])
_CASES = TypeAdapter(list[CaseModel])


def read_json(path: str | os.PathLike[str], name: str, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """The file's JSON, refused in one line when it is not a regular file, too big, not JSON,
    holds NaN or Infinity, or nests too deeply."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; a regular file ignores it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SchemaError(f"{name} does not exist") from None
    except IsADirectoryError:
        raise SchemaError(f"{name} is a directory, not a results file") from None
    except OSError as exc:
        raise SchemaError(f"cannot read {name}: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    problem = ""
    if stat.S_ISDIR(info.st_mode):
        problem = f"{name} is a directory, not a results file"
    elif not stat.S_ISREG(info.st_mode):
        problem = f"{name} is not a regular file (a device, FIFO or socket)"
    elif info.st_size > max_bytes:
        problem = (
            f"{name} is {info.st_size / 2**20:.1f} MiB, over the "
            f"{max_bytes / 2**20:.0f} MiB limit of a results file"
        )
    if problem:
        os.close(fd)
        raise SchemaError(problem)
    with os.fdopen(fd, "rb") as handle:
        try:
            raw = handle.read(max_bytes + 1)
        except OSError as exc:
            raise SchemaError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:  # it grew while being read
        raise SchemaError(f"{name} is over the {max_bytes / 2**20:.0f} MiB limit of a results file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError(f"cannot read {name}: not UTF-8 ({exc.reason})") from None
    return parse_json(text, name)


def _no_constant(token: str) -> Any:
    raise SchemaError(f"{token} is not a number a results file may hold")


#: The largest magnitude a number of a results file may have (counts, seconds, requests/s):
#: beyond it a number is crafted, not measured.
MAX_NUMBER = 1e15
#: The longest number token read (digits, sign, point, exponent).
MAX_NUMBER_CHARS = 40


def _short(token: str) -> str:
    return token if len(token) <= 24 else f"{token[:12]}...({len(token)} characters)"


def _finite_float(token: str) -> float:
    if len(token) > MAX_NUMBER_CHARS:
        raise SchemaError(f"the number {_short(token)} is longer than any measurement")
    value = float(token)
    if not math.isfinite(value):
        raise SchemaError(f"{_short(token)} overflows to infinity")
    if abs(value) > MAX_NUMBER:
        raise SchemaError(f"the number {_short(token)} is past the limit of {MAX_NUMBER:g}")
    return value


def _sane_int(token: str) -> int:
    if len(token) > MAX_NUMBER_CHARS:
        raise SchemaError(f"the number {_short(token)} is longer than any measurement")
    value = int(token)
    if abs(value) > MAX_NUMBER:
        raise SchemaError(f"the number {_short(token)} is past the limit of {MAX_NUMBER:g}")
    return value


#: A JSON escape of a UTF-16 surrogate: a lone one makes a string that cannot be written back.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _unwritable(data: Any, where: str = "") -> str | None:
    """Where a string that cannot be encoded as UTF-8 (a lone surrogate) sits, or None."""
    stack: list[tuple[Any, str]] = [(data, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return at or "the top level"
        elif isinstance(item, dict):
            for key, value in item.items():
                name = ascii(key)  # the message itself must be writable
                stack.append((key, f"{at}.{name}" if at else name))
                stack.append((value, f"{at}.{name}" if at else name))
        elif isinstance(item, list):
            stack.extend((value, f"{at}[{i}]") for i, value in enumerate(item))
    return None


def parse_json(text: str, name: str) -> Any:
    """Strict JSON: finite numbers only; too deep a nesting is one line, not a RecursionError."""
    try:
        data = json.loads(
            text, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_sane_int
        )
    except json.JSONDecodeError as exc:
        raise SchemaError(
            f"{name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except SchemaError as exc:
        raise SchemaError(f"{name} is refused: {exc}") from None
    except RecursionError:
        raise SchemaError(f"{name} is nested too deeply to be a results file") from None
    except ValueError as exc:  # int() past Python's digit limit, whatever the hook saw first
        raise SchemaError(f"{name} is refused: {str(exc).splitlines()[0]}") from None
    if _SURROGATE_ESCAPE.search(text):
        where = _unwritable(data)
        if where is not None:
            raise SchemaError(
                f"{name} is refused: a string at {where[:80]} holds a lone surrogate "
                "(it could not be written back as UTF-8)"
            )
    return data


def _first_error(exc: ValidationError) -> tuple[tuple[Any, ...], str]:
    error = exc.errors(include_url=False)[0]
    return tuple(error["loc"]), error["msg"]


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "the top level"


def validate_run(data: Any, name: str) -> dict[str, Any]:
    """Check the layout and every case against its model; return the data (unchanged).

    Measurement and Locust records are validated in two batches (fast for
    100,000 cases); a case of another kind is kept as it is (the comparison
    skips it with a note).
    """
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise SchemaError(f"{name} is not a pytest-fanout results file (schema {SCHEMA!r})")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"{name} has schema version {version!r}; this pytest-fanout reads version "
            f"{SCHEMA_VERSION}: save the baseline again with this version"
        )
    try:
        RunFile.model_validate(data)
    except ValidationError as exc:
        loc, msg = _first_error(exc)
        if loc and loc[0] == "cases" and len(loc) == 1:
            raise SchemaError(f"{name} has no list of cases") from None
        raise SchemaError(f"{name}: {_where(loc)}: {msg}") from None
    cases = data["cases"]
    try:
        _CASES.validate_python(cases)
    except ValidationError as exc:
        loc, msg = _first_error(exc)
        index = loc[0] if loc and isinstance(loc[0], int) else 0
        raise SchemaError(
            f"{name}: case {index + 1} needs a string id, a string kind and a record object "
            f"({_where(loc[1:])}: {msg})"
        ) from None
    for kind, adapter in (("measurement", _MEASUREMENTS), ("locust", _LOAD_RECORDS)):
        indexes = [i for i, case in enumerate(cases) if case["kind"] == kind]
        try:
            adapter.validate_python([cases[i]["record"] for i in indexes])
        except ValidationError as exc:
            loc, msg = _first_error(exc)
            i = indexes[loc[0]]
            raise SchemaError(
                f"{name}: case {i + 1} ({cases[i]['id']}) is not a valid {kind} record: "
                f"{_where(loc[1:])}: {msg}"
            ) from None
    return data


def load_file(path: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Read, parse and validate a results file; every failure is one `SchemaError` line."""
    return validate_run(read_json(Path(path), name), name)
