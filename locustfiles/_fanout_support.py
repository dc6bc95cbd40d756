"""What every locustfile here shares: custom arguments, the embedded stack, thresholds.

Locust skips files starting with `_` when it loads `locustfiles/` as a
directory, so this module only runs when a locustfile imports it (once: the
event listeners below are registered a single time).

Who does what, in every mode (local, `--processes N`, `--master`/`--worker`):
the process that owns the test (a LocalRunner or the MasterRunner) starts the
embedded stack in `init` when no `--host` was given, checks the thresholds and
stops the stack in `quitting`. Workers never start or stop anything: they get
the host and the custom arguments from the master with each spawn message.
With `--processes`, Locust forks its workers BEFORE `init` fires, so no
forked child ever holds a reference to the stack.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING, WorkerRunner

from pytest_fanout._argtypes import fraction, non_negative_float, positive_int
from pytest_fanout.load import (
    EMBEDDED_PREFIX,
    EXIT_OK,
    EXIT_TARGET,
    EXIT_THRESHOLD,
    EXIT_USAGE,
    TOTAL_NAME,
    EndpointResult,
    Thresholds,
    arrival,
)

# Open model, exact latency, abort-on-fail: importing them registers their options and
# listeners (before this module's own, so their `quitting` runs after the threshold check).
from pytest_fanout.load import abort as _abort  # noqa: F401

# The harness's readiness polls would log every request at INFO under Locust's logging.
logging.getLogger("httpx").setLevel(logging.WARNING)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_N = 10
DEFAULT_MAX_CONCURRENT = 5
HOST_CHECK_TIMEOUT_S = 5.0

#: The embedded stack of this process (None with --host, and always None on a worker).
_STACK: Any = None


def say(line: str) -> None:
    """One plain line on stderr: greppable in CI logs, no logging prefix to parse."""
    print(line, file=sys.stderr, flush=True)


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any, **_kwargs: Any) -> None:
    # On the parser itself: Locust's argument groups do not know include_in_web_ui.
    group = parser
    group.add_argument(
        "--fanout-n",
        type=positive_int,
        default=DEFAULT_N,
        help=f"upstream calls per request (default: {DEFAULT_N})",
    )
    group.add_argument(
        "--fanout-max-concurrent",
        type=positive_int,
        default=DEFAULT_MAX_CONCURRENT,
        help=f"the semaphore's bound for AsyncSemUser (default: {DEFAULT_MAX_CONCURRENT})",
    )
    group.add_argument(
        "--fanout-max-fail-ratio",
        type=fraction,
        default=None,
        help="fail (exit 3) if any endpoint or the total fails more often",
    )
    group.add_argument(
        "--fanout-max-p95-ms",
        type=non_negative_float,
        default=None,
        help="fail (exit 3) if any endpoint's or the total's p95 is slower",
    )
    group.add_argument(
        "--fanout-min-rps",
        type=non_negative_float,
        default=None,
        help="fail (exit 3) if any endpoint or the total is slower (requests/s)",
    )
    group.add_argument(
        "--fanout-shape",
        choices=["none", "step"],
        default="none",
        include_in_web_ui=False,
        help="load shape: 'step' adds --fanout-step-users every "
        "--fanout-step-s up to --users (default: none)",
    )
    group.add_argument(
        "--fanout-step-users",
        type=positive_int,
        default=5,
        include_in_web_ui=False,
        help="users added per step (default: 5)",
    )
    group.add_argument(
        "--fanout-step-s",
        type=positive_int,
        default=5,
        include_in_web_ui=False,
        help="seconds per step (default: 5)",
    )
    group.add_argument(
        "--fanout-app",
        default="app.main:app",
        include_in_web_ui=False,
        help="embedded stack only: the ASGI app to serve (default: app.main:app)",
    )
    group.add_argument(
        "--fanout-upstream-delay-ms",
        type=non_negative_float,
        default=100.0,
        include_in_web_ui=False,
        help="embedded stack only: the stub upstream's delay (default: 100)",
    )


def option(environment: Environment, name: str, default: Any) -> Any:
    """A custom option, with a default when Locust runs without a parser (as a library)."""
    value = getattr(environment.parsed_options, name, None)
    return default if value is None else value


def owns_the_test(environment: Environment) -> bool:
    """True for a LocalRunner or the MasterRunner: the process that starts, checks and stops."""
    return not isinstance(environment.runner, WorkerRunner)


def fail_now(code: int, line: str) -> None:
    """Give up before the test starts: one line, a distinct exit status, no traceback."""
    say(line)
    stop_stack()
    raise SystemExit(code)


# ---- which users and which shape ------------------------------------------


def class_tags(user_class: type) -> set[str]:
    tags: set[str] = set()
    for task in getattr(user_class, "tasks", []):
        tags |= set(getattr(task, "locust_tag_set", set()))
    return tags


def select_user_classes(environment: Environment) -> None:
    """Leave out opt-in classes (the blocking anti-pattern) unless named or tagged; apply tags.

    Locust filters TASKS by --tags; a class left without tasks would then fail
    at spawn time, so classes whose tags do not match are dropped here instead.
    """
    options = environment.parsed_options
    named = set(getattr(options, "user_classes", None) or [])
    tags = set(getattr(options, "tags", None) or [])
    excluded = set(getattr(options, "exclude_tags", None) or [])
    kept = []
    for user_class in environment.user_classes:
        own = class_tags(user_class)
        if user_class.__name__ in named or not own:
            kept.append(user_class)
            continue
        wanted = own & tags if tags else not getattr(user_class, "opt_in", False)
        if wanted and not (excluded and own <= excluded):
            kept.append(user_class)
    if not kept:
        fail_now(
            EXIT_USAGE,
            f"fanout: error: no user class is left after --tags {sorted(tags)}"
            f" / --exclude-tags {sorted(excluded)}",
        )
    environment.user_classes[:] = kept


def select_shape(environment: Environment) -> None:
    """Locust would force the first shape it finds on every run: use it only when asked."""
    options = environment.parsed_options
    if getattr(options, "class_picker", False):
        return  # the web UI's picker chooses ("Default" or StepLoadShape)
    if option(environment, "fanout_shape", "none") == "step":
        shapes = environment.available_shape_classes or {}
        if "StepLoadShape" not in shapes:
            fail_now(EXIT_USAGE, "fanout: error: --fanout-shape step needs locustfiles/shapes.py")
        environment.shape_class = shapes["StepLoadShape"]
        environment.shape_class.runner = environment.runner
    else:
        environment.shape_class = None


# ---- the target: --host, or the embedded stack -----------------------------


def check_host(host: str) -> None:
    """Fail fast, in one line, when --host does not answer (any HTTP status is an answer)."""
    if not host.startswith(("http://", "https://")):
        fail_now(EXIT_TARGET, f"fanout: error: --host {host!r} must start with http:// or https://")
    try:
        with urllib.request.urlopen(host, timeout=HOST_CHECK_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return  # it answered, with an error status: it is up
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLError):
            return  # it answered TLS; FastHttpUser does not verify certificates either
        fail_now(EXIT_TARGET, f"fanout: error: --host {host} does not answer: {reason}")


def start_stack(environment: Environment) -> str:
    """Start the stub upstream and the app (parent-bound sockets, readiness polled)."""
    global _STACK
    from pytest_fanout.servers.process import ServerStartError
    from pytest_fanout.servers.stack import Stack
    from pytest_fanout.servers.upstream import Behaviour

    delay = float(option(environment, "fanout_upstream_delay_ms", 100.0))
    stack = Stack(
        option(environment, "fanout_app", "app.main:app"),
        behaviour=Behaviour(delay_ms=delay),
        app_dir=os.environ.get("FANOUT_APP_DIR", str(REPO_ROOT)),
    )
    try:
        stack.start()
    except ServerStartError as exc:
        fail_now(EXIT_TARGET, f"fanout: error: the embedded stack did not start: {exc}")
    _STACK = stack
    assert stack.app is not None
    say(
        f"fanout: embedded stack: upstream {stack.upstream.url} (pid {stack.upstream.pid}, "
        f"delay {delay:g} ms)"
    )
    say(f"{EMBEDDED_PREFIX}{stack.app.url} (pid {stack.app.pid})")
    return stack.app.url


def stop_stack() -> None:
    global _STACK
    stack, _STACK = _STACK, None
    if stack is not None:
        stack.stop()
        say("fanout: embedded stack stopped")


@events.init.add_listener
def on_init(environment: Environment, **_kwargs: Any) -> None:
    if not owns_the_test(environment):
        return
    try:
        Thresholds.from_options(environment.parsed_options)
    except ValueError as exc:
        fail_now(EXIT_USAGE, f"fanout: error: {exc}")
    select_user_classes(environment)
    select_shape(environment)
    if environment.host:
        check_host(environment.host)
    else:
        environment.host = start_stack(environment)


@events.test_start.add_listener
def on_test_start(environment: Environment, **_kwargs: Any) -> None:
    """The web UI's form can clear the host: fall back to the embedded app, if there is one."""
    if owns_the_test(environment) and not environment.host and _STACK is not None:
        environment.host = _STACK.app.url
        say(f"fanout: no host given: using the embedded app {environment.host}")


# ---- thresholds, when Locust quits -----------------------------------------


def rows(environment: Environment) -> list[EndpointResult]:
    """Locust's live stats as the rows the thresholds check: every endpoint, then the total."""
    stats = environment.stats
    result = []
    for entry in [*stats.entries.values(), stats.total]:
        if entry is not stats.total and not (entry.num_requests or entry.num_failures):
            continue
        result.append(
            EndpointResult(
                method=entry.method or "",
                name=entry.name if entry is not stats.total else TOTAL_NAME,
                requests=entry.num_requests,
                failures=entry.num_failures,
                rps=entry.total_rps,
                p50_ms=entry.get_response_time_percentile(0.50) or 0,
                p95_ms=entry.get_response_time_percentile(0.95) or 0,
                p99_ms=entry.get_response_time_percentile(0.99) or 0,
                avg_ms=entry.avg_response_time,
                min_ms=entry.min_response_time or 0,
                max_ms=entry.max_response_time,
            )
        )
    return result


def check_thresholds(environment: Environment) -> None:
    """Set Locust's exit status from the thresholds; one line per violation."""
    try:
        thresholds = Thresholds.from_options(environment.parsed_options)
    except ValueError as exc:  # typed into the web UI
        say(f"fanout: error: {exc}")
        environment.process_exit_code = EXIT_USAGE
        return
    if not thresholds.active:
        return
    violations = thresholds.check(arrival.exact_rows(rows(environment)))
    violations += arrival.dropped_violations(environment, thresholds)
    for violation in violations:
        say(violation.line())
    runner = environment.runner
    if violations:
        environment.process_exit_code = EXIT_THRESHOLD
    else:
        say(f"fanout: thresholds met: {thresholds.describe()}")
        if thresholds.max_fail_ratio is not None and not (runner and runner.exceptions):
            # Failures within the allowed ratio are accepted: exit 0, not Locust's 1.
            environment.process_exit_code = EXIT_OK


#: Locust can run its shutdown twice at once: on SIGTERM, its signal greenlet quits the
#: runner, which wakes the main greenlet into a second shutdown. The first `quitting`
#: does the work; the second waits for it (a gevent-patched lock), then does nothing.
_QUIT_LOCK = threading.Lock()
_QUIT_DONE = False


@events.quitting.add_listener
def on_quitting(environment: Environment, **_kwargs: Any) -> None:
    global _QUIT_DONE
    if not owns_the_test(environment):
        return
    with _QUIT_LOCK:
        if _QUIT_DONE:
            return
        runner = environment.runner
        try:
            if runner is not None and runner.state in (STATE_SPAWNING, STATE_RUNNING):
                # SIGTERM or Ctrl-C mid-run: stop the users (a master also collects the
                # workers' final reports) so the numbers are final and no request hits a
                # stack that is going down.
                runner.quit()
            check_thresholds(environment)
        finally:
            stop_stack()
            _QUIT_DONE = True
