"""`--fanout-abort-on-fail`: end a Locust run once a threshold is already lost (k6's abortOnFail).

Imported inside Locust only. The process that owns the test (a LocalRunner or
the master) checks once a second, after at least `--fanout-abort-after`
requests (or scheduled starts): the total failure ratio against
`--fanout-max-fail-ratio`, and the open model's dropped starts against
`--fanout-max-dropped-ratio`. Once one is over its limit it says so in one
line and quits the run; the threshold check at quit then reports the
violation and the exit status is 3, as for a run that went to the end.
p95 and requests/s are judged at the end only: both can still recover.
"""

from __future__ import annotations

import sys
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING, WorkerRunner

from pytest_fanout.limits import ExitCode
from pytest_fanout.load import arrival
from pytest_fanout.load.thresholds import DEFAULT_ABORT_AFTER, Thresholds
from pytest_fanout.spec import add_options, value_of

__all__ = ["DEFAULT_ABORT_AFTER"]

CHECK_INTERVAL_S = 1.0

_WATCHER: dict[str, Any] = {}


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kwargs: Any) -> None:
    # Declared in pytest_fanout.spec.OPTIONS.
    add_options(
        parser.add_argument,
        prefix="fanout-",
        front_end="locust",
        keys=("abort_on_fail", "abort_after"),
    )


def _watch(environment: Environment, thresholds: Thresholds, after: int) -> None:
    runner = environment.runner
    while True:
        gevent.sleep(CHECK_INTERVAL_S)
        if runner is None or runner.state not in (STATE_SPAWNING, STATE_RUNNING):
            continue
        total = environment.stats.total
        open_model = arrival.open_model_result(environment)
        reason = thresholds.already_lost(
            requests=total.num_requests,
            failures=total.num_failures,
            scheduled=open_model.scheduled if open_model else 0,
            dropped=open_model.dropped if open_model else 0,
            after=after,
        )
        if reason is None:
            continue
        print(f"fanout: aborting the run: {reason}", file=sys.stderr, flush=True)
        environment.process_exit_code = ExitCode.THRESHOLD
        headless = bool(getattr(environment.parsed_options, "headless", False))
        if headless:
            runner.quit()
        else:
            runner.stop()
        return


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kwargs: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    if not value_of(environment.parsed_options, "abort_on_fail"):
        return
    try:
        thresholds = Thresholds.from_options(environment.parsed_options)
    except ValueError:
        return  # the harness reports bad thresholds itself
    after = int(value_of(environment.parsed_options, "abort_after"))
    # Not in the runner's greenlet group: quitting the runner kills that group.
    _WATCHER["greenlet"] = gevent.spawn(_watch, environment, thresholds, after)


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    watcher = _WATCHER.pop("greenlet", None)
    if watcher is not None and watcher is not gevent.getcurrent():
        watcher.kill(block=False)
