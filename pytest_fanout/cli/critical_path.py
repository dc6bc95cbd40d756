"""`fanout critical-path PATH`: the weights of every upstream on one path, from the shell.

Starts the stack (stub upstreams answering after --delay-ms, the app), prints
the median request's waterfall, then slows each upstream in turn and prints
the table of weights. `--save FILE.json` keeps both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytest_fanout.artifacts import write_json
from pytest_fanout.cli import (
    CommandError,
    add_request_options,
    add_stack_group,
    request_from,
    spec_from,
    start_stack,
)
from pytest_fanout.limits import ExitCode, positive_float

#: The longest experiment the command accepts (s).
MAX_BUDGET_S = 600.0


def _budget(text: str) -> float:
    value = positive_float(text)
    if value > MAX_BUDGET_S:
        raise argparse.ArgumentTypeError(f"at most {MAX_BUDGET_S:g} s, got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="the path to weigh, e.g. /checkout (with its query)")
    add_request_options(parser, body_help="request body, sent as JSON")
    parser.add_argument(
        "--budget-s",
        type=_budget,
        default=20.0,
        help="the most seconds the experiment may take (default: 20)",
    )
    parser.add_argument(
        "--extra-ms",
        type=positive_float,
        default=None,
        help="the extra delay per call (default: 40%% of the path's time, 10 to 80 ms)",
    )
    parser.add_argument(
        "--save", default=None, metavar="FILE.json", help="write the weights and waterfall"
    )
    # The stack: [tool.fanout], these on top (--app, --upstream, --route, --delay-ms,
    # --request-timeout or --timeout, ...), as `fanout measure`.
    add_stack_group(parser)


def run(args: argparse.Namespace) -> int:
    from pytest_fanout.measure import MeasureClient
    from pytest_fanout.measurement import MeasurementError
    from pytest_fanout.timeline.causal import critical_path
    from pytest_fanout.timeline.session import make_sender
    from pytest_fanout.timeline.waterfall import Waterfall

    request = request_from(args)
    save = Path(args.save) if args.save else None
    if save is not None and (save.suffix != ".json" or not save.parent.is_dir()):
        raise CommandError(
            f"--save {args.save!r}: give a .json file in an existing folder", ExitCode.USAGE
        )
    spec = spec_from(args)
    stack = start_stack(spec)
    with (
        stack,
        MeasureClient(
            timeout=spec.request_timeout, max_answer_bytes=spec.get("max_answer_bytes")
        ) as client,
    ):
        assert stack.app is not None
        send = make_sender(client, stack.app, stack.app.url, request)
        try:
            result = critical_path(
                send,
                stack.upstreams,
                method=request.method,
                path=request.path,
                budget_s=args.budget_s,
                extra_ms=args.extra_ms,
            )
        except MeasurementError as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
    assert result.timeline is not None
    waterfall = Waterfall(result.timeline)
    print(f"{waterfall}\n\n{result}", flush=True)
    if save is not None:
        data = {"critical_path": result.to_dict(), "waterfall": waterfall.to_dict()}
        try:
            write_json(save, data)
        except OSError as exc:
            raise CommandError(str(exc)) from None
    return ExitCode.OK
