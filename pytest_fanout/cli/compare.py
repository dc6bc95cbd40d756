"""`fanout compare OLD.json NEW.json`: the gate's verdict on two saved runs, without pytest.

Same rules, same statistics, same table and the same exit status as
`pytest --fanout-compare`, and the same options (`spec.OPTIONS`, group "gate",
without the `fanout-` prefix): 0 when nothing regressed, 1 on a regression,
2 on bad input (a missing, corrupt or other-schema file, a bad rule), always
as one line on stderr, and 6 (ExitCode.NOT_GATED) when no case was gated (unless
--allow-ungated).
"""

from __future__ import annotations

import argparse
import sys

from pytest_fanout.limits import ExitCode
from pytest_fanout.spec import add_options


def configure(parser: argparse.ArgumentParser) -> None:
    """The subcommand's arguments (called by `fanout`'s parser builder)."""
    parser.add_argument("old", metavar="OLD.json", help="the baseline (--fanout-save of main)")
    parser.add_argument("new", metavar="NEW.json", help="the run to judge")
    add_options(parser.add_argument, prefix="", group="gate", front_end="fanout")


def run(args: argparse.Namespace) -> int:
    """Compare, print the verdict table and one line per regression; return the exit status."""
    from pytest_fanout import gate
    from pytest_fanout.gate.report import write_json, write_text

    try:
        config = gate.GateConfig.from_options(
            args.fanout_fail_on, args.fanout_alpha, args.fanout_allow_ungated
        )
        old = gate.Run.load(args.old)
        new = gate.Run.load(args.new, "results")
        comparison = gate.compare_runs(old, new, config)
        if args.fanout_report_md:
            write_text(args.fanout_report_md, gate.render_comparison_markdown(comparison, new))
        if args.fanout_report_json:
            write_json(args.fanout_report_json, comparison.to_dict(), indent=1)
    except gate.GateError as exc:
        print(f"fanout compare: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    print(gate.render_comparison_text(comparison))
    for line in gate.regression_lines(comparison):
        print(line)
    if comparison.ungated_fails:
        print(
            f"fanout compare: {comparison.why_not_gated()} (--allow-ungated accepts it)",
            file=sys.stderr,
        )
    return comparison.exit_status
