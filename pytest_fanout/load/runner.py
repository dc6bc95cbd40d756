"""Locust as a bounded SUBPROCESS: the runner behind `fanout_load` and the tests.

Locust is never imported here: it monkey-patches the interpreter with gevent,
which would break pytest and httpx in the calling process. `run_locust()`
starts `python -m locust -f LOCUSTFILE --headless` with a `--run-time` and a
subprocess timeout (the default locustfile is the harness shipped in the
package, `pytest_fanout/load/harness/locustfile.py`), in a private work
directory (removed after, unless the caller gave one), and parses the JSON
report it writes (`--json-file`).

Why the JSON and not the CSV: the JSON holds each endpoint's full response
time histogram (Locust's own buckets) and its timestamps, at the moment Locust
quits; the `_stats.csv` is rewritten once a second by a background greenlet,
so its last version can miss the final second, and its percentiles are
pre-rounded. Percentiles computed from the histogram use Locust's own rule
(`calculate_response_time_percentile`), so they equal what Locust prints.

The results live in `results.py`, the thresholds in `thresholds.py`; the
package's `__init__` gathers the public names of all three.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pytest_fanout import limits
from pytest_fanout.load.exact import apply_exact, read_exact_file
from pytest_fanout.load.results import (
    LoadResult,
    parse_stats_json,
)
from pytest_fanout.load.thresholds import VIOLATION_PREFIX, Thresholds
from pytest_fanout.servers import cleanup
from pytest_fanout.servers.cleanup import stop_group
from pytest_fanout.servers.proctree import processes_with_env

__all__ = [
    "EMBEDDED_PREFIX",
    "LOCUSTFILE_ENV",
    "MARKER_ENV",
    "LoadRunError",
    "default_locustfile",
    "kill_marked",
    "locust_command",
    "marked_processes",
    "run_locust",
]

#: The environment variable that marks every process a `run_locust` call starts.
MARKER_ENV = "PYTEST_FANOUT_LOAD_RUN"
#: The environment variable that replaces the default locustfile (a file or a folder).
LOCUSTFILE_ENV = "PYTEST_FANOUT_LOCUSTFILE"
#: The harness shipped in the package: `from pytest_fanout.locust import *`.
SHIPPED_LOCUSTFILE = Path(__file__).resolve().parent / "harness" / "locustfile.py"


# ---- the subprocess runner -------------------------------------------------


class LoadRunError(RuntimeError):
    """Locust did not produce results (it failed to start, or timed out); `.output` says why."""

    def __init__(self, message: str, output: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        self.output = output
        self.exit_code = exit_code


def default_locustfile() -> Path:
    """$PYTEST_FANOUT_LOCUSTFILE if set, else the harness shipped in the package."""
    configured = os.environ.get(LOCUSTFILE_ENV)
    return Path(configured) if configured else SHIPPED_LOCUSTFILE


def _checked_locustfile(locustfile: str | os.PathLike[str] | None) -> Path:
    """An absolute path (Locust runs in a work directory of its own) that exists."""
    path = Path(locustfile) if locustfile is not None else default_locustfile()
    path = path.expanduser().resolve()
    if not path.exists():
        origin = "locustfile=" if locustfile is not None else f"${LOCUSTFILE_ENV}"
        raise LoadRunError(f"the locustfile {path} ({origin}) does not exist")
    return path


def marked_processes(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds MARKER_ENV=marker."""
    return processes_with_env(MARKER_ENV, marker)


def kill_marked(marker: str) -> list[int]:
    """SIGKILL whatever a run left behind; return what was found."""
    left = marked_processes(marker)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def locust_command(
    locustfile: str | os.PathLike[str],
    *,
    host: str | None,
    users: int,
    spawn_rate: float,
    run_time_s: int,
    report_prefix: str | os.PathLike[str],
    user_classes: Sequence[str] = (),
    tags: Sequence[str] = (),
    n: int | None = None,
    max_concurrent: int | None = None,
    thresholds: Thresholds | None = None,
    processes: int | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The `python -m locust ...` command line `run_locust` runs (public: tests print it)."""
    command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless"]
    command += ["--users", str(users), "--spawn-rate", f"{spawn_rate:g}"]
    command += ["--run-time", f"{run_time_s}s", "--only-summary"]
    command += ["--json-file", str(report_prefix), "--csv", str(report_prefix)]
    if host:
        command += ["--host", host]
    if tags:
        command += ["--tags", *tags]
    if n is not None:
        command += ["--fanout-n", str(n)]
    if max_concurrent is not None:
        command += ["--fanout-max-concurrent", str(max_concurrent)]
    if thresholds is not None:
        command += thresholds.to_args()
    if processes:
        command += ["--processes", str(processes)]
        command += _local_master_args(extra_args)
    command += list(extra_args)
    command += list(user_classes)
    return command


#: Locust's own master address (`*:5557`): all interfaces and one fixed port, so two
#: `--processes` runs on one host met at one master. Ours bind to loopback, on a free port.
_MASTER_FLAGS = ("--master-bind-host", "--master-bind-port", "--master-host", "--master-port")


def _local_master_args(extra_args: Sequence[str]) -> list[str]:
    """For `--processes` (a master and its forked workers on this machine): the master on
    127.0.0.1 at a free port, and the workers told where, unless the caller set one."""
    given = {arg.split("=", 1)[0] for arg in extra_args}
    if given & set(_MASTER_FLAGS):
        return []
    port = _free_loopback_port()
    return [
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--master-host",
        "127.0.0.1",
        "--master-port",
        str(port),
    ]


def _free_loopback_port() -> int:
    """A port free on 127.0.0.1 now (the kernel's pick; Locust binds it a moment later)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_locust(
    host: str | None = None,
    *,
    users: int = 10,
    spawn_rate: float | None = None,
    run_time_s: float = 5,
    user_classes: Sequence[str] = (),
    tags: Sequence[str] = (),
    n: int | None = None,
    max_concurrent: int | None = None,
    thresholds: Thresholds | None = None,
    processes: int | None = None,
    extra_args: Sequence[str] = (),
    locustfile: str | os.PathLike[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    name: str = "",
    progress: Callable[[str], None] | None = None,
) -> LoadResult:
    """Run Locust headless for `run_time_s` seconds and return what it measured.

    With `host=None` the harness starts (and stops) its embedded stack.
    `locustfile` is a user's locustfile (a file or a folder; relative to the
    current directory); by default $PYTEST_FANOUT_LOCUSTFILE, else the shipped one.
    The run is bounded twice: Locust's `--run-time`, and `timeout_s` (default
    run time + 60 s) after which the whole process group is killed and
    LoadRunError raised. Threshold violations and failed requests do NOT
    raise: they are in `exit_code` and `violations`, for the test to assert.
    `progress` (None: silent) is told the start, the seconds run every
    `PROGRESS_EVERY_S`, and the end: a run takes seconds to minutes.
    """
    rate = float(spawn_rate if spawn_rate is not None else users)
    try:
        limits.check_load_run(
            users=users, spawn_rate=rate, run_time_s=run_time_s, processes=processes
        )
    except ValueError as exc:
        raise LoadRunError(f"run_locust: {exc}") from None
    run_time = max(1, math.ceil(run_time_s))
    path = _checked_locustfile(locustfile)
    # A work directory of our own is removed afterwards (the output is kept in memory).
    own_work = workdir is None
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="fanout-load-"))
    work.mkdir(parents=True, exist_ok=True)
    prefix = work / "locust"
    command = locust_command(
        path,
        host=host,
        users=users,
        spawn_rate=rate,
        run_time_s=run_time,
        report_prefix=prefix,
        user_classes=user_classes,
        tags=tags,
        n=n,
        max_concurrent=max_concurrent,
        thresholds=thresholds,
        processes=processes,
        extra_args=extra_args,
    )
    if progress is not None:
        progress(f"locust: {users} user(s) for {run_time} s on {host or 'the embedded stack'}")
    try:
        code, output = _run_guarded(
            command,
            work,
            remove=work if own_work else None,
            limit=timeout_s if timeout_s is not None else run_time + 60,
            run_time=run_time,
            env=env,
            progress=progress,
        )
        report = prefix.with_name(prefix.name + ".json")
        if not report.exists():
            last = _last_line(output)
            raise LoadRunError(
                f"locust exited with status {code} and no report: {last}", output, code
            )
        endpoints, total, duration = parse_stats_json(json.loads(report.read_text()))
        # Exact latency and the open model's counts, when the Locust side wrote them.
        endpoints, total, open_model = apply_exact(endpoints, total, read_exact_file(prefix))
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    if progress is not None:
        progress(
            f"locust: done, {total.requests} request(s), {total.failures} failed"
            f" (exit status {code})"
        )
    return LoadResult(
        endpoints=endpoints,
        total=total,
        exit_code=code,
        duration_s=duration,
        name=name,
        host=host or _embedded_host(output),
        users=users,
        spawn_rate=rate,
        run_time_s=run_time,
        user_classes=list(user_classes),
        options={
            k: v
            for k, v in (("fanout_n", n), ("fanout_max_concurrent", max_concurrent))
            if v is not None
        },
        violations=[
            line.strip()
            for line in output.splitlines()
            if line.strip().startswith(VIOLATION_PREFIX)
        ],
        open_model=open_model,
        workdir=None if own_work else work,
        output=output,
    )


def _run_guarded(
    command: list[str],
    work: Path,
    *,
    remove: Path | None,
    limit: float,
    run_time: int,
    env: Mapping[str, str] | None,
    progress: Callable[[str], None] | None,
) -> tuple[int, str]:
    """Run Locust's `command` in `work` under the guard, bounded by `limit` seconds; its
    exit status and output. Whatever it leaves behind is killed (and is an error); `remove`
    (our own work folder) goes with it if this process dies."""
    marker = uuid.uuid4().hex
    child_env = {**os.environ, **(env or {}), MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}
    log_path = work / "locust.log"
    # Locust runs under a guard (its own process group) that ends it and removes our work
    # folder if this process dies, even by SIGKILL: the guard's stdin is our pipe.
    guard = [sys.executable, "-m", "pytest_fanout.load.guard"]
    if remove is not None:
        guard += ["--remove", str(remove)]
    with open(log_path, "wb") as log:
        # cwd=work: no locust.conf or pyproject.toml of the caller changes the run.
        proc = subprocess.Popen(
            [*guard, "--", *command],
            cwd=work,
            env=child_env,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        run = _GuardedRun(proc, marker, remove)
        cleanup.register(run)  # on SIGTERM or exit of this process: stopped, folder removed
        try:
            code = _wait(proc, limit, run_time, progress)
        except subprocess.TimeoutExpired:
            run.stop()
            output = log_path.read_text(errors="replace")
            raise LoadRunError(
                f"locust did not finish within {limit:g}s (run time {run_time}s): killed",
                output,
            ) from None
        except BaseException:  # Ctrl-C (KeyboardInterrupt) or another exit: stop, then go on
            run.stop()
            raise
        finally:
            cleanup.unregister(run)
            if proc.stdin is not None:
                proc.stdin.close()
    output = log_path.read_text(errors="replace")
    left = kill_marked(marker)
    if left:
        raise LoadRunError(f"locust left processes behind (killed): {left}", output, code)
    return code, output


#: How often a run with a `progress` says how long it has run.
PROGRESS_EVERY_S = 2.0


def _wait(
    proc: subprocess.Popen[bytes],
    limit: float,
    run_time: int,
    progress: Callable[[str], None] | None,
) -> int:
    """`proc.wait(timeout=limit)`, telling `progress` the seconds run every
    PROGRESS_EVERY_S (bounded: at most limit / PROGRESS_EVERY_S + 1 waits)."""
    if progress is None:
        return proc.wait(timeout=limit)
    started = time.monotonic()
    for _ in range(math.ceil(limit / PROGRESS_EVERY_S) + 1):
        left = limit - (time.monotonic() - started)
        try:
            return proc.wait(timeout=max(0.0, min(PROGRESS_EVERY_S, left)))
        except subprocess.TimeoutExpired:
            ran = time.monotonic() - started
            if ran >= limit:
                raise
            progress(f"locust: {ran:.0f} s of {run_time} s")
    return proc.wait(timeout=0)  # the last wait: TimeoutExpired if it still runs


class _GuardedRun:
    """One Locust run as the cleanup registry stops it: its group, its leftovers, its folder."""

    def __init__(self, proc: subprocess.Popen[bytes], marker: str, own_work: Path | None) -> None:
        self.proc, self.marker, self.own_work = proc, marker, own_work

    def stop(self, grace_s: float = 5.0) -> None:
        stop_group(self.proc, grace_s=grace_s)
        kill_marked(self.marker)
        if self.own_work is not None:
            shutil.rmtree(self.own_work, ignore_errors=True)


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if "fanout:" in line or "ERROR" in line or "error:" in line:
            return line
    return lines[-1] if lines else "(no output)"


EMBEDDED_PREFIX = "fanout: embedded stack: app "


def _embedded_host(output: str) -> str:
    for line in output.splitlines():
        if EMBEDDED_PREFIX in line:
            return line.split(EMBEDDED_PREFIX, 1)[1].split()[0]
    return ""
