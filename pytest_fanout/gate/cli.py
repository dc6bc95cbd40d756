"""`fanout compare OLD.json NEW.json`: the gate's verdict on two saved runs, without pytest.

Same rules, same statistics, same table and the same exit status as
`pytest --fanout-compare`: 0 when nothing regressed, 1 on a regression,
2 on bad input (a missing, corrupt or other-schema file, a bad rule), always
as one line on stderr, and 6 (EXIT_NOT_GATED) when no case was gated (unless
--allow-ungated).
"""

from __future__ import annotations

import argparse
import sys

from pytest_fanout import gate
from pytest_fanout.exitcodes import ExitCode
from pytest_fanout.gate.report import write_json, write_text

EXIT_OK = ExitCode.OK
EXIT_REGRESSION = ExitCode.FAILED
EXIT_BAD_INPUT = ExitCode.USAGE
EXIT_NOT_GATED = ExitCode.NOT_GATED


def configure(parser: argparse.ArgumentParser) -> None:
    """The subcommand's arguments (called by `fanout`'s parser builder)."""
    parser.add_argument("old", metavar="OLD.json", help="the baseline (--fanout-save of main)")
    parser.add_argument("new", metavar="NEW.json", help="the run to judge")
    parser.add_argument(
        "--fail-on",
        metavar="RULES",
        default=None,
        help="comma-separated rules such as median+10%%,structure+0,efficiency-10%%,"
        "overhead+1ms or, for Locust rows, load-p95+25%%,rps-20%%,fail-ratio+0.01; "
        f"'none' reports only (default: {gate.DEFAULT_FAIL_ON.replace('%', '%%')})",
    )
    parser.add_argument(
        "--alpha",
        metavar="P",
        default=None,
        help=f"significance level of the one-sided Mann-Whitney test (default: "
        f"{gate.DEFAULT_ALPHA})",
    )
    parser.add_argument(
        "--allow-ungated",
        action="store_true",
        help=f"pass when no case was gated (by default that exits {gate.EXIT_NOT_GATED})",
    )
    parser.add_argument(
        "--report-md", metavar="PATH", default=None, help="also write the Markdown report to PATH"
    )
    parser.add_argument(
        "--report-json",
        metavar="PATH",
        default=None,
        help="also write the comparison (every metric, p-value, interval) as JSON to PATH",
    )


def run(args: argparse.Namespace) -> int:
    """Compare, print the verdict table and one line per regression; return the exit status."""
    try:
        config = gate.GateConfig.from_options(args.fail_on, args.alpha, args.allow_ungated)
        old = gate.Run.load(args.old)
        new = gate.Run.load(args.new, "results")
        comparison = gate.compare_runs(old, new, config)
        if args.report_md:
            write_text(args.report_md, gate.render_comparison_markdown(comparison, new))
        if args.report_json:
            write_json(args.report_json, comparison.to_dict(), indent=1)
    except gate.GateError as exc:
        print(f"fanout compare: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(gate.render_comparison_text(comparison))
    for line in gate.regression_lines(comparison):
        print(line)
    if comparison.ungated_fails:
        print(
            f"fanout compare: {comparison.why_not_gated()} (--allow-ungated accepts it)",
            file=sys.stderr,
        )
    return comparison.exit_status
