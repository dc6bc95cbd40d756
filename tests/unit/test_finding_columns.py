"""The finding column where users look: the terminal summary and `fanout patterns`."""

from __future__ import annotations

from pytest_fanout.cli.patterns import PatternRow, patterns_table
from pytest_fanout.measurement import Measurement
from pytest_fanout.plugin import summary_table

STALL = {
    "duration_s": 0.5,
    "stacks": [
        {
            "count": 40,
            "frames": [
                {"file": "/srv/app/app/fanout.py", "line": 144, "function": "call_in_sequence"},
                {"file": "<built-in>", "line": 0, "function": "time.sleep"},
            ],
        }
    ],
}


def measurement(path: str, lag_s: float, stalls: list[dict]) -> Measurement:
    return Measurement(
        path=path,
        samples=[0.5],
        upstream_requests_per_sample=[5],
        upstream_peak_per_sample=[1],
        loop_lag_per_sample=[lag_s],
        n=5,
        concurrency=1,
        upstream_delay_s=0.1,
        stalls=stalls,
        test="tests/test_x.py::test_blocking",
    )


def test_the_summary_row_ends_with_the_finding() -> None:
    blocked = measurement("/blocking/5", 0.5, [STALL])
    healthy = measurement("/sync/5", 0.002, [])
    headers, rows = summary_table([blocked, healthy])
    assert headers[-1] == "finding" and "first byte" not in headers
    assert rows[0][-1] == (
        "blocks the loop: /srv/app/app/fanout.py:144 in call_in_sequence -> time.sleep"
    )
    assert rows[1][-1] == "-"


def test_the_patterns_table_has_a_finding_column() -> None:
    table = patterns_table(
        [PatternRow("blocking (anti-pattern)", measurement("/b/5", 0.5, [STALL]))]
    )
    header, _, row = table.splitlines()
    assert header.split()[-1] == "finding"
    assert row.endswith(
        "blocks the loop: /srv/app/app/fanout.py:144 in call_in_sequence -> time.sleep"
    )


def test_the_summary_shows_each_upstreams_peak_when_there_are_several() -> None:
    one = measurement("/sync/5", 0.002, [])
    two = measurement("/forecast", 0.002, [])
    two.upstream_gauges = {
        "geo": {"requests": [1], "peak_inflight": [1], "connections": [0]},
        "stations": {"requests": [9], "peak_inflight": [3], "connections": [0]},
    }
    _, rows = summary_table([one, two])
    assert rows[0][4] == 1
    assert rows[1][4] == "geo 1, stations 3"


def test_a_streamed_answer_adds_a_first_byte_column() -> None:
    plain = measurement("/sync/5", 0.002, [])
    chat = measurement("/chat", 0.002, [])
    chat.streamed, chat.first_byte_per_sample = True, [0.25]
    headers, rows = summary_table([plain, chat])
    column = headers.index("first byte")
    assert headers[-1] == "finding"
    assert [row[column] for row in rows] == ["-", "250.0 ms"]
