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

from pytest_fanout import limits
from pytest_fanout.limits import ExitCode
from pytest_fanout.load import arrival
from pytest_fanout.load.thresholds import DEFAULT_ABORT_AFTER, Thresholds

__all__ = ["DEFAULT_ABORT_AFTER"]

CHECK_INTERVAL_S = 1.0

_WATCHER: dict[str, Any] = {}


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kwargs: Any) -> None:
    parser.add_argument(
        "--fanout-abort-on-fail",
        action="store_true",
        default=False,
        include_in_web_ui=False,
        help="end the run (exit 3) as soon as --fanout-max-fail-ratio or "
        "--fanout-max-dropped-ratio is exceeded after --fanout-abort-after requests",
    )
    parser.add_argument(
        "--fanout-abort-after",
        type=limits.threshold_count,
        default=DEFAULT_ABORT_AFTER,
        include_in_web_ui=False,
        help=f"requests (or scheduled starts) before --fanout-abort-on-fail may act "
        f"(default: {DEFAULT_ABORT_AFTER})",
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
    if not getattr(environment.parsed_options, "fanout_abort_on_fail", False):
        return
    try:
        thresholds = Thresholds.from_options(environment.parsed_options)
    except ValueError:
        return  # the harness reports bad thresholds itself
    after = int(getattr(environment.parsed_options, "fanout_abort_after", DEFAULT_ABORT_AFTER))
    # Not in the runner's greenlet group: quitting the runner kills that group.
    _WATCHER["greenlet"] = gevent.spawn(_watch, environment, thresholds, after)


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    watcher = _WATCHER.pop("greenlet", None)
    if watcher is not None and watcher is not gevent.getcurrent():
        watcher.kill(block=False)
