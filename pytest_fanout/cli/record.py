"""`fanout record`: stub routes from real traffic, written into the stack spec.

    fanout record --upstream pricing=http://127.0.0.1:9000 [--upstream ...] [--spec FILE]
    fanout record --upstream pricing=https://pricing.internal --har session.har

Without `--har`, a recording proxy listens on loopback for each upstream and
prints its URL: point the app's variable at it, exercise the app, then
Ctrl-C (or SIGTERM); the routes seen are written. With `--har`, the file's entries under
each upstream's URL are the traffic. Either way each upstream's routes land
in `[tool.fanout.upstreams.NAME]` of the spec file (pyproject.toml).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

from pytest_fanout.cli import add_quiet, progress_printer
from pytest_fanout.limits import ExitCode

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def upstream_url(text: str) -> tuple[str, str]:
    """NAME=URL, the URL an http(s) base without query or fragment (argparse type)."""
    name, sep, url = text.partition("=")
    if not sep or not _NAME.match(name):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=URL (e.g. pricing=http://...)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {url!r} is not an http(s) base URL (scheme, host, optional path)"
        )
    return name, url.rstrip("/")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--upstream",
        type=upstream_url,
        action="append",
        required=True,
        metavar="NAME=URL",
        help="a real upstream to record, by the name the stack spec gives it; repeatable",
    )
    parser.add_argument("--har", default=None, help="import this HAR file instead of proxying")
    parser.add_argument(
        "--spec",
        default="pyproject.toml",
        help="the TOML file whose [tool.fanout] gets the routes (default: pyproject.toml)",
    )
    add_quiet(parser)
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="the first proxy's loopback port (default: a free one; the others: free ones)",
    )


def run(args: argparse.Namespace) -> int:
    from pytest_fanout.record.har import HarError, exchanges_from_har
    from pytest_fanout.record.proxy import RecordError, check_unique, record_through_proxy
    from pytest_fanout.record.spec_file import SpecFileError, write_routes
    from pytest_fanout.record.traffic import routes_from

    try:
        upstreams = check_unique(args.upstream)
        if args.har is not None:
            exchanges = exchanges_from_har(args.har, upstreams)
        else:
            if not 0 <= args.port <= 65535:
                raise RecordError(f"--port {args.port} is not a port (0-65535)")
            exchanges = record_through_proxy(upstreams, args.port, progress_printer(args))
        routes = {name: routes_from(seen, name) for name, seen in exchanges.items()}
        routes = {name: found for name, found in routes.items() if found}
        for name in upstreams:
            count = len(routes.get(name, []))
            print(f"{name}: {count} route(s) from {len(exchanges[name])} exchange(s)", flush=True)
        if not routes:
            print(f"nothing recorded: {args.spec} left as it was", flush=True)
            return ExitCode.OK
        write_routes(args.spec, routes)
    except (RecordError, HarError, SpecFileError) as exc:
        print(f"fanout: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    print(f"wrote the routes into {Path(args.spec)} ([tool.fanout.upstreams.*])", flush=True)
    return ExitCode.OK
