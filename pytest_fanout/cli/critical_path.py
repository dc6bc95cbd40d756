"""`fanout critical-path PATH`: the weights of every upstream on one path, from the shell.

Starts the stack (stub upstreams answering after --delay-ms, the app), changes
every upstream's delay a little, both ways, in each run (printing each target
and run as it goes, unless -q), then prints the median request's waterfall and
the table of weights and slack. `--save FILE.json` keeps both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytest_fanout.artifacts import write_json
from pytest_fanout.cli import (
    CommandError,
    add_request_command_options,
    progress_printer,
    request_on_stack,
)
from pytest_fanout.limits import MAX_BUDGET_S, ExitCode, positive_float


def _budget(text: str) -> float:
    value = positive_float(text)
    if value > MAX_BUDGET_S:
        raise argparse.ArgumentTypeError(f"at most {MAX_BUDGET_S:g} s, got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    # The request, -q and the stack: [tool.fanout], these on top (--app, --upstream, --route,
    # --delay-ms, --request-timeout or --timeout, ...), as `fanout measure`.
    add_request_command_options(
        parser, path_help="the path to weigh, e.g. /checkout (with its query)"
    )
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
        help="the step per call of each change (default: sized to the noise of the"
        " unchanged runs, divided by the rounds a target is paid in)",
    )
    parser.add_argument(
        "--save", default=None, metavar="FILE.json", help="write the weights and waterfall"
    )


def run(args: argparse.Namespace) -> int:
    from pytest_fanout.timeline.session import run_critical_path
    from pytest_fanout.timeline.waterfall import Waterfall

    save = Path(args.save) if args.save else None
    if save is not None and (save.suffix != ".json" or not save.parent.is_dir()):
        raise CommandError(
            f"--save {args.save!r}: give a .json file in an existing folder", ExitCode.USAGE
        )
    with request_on_stack(args) as (request, stack, client):
        assert stack.app is not None
        # The experiment `fanout.critical_path` runs in a test, on this stack.
        result = run_critical_path(
            client,
            stack.app,
            stack.upstreams,
            request,
            budget_s=args.budget_s,
            extra_ms=args.extra_ms,
            progress=progress_printer(args),
        )
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
