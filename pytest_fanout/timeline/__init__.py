"""Where the time goes: per-request waterfalls of upstream calls, and causal weights.

The stubs log every call (`servers/calllog.py`); a request's calls are those
that arrived inside its window. `Waterfall` draws them (terminal, Mermaid,
SVG/PNG), `findings` reads what they show with the milliseconds at stake,
and `critical_path` slows each upstream on purpose to measure how many times
the endpoint pays it.
"""

from pytest_fanout.timeline.calls import Call, RequestTimeline
from pytest_fanout.timeline.causal import CriticalPath, Target, critical_path
from pytest_fanout.timeline.findings import TimelineFinding, static_findings, tested_findings
from pytest_fanout.timeline.groups import Group
from pytest_fanout.timeline.portable import WeightChange, waterfall_markdown, weight_changes
from pytest_fanout.timeline.waterfall import Waterfall, WaterfallError

__all__ = [
    "Call",
    "CriticalPath",
    "Group",
    "RequestTimeline",
    "Target",
    "TimelineFinding",
    "Waterfall",
    "WaterfallError",
    "WeightChange",
    "critical_path",
    "static_findings",
    "tested_findings",
    "waterfall_markdown",
    "weight_changes",
]
