"""The `fanout` command: one registry of subcommands, one parser, the helpers they share.

Each subcommand is a module of this package with `configure(parser)` and
`run(args)`, named in `COMMANDS`; only the module of the subcommand that runs is
imported (`fanout --help` loads no Locust, matplotlib or gate). Their options
come from the one registry (`pytest_fanout.spec.OPTIONS`) where pytest or Locust
take them too. Errors end as one line on stderr and a non-zero exit status,
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pytest_fanout import limits
from pytest_fanout.artifacts import ArtifactError, mask_text
from pytest_fanout.limits import ExitCode, fraction, http_status, strict_json_loads
from pytest_fanout.spec import (
    OPTIONS,
    SpecError,
    StackSpec,
    add_options,
    join_dash_values,
    options_for,
    resolve,
)

if TYPE_CHECKING:
    import httpx2

    from pytest_fanout.limits import Behaviour
    from pytest_fanout.measurement import Request
    from pytest_fanout.servers.stack import Stack


@dataclass(frozen=True)
class Command:
    """A subcommand: its one line of help and the module that holds configure() and run()."""

    help: str
    module: str


#: Every `fanout` subcommand, in help order.
COMMANDS: dict[str, Command] = {
    "patterns": Command(
        "compare sync, async and async_sem on the embedded stack", "pytest_fanout.cli.patterns"
    ),
    "measure": Command(
        "measure one path of any app on the embedded stack", "pytest_fanout.cli.measure"
    ),
    "serve": Command("run the stub upstream and the app until Ctrl-C", "pytest_fanout.cli.serve"),
    "upstream": Command("run the stub upstream alone", "pytest_fanout.cli.upstream"),
    "compare": Command(
        "compare two saved runs and give the gate's verdict", "pytest_fanout.cli.compare"
    ),
    "capacity": Command(
        "find each path's highest arrival rate that meets an SLO", "pytest_fanout.cli.capacity"
    ),
    "record": Command(
        "record real upstreams (a proxy, or a HAR file) into stub routes in the stack spec",
        "pytest_fanout.cli.record",
    ),
    "critical-path": Command(
        "how many times a path pays each upstream's delay, and each one's slack (small"
        " changes of every upstream's delay, both ways, one fit)",
        "pytest_fanout.cli.critical_path",
    ),
}


class CommandError(Exception):
    """A failure to report as one line, with the exit status it means."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.code = code


# ---- progress: each step of a long command as it goes ------------------------


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """`-q/--quiet`: no progress lines, only the result."""
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress lines, only the result"
    )


def progress_printer(args: argparse.Namespace) -> Callable[[str], None] | None:
    """What prints a long command's steps as they go (on stdout, flushed, as `fanout
    capacity` prints its steps); None with `-q`."""
    if getattr(args, "quiet", False):
        return None

    def say(line: str) -> None:
        print(line, flush=True)

    return say


# ---- the stack: [tool.fanout] and the flags over it -------------------------


def add_stack_group(parser: argparse.ArgumentParser, keys: Iterable[str] | None = None) -> None:
    """The stack options `keys` (default: every one `fanout` takes), named without a
    prefix (`--app`, `--upstream NAME=ENVVAR`, `--route ...`); they override [tool.fanout]."""
    group = parser.add_argument_group(
        "the stack: each option overrides [tool.fanout] of the nearest pyproject.toml; a"
        " default shown applies where neither sets it"
    )
    keys = options_for("fanout") if keys is None else list(keys)
    add_options(group.add_argument, prefix="", front_end="fanout", keys=keys)


def spec_from(args: argparse.Namespace) -> StackSpec:
    """The StackSpec: [tool.fanout] (or --config), the flags given on top; a bad value is
    one line and exit status 2."""
    stack = options_for("fanout")
    values = {k: getattr(args, OPTIONS[k].dest) for k in stack if hasattr(args, OPTIONS[k].dest)}
    where = {key: OPTIONS[key].flag("") for key in values}
    try:
        return resolve(values, start=Path.cwd(), where=where)
    except SpecError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None


def start_stack(spec: StackSpec, **kwargs: Any) -> Stack:
    """The spec's stack (`Stack.from_spec`, not started yet: use it in `with`); a bad spec is
    exit status 2."""
    from pytest_fanout.servers.stack import Stack

    try:
        return Stack.from_spec(spec, **kwargs)
    except SpecError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None


# ---- one request on the stack: `fanout measure`, `fanout critical-path` -------------


def add_request_command_options(parser: argparse.ArgumentParser, *, path_help: str) -> None:
    """The options of a command that sends one request to the stack (what `request_on_stack`
    reads): the request (its path, --method, --json (the body), --expect-status), -q, and
    the stack group."""
    parser.add_argument("path", help=path_help)
    parser.add_argument(
        "--method",
        default="GET",
        type=str.upper,
        choices=["GET", "POST", "PUT", "PATCH", "DELETE"],
        help="HTTP method (default: GET)",
    )
    parser.add_argument(
        "--json", dest="json_body", default=None, metavar="JSON", help="request body, sent as JSON"
    )
    parser.add_argument(
        "--expect-status",
        type=http_status,
        default=200,
        help="the status a good answer has (default: 200)",
    )
    add_quiet(parser)
    add_stack_group(parser)


@contextmanager
def request_on_stack(
    args: argparse.Namespace,
) -> Iterator[tuple[Request, Stack, httpx2.Client]]:
    """The command's request (`request_from`: a bad one is exit 2, before anything starts),
    and the stack of [tool.fanout] and the flags (`spec_from`) started for the block, with the
    harness's client (the spec's request timeout as a deadline for a whole answer, its
    `max_answer_bytes`); a measurement that fails inside the block is one line (exit 1)."""
    from pytest_fanout.measure import MeasureClient
    from pytest_fanout.measurement import MeasurementError

    request = request_from(args)
    spec = spec_from(args)
    stack = start_stack(spec)
    client = MeasureClient(
        timeout=spec.request_timeout, max_answer_bytes=spec.get("max_answer_bytes")
    )
    with stack, client:
        try:
            yield request, stack, client
        except MeasurementError as exc:
            # The app's own cause, when it logged one (a 500's exception): one line still.
            cause = _app_cause(stack)
            said = f" (the app's log: {cause})" if cause else ""
            raise CommandError(mask_text(str(exc).splitlines()[0] + said)) from None


def _app_cause(stack: Stack) -> str:
    """The most telling line of the app's log, waited for up to APP_LOG_WAIT_S (uvicorn
    logs a 500's exception after it has sent the answer), "" when it names none."""
    import time

    from pytest_fanout.servers.process import telling_line

    app = stack.app
    if app is None:
        return ""
    deadline = time.monotonic() + limits.APP_LOG_WAIT_S
    while True:
        line = telling_line(app.log_tail())
        if line or time.monotonic() >= deadline:
            return line
        time.sleep(0.02)  # poll interval, bounded by the deadline


def request_from(args: argparse.Namespace) -> Request:
    """The one request a command sends (its path, --method, --json, --expect-status), checked
    by `Request`'s one normaliser; a bad one is exit status 2."""
    from pytest_fanout.measurement import Request

    body = json_body(args.json_body)
    try:
        return Request(args.path, args.method, json=body, expect_status=args.expect_status)
    except ValueError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None


def json_body(text: str | None) -> object:
    """The --json body, read by the one strict JSON rule (NaN and Infinity refused)."""
    if text is None:
        return None
    try:
        return strict_json_loads(text)
    except ValueError as exc:
        joint = " " if str(exc).startswith("is not") else ": "
        raise CommandError(f"--json{joint}{exc}", ExitCode.USAGE) from None


# ---- the stub upstream's behaviour (`fanout upstream`, `fanout serve`) -------

#: The stub behaviour flags: name -> (type, default, help).
BEHAVIOUR_FLAGS: dict[str, tuple[Any, Any, str]] = {
    "delay_ms": (limits.delay_ms, 100.0, "delay before each answer (default: 100)"),
    "jitter_ms": (
        limits.delay_ms,
        0.0,
        "extra random delay, uniform in [0, J] (default: 0)",
    ),
    "error_rate": (fraction, 0.0, "fraction of calls answered with --error-status (default: 0)"),
    "error_status": (http_status, 500, "status of the failed calls (default: 500)"),
    "drop_rate": (fraction, 0.0, "fraction of calls whose connection is closed mid-answer"),
    "max_inflight": (
        limits.inflight,
        0,
        "answer 429 above this many calls in flight; 0 = no cap",
    ),
}


def add_behaviour_options(parser: argparse.ArgumentParser, *, skip: Sequence[str] = ()) -> None:
    """The stub upstream's behaviour flags (`--jitter-ms`, `--error-rate`...). With
    `skip`, those are left out (`serve` takes --delay-ms from the stack options), and
    the defaults are None: only a flag given changes the declared behaviour."""
    group = parser.add_argument_group("stub upstream behaviour")
    for name, (kind, default, help_text) in BEHAVIOUR_FLAGS.items():
        if name in skip:
            continue
        group.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=None if skip else default,
            help=help_text,
        )


def behaviour_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The behaviour flags given (or with their defaults, for `fanout upstream`)."""
    return {
        name: getattr(args, name)
        for name in BEHAVIOUR_FLAGS
        if getattr(args, name, None) is not None
    }


def behaviour_from(args: argparse.Namespace) -> Behaviour:
    """The stub's Behaviour from the flags; a bad combination is exit status 2."""
    from pytest_fanout.limits import Behaviour, ConfigError

    behaviour = Behaviour()
    try:
        behaviour.update(behaviour_changes(args))
    except ConfigError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    return behaviour


def warn_if_exposed(host: str) -> None:
    """Say so when a server will listen beyond loopback: its control paths have no auth."""
    from pytest_fanout.servers.process import LOOPBACK

    if host not in (LOOPBACK, "localhost", "::1"):
        print(
            f"fanout: warning: listening on {host}: anyone who can reach it can call the app,"
            " read the probe, and (with the token) reconfigure the stub upstream",
            file=sys.stderr,
        )


def add_listen_options(parser: argparse.ArgumentParser) -> None:
    """--host, the address a served process binds (loopback by default)."""
    from pytest_fanout.servers.process import LOOPBACK

    parser.add_argument("--host", default=LOOPBACK, help="address to bind (default: 127.0.0.1)")


# ---- the parser and main --------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is ONE line (with where to get help), exit status 2;
    a value that starts with a dash and a digit ("--rate-limit -1/s") is the value of the
    flag before it (`spec.join_dash_values`: every option of `fanout` is ours)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if args is not None:
            args = join_dash_values(args, None)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv` (its first word: `fanout` has no options before it)."""
    words = [word for word in argv if not word.startswith("-")]
    return words[0] if words and words[0] in COMMANDS else None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """`fanout`'s parser. Given `argv`, only its subcommand's module is imported and
    configured (the others are listed by their help); without, every one is."""
    # Subparsers inherit the class, so every subcommand's usage errors are one line too.
    parser = OneLineParser(
        prog="fanout", description="pytest-fanout: run and measure fan-out services."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen(argv) if argv is not None else None
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        if argv is None or name == chosen:
            module = importlib.import_module(command.module)
            module.configure(sub)
            sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)

    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("fanout: interrupted, stopped all processes", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except CommandError as exc:
        hint = f" (see: fanout {args.command} --help)" if exc.code == ExitCode.USAGE else ""
        print(f"fanout: error: {exc}{hint}", file=sys.stderr)
        return exc.code
    except ArtifactError as exc:  # any command's file (a report, a table, a recording)
        print(f"fanout: error: {exc} (the old file, if any, is whole)", file=sys.stderr)
        return ExitCode.FAILED
    except Exception as exc:
        # Imported here: `fanout --help` loads no server machinery (nor httpx2).
        from pytest_fanout.servers.process import ServerStartError

        if isinstance(exc, ServerStartError):
            print(f"fanout: error: {exc}", file=sys.stderr)
            # The child's one-line reason is already in the message; otherwise show its log.
            if exc.log_tail and "fanout child:" not in exc.log_tail:
                tail = exc.log_tail.splitlines()
                print("\n".join("  | " + line for line in tail), file=sys.stderr)
            return ExitCode.TARGET_UNUSABLE
        if os.environ.get("FANOUT_DEBUG"):  # a last resort: still one line
            raise
        print(
            f"fanout: error: {type(exc).__name__}: {exc} (FANOUT_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return ExitCode.FAILED
