"""Runs an ASGI app under uvicorn in a child process, and makes sure it ends.

The parent binds and listens on the socket, then hands it to the child: the
port is known before the child starts and no other process can take it.
Readiness is polled over HTTP (never slept for). The child leads its own
process group; `stop()` ends the whole group, and every live `ServerProcess`
is also stopped at interpreter exit and on SIGTERM (`cleanup`), so none is orphaned.
"""

from __future__ import annotations

import functools
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

import httpx2

from pytest_fanout.servers import cleanup

LOOPBACK = "127.0.0.1"
BACKLOG = 4096
LOG_TAIL_LINES = 30
#: How much of the end of a child's output is read for its tail.
LOG_TAIL_BYTES = 64 * 1024


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx2's default verified TLS context, built once per process for every client the
    harness makes. Each client otherwise builds its own, loading the CA bundle again: 30 ms
    of CPU a client, and the harness makes one for each server it starts (its readiness
    poll and its control client), hundreds in a test run, to talk plain HTTP on loopback."""
    return httpx2.create_ssl_context()


class ServerStartError(RuntimeError):
    """A server process did not come up; `str()` is one line, `.log_tail` the child's last words."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class ServerDiedError(AssertionError):
    """A server process died while the harness talked to it: one line naming it and how it
    ended (`upstream 'inventory' died (signal 9)`), `.log_tail` its last words."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class _DeathAwareTransport(httpx2.BaseTransport):
    """The control client's transport: a broken connection to a child that has exited is
    that child's death, said in one line, not a transport traceback."""

    def __init__(self, server: ServerProcess) -> None:
        self._server = server
        self._inner = httpx2.HTTPTransport(verify=tls_context())

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return self._inner.handle_request(request)
        except httpx2.TransportError:
            how = self._server.death()
            if how is None:
                raise
            raise ServerDiedError(
                f"{self._server.label} died ({how})", self._server.log_tail()
            ) from None

    def close(self) -> None:
        self._inner.close()


def bind_listening_socket(host: str = LOOPBACK, port: int = 0) -> socket.socket:
    """A listening TCP socket the child can inherit; port 0 picks a free one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServerStartError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


@contextmanager
def stop_on_failure(stop: Callable[[], object]) -> Iterator[None]:
    """Anything that fails inside the block (Ctrl-C too) calls `stop`, then goes on up: a
    start that fails half-way leaves no child behind."""
    try:
        yield
    except BaseException:
        stop()
        raise


class Started:
    """`with thing:` starts it and stops it however the block ends: the one context-manager
    shape of everything the harness starts (a `ServerProcess`, a `Stack`)."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ServerProcess(Started):
    """One ASGI app served by uvicorn in its own process group.

    >>> with ServerProcess("app.main:app", name="app") as server:
    ...     httpx2.get(server.url + "/healthz")
    """

    def __init__(
        self,
        app: str,
        *,
        name: str = "server",
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        app_dir: str | os.PathLike[str] | None = None,
        factory: bool = False,
        probe: bool = False,
        host: str = LOOPBACK,
        port: int = 0,
        ready_path: str = "/",
        startup_timeout: float = 10.0,
        log_level: str = "warning",
        token: str | None = None,
    ) -> None:
        self.app = app
        self.name = name
        self.env = dict(env or {})
        self.cwd = str(cwd) if cwd is not None else None
        self.app_dir = str(app_dir) if app_dir is not None else None
        self.factory = factory
        self.probe = probe
        self.host = host
        self.port = port
        self.ready_path = ready_path
        self.startup_timeout = startup_timeout
        self.log_level = log_level
        #: The bearer token the server's control paths ask for (None: they ask for none);
        #: the `control` client sends it.
        self.token = token
        self.command: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        #: The child's output: an anonymous file (unlinked from the start, opened for append),
        #: so no kill of anyone, SIGKILL included, can leave a log file behind.
        self._log_file: BinaryIO | None = None
        self._final_tail = ""
        self._control: httpx2.Client | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def control(self) -> httpx2.Client:
        """One keep-alive client to this server, for its control paths (closed by stop())."""
        if self._control is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
            self._control = httpx2.Client(
                base_url=self.url,
                timeout=10,
                headers=headers,
                transport=_DeathAwareTransport(self),
            )
        return self._control

    @property
    def label(self) -> str:
        """How messages name this server ("upstream 'inventory'", "the app process")."""
        return self.name

    def death(self, wait_s: float = 2.0) -> str | None:
        """How the child ended ('signal 9', 'exit status 3'), or None while it runs. A broken
        connection is often seen a moment before the exit is: wait up to `wait_s` for it."""
        proc = self.proc
        if proc is None:
            return None
        deadline = time.monotonic() + wait_s
        while wait_s and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the connection broke: give the kernel a moment to reap it
        code = proc.poll()
        if code is None:
            return None
        return f"signal {-code}" if code < 0 else f"exit status {code}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def build_command(self, fd: int) -> list[str]:
        command = [sys.executable, "-m", "pytest_fanout.servers.child", "--fd", str(fd)]
        command += ["--app", self.app, "--log-level", self.log_level]
        if self.factory:
            command.append("--factory")
        if self.probe:
            command.append("--probe")
        if self.app_dir:
            command += ["--app-dir", self.app_dir]
        return command

    def child_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        # The child must find pytest_fanout even when it is not installed (a source checkout).
        here = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start(self) -> ServerProcess:
        """Start the child and wait until it answers; raise ServerStartError if it cannot."""
        if self.proc is not None:
            raise RuntimeError(f"{self.name} already started")
        sock = bind_listening_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._log_file = tempfile.TemporaryFile(mode="a+b", prefix=f"fanout-{self.name}-")  # noqa: SIM115 (lives as long as the child; closed by stop())
        self.command = self.build_command(sock.fileno())
        try:
            self.proc = subprocess.Popen(
                self.command,
                env=self.child_env(),
                cwd=self.cwd,
                stdin=subprocess.PIPE,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                pass_fds=(sock.fileno(),),
                start_new_session=True,  # its own process group: killpg ends all of it
            )
        finally:
            sock.close()  # the child holds its own copy
        cleanup.register(self)
        with stop_on_failure(self.stop):
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Poll `ready_path` until any HTTP answer; fail fast if the child exits."""
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        with httpx2.Client(timeout=0.5, verify=tls_context()) as client:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise ServerStartError(
                        f"{self.name} ({self.app}) exited with status {code} before answering"
                        f"{self._first_error()}",
                        self.log_tail(),
                    )
                try:
                    client.get(self.url + self.ready_path)
                    return
                except httpx2.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"{self.name} ({self.app}) did not answer on {self.url} "
                        f"within {self.startup_timeout:g}s",
                        self.log_tail(),
                    )
                time.sleep(0.02)  # poll interval, not synchronisation

    def _first_error(self) -> str:
        """The most telling line of the log, for a one-line failure message."""
        line = telling_line(self.log_tail())
        return f": {line}" if line else ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The child's last `lines` lines of output (also after stop(), up to LOG_TAIL_LINES)."""
        log = self._log_file
        if log is None or log.closed:
            return "\n".join(self._final_tail.splitlines()[-lines:])
        # pread: reading moves no offset the child shares (its writes append anyway).
        size = os.fstat(log.fileno()).st_size
        chunk = min(size, LOG_TAIL_BYTES)
        text = os.pread(log.fileno(), chunk, size - chunk).decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def log_from(self, offset: int) -> tuple[str, int]:
        """The child's output from byte `offset` to its last complete line, and the offset to
        read from next: a front end that shows the log as it comes (`fanout serve`). At most
        LOG_TAIL_BYTES a read: past that, the start is skipped and a line says how much."""
        log = self._log_file
        if log is None or log.closed:
            return "", offset
        size = os.fstat(log.fileno()).st_size
        if size <= offset:
            return "", offset
        skipped = max(size - offset - LOG_TAIL_BYTES, 0)
        start = offset + skipped
        chunk = os.pread(log.fileno(), size - start, start)
        end = chunk.rfind(b"\n") + 1
        if end == 0 and len(chunk) < LOG_TAIL_BYTES:
            return "", offset  # a line still being written: the next read has it whole
        if end == 0:
            end = len(chunk)
        text = chunk[:end].decode(errors="replace")
        if skipped:
            text = f"({skipped} bytes of {self.name}'s output skipped)\n{text}"
        return text, start + end

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 3.0) -> None:
        """End the child's whole process group: SIGTERM, then SIGKILL after `grace_s`."""
        if self._control is not None:
            self._control.close()
            self._control = None
        proc = self.proc
        cleanup.unregister(self)
        if proc is None:
            return
        cleanup.stop_group(proc, grace_s)
        if proc.stdin:
            proc.stdin.close()
        self._final_tail = self.log_tail()
        if self._log_file is not None:
            self._log_file.close()

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return f"<ServerProcess {self.name} {self.app} {self.url} pid={self.pid} {state}>"


def telling_line(log: str) -> str:
    """The most telling line of a child's log (its own `fanout child:` line, else the last
    error or exception line), "" when none: a failure said in one line names its cause."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("fanout child:"):
            return line.removeprefix("fanout child: ")
    for line in reversed(lines):
        if ("Error" in line or "Exception" in line) and not line.startswith("File "):
            return line
    return ""
