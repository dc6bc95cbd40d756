"""A waterfall of one request: its upstream calls on a time axis, in three renderings.

`str()` is for a terminal (one line per group of calls, the app's own time
between them), `mermaid()` a Mermaid `gantt` block for a PR summary, and
`save(path)` writes SVG or PNG with matplotlib (or the text, the Mermaid
block, or JSON, by the file's suffix).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from pytest_fanout.artifacts import mask_text, write_figure, write_text
from pytest_fanout.timeline.calls import RequestTimeline
from pytest_fanout.timeline.groups import Group, app_alone, group_calls

#: Width of the bar area of the terminal rendering (characters).
BAR_WIDTH = 48
#: App-alone stretches shorter than this (and than 1% of the request) are not given a line.
MIN_GAP_S = 0.0005
#: Suffixes `save` knows, and what it writes for each.
FORMATS = {
    ".svg": "SVG image",
    ".png": "PNG image",
    ".txt": "terminal text",
    ".mmd": "Mermaid gantt",
    ".md": "Markdown with a Mermaid block",
    ".json": "the calls as JSON",
}


class WaterfallError(ValueError):
    """A waterfall that cannot be drawn or saved; `str()` is one line."""


class Waterfall:
    """One request's calls, grouped, with the app's own time between them."""

    def __init__(self, timeline: RequestTimeline, *, title: str | None = None) -> None:
        self.timeline = timeline
        self.groups: list[Group] = group_calls(timeline.calls)
        #: Stretches with no upstream call in flight (seconds since the request was sent).
        self.app_alone: list[tuple[float, float]] = app_alone(timeline.calls, timeline.duration_s)
        self.title = title or f"{timeline.method} {timeline.path}"

    @property
    def calls(self) -> int:
        return len(self.timeline.calls)

    @property
    def upstreams(self) -> list[str]:
        """Upstreams in order of their first call."""
        return list(dict.fromkeys(g.upstream for g in self.groups))

    @property
    def app_alone_s(self) -> float:
        return sum(end - start for start, end in self.app_alone)

    def rows(self) -> list[tuple[str, str, float, float, str]]:
        """(kind "app"/"call", label, start_s, end_s, note) in time order: what every
        rendering draws. App-alone stretches between the calls of one group go in its note;
        short ones are left out of the rows (not of the total)."""
        floor = max(MIN_GAP_S, 0.01 * self.timeline.duration_s)
        inside = [0.0] * len(self.groups)
        rows = []
        for a, b in self.app_alone:
            holder = next(
                (i for i, g in enumerate(self.groups) if g.start_s < a and b < g.end_s), None
            )
            if holder is not None:  # between the calls of one group: said in its note
                inside[holder] += b - a
            elif b - a >= floor:
                rows.append(("app", "app alone", a, b, ""))
        for group, between in zip(self.groups, inside, strict=True):
            note = group.note
            if between >= floor:
                note += f"{', ' if note else ''}the app alone {between * 1000:.1f} ms between"
            rows.append(("call", group.label, group.start_s, group.end_s, note))
        rows.sort(key=lambda r: (r[2], r[0] == "call"))
        return rows

    # ---- terminal ---------------------------------------------------------------------

    def __str__(self) -> str:
        duration = self.timeline.duration_s
        head = (
            f"{self.title}: {duration * 1000:.1f} ms, {self.calls} call(s) to "
            f"{len(self.upstreams)} upstream(s) in {len(self.groups)} group(s); "
            f"the app alone {self.app_alone_s * 1000:.1f} ms"
        )
        rows = self.rows()
        if not rows:
            return head
        width = max(len(r[1]) for r in rows)
        axis_end = f"{duration * 1000:.0f} ms"
        lines = [
            head,
            " " * (width + 3) + "0 ms".ljust(BAR_WIDTH - len(axis_end) + 2) + axis_end,
        ]
        for kind, label, start, end, note in rows:
            bar = _bar(start, end, duration, "." if kind == "app" else "#")
            took = f"{(end - start) * 1000:7.1f} ms"
            at = f"@{start * 1000:.1f}"
            lines.append(f"  {label.ljust(width)} |{bar}| {took} {at}  {note}".rstrip())
        return "\n".join(lines)

    # ---- Mermaid ----------------------------------------------------------------------

    def mermaid(self) -> str:
        """A ```mermaid gantt block: one section per upstream (and one for the app alone),
        in whole milliseconds (a stretch under 1 ms is drawn as 1 ms)."""
        lines = [
            "```mermaid",
            "gantt",
            f"    title {_mermaid_text(self.title)} ({self.timeline.duration_s * 1000:.0f} ms)",
            "    dateFormat x",
            "    axisFormat %S.%L s",
        ]
        sections: dict[str, list[str]] = {}
        for index, (kind, label, start, end, note) in enumerate(self.rows()):
            section = "app" if kind == "app" else label.split(" ", 1)[0]
            name = label if kind == "app" else label.split(" ", 1)[1]
            if note:
                name += f" ({note})"
            # Whole milliseconds: Mermaid's `x` date format reads integers only.
            begin = round(start * 1000)
            finish = max(round(end * 1000), begin + 1)
            entry = f"    {_mermaid_text(name)} :t{index}, {begin}, {finish}"
            sections.setdefault(section, []).append(entry)
        for section, entries in sections.items():
            lines.append(f"    section {_mermaid_text(section)}")
            lines.extend(entries)
        lines.append("```")
        return "\n".join(lines)

    # ---- files ------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the waterfall; the format follows the suffix (.svg, .png, .txt, .mmd, .md,
        .json). SVG and PNG need matplotlib (pip install 'pytest-fanout[bench]')."""
        target = check_target(path)
        suffix = target.suffix.lower()
        if suffix in (".svg", ".png"):
            _save_image(self, target)
            return target
        if suffix == ".txt":
            text = str(self) + "\n"
        elif suffix == ".mmd":
            text = self.mermaid().split("\n", 1)[1].rsplit("\n", 1)[0] + "\n"
        elif suffix == ".md":
            text = f"{self.mermaid()}\n\n```\n{self}\n```\n"
        else:
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        try:
            write_text(target, text)
        except OSError as exc:
            raise WaterfallError(f"cannot write {target}: {exc.strerror}") from None
        return target

    def findings(self) -> list[Any]:
        """What this waterfall shows without an experiment (TimelineFinding), the most ms
        first; `fanout.timeline_findings(...)` also tests whether sequential calls could
        have run together."""
        from pytest_fanout.timeline.findings import static_findings

        return static_findings(self)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, **self.timeline.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Waterfall:
        return cls(RequestTimeline.from_dict(data), title=data.get("title"))

    def __repr__(self) -> str:
        return (
            f"<Waterfall {self.title} {self.timeline.duration_s * 1000:.1f}ms "
            f"calls={self.calls} groups={len(self.groups)}>"
        )


def check_target(path: str | Path) -> Path:
    """`path` as a Path if a waterfall can be saved there (known suffix, an existing folder,
    matplotlib for images); a WaterfallError in one line otherwise. Cheap: call it before
    a long measurement."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        raise WaterfallError(f"cannot save a waterfall as {target.name!r}: use one of {known}")
    if not target.parent.is_dir():
        raise WaterfallError(f"cannot save a waterfall in {target.parent}: no such folder")
    if suffix in (".svg", ".png") and importlib.util.find_spec("matplotlib") is None:
        raise WaterfallError(
            f"saving {target.name} needs matplotlib: pip install 'pytest-fanout[bench]' "
            "(or save as .txt, .mmd, .md or .json)"
        )
    return target


def _bar(start: float, end: float, duration: float, mark: str) -> str:
    if duration <= 0:
        return " " * BAR_WIDTH
    first = min(int(start / duration * BAR_WIDTH), BAR_WIDTH - 1)
    last = max(first + 1, min(round(end / duration * BAR_WIDTH), BAR_WIDTH))
    return " " * first + mark * (last - first) + " " * (BAR_WIDTH - last)


def _mermaid_text(text: str) -> str:
    """Mermaid gantt reads ':' and '#' and ';' as syntax: keep them out of names."""
    return re.sub(r"[:#;]", " ", text)


#: Colours: the app alone in grey, each upstream its own colour from matplotlib's cycle.
APP_COLOUR = "#9e9e9e"
_SVG_SETTINGS = {"svg.fonttype": "none", "svg.hashsalt": "pytest-fanout"}


def _save_image(waterfall: Waterfall, target: Path) -> None:
    """One horizontal bar per row of the waterfall (each call of a group drawn), on a
    millisecond axis, by matplotlib (optional): a bare `Figure` (no pyplot), so no global
    backend is switched and no figure is left open in the user's process; SVG text stays
    text and its ids are salted the same way every time (one waterfall, one file)."""
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
