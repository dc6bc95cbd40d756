"""The `fanout` command: serve the stack, run the stub upstream, compare patterns, measure.

Each subcommand is a (configure, run) pair in COMMANDS; the modules that hold
them are imported only when that subcommand runs. Errors end as one line on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pytest_fanout._argtypes import (
    fraction,
    http_status,
    import_string,
    port_number,
)
from pytest_fanout.exitcodes import ExitCode
from pytest_fanout.load import limits
from pytest_fanout.servers.process import LOOPBACK, ServerStartError
from pytest_fanout.spec import (
    DEFAULT_APP,
    OPTIONS,
    SpecError,
    StackSpec,
    UpstreamSpec,
    add_stack_options,
    options_for,
    parse_token,
    resolve,
)

if TYPE_CHECKING:
    from pytest_fanout.servers.upstream import Behaviour

#: The `fanout` commands' old flag names, kept beside the stack options' own.
STACK_ALIASES = {"config": ["--fanout-config"], "request_timeout": ["--timeout"]}


class CommandError(Exception):
    """A failure to report as one line, with the exit status it means."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.code = code


def add_stack_group(parser: argparse.ArgumentParser, keys: Iterable[str]) -> None:
    """The stack options `keys` (pytest_fanout.spec), named without a prefix (`--app`,
    `--upstream NAME=ENVVAR`, `--route ...`); they override [tool.fanout]."""
    group = parser.add_argument_group(
        "the stack: each option overrides [tool.fanout] of the nearest pyproject.toml; a"
        " default shown applies where neither sets it"
    )
    keys = list(keys)
    aliases = {k: v for k, v in STACK_ALIASES.items() if k in keys}
    add_stack_options(group.add_argument, prefix="", keys=keys, aliases=aliases)


def spec_from(args: argparse.Namespace) -> StackSpec:
    """The StackSpec: [tool.fanout] (or --config), the flags given on top; a bad value is
    one line and exit status 2."""
    values = {k: getattr(args, o.dest) for k, o in OPTIONS.items() if hasattr(args, o.dest)}
    where = {key: OPTIONS[key].flag("") for key in values}
    try:
        return resolve(values, start=Path.cwd(), where=where)
    except SpecError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None


#: The stub behaviour flags of `fanout upstream` and `fanout serve`: name -> (type, default, help).
BEHAVIOUR_FLAGS: dict[str, tuple[Callable[[str], Any], Any, str]] = {
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
    from pytest_fanout.servers.upstream import Behaviour, ConfigError

    behaviour = Behaviour()
    try:
        behaviour.update(behaviour_changes(args))
    except ConfigError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    return behaviour


def warn_if_exposed(host: str) -> None:
    """Say so when a server will listen beyond loopback: its control paths have no auth."""
    if host not in (LOOPBACK, "localhost", "::1"):
        print(
            f"fanout: warning: listening on {host}: anyone who can reach it can call the app,"
            " read the probe, and (with the token) reconfigure the stub upstream",
            file=sys.stderr,
        )


# ---- fanout upstream -------------------------------------------------------


def configure_upstream(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=LOOPBACK, help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8001, help="port (default: 8001)")
    parser.add_argument(
        "--token",
        type=_token,
        default=None,
        help="bearer token of the control paths (default: a random one, printed)",
    )
    add_behaviour_options(parser)


def _token(text: str) -> str:
    try:
        return parse_token(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_upstream(args: argparse.Namespace) -> int:
    import uvicorn

    from pytest_fanout.servers.process import bind_listening_socket
    from pytest_fanout.servers.upstream import StubUpstream

    app = StubUpstream(behaviour_from(args), token=args.token)
    # Bind here, not in uvicorn: a busy port is one clear line, and --port 0 shows the real port.
    sock = bind_listening_socket(args.host, args.port)
    port = sock.getsockname()[1]
    warn_if_exposed(args.host)
    print(f"stub upstream on http://{args.host}:{port} (stats: /__upstream__/stats)", flush=True)
    if not args.token:
        print(f"control token: {app.token} (send 'Authorization: Bearer <token>')", flush=True)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http="pytest_fanout.servers.connections:CountingHTTPProtocol",
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return ExitCode.OK if server.started else ExitCode.TARGET_UNUSABLE


# ---- fanout serve ----------------------------------------------------------


def configure_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=LOOPBACK, help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--app-port",
        type=port_number,
        default=8000,
        help="the app's port; 0 picks a free one (default: 8000)",
    )
    parser.add_argument(
        "--upstream-port",
        type=port_number,
        default=8001,
        help="the (first) stub upstream's port; 0 picks a free one (default: 8001)",
    )
    add_stack_group(parser, [k for k in options_for("fanout") if k != "request_timeout"])
    add_behaviour_options(parser, skip=["delay_ms"])


def run_serve(args: argparse.Namespace) -> int:
    spec = spec_from(args)
    changes = behaviour_changes(args)
    if changes:  # the behaviour flags apply to every upstream, over what was declared
        for name, env in spec.upstream_env_names().items():
            upstream = spec.upstreams.setdefault(name, UpstreamSpec(name, env, where="flags"))
            upstream.behaviour.update(changes)
    try:
        stack = spec.stack(host=args.host, app_port=args.app_port, upstream_port=args.upstream_port)
    except SpecError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    warn_if_exposed(args.host)
    with stack:
        assert stack.app is not None
        servers = [*stack.upstreams.values(), stack.app]
        for name, upstream in stack.upstreams.items():
            where = f"{name}, in {stack.env_names[name]}, pid {upstream.pid}"
            print(f"upstream  {upstream.url}  ({where})")
            print(f"token     {upstream.token}  (its control paths)")
        print(f"app       {stack.app.url}  (pid {stack.app.pid})")
        if spec.app == DEFAULT_APP:
            print(f"try       curl {stack.app.url}/async/20")
        print("Ctrl-C stops them all.", flush=True)
        while all(server.running() for server in servers):
            time.sleep(0.2)  # watching the children, not synchronising
        dead = next(server for server in servers if not server.running())
        raise CommandError(f"{dead.name} exited unexpectedly:\n{dead.log_tail()}")
    return ExitCode.OK


# ---- fanout patterns -------------------------------------------------------


def configure_patterns(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n", type=limits.calls, default=20, help="upstream calls per request (default: 20)"
    )
    parser.add_argument(
        "--max-concurrent",
        type=limits.calls,
        default=5,
        help="the semaphore's bound for async_sem (default: 5)",
    )
    add_stack_group(parser, ["config", "delay_ms"])
    parser.add_argument(
        "--repeat",
        type=limits.repeats,
        default=3,
        help="timed requests per pattern; the median is shown (default: 3)",
    )
    parser.add_argument(
        "--app",
        type=import_string,
        default=DEFAULT_APP,
        help=f"import string of the app (default: {DEFAULT_APP}); it must"
        " serve the reference routes (use `fanout measure` for your own)",
    )
    parser.add_argument(
        "--no-blocking", action="store_true", help="leave out the blocking anti-pattern"
    )


def run_patterns(args: argparse.Namespace) -> int:
    import httpx2

    from pytest_fanout.measurement import MeasurementError
    from pytest_fanout.patterns import patterns_table, run_patterns

    # The patterns are the reference app's routes: only the delay comes from [tool.fanout].
    delay_ms = spec_from(args).delay_ms
    try:
        rows = run_patterns(
            n=args.n,
            max_concurrent=args.max_concurrent,
            delay_ms=delay_ms,
            repeat=args.repeat,
            app=args.app,
            blocking=not args.no_blocking,
        )
    except MeasurementError as exc:  # e.g. a 422: --n or --max-concurrent over the app's cap
        raise CommandError(str(exc).splitlines()[0]) from None
    except httpx2.HTTPError as exc:
        raise CommandError(f"the app did not answer: {type(exc).__name__}: {exc}") from None
    # Printed once there is a table to show: a stack that did not start prints one line.
    print(
        f"Fan-out of n={args.n} calls to a stub upstream answering after {delay_ms:g} ms"
        f" (median of {args.repeat}):\n"
    )
    print(patterns_table(rows), flush=True)
    return ExitCode.OK


# ---- fanout measure ----------------------------------------------------------


def configure_measure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="the path to measure, e.g. /basket/10 (with its query)")
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
        "--repeat",
        type=limits.repeats,
        default=5,
        help="timed requests; median and p95 are over these (default: 5)",
    )
    parser.add_argument(
        "--n",
        type=limits.calls,
        default=None,
        help="upstream calls per request, when the path does not say it",
    )
    parser.add_argument(
        "--concurrency",
        type=limits.calls,
        default=None,
        help="how many of them may run at once (default: --n); with --n, it"
        " gives the ideal time and the efficiency",
    )
    parser.add_argument(
        "--expect-status",
        type=http_status,
        default=200,
        help="the status a good answer has (default: 200)",
    )
    parser.add_argument(
        "--waterfall",
        default=None,
        metavar="FILE",
        help="also print the median request's upstream calls on a time axis and save"
        " them to FILE (.svg, .png, .txt, .mmd, .md or .json)",
    )
    add_stack_group(parser, options_for("fanout"))


def json_body(text: str | None) -> object:
    """The --json body; NaN and Infinity are not JSON and are refused."""
    import json

    if text is None:
        return None

    def refuse(constant: str) -> NoReturn:
        raise CommandError(f"--json: {constant} is not valid JSON", ExitCode.USAGE)

    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--json is not valid JSON: {exc}", ExitCode.USAGE) from None


def run_measure(args: argparse.Namespace) -> int:
    import httpx2

    from pytest_fanout.measure import measure
    from pytest_fanout.measurement import MeasurementError, Request
    from pytest_fanout.patterns import measurement_report

    body = json_body(args.json_body)
    try:
        request = Request(args.path, args.method, json=body, expect_status=args.expect_status)
    except ValueError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    waterfall_target = _waterfall_target(args.waterfall)
    spec = spec_from(args)
    timeout = spec.request_timeout
    try:
        stack = spec.stack()
    except SpecError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    with stack, httpx2.Client(timeout=timeout) as client:
        assert stack.app is not None
        try:
            m = measure(
                client,
                stack.app.url,
                request,
                upstreams=stack.upstreams,
                app=stack.app,
                repeat=args.repeat,
                warmup=1,
                n=args.n,
                concurrency=args.concurrency,
            )
        except MeasurementError as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
        except httpx2.TimeoutException:
            raise CommandError(
                f"{args.method} {args.path} did not answer within {timeout:g}s (--request-timeout)"
            ) from None
        except httpx2.HTTPError as exc:
            raise CommandError(
                f"{args.method} {args.path}: the app did not answer: {type(exc).__name__}: {exc}"
            ) from None
        waterfall = _save_waterfall(m, stack.upstreams, waterfall_target)
    print(
        measurement_report(m, method=args.method, app=spec.app, delay_ms=spec.delay_ms), flush=True
    )
    if waterfall is not None:
        print(f"\n{waterfall}\n(saved to {waterfall_target})", flush=True)
    return ExitCode.OK


def _waterfall_target(path: str | None) -> Any:
    """--waterfall's file, checked before anything starts (suffix, folder, matplotlib)."""
    if path is None:
        return None
    from pytest_fanout.timeline.waterfall import WaterfallError, check_target

    try:
        return check_target(path)
    except WaterfallError as exc:
        raise CommandError(f"--waterfall: {exc}") from None


def _save_waterfall(m: Any, upstreams: Any, target: Any) -> Any:
    if target is None:
        return None
    from pytest_fanout.timeline.session import waterfall_of
    from pytest_fanout.timeline.waterfall import WaterfallError

    try:
        waterfall = waterfall_of(m, upstreams)
        waterfall.save(target)
    except WaterfallError as exc:
        raise CommandError(f"--waterfall: {exc}") from None
    return waterfall


Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[..., int]]

COMMANDS: dict[str, Command] = {
    "patterns": (
        "compare sync, async and async_sem on the embedded stack",
        configure_patterns,
        run_patterns,
    ),
    "measure": (
        "measure one path of any app on the embedded stack",
        configure_measure,
        run_measure,
    ),
    "serve": ("run the stub upstream and the app until Ctrl-C", configure_serve, run_serve),
    "upstream": ("run the stub upstream alone", configure_upstream, run_upstream),
}

#: Subcommands kept in their own modules: name -> "module" exposing configure(parser), run(args).
EXTERNAL_COMMANDS: dict[str, tuple[str, str]] = {
    "compare": ("compare two saved runs and give the gate's verdict", "pytest_fanout.gate.cli"),
    "capacity": (
        "find each path's highest arrival rate that meets an SLO",
        "pytest_fanout.load.capacity_cli",
    ),
    "record": (
        "record real upstreams (a proxy, or a HAR file) into stub routes in the stack spec",
        "pytest_fanout.record.cli",
    ),
    "critical-path": (
        "how many times a path pays each upstream's delay (slow each one, fit the slope)",
        "pytest_fanout.timeline.cli",
    ),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is ONE line (with where to get help), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    # Subparsers inherit the class, so every subcommand's usage errors are one line too.
    parser = OneLineParser(
        prog="fanout", description="pytest-fanout: run and measure fan-out services."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, configure, run) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        configure(sub)
        sub.set_defaults(run=run)
    for name, (help_text, module_name) in EXTERNAL_COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.configure(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("fanout: interrupted, stopped all processes", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except ServerStartError as exc:
        print(f"fanout: error: {exc}", file=sys.stderr)
        # The child's own one-line reason is already in the message; otherwise show its log.
        if exc.log_tail and "fanout child:" not in exc.log_tail:
            print("\n".join("  | " + line for line in exc.log_tail.splitlines()), file=sys.stderr)
        return ExitCode.TARGET_UNUSABLE
    except CommandError as exc:
        hint = f" (see: fanout {args.command} --help)" if exc.code == ExitCode.USAGE else ""
        print(f"fanout: error: {exc}{hint}", file=sys.stderr)
        return exc.code
    except Exception as exc:  # a last resort: still one line; FANOUT_DEBUG=1 shows the traceback
        if os.environ.get("FANOUT_DEBUG"):
            raise
        print(
            f"fanout: error: {type(exc).__name__}: {exc} (FANOUT_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return ExitCode.FAILED


if __name__ == "__main__":
    sys.exit(main())
