"""A/B in one run: the app at a git ref beside the app in the working tree, sampled in turn.

Why: a saved baseline comes from another moment (often another machine), so
only portable metrics can be compared and a few percent of CPU drowns in the
drift. Measuring the base commit in the same session, on the same upstream,
alternating head and base sample by sample (head-base, then base-head), makes
the app's CPU per request comparable and lets the gate catch small
regressions. The base runs from a temporary `git worktree` of the ref,
removed afterwards (also on a failure, Ctrl-C or SIGTERM: it is in the one
cleanup registry).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

from pytest_fanout.gate.runs import GateError, Run
from pytest_fanout.gate.verdict import POOL_KEY
from pytest_fanout.gate.verdict import POOLED as POOL_FIELDS
from pytest_fanout.limits import (
    AB_BLOCK_SAMPLES,
    AB_BLOCK_WARMUP,
    AB_POOL_MAX_S,
    AB_POOL_MAX_SAMPLES,
)
from pytest_fanout.measure import measure
from pytest_fanout.measurement import Measurement, MeasurementError, Request
from pytest_fanout.servers import cleanup
from pytest_fanout.servers.process import ServerStartError
from pytest_fanout.servers.stack import AppServer

#: Per-sample counts that a merged Measurement sums (everything else that is a list is joined).
SUMMED_FIELDS = frozenset({"app_errors", "rejected", "errors"})
#: Fields of one request, not of a sample, that a merged Measurement keeps from its first part
#: (the structure's wave sizes must not be joined: [8] and [8] are one wave, not two).
KEPT_FIELDS = frozenset({"structure"})
GIT_TIMEOUT_S = 60


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise GateError(f"cannot run git in {cwd}: {exc}") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def resolve_ref(root: Path, ref: str) -> tuple[Path, str]:
    """(the repository's top level, the full commit of `ref`); a bad ref is one GateError line."""
    if not ref.strip() or ref.startswith("-"):
        raise GateError(f"--fanout-ab {ref!r} is not a git ref")
    top = _git(root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise GateError(f"--fanout-ab needs a git repository: {root} is not in one")
    done = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if done.returncode != 0:
        raise GateError(f"--fanout-ab {ref}: no such commit in {top.stdout.strip()}")
    return Path(top.stdout.strip()), done.stdout.strip()


class BaseWorktree:
    """A detached `git worktree` of one commit in a temporary directory; `stop()` removes it."""

    def __init__(self, repo: Path, commit: str) -> None:
        self.repo = repo
        self.commit = commit
        self.path: Path | None = None
        self._tmp: Path | None = None

    def create(self) -> Path:
        self._tmp = Path(tempfile.mkdtemp(prefix="fanout-ab-"))
        path = self._tmp / "base"
        cleanup.register(self)
        done = _git(self.repo, "worktree", "add", "--detach", "--quiet", str(path), self.commit)
        if done.returncode != 0:
            self.stop()
            raise GateError(
                f"cannot check out {self.commit[:12]} as a worktree: {_last_line(done.stderr)}"
            )
        self.path = path
        return path

    def stop(self, grace_s: float = 0.0) -> None:
        """Remove the worktree and its directory (idempotent; a registry `Stoppable`)."""
        cleanup.unregister(self)
        removed = True
        if self.path is not None:
            done = _git(self.repo, "worktree", "remove", "--force", str(self.path))
            removed = done.returncode == 0
            self.path = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            if not removed:  # forget the worktree whose directory is now gone
                _git(self.repo, "worktree", "prune")
            self._tmp = None


def base_app_server(head: AppServer, repo: Path, worktree: Path) -> AppServer:
    """The head's app server again (same import string, environment, upstreams, timeout), with
    the app imported from the same place in the base worktree."""
    app_dir = Path(head.app_dir or head.cwd or Path.cwd()).resolve()
    try:
        relative = app_dir.relative_to(repo.resolve())
    except ValueError:
        raise GateError(
            f"--fanout-ab: the app is imported from {app_dir}, outside the repository {repo}"
        ) from None
    cwd = head.cwd
    if cwd is not None and Path(cwd).resolve().is_relative_to(repo.resolve()):
        cwd = str(worktree / Path(cwd).resolve().relative_to(repo.resolve()))
    return head.twin(app_dir=worktree / relative, cwd=cwd, name="base app")


def merge_measurements(parts: list[Measurement]) -> Measurement:
    """One Measurement from single-sample ones: lists joined, counts summed, the rest kept."""
    first = parts[0]
    values: dict[str, Any] = {}
    for f in fields(first):
        items = [getattr(p, f.name) for p in parts]
        values[f.name] = _merge(f.name, items)
    return type(first)(**values)


def _merge(name: str, items: list[Any]) -> Any:
    head = items[0]
    if name in KEPT_FIELDS:
        return head
    if isinstance(head, list):
        return [x for item in items for x in item]
    if isinstance(head, dict):
        keys = dict.fromkeys(k for item in items for k in item)
        return {k: _merge(k, [item[k] for item in items if k in item]) for k in keys}
    if name in SUMMED_FIELDS and isinstance(head, int) and not isinstance(head, bool):
        return sum(items)
    return head


class AlternatingSampler:
    """Takes `measure`'s place in `Fanout.measure`: every sample is taken on the head and on the
    base in turn (ABBA order), each side warmed up first; returns the head's Measurement and
    keeps the base's in `pending` for the gate to pair with it.

    When `wants` (the gate's `samples_wanted`) says the test's `repeat` is too few for a rule
    (cpu needs 20 a side) or its noise hides a change of the rule's limit, the sampler takes
    more itself (`pending_pools`): in blocks of `block` samples a side, each block on a FRESH
    app process per side (twins of head and base, started for the block and stopped after
    it), samples alternated within the block, so that drift and the variation between
    processes land on both sides. Bounded: at most `max_samples` more a side, and no block
    started past `max_s` seconds."""

    def __init__(
        self,
        base: AppServer,
        label: str,
        *,
        wants: Callable[[Measurement, Measurement, int], tuple[int, bool]] | None = None,
        block: int = AB_BLOCK_SAMPLES,
        max_samples: int = AB_POOL_MAX_SAMPLES,
        max_s: float = AB_POOL_MAX_S,
    ) -> None:
        self.base = base
        self.label = label
        self.wants = wants
        self.block = max(1, block)
        self.max_samples = max_samples
        self.max_s = max_s
        self.pending: Measurement | None = None
        #: (head's pool, base's pool) of the last call, or None when none was needed.
        self.pending_pools: tuple[dict[str, Any], dict[str, Any]] | None = None
        #: Fresh app processes started for blocks, in all (a test counts them).
        self.started = 0

    def __call__(
        self,
        client: Any,
        app_url: str,
        request: Request,
        *,
        app: Any = None,
        repeat: int = 5,
        warmup: int = 1,
        held_probe: bool = True,
        **kwargs: Any,
    ) -> Measurement:
        """`measure`'s arguments (`upstreams=` and the rest in `kwargs`); the one request
        goes to both sides."""
        if repeat < 1 or warmup < 0:
            raise ValueError("repeat must be >= 1 and warmup >= 0")
        sides = ((app_url, app), (self.base.url, self.base))
        parts = _alternate(client, request, sides, repeat, warmup, held_probe, self.label, kwargs)
        head, base = merge_measurements(parts[0]), merge_measurements(parts[1])
        self.pending, self.pending_pools = base, None
        if self.wants is not None:
            more, noisy = self.wants(head, base, repeat)
            if more or noisy:
                self.pending_pools = self._pool(client, request, app, parts, more, kwargs)
        return head

    def _pool(
        self,
        client: Any,
        request: Request,
        app: Any,
        own: tuple[list[Measurement], list[Measurement]],
        more: int,
        kwargs: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The samples the test did not take, on fresh processes (bounded in count and time):
        block after block while the rules want more."""
        assert self.wants is not None
        repeat = len(own[0])
        needed = repeat + more
        taken: tuple[list[Measurement], list[Measurement]] = ([], [])
        short = ""
        processes = 0
        if more > self.max_samples:
            short = f"needed {needed} samples a side, the bound is {repeat + self.max_samples}"
        elif not isinstance(app, AppServer):
            short = "no app process to restart for more samples"
        else:
            deadline = time.monotonic() + self.max_s
            noisy = True
            for index in range(math.ceil(self.max_samples / self.block)):
                if (not more and not noisy) or len(taken[0]) >= self.max_samples:
                    break
                if time.monotonic() > deadline:
                    if more:
                        short = (
                            f"needed {needed} samples a side, took {repeat + len(taken[0])}"
                            f" in the {self.max_s:g} s bound"
                        )
                    break
                count = min(self.block, self.max_samples - len(taken[0]))
                try:
                    block = self._block(client, request, app, index, count, kwargs)
                except (MeasurementError, ServerStartError) as exc:
                    if more:
                        short = f"a fresh app process for more samples failed: {_first_line(exc)}"
                    break
                processes += 1
                for side in (0, 1):
                    taken[side].extend(block[side])
                more, noisy = self.wants(
                    merge_measurements([*own[0], *taken[0]]),
                    merge_measurements([*own[1], *taken[1]]),
                    repeat,
                )
        head, base = (_pool_record(taken[side], processes, needed, short) for side in (0, 1))
        return head, base

    def _block(
        self,
        client: Any,
        request: Request,
        app: AppServer,
        index: int,
        count: int,
        kwargs: dict[str, Any],
    ) -> tuple[list[Measurement], list[Measurement]]:
        """`count` samples a side on a fresh twin of head and of base, both stopped after."""
        twins = (
            app.twin(app_dir=app.app_dir, cwd=app.cwd, name=f"head app (gate block {index + 1})"),
            self.base.twin(
                app_dir=self.base.app_dir,
                cwd=self.base.cwd,
                name=f"base app (gate block {index + 1})",
            ),
        )
        try:
            # Both at once (each start is mostly a child importing): the same moment for both.
            with ThreadPoolExecutor(max_workers=2) as pool:
                starts = [pool.submit(twin.start) for twin in twins]
            for start in starts:
                start.result()  # a failure raises here; `finally` stops both
            self.started += 2
            sides = tuple((twin.url, twin) for twin in twins)
            return _alternate(
                client, request, sides, count, AB_BLOCK_WARMUP, False, self.label, kwargs
            )
        finally:
            for twin in twins:
                twin.stop()

    def take_base(self) -> Measurement | None:
        """The base Measurement of the last call (once)."""
        base, self.pending = self.pending, None
        return base

    def take_pools(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(head's pool, base's pool) of the last call (once), None when none was needed."""
        pools, self.pending_pools = self.pending_pools, None
        return pools


def _alternate(
    client: Any,
    request: Request,
    sides: tuple[tuple[str, Any], ...],
    repeat: int,
    warmup: int,
    held_probe: bool,
    label: str,
    kwargs: dict[str, Any],
) -> tuple[list[Measurement], list[Measurement]]:
    """`repeat` one-sample Measurements a side, head and base in turn (ABBA), each side warmed
    up before its first sample; a failure on the base side names the base."""
    parts: tuple[list[Measurement], list[Measurement]] = ([], [])
    for index in range(repeat):
        for side in (0, 1) if index % 2 == 0 else (1, 0):
            url, server = sides[side]
            try:
                sample = measure(
                    client,
                    url,
                    request,
                    app=server,
                    repeat=1,
                    warmup=warmup if index == 0 else 0,
                    held_probe=held_probe and index == 0,  # one structure per side
                    **kwargs,
                )
            except MeasurementError as exc:
                if side == 0:
                    raise
                raise MeasurementError(f"the base app ({label}): {exc}") from None
            parts[side].append(sample)
    return parts


def _pool_record(
    parts: list[Measurement], processes: int, needed: int, short: str
) -> dict[str, Any]:
    """A pool as a case's record holds it (`POOL_KEY`): the per-sample lists, the fresh
    processes they came from, the samples a side the rules needed, and why fewer (or "")."""
    merged = merge_measurements(parts) if parts else None
    record: dict[str, Any] = {
        name: list(getattr(merged, name)) if merged is not None else [] for name in POOL_FIELDS
    }
    record.update(processes=processes, needed=needed, short=short)
    return record


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def attach_pools(
    run: Run, measurements: list[Measurement], pools: dict[int, tuple[Measurement, dict]]
) -> None:
    """Put each measurement's pool (the samples the gate took itself) in its case's record:
    `Run.from_session` makes the measurements' cases first, in their order."""
    for case, m in zip(run.cases, measurements, strict=False):
        entry = pools.get(id(m))
        if entry is not None and entry[0] is m:
            case.record[POOL_KEY] = entry[1]
