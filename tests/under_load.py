"""Run a command with CPU-bound processes beside it: the suite must pass on a loaded runner.

    python -m tests.under_load [--burners 2] -- python -m pytest tests/e2e/...

Each burner is a Python process spinning in a loop, in its own process group,
ended (SIGTERM, then SIGKILL) when the command ends, fails or is interrupted.
The exit status is the command's.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

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
    burners = [
        subprocess.Popen([sys.executable, "-c", BURN], start_new_session=True)
        for _ in range(args.burners)
    ]
    try:
        print(f"under load: {len(burners)} CPU-bound processes beside: {' '.join(command)}")
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 130
    finally:
        for proc in burners:
            _stop(proc)


if __name__ == "__main__":
    sys.exit(main())
