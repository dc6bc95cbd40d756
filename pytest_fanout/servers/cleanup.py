"""The one place that ends child processes: a process-group killer and a cleanup registry.

Every child the harness starts (a server, a Locust run) leads its own process
group, so ending the group ends whatever the child started too. Anything that
must not outlive this interpreter registers here; the registry stops it at
exit and on SIGTERM. Nothing is installed at import: the atexit hook and the
SIGTERM handler come with the first registration, so importing the package
changes no global state.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from typing import Protocol

__all__ = ["Stoppable", "register", "signal_group", "stop_all", "stop_group", "unregister"]


class Stoppable(Protocol):
    def stop(self, grace_s: float = ...) -> None: ...


def signal_group(pid: int, sig: int) -> None:
    """Send `sig` to the process group led by `pid`; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 3.0) -> None:
    """End `proc`'s whole group: SIGTERM, then SIGKILL after `grace_s`, then SIGKILL again
    for anything the child itself started and left behind."""
    if proc.poll() is None:
        signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # polling the exit, not synchronising
        if proc.poll() is None:
            signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
    signal_group(proc.pid, signal.SIGKILL)


_LIVE: set[Stoppable] = set()
# Reentrant: a SIGTERM that arrives while stop_all() holds the lock runs stop_all() again
# in the same thread; a plain Lock would deadlock there.
_LIVE_LOCK = threading.RLock()
_installed = False
_previous_sigterm: object = None


def register(obj: Stoppable) -> None:
    """Keep `obj` to be stopped at exit and on SIGTERM (installs both on first use)."""
    _install()
    with _LIVE_LOCK:
        _LIVE.add(obj)


def unregister(obj: Stoppable) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(obj)


def stop_all() -> None:
    """Stop everything registered and not stopped yet."""
    with _LIVE_LOCK:
        for obj in list(_LIVE):
            obj.stop(grace_s=1.0)
            _LIVE.discard(obj)


def _on_sigterm(signum: int, frame: object) -> None:
    stop_all()
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    else:
        # The default action: die by the same signal, so the exit status says so.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _install() -> None:
    global _installed, _previous_sigterm
    if _installed:
        return
    _installed = True
    atexit.register(stop_all)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    current = signal.getsignal(signal.SIGTERM)
    if current is not _on_sigterm:
        _previous_sigterm = current
        signal.signal(signal.SIGTERM, _on_sigterm)
