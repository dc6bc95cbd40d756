"""The waterfall as an SVG or PNG image, drawn by matplotlib (an optional dependency).

A bare `Figure` (no pyplot): no global backend switched, no figure left open in
the user's process. SVG text stays text (`svg.fonttype: none`: small, searchable)
and its ids are salted the same way every time, so one waterfall gives one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pytest_fanout.artifacts import mask_text, write_figure

if TYPE_CHECKING:
    from pytest_fanout.timeline.waterfall import Waterfall

#: Colours: the app alone in grey, each upstream its own colour from matplotlib's cycle.
APP_COLOUR = "#9e9e9e"
_SVG_SETTINGS = {"svg.fonttype": "none", "svg.hashsalt": "pytest-fanout"}


def save_image(waterfall: Waterfall, target: Path) -> None:
    """One horizontal bar per row of the waterfall (each call of a group drawn), on a
    millisecond axis."""
    from pytest_fanout.timeline.waterfall import WaterfallError

    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise WaterfallError(
            f"saving {target.name} needs matplotlib: pip install 'pytest-fanout[bench]' "
            "(or save as .txt, .mmd, .md or .json)"
        ) from None

    rows = waterfall.rows()
    groups = {(g.label, g.start_s): g for g in waterfall.groups}
    palette = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {name: palette[i % len(palette)] for i, name in enumerate(waterfall.upstreams)}
    figure = Figure(figsize=(10, 1.0 + 0.32 * max(len(rows), 1)))
    axes = figure.subplots()
    for index, (kind, label, start, end, note) in enumerate(rows):
        colour = APP_COLOUR if kind == "app" else colours[label.split(" ", 1)[0]]
        width_ms = max((end - start) * 1000, 0.05)
        group = groups.get((label, start)) if kind == "call" else None
        if group is None:
            axes.barh(index, width_ms, left=start * 1000, color=colour, height=0.6)
        else:  # each call, so one at a time shows as separate bars
            spans = [(c.start_s * 1000, max(c.duration_s * 1000, 0.05)) for c in group.calls]
            axes.broken_barh(spans, (index - 0.3, 0.6), color=colour, alpha=0.85)
        text = f" {(end - start) * 1000:.1f} ms" + (f", {note}" if note else "")
        axes.text((start * 1000) + width_ms, index, text, va="center", fontsize=7)
    axes.set_yticks(range(len(rows)), [mask_text(r[1]) for r in rows], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, waterfall.timeline.duration_s * 1000 * 1.5 or 1)
    axes.set_xlabel("ms since the request was sent")
    axes.set_title(
        f"{mask_text(waterfall.title)}: {waterfall.timeline.duration_s * 1000:.1f} ms, "
        f"{waterfall.calls} call(s)",
        fontsize=10,
    )
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    kind = target.suffix.lstrip(".").lower()
    try:  # drawn in memory, then written atomically
        if kind == "svg":
            with matplotlib.rc_context(_SVG_SETTINGS):
                write_figure(target, figure, format="svg", metadata={"Date": None})
        else:
            write_figure(target, figure, format=kind, dpi=120)
    except OSError as exc:
        raise WaterfallError(f"cannot write {target}: {exc.strerror}") from None
