"""`pip install pytest-fanout` works anywhere: the wheel, a fresh virtualenv, an empty directory.

Builds the wheel from this checkout (leaving no build/ in it) and installs it as pip would
(uv: the same index and resolution, in seconds) into a new virtualenv, made once for every
xdist worker: without extras, `fanout patterns` says in one line to install the `reference`
extra; with it, in an empty directory that has no `app/` and no `locustfiles/`: `fanout
patterns` prints the table (peaks 1, 20, 5), `fanout measure /async/20` a peak of 20,
`fanout serve` serves the reference app, a one-line locustfile runs under `locust
--headless` with exit 0 and no process left, and the README's first test passes exactly
as written. Slow (about a minute): marked, and CI runs it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from pytest_fanout.load import MARKER_ENV, kill_marked
from pytest_fanout.servers.process import tls_context
from tests.helpers import REPO

pytestmark = pytest.mark.slow

INSTALL_TIMEOUT_S = 600


def _run(command: list[str], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `command` marked, then check that nothing it started is left behind."""
    marker = uuid.uuid4().hex
    try:
        result = subprocess.run(
            command,
            cwd=cwd,
            env=_env(marker),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        left = kill_marked(marker)
    assert not left, f"left behind by {command}: {left}"
    return result


def _stdout_of(command: list[str], *, cwd: Path, timeout: float) -> str:
    """`_run`, which must succeed; its standard output."""
    result = _run(command, cwd=cwd, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{output[-3000:]}"
    return result.stdout


#: What `fanout patterns` said in the plain install, before the `reference` extra came in.
WITHOUT_REFERENCE: dict[str, subprocess.CompletedProcess[str]] = {}

#: uv, from the test virtualenv: the same index and resolution as pip, in seconds where pip
#: took a minute a virtualenv (35 s of every xdist worker's time, 2026-12-06).
UV = [sys.executable, "-m", "uv"]


def _scratch() -> set[str]:
    """What a setuptools build could leave in the source tree (that git ignores)."""
    return {p.name for pattern in ("build", "*.egg-info") for p in REPO.glob(pattern)}


def _shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every xdist worker of this session shares (the parent of their base
    temporary folders; the base temporary folder itself without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One xdist worker at a time; the others wait, bounded by the test timeout."""
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _built_wheel(shared: Path) -> Path:
    """The wheel of this checkout, built once per session: xdist workers share it, as two
    builds at once from one source tree collide ("No such file or directory" in
    setuptools' build/)."""
    dist = shared / "wheel-build" / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    with _locked(dist.parent / "lock"):
        if not list(dist.glob("pytest_fanout-*.whl")):
            scratch_before = _scratch()
            _stdout_of(
                [*UV, "build", "--wheel", "-q", "--out-dir", str(dist), str(REPO)],
                cwd=dist.parent,
                timeout=INSTALL_TIMEOUT_S,
            )
            assert _scratch() <= scratch_before, "building the wheel left files in the source tree"
    (wheel,) = dist.glob("pytest_fanout-*.whl")
    return wheel


def _install(bin_dir: Path, requirement: str, cwd: Path) -> None:
    """`pip install REQUIREMENT` into the virtualenv, done by uv (with the .pyc files, as
    pip writes them: the processes the tests start need not compile their imports)."""
    python = str(bin_dir / "python")
    command = [*UV, "pip", "install", "-q", "--compile-bytecode", "--python", python]
    _stdout_of([*command, requirement], cwd=cwd, timeout=INSTALL_TIMEOUT_S)


def _installed_venv(shared: Path) -> Path:
    """The bin/ of a new virtualenv with the wheel installed, made once per session for
    every xdist worker: first without extras (what `fanout patterns` then says is kept in
    a file beside it), then with `reference`."""
    root = shared / "wheel-venv"
    said = root / "patterns-without-reference.json"
    bin_dir = root / "venv" / "bin"
    with _locked(shared / "wheel-venv.lock"):
        if not said.exists():  # made by no worker yet, or a worker's attempt failed
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            wheel = _built_wheel(shared)
            names = zipfile.ZipFile(wheel).namelist()
            assert "pytest_fanout/reference_app/main.py" in names
            assert "pytest_fanout/locust.py" in names
            assert "pytest_fanout/load/harness/locustfile.py" in names
            assert not [n for n in names if n.startswith(("app/", "locustfiles/", "tests/"))]
            venv = root / "venv"
            _stdout_of(
                [*UV, "venv", "-q", "--python", sys.executable, str(venv)], cwd=root, timeout=120
            )
            _install(bin_dir, str(wheel), root)
            site = list((venv / "lib").glob("python*/site-packages"))[0]
            assert not (site / "app").exists()  # no top-level `app` package in site-packages
            assert not (site / "fastapi").exists()  # the user's app brings its own framework
            empty = root / "empty"
            empty.mkdir()
            result = _run(
                [str(bin_dir / "fanout"), "patterns", "--repeat", "1"], cwd=empty, timeout=120
            )
            _install(bin_dir, f"{wheel}[reference]", root)
            kept = {
                "returncode": result.returncode,
                "stdout": result.stdout,
                "stderr": result.stderr,
            }
            said.with_suffix(".part").write_text(json.dumps(kept))
            said.with_suffix(".part").replace(said)  # whole, or not there
    kept = json.loads(said.read_text())
    WITHOUT_REFERENCE["patterns"] = subprocess.CompletedProcess(
        ["fanout", "patterns"], kept["returncode"], kept["stdout"], kept["stderr"]
    )
    return bin_dir


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the virtualenv's bin/, an empty directory of this worker's own): the wheel of this
    checkout, installed once for all workers."""
    bin_dir = _installed_venv(_shared(tmp_path_factory))
    yield bin_dir, tmp_path_factory.mktemp("empty")


def _env(marker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}


def test_without_the_reference_extra_patterns_says_what_to_install(
    installed: tuple[Path, Path],
) -> None:
    result = WITHOUT_REFERENCE["patterns"]
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, output
    assert "pip install 'pytest-fanout[reference]'" in output, output
    assert "Traceback" not in output, output
    assert len(output.splitlines()) == 1, output


def test_fanout_patterns_from_the_wheel(installed: tuple[Path, Path]) -> None:
    bin_dir, empty = installed
    out = _stdout_of(
        # 20 ms, not the default 100: the sync pattern's 20 calls in a row are the run's wait
        # (2 s a request, 6 in all), and the peaks are exact whatever the delay.
        [str(bin_dir / "fanout"), "patterns", "--repeat", "1", "--no-blocking", "--delay-ms", "20"],
        cwd=empty,
        timeout=120,
    )
    peaks = {
        match[1]: int(match[2])
        for match in re.finditer(r"^(sync|async|async_sem)\s+/\S+\s+20\s.*?x\s+(\d+)\s", out, re.M)
    }
    assert peaks == {"sync": 1, "async": 20, "async_sem": 5}, out
    assert sorted(p.name for p in empty.iterdir()) == []  # it wrote nothing here


def test_fanout_measure_from_the_wheel(installed: tuple[Path, Path]) -> None:
    bin_dir, empty = installed
    out = _stdout_of(
        [str(bin_dir / "fanout"), "measure", "/async/20", "--repeat", "2"], cwd=empty, timeout=120
    )
    assert re.search(r"requests 20, peak in flight 20,", out), out


def test_a_one_line_locustfile_from_the_wheel(installed: tuple[Path, Path]) -> None:
    bin_dir, empty = installed
    work = empty / "load"
    work.mkdir()
    (work / "locustfile.py").write_text("from pytest_fanout.locust import *\n")
    result = _run(
        [str(bin_dir / "locust"), "-f", "locustfile.py", "--headless"]
        + ["-u", "4", "-r", "4", "-t", "5s", "--only-summary"],
        cwd=work,
        timeout=90,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "fanout: embedded stack stopped" in output
    # The three default patterns ran against the reference app from the wheel.
    for path in ("/sync/10", "/async/10", "/async_sem/10/5"):
        assert re.search(rf"GET\s+{re.escape(path)}\s+\d+\s+0\(0\.00%\)", output), output


def readme_first_test() -> dict[str, str]:
    """The files of the README's install-and-first-test section, by the name each names."""
    text = (REPO / "README.md").read_text()
    section = text.split("<!-- first-test", 1)[1].split("<!-- /first-test -->", 1)[0]
    files = {}
    for block in re.findall(r"```\w*\n(.*?)```", section, re.S):
        first = block.splitlines()[0]
        name = re.match(r"# (\S+?):?(\s|$)", first)[1]
        files[name] = block
    return files


def test_the_readmes_first_test_passes_as_written(installed: tuple[Path, Path]) -> None:
    bin_dir, empty = installed
    files = readme_first_test()
    assert sorted(files) == ["locustfile.py", "pyproject.toml", "shop.py", "test_shop.py"]
    work = empty / "first-test"
    work.mkdir()
    for name, body in files.items():
        (work / name).write_text(body)
    out = _stdout_of(
        [str(bin_dir / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=work,
        timeout=120,
    )
    assert re.search(r"^1 passed", out, re.M), out
    # The same declaration drives `fanout measure` and Locust, with no option.
    out = _stdout_of([str(bin_dir / "fanout"), "measure", "/basket/10"], cwd=work, timeout=120)
    assert "shop:app" in out, out
    locust = [str(bin_dir / "locust"), "-f", "locustfile.py", "--headless", "-u", "2", "-t", "2s"]
    _stdout_of([*locust, "--only-summary", "--fanout-max-fail-ratio", "0"], cwd=work, timeout=120)


def test_fanout_serve_from_the_wheel(installed: tuple[Path, Path]) -> None:
    """The reference app from the wheel; ports 0 only so that parallel runs do not collide."""
    bin_dir, empty = installed
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(
        [str(bin_dir / "fanout"), "serve", "--app-port", "0", "--upstream-port", "0"],
        cwd=empty,
        env=_env(marker),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        app_url = re.search(r"^app\s+(http://127\.0\.0\.1:\d+)", "".join(lines), re.M)
        assert app_url, "".join(lines)
        body = httpx2.get(app_url[1] + "/async/5", timeout=10, verify=tls_context()).json()
        assert body["status_codes"] == [200] * 5
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = kill_marked(marker)
    assert not left
    assert proc.returncode == 128 + signal.SIGINT
