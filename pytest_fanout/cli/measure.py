"""`fanout measure PATH`: one path of any app on the embedded stack, and what is wrong.

Starts the stack of [tool.fanout] (the flags on top), measures the path like
`fanout.measure` in a test, and prints the timings, what each upstream saw, the
loop lag, the efficiency and the findings (`diagnose`); `--waterfall FILE` also
draws the median request's upstream calls.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from pytest_fanout import limits
from pytest_fanout.cli import (
    CommandError,
    add_request_command_options,
    progress_printer,
    request_on_stack,
)
from pytest_fanout.limits import ExitCode
from pytest_fanout.spec import DEFAULT_UPSTREAM, add_options

if TYPE_CHECKING:
    from pytest_fanout.measurement import Measurement
    from pytest_fanout.spec import StackSpec


def configure(parser: argparse.ArgumentParser) -> None:
    add_request_command_options(
        parser, path_help="the path to measure, e.g. /basket/10 (with its query)"
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
    add_options(parser.add_argument, prefix="", group="measure", front_end="fanout")


def run(args: argparse.Namespace) -> int:
    import httpx2

    from pytest_fanout.measure import measure

    waterfall_target = _waterfall_target(args.fanout_waterfall)
    with request_on_stack(args) as (request, stack, client):
        assert stack.app is not None
        spec = stack.spec
        try:
            m = measure(
                client,
                stack.app.url,
                request,
                upstreams=stack.upstreams,
                app=stack.app,
                repeat=args.fanout_repeat,
                warmup=1,
                n=args.n,
                concurrency=args.concurrency,
                disconnect_after_s=args.fanout_disconnect_after,
                ideal_s=args.fanout_ideal_s,
                progress=progress_printer(args),
            )
        except httpx2.TimeoutException:
            raise CommandError(
                f"{request.label} did not answer within {spec.request_timeout:g}s"
                " (--request-timeout)"
            ) from None
        except httpx2.HTTPError as exc:
            raise CommandError(
                f"{request.label}: the app did not answer: {type(exc).__name__}: {exc}"
            ) from None
        waterfall = _save_waterfall(m, stack.upstreams, waterfall_target)
    print(
        measurement_report(m, method=args.method, app=spec.app, delay_ms=spec.delay_ms, spec=spec),
        flush=True,
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


def _upstream_rows(m: Measurement) -> list[tuple[str, int, str, int]]:
    """(name, requests, peak in flight, new connections) per upstream, the first first."""
    rows = []
    for name in m.upstream_names:
        gauges = m.upstream(name)
        label = "upstream" if name == DEFAULT_UPSTREAM else name
        rows.append((label, gauges.requests, gauges.peak_label, gauges.connections_opened))
    return rows


def stub_delays(delay_ms: float, spec: StackSpec | None = None) -> str:
    """ "stub upstream delay 100 ms", then each upstream and route whose delay differs from
    it ("; pricing 50 ms; route GET /slow 300 ms"): the header says what the stub waited."""
    text = f"stub upstream delay {delay_ms:g} ms"
    if spec is None:
        return text
    extra = []
    behaviours = spec.behaviours()
    routes = spec.routes()
    named = len(behaviours) > 1
    for name, behaviour in behaviours.items():
        own = behaviour.delay_ms
        label = f"{name} " if named else ""
        if own != delay_ms:
            extra.append(f"{name} {own:g} ms")
        for route in routes.get(name, ()):
            route_ms = route.get("delay_ms")
            if route_ms is not None and route_ms != own:
                extra.append(f"{label}route {route['method']} {route['path']} {route_ms:g} ms")
    return "; ".join([text, *extra])


def measurement_report(
    m: Measurement, *, method: str, app: str, delay_ms: float, spec: StackSpec | None = None
) -> str:
    """`fanout measure`'s answer: timings, what each upstream saw, loop lag, efficiency; the
    header lists each upstream's and route's delay where it is not the stack's (`spec`)."""
    from pytest_fanout.diagnosis import efficiency_cell, lag_cause

    lines = [
        f"{method} {m.path} on {app} ({stub_delays(delay_ms, spec)},"
        f" {len(m.samples)} samples after a warm-up)",
        f"  median            {m.median_s * 1000:.1f} ms",
        f"  p95               {m.p95_s * 1000:.1f} ms",
    ]
    if m.first_byte_median_s is not None:
        lines.append(f"  first byte        {m.first_byte_median_s * 1000:.1f} ms (median)")
    upstreams = _upstream_rows(m)
    for name, requests, peak, connections in upstreams:
        lines.append(
            f"  {name:<17} requests {requests}, peak in flight {peak},"
            f" new connections {connections}"
        )
    for name in m.upstream_names:
        g = m.upstream(name)
        label = "upstream" if name == DEFAULT_UPSTREAM else name
        if g.after_disconnect_per_sample:
            lines.append(
                f"  {label:<17} {g.after_disconnect} calls ran on after the hang-up at"
                f" {(m.disconnect_after_s or 0) * 1000:.0f} ms (per sample"
                f" {g.after_disconnect_per_sample})"
            )
        elif g.orphaned:
            lines.append(
                f"  {label:<17} {g.orphaned} calls orphaned: still running after the answer"
                f" (per sample {g.orphaned_per_sample})"
            )
    if m.structure:
        waves = ", ".join(f"{name} {waves}" for name, waves in m.structure.items())
        lines.append(f"  held waves        {waves} (the structure, exact)")
    elif m.structure_note:
        lines.append(f"  held waves        - ({m.structure_note})")
    if len(upstreams) > 1:
        lines.append(
            f"  new connections   {m.connections_opened} (all upstreams, the most in one sample)"
        )
    cause = lag_cause(m)
    lines.append(
        f"  loop lag          {m.loop_lag_max_s * 1000:.1f} ms (worst stall)"
        + (f": {cause}" if cause else "")
    )
    if m.ideal_given_s is not None:
        lines.append(
            f"  efficiency        {efficiency_cell(m)}; ideal {m.ideal_s * 1000:.0f} ms (given:"
            " --ideal-s)"
        )
    elif m.ideal_s is not None:
        lines.append(
            f"  efficiency        {efficiency_cell(m)}; ideal {m.ideal_s * 1000:.0f} ms"
            f" (n={m.n}, concurrency {m.concurrency})"
        )
    elif m.upstream_delay_s == 0 and m.ideal_given_s is None:
        lines.append("  efficiency        - (delay 0: no ideal time to compare with)")
    else:
        lines.append("  efficiency        - (give --n and --concurrency for the ideal time)")
    if m.app_errors:
        lines.append(
            f"  errors            {m.app_errors} upstream calls failed (the app's 'errors')"
        )
    lines.extend(_finding_lines(m))
    return "\n".join(lines)


def _finding_lines(m: Measurement) -> list[str]:
    """`fanout measure`'s findings (`diagnose`), the most important first."""
    from pytest_fanout.diagnosis import diagnose

    findings = diagnose(m)
    if not findings:
        return ["  finding           - (nothing wrong found)"]
    return [f"  finding           {f.message}" for f in findings]
