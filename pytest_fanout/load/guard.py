"""A guard between the harness and Locust: Locust and its work folder end with the harness.

`run_locust` starts `python -m pytest_fanout.load.guard [--remove DIR] --
COMMAND...` as the leader of a new process group; the guard starts COMMAND
(Locust) in that group and waits for it. Its stdin is a pipe whose other end
only the harness holds: when it reads end-of-file the harness is gone, by
any signal, SIGKILL included. It then stops Locust (SIGTERM, then SIGKILL
for the whole group after a grace), removes the work folder given with
`--remove`, and exits. So no Locust process and no `fanout-load-*` folder
outlives the harness, whatever locustfile runs. A signal sent to the group
(the harness's own `stop_group`) reaches Locust directly; the guard ignores
SIGTERM and SIGINT and simply waits for Locust to end, then exits with
Locust's status.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading

#: How long Locust may take to stop after SIGTERM before its group is killed.
GRACE_S = 5.0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pytest_fanout.load.guard")
    parser.add_argument("--remove", default=None, help="a folder to remove if the parent dies")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command to run")
    return args


def _watch_parent(proc: subprocess.Popen[bytes], gone: threading.Event) -> None:
    """Block until stdin ends (the parent is gone), then stop Locust: SIGTERM, then SIGKILL."""
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    gone.set()
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    parent = os.getppid()
    # The group's signals are Locust's to act on; the guard outlives it only to report.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    proc = subprocess.Popen(
        args.command,
        stdin=subprocess.DEVNULL,
        preexec_fn=_default_signals,  # noqa: PLW1509 (restores what the guard ignores)
    )
    gone = threading.Event()
    threading.Thread(target=_watch_parent, args=(proc, gone), daemon=True).start()
    code = proc.wait()
    if gone.is_set() or os.getppid() != parent:  # re-parented: the harness is gone
        if args.remove:
            shutil.rmtree(args.remove, ignore_errors=True)
        # Whatever Locust started and left (its --processes workers) is in this group.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.killpg(os.getpgrp(), signal.SIGKILL)
    return code if code >= 0 else 128 - code


def _default_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
