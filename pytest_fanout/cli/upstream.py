"""`fanout upstream`: the stub upstream alone, on a port of your choice, until Ctrl-C."""

from __future__ import annotations

import argparse

from pytest_fanout.cli import (
    CommandError,
    add_behaviour_options,
    add_listen_options,
    behaviour_from,
    warn_if_exposed,
)
from pytest_fanout.limits import ConfigError, ExitCode, port_number
from pytest_fanout.spec import OPTIONS, add_options, parse_token

#: Options of the stack registry this command takes for its one stub.
_RATE_KEYS = ("rate_limit", "burst")


def configure(parser: argparse.ArgumentParser) -> None:
    add_listen_options(parser)
    parser.add_argument("--port", type=port_number, default=8001, help="port (default: 8001)")
    parser.add_argument(
        "--token",
        type=_token,
        default=None,
        help="bearer token of the control paths (default: a random one, printed)",
    )
    add_behaviour_options(parser)
    group = parser.add_argument_group("stub upstream rate limit")
    add_options(group.add_argument, prefix="", front_end="fanout", keys=_RATE_KEYS)


def _token(text: str) -> str:
    try:
        return parse_token(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from pytest_fanout.servers.process import bind_listening_socket
    from pytest_fanout.servers.stub_server import STUB_KEEP_ALIVE_S
    from pytest_fanout.servers.stubhttp import serve_stub
    from pytest_fanout.servers.upstream import StubUpstream

    behaviour = behaviour_from(args)
    rate = {k: getattr(args, OPTIONS[k].dest) for k in _RATE_KEYS}
    try:
        behaviour.update({k: v for k, v in rate.items() if v is not None})
    except ConfigError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    app = StubUpstream(behaviour, token=args.token)
    # Bind here, not in the server: a busy port is one clear line, and --port 0 shows the
    # real port.
    sock = bind_listening_socket(args.host, args.port)
    port = sock.getsockname()[1]
    warn_if_exposed(args.host)
    print(f"stub upstream on http://{args.host}:{port} (stats: /__upstream__/stats)", flush=True)
    if not args.token:
        print(f"control token: {app.token} (send 'Authorization: Bearer <token>')", flush=True)
    # The stub's own server, as under the harness (servers/stubhttp.py): a load test
    # against it measures the service, not the stub.
    try:
        serve_stub(app, sock, keep_alive_s=STUB_KEEP_ALIVE_S)
    finally:
        sock.close()
    return ExitCode.OK
