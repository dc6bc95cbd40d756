"""The Locust harness: users of every fan-out pattern, `FanoutUser`, options, thresholds.

A whole locustfile, for the reference app (its embedded stack starts when no
`--host` is given)::

    from pytest_fanout.locust import *

A locustfile for your own routes::

    from pytest_fanout.locust import FanoutUser, task

    class Basket(FanoutUser):
        @task
        def basket(self):
            self.post("/basket", json={"ids": [1, 2]})

    # locust -f locustfile.py      (the stack: [tool.fanout] in pyproject.toml), or
    # locust -f locustfile.py --fanout-app shop.service:app \\
    #     --fanout-upstream inventory=INVENTORY_URL --fanout-upstream pricing=PRICING_URL

Who does what, in every mode (local, `--processes N`, `--master`/`--worker`):
the process that owns the test (a LocalRunner or the MasterRunner) starts the
embedded stack in `init` when no `--host` was given, checks the thresholds and
stops the stack in `quitting`. Workers never start or stop anything: they get
the host and the options from the master with each spawn message, and leave
on their own when their master dies. With `--processes`, Locust forks its
workers BEFORE `init` fires, so no forked child holds a reference to the stack.

Importing this module registers Locust event listeners: import it only from a
locustfile (Locust patches the interpreter with gevent), never from pytest.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, ClassVar

import gevent
import locust.runners
from locust import FastHttpUser, LoadTestShape, constant, events, tag, task
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING, WorkerRunner

from pytest_fanout import limits
from pytest_fanout.limits import ExitCode
from pytest_fanout.load import abort as _abort  # noqa: F401 (registers --fanout-abort-on-fail)
from pytest_fanout.load import arrival  # the open model and exact latency; registered first
from pytest_fanout.load.results import TOTAL_NAME, EndpointResult
from pytest_fanout.load.runner import EMBEDDED_PREFIX
from pytest_fanout.load.target import host_problem
from pytest_fanout.load.thresholds import Thresholds
from pytest_fanout.spec import (
    OPTIONS,
    SpecError,
    StackSpec,
    add_options,
    join_dash_values,
    options_for,
    resolve,
    value_flags,
    value_of,
)

__all__ = [
    "AsyncSemUser",
    "AsyncUser",
    "BlockingUser",
    "FanoutUser",
    "StepLoadShape",
    "SyncUser",
    "tag",
    "task",
]

# The harness's readiness polls would log every request at INFO under Locust's logging.
for _name in ("httpx", "httpx2"):
    logging.getLogger(_name).setLevel(logging.WARNING)

DEFAULT_N: int = OPTIONS["n"].default
DEFAULT_MAX_CONCURRENT: int = OPTIONS["max_concurrent"].default
#: The harness's prefix for the stack options (`--fanout-app`), as pytest's.
STACK_PREFIX = "fanout-"
#: The stack options a Locust run takes (a request's timeout is Locust's own).
STACK_KEYS = options_for("locust")
#: How often a worker checks that its master (its parent under --processes) is alive.
PARENT_CHECK_S = 0.5
#: Seconds without the master's heartbeat before a worker leaves (Locust's default: 60).
MASTER_TIMEOUT_S = 6

#: The embedded stack of this process (None with --host, and always None on a worker).
_STACK: Any = None
#: (method, name) of every request a FanoutUser started: an endpoint that never
#: completed one has no row in Locust's stats, yet it must fail the thresholds.
_ATTEMPTED: set[tuple[str, str]] = set()


def _say(line: str) -> None:
    """One plain line on stderr: greppable in CI logs, no logging prefix to parse."""
    print(line, file=sys.stderr, flush=True)


# ---- options ----------------------------------------------------------------
# Declared once in pytest_fanout.spec.OPTIONS (group "load", and the stack's). Locust's
# web UI labels a custom option with its dest, split at capitals and digits, followed
# by its help: the dests are words ("fanout_calls", not "fanout_n").

#: The options this module adds (arrival.py and abort.py add theirs).
LOAD_KEYS = (
    "n",
    "max_concurrent",
    "max_fail_ratio",
    "max_p95_ms",
    "min_rps",
    "min_completed",
    "shape",
    "step_users",
    "step_s",
)


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kwargs: Any) -> None:
    # On the parser itself: Locust's argument groups do not know include_in_web_ui.
    add_options(parser.add_argument, prefix=STACK_PREFIX, front_end="locust", keys=LOAD_KEYS)
    # The stack: [tool.fanout], these override it.
    add_options(parser.add_argument, prefix=STACK_PREFIX, group="stack", front_end="locust")
    _join_dash_values_in_argv()


def _join_dash_values_in_argv() -> None:
    """`--fanout-rate-limit -1/s` as `--fanout-rate-limit=-1/s` (`spec.join_dash_values`, our
    flags only), so the value gets its option's one line, not argparse's "expected one
    argument". Locust fires this event in `get_parser()`, then parses `sys.argv[1:]` (its
    config file and environment give `--key=value` already): the one place to join."""
    joined = join_dash_values(sys.argv[1:], value_flags(STACK_PREFIX, "locust"))
    if joined != sys.argv[1:]:
        sys.argv[1:] = joined


def option(environment: Environment, key: str) -> Any:
    """A harness option's value by its key in the registry (`spec.value_of`)."""
    return value_of(environment.parsed_options, key)


def _owns_the_test(environment: Environment) -> bool:
    """True for a LocalRunner or the MasterRunner: the process that starts, checks and stops."""
    return not isinstance(environment.runner, WorkerRunner)


def _check_locust_sizes(options: Any) -> None:
    """Locust's own --users and --spawn-rate within the harness's limits (a ValueError)."""
    for flag, name, high in (
        ("--users", "num_users", limits.MAX_USERS),
        ("--spawn-rate", "spawn_rate", limits.MAX_RATE_RPS),
    ):
        value = getattr(options, name, None)
        if value is not None and value > high:
            shown = f"{int(value):,}" if value == int(value) else f"{value:g}"
            raise ValueError(f"{flag} {shown} is above the limit of {int(high):,}")


def _fail_now(code: ExitCode, line: str) -> None:
    """Give up before the test starts: one line, a distinct exit status, no traceback."""
    _say(line)
    _stop_stack()
    raise SystemExit(code)


# ---- users --------------------------------------------------------------------


class FanoutUser(FastHttpUser):
    """A base class for your own tasks: closed loop, one success check you can replace.

    `self.get(path)`, `self.post(path, json=...)` and `self.request(method, path,
    ...)` send a request named after its path (pass `name=` to group paths) and
    mark it failed when `check(response)` returns a reason. The default check
    fails any status that is not 2xx; override it to look into your answers.
    """

    abstract = True
    wait_time = constant(0)
    connection_timeout = 10.0
    network_timeout = 60.0
    #: True: left out of the default set, run only when named or tagged.
    opt_in: ClassVar[bool] = False
    #: True for the reference app's users: left out when the locustfile has users of its own.
    reference: ClassVar[bool] = False

    def check(self, response: Any) -> str | None:
        """Why `response` is a failure, or None when it is a success."""
        if not 200 <= response.status_code < 300:
            return f"HTTP {response.status_code}"
        return None

    def request(self, method: str, path: str, *, name: str | None = None, **kwargs: Any) -> Any:
        """Send one request through Locust's client; `check` decides success."""
        label = name or path.split("?", 1)[0]
        _ATTEMPTED.add((method.upper(), label))
        with self.client.request(
            method, path, name=label, catch_response=True, **kwargs
        ) as response:
            reason = self.check(response)
            if reason is None:
                response.success()
            else:
                response.failure(reason)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)


class _ReferenceUser(FanoutUser):
    """The reference app's users: a 200 whose `errors` count is not zero is a failure."""

    abstract = True
    reference = True

    @property
    def n(self) -> int:
        return int(option(self.environment, "n"))

    @property
    def max_concurrent(self) -> int:
        return int(option(self.environment, "max_concurrent"))

    def check(self, response: Any) -> str | None:
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        try:
            errors = response.json()["errors"]
        except (ValueError, KeyError, TypeError):
            return "the answer is not a fan-out answer (no 'errors')"
        if errors.get("count"):
            first = "; ".join(errors.get("first", [])[:1])
            return f"{errors['count']} upstream calls failed: {first}"
        return None


class SyncUser(_ReferenceUser):
    """GET /sync/{n}: n calls one after another (a `def` route in the threadpool)."""

    @tag("sync")
    @task
    def sync(self) -> None:
        self.get(f"/sync/{self.n}")


class AsyncUser(_ReferenceUser):
    """GET /async/{n}: n calls at once with asyncio.gather."""

    @tag("async")
    @task
    def gather(self) -> None:
        self.get(f"/async/{self.n}")


class AsyncSemUser(_ReferenceUser):
    """GET /async_sem/{n}/{max_concurrent}: gather behind an asyncio.Semaphore."""

    @tag("async_sem")
    @task
    def bounded(self) -> None:
        self.get(f"/async_sem/{self.n}/{self.max_concurrent}")


class BlockingUser(_ReferenceUser):
    """GET /blocking/{n}: the ANTI-PATTERN (sync client in async def); opt-in only.

    It stalls the app's event loop, so mixing it into a run slows every other
    pattern down: it runs only when named (`BlockingUser`) or tagged (`--tags blocking`).
    """

    opt_in = True

    @tag("blocking")
    @task
    def blocking(self) -> None:
        self.get(f"/blocking/{self.n}")


class StepLoadShape(LoadTestShape):
    """Add --fanout-step-users every --fanout-step-s seconds, up to --users; stop at --run-time.

    Used only when asked for (`--fanout-shape step`, or the web UI's
    `--class-picker`): Locust would otherwise force the first shape it finds.
    """

    #: It reads --users, --spawn-rate and --run-time (so Locust does not warn they are ignored).
    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        environment = self.runner.environment
        options = environment.parsed_options
        elapsed = self.get_run_time()
        run_time = getattr(options, "run_time", None)
        if run_time and elapsed >= run_time:
            return None
        step_users = int(option(environment, "step_users"))
        step_s = int(option(environment, "step_s"))
        ceiling = getattr(options, "num_users", None) or step_users
        users = min(ceiling, step_users * (int(elapsed // step_s) + 1))
        spawn_rate = getattr(options, "spawn_rate", None) or step_users
        return users, float(spawn_rate)


# ---- which users and which shape ----------------------------------------------


def _class_tags(user_class: type) -> set[str]:
    tags: set[str] = set()
    for one in getattr(user_class, "tasks", []):
        tags |= set(getattr(one, "locust_tag_set", set()))
    return tags


def _select_user_classes(environment: Environment) -> None:
    """Apply opt-in, tags and "your users first"; never leave Locust a class without tasks.

    Locust filters TASKS by --tags; a class left without tasks would then fail
    at spawn time, so classes whose tags do not match are dropped here instead.
    When the locustfile has users of its own, the reference users (brought in by
    `import *`) run only when named or tagged.
    """
    options = environment.parsed_options
    named = set(getattr(options, "user_classes", None) or [])
    tags = set(getattr(options, "tags", None) or [])
    excluded = set(getattr(options, "exclude_tags", None) or [])
    own_users = any(not getattr(c, "reference", False) for c in environment.user_classes)
    kept = []
    for user_class in environment.user_classes:
        if user_class.__name__ in named:
            kept.append(user_class)
            continue
        own = _class_tags(user_class)
        if tags or excluded:
            if own & tags if tags else not (own and own <= excluded):
                kept.append(user_class)
            continue
        if getattr(user_class, "opt_in", False):
            continue
        if own_users and getattr(user_class, "reference", False):
            continue
        kept.append(user_class)
    if not kept:
        _fail_now(
            ExitCode.USAGE,
            f"fanout: error: no user class is left after --tags {sorted(tags)}"
            f" / --exclude-tags {sorted(excluded)}",
        )
    environment.user_classes[:] = kept


def _select_shape(environment: Environment) -> None:
    """Locust would force the first shape it finds on every run: use it only when asked."""
    options = environment.parsed_options
    if getattr(options, "class_picker", False):
        return  # the web UI's picker chooses ("Default" or StepLoadShape)
    if option(environment, "shape") == "step":
        shapes = environment.available_shape_classes or {}
        if "StepLoadShape" not in shapes:
            _fail_now(
                ExitCode.USAGE,
                "fanout: error: --fanout-shape step needs StepLoadShape in the locustfile"
                " (from pytest_fanout.locust import StepLoadShape)",
            )
        environment.shape_class = shapes["StepLoadShape"]
        environment.shape_class.runner = environment.runner
    else:
        environment.shape_class = None


# ---- the target: --host, or the embedded stack ---------------------------------


def _check_host(host: str) -> None:
    """Fail fast, in one line, when --host does not answer (the one check: load/target.py)."""
    problem = host_problem(host)
    if problem:
        _fail_now(ExitCode.TARGET_UNUSABLE, f"fanout: error: {problem}")


def stack_spec(environment: Environment) -> StackSpec:
    """The StackSpec: [tool.fanout] (or --fanout-config), the --fanout-* options on top."""
    options = environment.parsed_options
    values = {key: getattr(options, OPTIONS[key].dest, None) for key in STACK_KEYS}
    where = {key: OPTIONS[key].flag(STACK_PREFIX) for key in STACK_KEYS}
    return resolve(values, start=os.getcwd(), where=where)


def _start_stack(environment: Environment) -> str:
    """Start the stub upstream(s) and the app (parent-bound sockets, readiness polled)."""
    global _STACK
    from pytest_fanout.servers.process import ServerStartError
    from pytest_fanout.servers.stack import Stack

    try:
        spec = stack_spec(environment)
        stack = Stack.from_spec(spec)
    except SpecError as exc:
        _fail_now(ExitCode.USAGE, f"fanout: error: {exc}")
    try:
        stack.start()
    except ServerStartError as exc:
        _fail_now(
            ExitCode.TARGET_UNUSABLE, f"fanout: error: the embedded stack did not start: {exc}"
        )
    _STACK = stack
    assert stack.app is not None
    named = bool(spec.upstreams)
    for upstream_name, server in (stack.upstreams if named else {"": stack.upstream}).items():
        label = f"upstream {upstream_name}".strip()
        delay = server.initial.delay_ms
        _say(f"fanout: embedded stack: {label} {server.url} (pid {server.pid}, delay {delay:g} ms)")
    _say(f"{EMBEDDED_PREFIX}{stack.app.url} (pid {stack.app.pid})")
    _say_reference_users_on(environment, spec.app)
    return stack.app.url


def _say_reference_users_on(environment: Environment, app: str) -> None:
    """One line when only the reference users run on an app that is not the reference
    app: they call the reference app's routes (/sync/{n}, ...), which the user's app most
    likely has not (a one-line locustfile beside a [tool.fanout] app: every request 404)."""
    users = environment.user_classes
    if app == limits.DEFAULT_APP or not users:
        return
    if not all(getattr(user, "reference", False) for user in users):
        return
    names = ", ".join(sorted(user.__name__ for user in users))
    _say(
        f"fanout: note: only the reference users run ({names}): they call the reference "
        f"app's routes (/sync/{{n}}, /async/{{n}}, /async_sem/{{n}}/{{k}}), and the app is "
        f"{app}: for its own routes, subclass FanoutUser in the locustfile (docs: Load "
        "testing, Your own routes)"
    )


def _stop_stack() -> None:
    global _STACK
    stack, _STACK = _STACK, None
    if stack is not None:
        stack.stop()
        _say("fanout: embedded stack stopped")


def _leave_with_master(environment: Environment) -> None:
    """A worker whose parent (its master, under --processes) dies leaves at once.

    Without this, a forked worker of a SIGKILLed master waits out Locust's
    heartbeat timeout (20-70 s) before it gives up.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            gevent.sleep(PARENT_CHECK_S)
        _say(f"fanout: worker {os.getpid()}: the master (pid {parent}) is gone: leaving")
        os._exit(1)

    gevent.spawn(watch)


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs: Any) -> None:
    if not _owns_the_test(environment):
        # A worker started apart (another host, another shell) has no parent to watch:
        # it leaves once the master's heartbeat (one a second) has been missing this long.
        locust.runners.MASTER_HEARTBEAT_TIMEOUT = MASTER_TIMEOUT_S
        if getattr(environment.parsed_options, "processes", None):
            _leave_with_master(environment)
        return
    try:
        Thresholds.from_options(environment.parsed_options)
        _check_locust_sizes(environment.parsed_options)
    except ValueError as exc:
        _fail_now(ExitCode.USAGE, f"fanout: error: {exc}")
    _select_user_classes(environment)
    _select_shape(environment)
    options = environment.parsed_options
    if getattr(options, "headless", False) and getattr(options, "web_host", ""):
        _say(
            "fanout: note: --web-host is ignored: this run is headless (--headless, or"
            " headless = true in locust.conf); add --headful for the web UI"
        )
    if environment.host:
        _check_host(environment.host)
    else:
        environment.host = _start_stack(environment)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kwargs: Any) -> None:
    """The web UI's form can clear the host: fall back to the embedded app, if there is one."""
    _ATTEMPTED.clear()
    if _owns_the_test(environment) and not environment.host and _STACK is not None:
        environment.host = _STACK.app.url
        _say(f"fanout: no host given: using the embedded app {environment.host}")


@events.report_to_master.add_listener
def _report_attempted(client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
    """Workers tell the master which endpoints they tried, completed or not."""
    data["fanout_attempted"] = sorted(_ATTEMPTED)


@events.worker_report.add_listener
def _collect_attempted(client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
    for method, name in data.get("fanout_attempted", []):
        _ATTEMPTED.add((method, name))


# ---- thresholds, when Locust quits ----------------------------------------------


def _row(entry: Any, method: str, name: str) -> EndpointResult:
    return EndpointResult(
        method=method,
        name=name,
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


def _rows(environment: Environment) -> list[EndpointResult]:
    """Every endpoint (tried ones with no stats row too, as zeros), then the total."""
    stats = environment.stats
    result = []
    seen = set()
    for entry in stats.entries.values():
        if entry.num_requests or entry.num_failures:
            result.append(_row(entry, entry.method or "", entry.name))
            seen.add((entry.method or "", entry.name))
    for method, name in sorted(_ATTEMPTED - seen):
        result.append(EndpointResult(method, name, 0, 0, 0.0, 0, 0, 0))
    result.append(_row(stats.total, "", TOTAL_NAME))
    return result


def _check_thresholds(environment: Environment) -> None:
    """Set Locust's exit status from the thresholds; one line per violation."""
    try:
        thresholds = Thresholds.from_options(environment.parsed_options)
    except ValueError as exc:  # typed into the web UI
        _say(f"fanout: error: {exc}")
        environment.process_exit_code = ExitCode.USAGE
        return
    # Exact (HdrHistogram) latency, from the intended start in an open-model run.
    violations = thresholds.check(arrival.exact_rows(_rows(environment)))
    violations += arrival.dropped_violations(environment, thresholds)
    for violation in violations:
        _say(violation.line())
    runner = environment.runner
    if violations:
        environment.process_exit_code = ExitCode.THRESHOLD
    elif thresholds.active:
        _say(f"fanout: thresholds met: {thresholds.describe()}")
        if thresholds.max_fail_ratio is not None and not (runner and runner.exceptions):
            # Failures within the allowed ratio are accepted: exit 0, not Locust's 1.
            environment.process_exit_code = ExitCode.OK


def _say_limits(environment: Environment) -> None:
    """Name an embedded stub's rate limit that capped (or refused) the run's requests."""
    from pytest_fanout.load.capacity import load_limit_lines, settled_app
    from pytest_fanout.measurement import has_rate_limit

    if _STACK is None or not _STACK.upstreams:
        return
    total = environment.stats.total
    try:
        stats = {name: stub.stats() for name, stub in _STACK.upstreams.items()}
        if not any(has_rate_limit(found.get("limits")) for found in stats.values()):
            return  # no stub limits by rate: no cap to name
        # The requests cut off as the run stopped still run in the app and make their calls:
        # count them with the requests the app began, once it has finished them, and read
        # the stubs again after.
        app = settled_app(_STACK.app.probe_stats, {}, sleep=gevent.sleep)
        stats = {name: stub.stats() for name, stub in _STACK.upstreams.items()}
    except Exception as exc:  # a stub that died is the stack's to report, not this line's
        _say(f"fanout: note: the stubs' rate limits could not be read ({type(exc).__name__})")
        return
    for line in load_limit_lines(stats, total.num_requests, total.total_rps, app):
        _say(line)


#: Locust can run its shutdown twice at once: on SIGTERM, its signal greenlet quits the
#: runner, which wakes the main greenlet into a second shutdown. The first `quitting`
#: does the work; the second waits for it (a gevent-patched lock), then does nothing.
_QUIT_LOCK = threading.Lock()
_QUIT_DONE = False


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_kwargs: Any) -> None:
    global _QUIT_DONE
    if not _owns_the_test(environment):
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
            _check_thresholds(environment)
            _say_limits(environment)
        finally:
            _stop_stack()
            _QUIT_DONE = True
