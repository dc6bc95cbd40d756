"""Saved runs: the versioned JSON layout, its cases, and where a run was measured.

Why its own module: the file is the contract between a main-branch run and a
pull request's run, possibly of different versions, so reading it checks
everything, and every way a file can be wrong is a `GateError` of ONE line.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_fanout.artifacts import (
    fingerprint_settings,
    mask_argv,
    mask_data,
    mask_text,
    write_json,
)
from pytest_fanout.gate.machine import machine_fingerprint
from pytest_fanout.gate.schema import SCHEMA, SCHEMA_VERSION, SchemaError, load_file, validate_run
from pytest_fanout.load.results import EndpointResult, LoadResult
from pytest_fanout.measurement import Measurement

# SCHEMA (what a results file says it is) and SCHEMA_VERSION (bumped when a reader of the
# old layout would misread the new one) live in `gate.schema`, which checks them.
#: A case holding a `Measurement.to_dict()`.
KIND_MEASUREMENT = "measurement"
#: A case holding one row (an endpoint, or the total) of a Locust run; see `load_case_record`.
KIND_LOCUST = "locust"
#: The run-level fields of `LoadResult.to_dict()` a Locust case keeps next to its row.
LOAD_RUN_FIELDS = (
    "users",
    "spawn_rate",
    "run_time_s",
    "user_classes",
    "options",
    "exit_code",
    "violations",
    "duration_s",
)

#: Packages whose versions go into a saved run's context.
CONTEXT_PACKAGES = ("pytest-fanout", "pytest", "pluggy", "httpx", "fastapi", "uvicorn", "locust")


class GateError(Exception):
    """A problem to report as one line (bad file, bad option), never a traceback."""


def case_id(test: str, path: str) -> str:
    """A case is one path measured by one test: "<node id> <path>"."""
    return f"{test} {path}".strip()


@dataclass
class Case:
    """One record of a run: a `kind` and the record's own dict (`Measurement.to_dict()`)."""

    id: str
    kind: str
    record: dict[str, Any]

    @property
    def test(self) -> str:
        return str(self.record.get("test", ""))

    @property
    def path(self) -> str:
        return str(self.record.get("path", ""))

    def measurement(self) -> Measurement | None:
        """The Measurement of a "measurement" case, None for any other kind."""
        if self.kind != KIND_MEASUREMENT:
            return None
        cached = self.__dict__.get("_measurement")
        if cached is None:  # read once: every metric of every rule reads it
            cached = self.__dict__["_measurement"] = Measurement.from_dict(self.record)
        return cached

    def load_row(self) -> EndpointResult | None:
        """The Locust row (endpoint or total) of a "locust" case, None for any other kind."""
        if self.kind != KIND_LOCUST:
            return None
        return EndpointResult.from_dict(self.record["stats"])

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "record": self.record}


@dataclass
class Run:
    """A saved session: its cases (in order) and where and how they were measured."""

    cases: list[Case]
    context: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    #: Where it was read from, for messages ("" when built in memory).
    source: str = ""
    #: Extra top-level sections (for example "comparison") written next to the cases.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_measurements(
        cls, measurements: Iterable[Measurement], context: dict[str, Any] | None = None
    ) -> Run:
        """Cases from a session's measurements; a repeated case id gets " #2", " #3"."""
        return cls.from_session(measurements, (), context)

    @classmethod
    def from_session(
        cls,
        measurements: Iterable[Measurement],
        load_results: Iterable[LoadResult],
        context: dict[str, Any] | None = None,
    ) -> Run:
        """Measurement cases, then one Locust case per endpoint and one for the total of each
        load run; a repeated case id gets " #2", " #3"."""
        records = [(case_id(m.test, m.path), KIND_MEASUREMENT, m.to_dict()) for m in measurements]
        for result in load_results:
            for row in [*(result.endpoints[k] for k in sorted(result.endpoints)), result.total]:
                record = load_case_record(result, row)
                records.append((case_id(result.name, row.key), KIND_LOCUST, record))
        cases: list[Case] = []
        seen: dict[str, int] = {}
        # Masked now, not only when saved: a baseline read back from its (masked) file must
        # find the same case ids as this run in memory ("/login?token=***").
        records = [(mask_text(cid), kind, mask_data(record)) for cid, kind, record in records]
        for base, kind, record in records:
            seen[base] = seen.get(base, 0) + 1
            cid = base if seen[base] == 1 else f"{base} #{seen[base]}"
            cases.append(Case(cid, kind, record))
        created = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(cases, context or {}, created)

    def case(self, cid: str) -> Case | None:
        return next((c for c in self.cases if c.id == cid), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "context": self.context,
            "cases": [c.to_dict() for c in self.cases],
            **self.extra,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the run as JSON (parents created), atomically: a failed write keeps the old
        file whole and a reader never sees half a run; a failure is a one-line GateError.
        Credentials are masked (`artifacts.mask_data`): a saved run travels."""
        target = Path(path)
        data = self.to_dict()
        if isinstance(data["context"].get("argv"), list):
            data["context"] = {**data["context"], "argv": mask_argv(data["context"]["argv"])}
        try:
            write_json(target, data, indent=1)
        except OSError as exc:
            raise GateError(f"cannot write {path}: {error_reason(exc)}") from None
        return target

    def keeps_baseline(self, path: str | os.PathLike[str], failed: int) -> str:
        """Why saving this run to `path` would wrongly replace a baseline ("" when it would
        not): an existing file is not overwritten by a session with failed tests or no cases
        (`--fanout-save-failed` saves anyway)."""
        if not Path(path).is_file():
            return ""
        if failed:
            return f"{failed} test(s) failed"
        if not self.cases:
            return "the session measured no case"
        return ""

    @classmethod
    def load(cls, path: str | os.PathLike[str], role: str = "baseline") -> Run:
        """Read and check a saved run (`gate.schema`): every way it can be wrong is one line."""
        name = f"{role} {path}"
        try:
            data = load_file(path, name)
        except SchemaError as exc:
            raise GateError(str(exc)) from None
        run = cls._from_valid(data, name)
        run.source = str(path)
        return run

    @classmethod
    def from_dict(cls, data: Any, source: str = "<data>") -> Run:
        """Validate the layout (schema name, version, every case's model), then build the run."""
        try:
            validate_run(data, source)
        except SchemaError as exc:
            raise GateError(str(exc)) from None
        return cls._from_valid(data, source)

    @classmethod
    def _from_valid(cls, data: dict[str, Any], source: str) -> Run:
        cases = [Case(raw["id"], raw["kind"], raw["record"]) for raw in data["cases"]]
        context = dict(data["context"]) if isinstance(data.get("context"), dict) else {}
        if isinstance(context.get("settings"), dict):
            # An older file holds clear values: keep only what a new one would.
            context["settings"] = fingerprint_settings(context["settings"])
        if isinstance(context.get("argv"), list):
            context["argv"] = mask_argv(str(arg) for arg in context["argv"])
        extra = {k: v for k, v in data.items() if k not in _RUN_KEYS}
        return cls(cases, context, str(data.get("created", "")), source, extra)


_RUN_KEYS = {"schema", "schema_version", "created", "context", "cases"}


def load_case_record(result: LoadResult, row: EndpointResult) -> dict[str, Any]:
    """A Locust case's record: the run's name and settings, and the row with its histogram.

    Why the settings travel with every row: a comparison notes when the users
    or the run time changed, since requests/s and p95 depend on them.
    """
    run = result.to_dict()
    return {
        "test": result.name,
        "endpoint": row.key,
        **{k: run[k] for k in LOAD_RUN_FIELDS},
        "stats": row.to_dict(),
    }


def error_reason(exc: BaseException) -> str:
    """The short reason of an OS or parse error, for a one-line message."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def collect_context(
    root: str | os.PathLike[str] | None = None,
    *,
    app_env: Mapping[str, str] | None = None,
    hide: Iterable[str] = (),
) -> dict[str, Any]:
    """Where the run happened: Python, packages, CPUs, platform, git commit, the app's settings.

    Kept so that a comparison can say when the baseline came from another
    machine (`fingerprint`: latency is gated only on the same one) or ran with
    other settings (their names and fingerprints of their values, never the
    values). `app_env`: the app server's own
    environment overrides, which the app actually ran with on top of this
    process's FANOUT_* variables (values in `hide`, the stub upstreams' URLs
    on random ports, are left out).
    """
    packages = {}
    for name in CONTEXT_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": packages,
        "git": _git_info(Path(root) if root else Path.cwd()),
        "fingerprint": machine_fingerprint(),
        # Names and fingerprints of values only: a saved run travels as a CI artifact.
        "settings": fingerprint_settings(app_settings(app_env, hide)),
        "argv": mask_argv(sys.argv[1:]),
    }


def app_settings(app_env: Mapping[str, str] | None = None, hide: Iterable[str] = ()) -> dict:
    """FANOUT_* variables of this process overlaid with the app's own overrides (all of them)."""
    overrides = dict(app_env or {})
    effective = {k: v for k, v in os.environ.items() if k.startswith("FANOUT_")}
    effective.update(overrides)
    hidden = set(hide)
    return {
        k: v
        for k, v in sorted(effective.items())
        if (k.startswith("FANOUT_") or k in overrides)
        and not any(v.startswith(h) for h in hidden if h)
    }


def _git_info(root: Path) -> dict[str, Any] | None:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    return {
        "commit": commit,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }
