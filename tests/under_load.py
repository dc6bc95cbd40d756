"""Run a command with CPU-bound processes beside it: the suite must pass on a loaded runner.

    python -m tests.under_load [--burners 2] -- python -m pytest tests/e2e/...

Each burner is a Python process spinning in a loop, in its own process group,
ended (SIGTERM, then SIGKILL) when the command ends, fails or is interrupted.
The exit status is the command's.

The command gets a temporary root of its own for pytest's folders
(PYTEST_DEBUG_TEMPROOT), removed once it passed and the burners are stopped, kept (and
named) when it failed. In the shared root, a session's end deletes older sessions'
folders, and beside the burners that crawled here: the loaded run's end deleted the main
run's 17,000 files in 50 s (0.5 s on an idle machine), and a one-test session that found
a tree of 57,000 took 195 s to end instead of 1. `--burners 0` gives the root alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile

BURN = "while True:\n    pass\n"
#: Seconds a burner gets to end after SIGTERM before SIGKILL.
GRACE_S = 3.0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(GRACE_S)
    except ProcessLookupError:
        pass


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.under_load", description=__doc__)
    parser.add_argument("--burners", type=int, default=2, help="CPU-bound processes (default 2)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    if not 0 <= args.burners <= 64:
        parser.error("--burners must be from 0 to 64")
    # SIGTERM (a `timeout`, a CI cancel) ends it as Ctrl-C does: the burners and the
    # command are stopped in `finally`, never left spinning.
    signal.signal(signal.SIGTERM, _terminated)
    root = tempfile.mkdtemp(prefix="pytest-fanout-run-")
    env = {**os.environ, "PYTEST_DEBUG_TEMPROOT": root}
    burners = [
        subprocess.Popen([sys.executable, "-c", BURN], start_new_session=True)
        for _ in range(args.burners)
    ]
    code = 1
    try:
        if burners:
            print(f"under load: {len(burners)} CPU-bound processes beside: {' '.join(command)}")
        code = subprocess.call(command, env=env)
        return code
    except KeyboardInterrupt:
        code = 130
        return code
    finally:
        for proc in burners:
            _stop(proc)
        _remove_unless_failed(root, code)


def _remove_unless_failed(root: str, code: int) -> None:
    """The command's temporary root, removed once the burners are stopped; a failed
    command's stays for its tests' files, and is named (unless it is empty)."""
    if code == 0 or not os.listdir(root):
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"under load: the command's temporary folders are kept in {root}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
