"""The `fanout_load` fixture: Locust as a bounded subprocess from a test, in one line.

    def test_async_sustains_more_than_sync(fanout_load):
        result = fanout_load(users=10, run_time_s=6, n=10, user_classes=["AsyncUser", "SyncUser"])
        assert result.endpoint("/async/").rps >= 3 * result.endpoint("/sync/").rps

It loads the session's app (`fanout_server`, whose upstream is
`fanout_upstream`) with `--host`, so the harness starts nothing of its own.
The locustfile is the harness shipped in the package, or yours:
`fanout_load(locustfile="tests/locustfile.py")` (relative to the current
directory; `PYTEST_FANOUT_LOCUSTFILE` changes the default). Locust runs in a
subprocess (never imported here: gevent would patch pytest). Every result is
kept for the session, JSON-ready through `LoadResult.to_dict()`, in
the session object (`pytest_fanout.plugin.FanoutSession.of(config).load_results`):
that is where the regression gate and other plugins find them. Locust and the
runner load only when the fixture is used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_fanout.plugin import FanoutSession

if TYPE_CHECKING:
    from pytest_fanout.load.results import LoadResult


class FanoutLoad:
    """Callable: `fanout_load(**options) -> LoadResult`; see `pytest_fanout.load.run_locust`."""

    def __init__(
        self,
        host: str,
        workdir: Path,
        test: str,
        config: pytest.Config,
        item: pytest.Item | None = None,
    ) -> None:
        self.item = item
        self.host = host
        self.workdir = workdir
        self.test = test
        self.config = config
        self.results: list[LoadResult] = []

    def __call__(
        self,
        *,
        users: int = 10,
        run_time_s: float = 5,
        user_classes: list[str] | tuple[str, ...] = (),
        n: int | None = None,
        max_concurrent: int | None = None,
        name: str | None = None,
        locustfile: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> LoadResult:
        """Run Locust against the app under test; a run that yields no results fails the test.

        `locustfile`: a user's locustfile (file or folder); default: the shipped harness.
        """
        from pytest_fanout.load.runner import LoadRunError, run_locust

        index = len(self.results)
        options.setdefault("progress", terminal_progress(self.config))
        try:
            result = run_locust(
                self.host,
                users=users,
                run_time_s=run_time_s,
                user_classes=user_classes,
                n=n,
                max_concurrent=max_concurrent,
                workdir=self.workdir / f"load-{index}",
                locustfile=locustfile,
                name=name or (self.test if index == 0 else f"{self.test}[{index}]"),
                **options,
            )
        except LoadRunError as exc:
            tail = "\n".join("  | " + line for line in exc.output.splitlines()[-30:])
            pytest.fail(f"fanout_load: {exc}\n{tail}", pytrace=False)
        self.results.append(result)
        FanoutSession.of(self.config).load_results.append(result)
        self.config.hook.pytest_fanout_load_result(result=result, item=self.item)
        return result


def terminal_progress(config: pytest.Config) -> Callable[[str], None] | None:
    """Where a Locust run from a test tells its progress (it takes seconds to minutes): the
    terminal, past pytest's capture; None with -q, off a terminal or in an xdist worker
    (whose output no terminal shows)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if (
        reporter is None
        or config.get_verbosity() < 0
        or hasattr(config, "workerinput")
        or not bool(getattr(reporter, "isatty", False))
    ):
        return None

    def say(line: str) -> None:
        if capture is None:
            reporter.write_line(f"fanout_load: {line}")
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"fanout_load: {line}")

    return say


@pytest.fixture
def fanout_load(
    request: pytest.FixtureRequest,
    fanout_server: Any,
    fanout_upstream: Any,
    tmp_path: Path,
) -> Iterator[FanoutLoad]:
    """Put the app under test under Locust load for a bounded time (every upstream is put
    back after the test, as for any test that uses the stack)."""
    yield FanoutLoad(fanout_server.url, tmp_path, request.node.nodeid, request.config, request.node)
