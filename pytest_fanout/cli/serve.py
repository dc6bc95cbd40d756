"""`fanout serve`: the stack of [tool.fanout] (stub upstreams, then the app) until Ctrl-C."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from pytest_fanout.artifacts import mask_text
from pytest_fanout.cli import (
    CommandError,
    add_behaviour_options,
    add_listen_options,
    add_stack_group,
    behaviour_changes,
    spec_from,
    start_stack,
    warn_if_exposed,
)
from pytest_fanout.limits import ExitCode, port_number
from pytest_fanout.spec import DEFAULT_APP, UpstreamSpec, options_for

if TYPE_CHECKING:
    from pytest_fanout.servers.process import ServerProcess


def configure(parser: argparse.ArgumentParser) -> None:
    add_listen_options(parser)
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
    add_stack_group(
        parser,
        [k for k in options_for("fanout") if k not in ("request_timeout", "max_answer_bytes")],
    )
    add_behaviour_options(parser, skip=["delay_ms"])


def _show_app_log(app: ServerProcess, offset: int) -> int:
    """Print the app's new log lines (its warnings, a 500's exception), each as `app | ...`,
    masked by the one secret policy; the log itself is an anonymous file no one else can
    read. Returns the offset to read from next."""
    text, offset = app.log_from(offset)
    if text:
        lines = mask_text(text).splitlines()
        print("\n".join(f"app | {line}" for line in lines), flush=True)
    return offset


def run(args: argparse.Namespace) -> int:
    spec = spec_from(args)
    changes = behaviour_changes(args)
    if changes:  # the behaviour flags apply to every upstream, over what was declared
        for name, env in spec.upstream_env_names().items():
            upstream = spec.upstreams.setdefault(name, UpstreamSpec(name, env, where="flags"))
            upstream.behaviour.update(changes)
    stack = start_stack(
        spec, host=args.host, app_port=args.app_port, upstream_port=args.upstream_port
    )
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
        print("Ctrl-C stops them all; the app's log follows (masked).", flush=True)
        offset = 0
        while all(server.running() for server in servers):
            offset = _show_app_log(stack.app, offset)
            time.sleep(0.2)  # watching the children, not synchronising
        _show_app_log(stack.app, offset)
        dead = next(server for server in servers if not server.running())
        raise CommandError(f"{dead.name} exited unexpectedly:\n{dead.log_tail()}")
    return ExitCode.OK
