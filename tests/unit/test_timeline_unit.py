"""The timeline's pure logic: the stub's call log, grouping, renderings, findings and the
weight fit (on a simulated endpoint whose weights are known exactly)."""

from __future__ import annotations

import asyncio
import json
import math
import random
from dataclasses import replace
from typing import Any

import httpx2
import pytest

from pytest_fanout.limits import Behaviour
from pytest_fanout.servers.calllog import CallLog, path_template, perturb_json
from pytest_fanout.servers.upstream import StubUpstream
from pytest_fanout.timeline.calls import Call, RequestTimeline, build_timeline
from pytest_fanout.timeline.causal import (
    LEVELS,
    CriticalPath,
    Target,
    choose_steps,
    count_rounds,
    critical_path,
    design,
    design_runs,
    find_targets,
    fit,
    shape_targets,
    t95,
)
from pytest_fanout.timeline.findings import retries_of, sequential_pairs, static_findings
from pytest_fanout.timeline.groups import app_alone, group_calls, peak_in_flight, rounds
from pytest_fanout.timeline.portable import comparable, waterfall_markdown, weight_changes
from pytest_fanout.timeline.waterfall import Waterfall, WaterfallError, check_target


def call(upstream: str, start: float, end: float, route: str = "/r", digest: str = "") -> Call:
    return Call(
        upstream=upstream,
        method="GET",
        path=route,
        route=route,
        start_s=start,
        end_s=end,
        delay_ms=(end - start) * 1000,
        status=200,
        digest=digest or f"{upstream}{route}{start}",
    )


# ---- the stub's call log --------------------------------------------------------------


def test_call_log_keeps_a_call_from_arrival_to_answer() -> None:
    log = CallLog()
    entry = log.arrive("GET", "/stock/7", b"q=1", b"")
    assert log.plan(entry, "/stock/{sku}", 40.0) == 40.0
    log.answer(entry, 200)
    (only,) = log.select()
    assert only["route"] == "/stock/{sku}" and only["delay_ms"] == 40.0
    assert only["status"] == 200 and only["answered_s"] >= only["arrival_s"] > 0


def test_call_log_is_bounded_and_counts_what_it_dropped() -> None:
    log = CallLog(max_calls=3)
    for i in range(5):
        log.arrive("GET", f"/{i}", b"", b"")
    assert [c["path"] for c in log.select()] == ["/2", "/3", "/4"]
    assert log.seen == 5


def test_same_request_same_digest_and_any_difference_changes_it() -> None:
    log = CallLog()
    a = log.arrive("POST", "/q", b"", b'{"a":1}')
    b = log.arrive("POST", "/q", b"", b'{"a":1}')
    c = log.arrive("POST", "/q", b"", b'{"a":2}')
    d = log.arrive("POST", "/q", b'{"a":1}', b"")  # query and body are not confused
    assert a[7] == b[7] and len({a[7], c[7], d[7]}) == 3


def test_window_selects_calls_by_arrival() -> None:
    log = CallLog()
    for i in range(3):
        log.arrive("GET", f"/{i}", b"", b"")
    times = [c["arrival_s"] for c in log.select()]
    assert [c["path"] for c in log.select(times[1], times[2])] == ["/1", "/2"]


def test_extra_delay_reaches_only_its_route_and_never_goes_below_zero() -> None:
    log = CallLog()
    log.configure({"extra_ms": 30, "extra_route": "GET /stock/{sku}"})
    stock = log.arrive("GET", "/stock/1", b"", b"")
    other = log.arrive("GET", "/price/1", b"", b"")
    assert log.plan(stock, "/stock/{sku}", 40.0) == 70.0
    assert log.plan(other, "/price/{sku}", 40.0) == 40.0
    log.configure({"extra_ms": -30, "extra_route": ""})
    assert log.plan(log.arrive("GET", "/x", b"", b""), None, 10.0) == 0.0


def test_several_routes_of_one_stub_take_their_own_extra_at_once() -> None:
    log = CallLog()
    log.configure({"extra_ms": 0, "extra_routes": {"GET /stock/{sku}": 5, "GET /items/{id}": -4}})
    stock = log.arrive("GET", "/stock/1", b"", b"")
    item = log.arrive("GET", "/items/7", b"", b"")
    other = log.arrive("GET", "/price/1", b"", b"")
    assert log.plan(stock, "/stock/{sku}", 40.0) == 45.0
    assert log.plan(item, None, 10.0) == 6.0
    assert log.plan(other, "/price/{sku}", 40.0) == 40.0
    log.configure({"extra_routes": {}})
    assert log.plan(log.arrive("GET", "/stock/2", b"", b""), "/stock/{sku}", 40.0) == 40.0


def test_a_route_less_path_is_matched_by_its_folded_template() -> None:
    log = CallLog()
    log.configure({"extra_ms": 5, "extra_route": "GET /items/{id}"})
    entry = log.arrive("GET", "/items/33", b"", b"")
    assert log.plan(entry, None, 10.0) == 15.0
    assert log.select()[0]["route"] == "/items/{id}"


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/items/33", "/items/{id}"),
        ("/u/3fa85f64-5717-4562-b3fc-2c963f66afa6/x", "/u/{id}/x"),
        ("/stock/A1", "/stock/A1"),
        ("/v1/users", "/v1/users"),
        ("/", "/"),
    ],
)
def test_path_template_folds_ids_only(path: str, template: str) -> None:
    assert path_template(path) == template


def test_perturb_changes_every_number_and_string_and_keeps_the_shape() -> None:
    value = {"sku": "A", "n": 3, "p": 2.5, "ok": True, "none": None, "list": [1, "b"]}
    assert perturb_json(value) == {
        "sku": "Ax",
        "n": 4,
        "p": 3.5,
        "ok": True,
        "none": None,
        "list": [2, "bx"],
    }


def test_shape_perturbs_json_of_its_route_only_and_marks_it() -> None:
    log = CallLog()
    log.configure({"perturb": True, "perturb_route": "GET /a"})
    a = log.arrive("GET", "/a", b"", b"")
    log.plan(a, "/a", 0)
    b = log.arrive("GET", "/b", b"", b"")
    log.plan(b, "/b", 0)
    assert log.shape(a, b'{"n":1}') == b'{"n":2}' and a[8] is True
    assert log.shape(b, b'{"n":1}') == b'{"n":1}' and b[8] is False
    assert log.shape(a, b"not json") == b"not json"


@pytest.mark.parametrize(
    "settings",
    [
        {"extra_ms": "5"},
        {"extra_ms": True},
        {"extra_ms": 1e9},
        {"extra_ms": float("nan")},
        {"perturb": 1},
        {"extra_route": 3},
        {"extra_routes": ["GET /a"]},
        {"extra_routes": {"GET /a": "5"}},
        {"extra_routes": {"GET /a": float("nan")}},
        {"extra_routes": {"GET /a": 1e9}},
        {"max_calls": -1},
        {"colour": "red"},
    ],
)
def test_bad_settings_are_refused_and_change_nothing(settings: dict[str, Any]) -> None:
    log = CallLog()
    with pytest.raises(ValueError):
        log.configure(settings)
    assert log.settings() == CallLog().settings()


# ---- timelines and groups -------------------------------------------------------------


def test_build_timeline_places_calls_in_the_window_and_clips_unanswered_ones() -> None:
    raw = {
        "a": [
            {
                "arrival_s": 10.010,
                "answered_s": 10.050,
                "method": "GET",
                "path": "/x/1",
                "route": "/x/{id}",
                "delay_ms": 40.0,
                "status": 200,
                "digest": "d1",
            },
            {
                "arrival_s": 10.020,
                "answered_s": 0.0,
                "method": "GET",
                "path": "/y",
                "route": "",
                "delay_ms": 0.0,
                "status": 0,
                "digest": "d2",
            },
        ]
    }
    timeline = build_timeline(raw, "GET", "/p", 10.0, 10.1)
    first, second = timeline.calls
    assert first.start_s == pytest.approx(0.010) and first.end_s == pytest.approx(0.050)
    assert second.route == "/y" and second.end_s == pytest.approx(0.1)
    assert RequestTimeline.from_dict(json.loads(json.dumps(timeline.to_dict()))) == timeline


def test_groups_fold_a_gather_interleaved_with_another_upstream() -> None:
    calls = [
        call("auth", 0.000, 0.030),
        call("inv", 0.031, 0.071, "/stock"),
        call("rev", 0.0312, 0.056, "/reviews"),
        call("inv", 0.0314, 0.072, "/stock"),
        call("rev", 0.0316, 0.057, "/reviews"),
        call("inv", 0.0318, 0.073, "/stock"),
        call("price", 0.074, 0.104, "/q"),
        call("price", 0.105, 0.135, "/q"),
        call("inv", 0.136, 0.156, "/stock"),  # a new round of the same kind
    ]
    groups = group_calls(calls)
    assert [(g.upstream, g.count) for g in groups] == [
        ("auth", 1),
        ("inv", 3),
        ("rev", 2),
        ("price", 2),
        ("inv", 1),
    ]
    assert groups[1].note == "all at once" and groups[3].note == "one at a time"
    assert [round(a, 3) for a, _ in rounds([c for c in calls if c.upstream == "inv"])] == [
        0.031,
        0.136,
    ]


def test_peak_frees_a_slot_before_a_start_at_the_same_instant() -> None:
    assert peak_in_flight([call("a", 0, 1), call("a", 1, 2)]) == 1
    assert peak_in_flight([call("a", 0, 1), call("a", 0.5, 2), call("a", 0.7, 3)]) == 3


def test_app_alone_is_the_time_no_call_covers() -> None:
    gaps = app_alone([call("a", 0.01, 0.03), call("b", 0.02, 0.05), call("c", 0.06, 0.07)], 0.1)
    assert [(round(a, 3), round(b, 3)) for a, b in gaps] == [(0, 0.01), (0.05, 0.06), (0.07, 0.1)]


def test_two_hundred_calls_in_waves_are_one_line() -> None:
    calls = [
        call("inv", (i // 10) * 0.01, (i // 10 + 1) * 0.01, "/items/{id}", str(i))
        for i in range(200)
    ]
    waterfall = Waterfall(RequestTimeline("GET", "/p", 0.21, calls))
    assert len(waterfall.groups) == 1
    text = str(waterfall)
    assert "inv GET /items/{id} x200" in text and text.endswith("@200.0")
    assert "at most 10 at once" in text and "repeated" not in text
    assert len(text.splitlines()) <= 5


def test_text_and_mermaid_show_groups_and_the_app_alone_in_time_order() -> None:
    calls = [call("auth", 0.002, 0.030, "/token"), call("inv", 0.040, 0.080, "/stock")]
    waterfall = Waterfall(RequestTimeline("POST", "/checkout", 0.1, calls))
    lines = str(waterfall).splitlines()
    assert lines[0].startswith("POST /checkout: 100.0 ms, 2 call(s) to 2 upstream(s)")
    labels = [line.split("|")[0].strip() for line in lines[2:]]
    assert labels == ["app alone", "auth GET /token", "app alone", "inv GET /stock", "app alone"]
    mermaid = waterfall.mermaid()
    assert mermaid.startswith("```mermaid\ngantt") and mermaid.endswith("```")
    assert "section auth\n    GET /token :t1, 2, 30\n" in mermaid
    assert "section inv\n    GET /stock :t3, 40, 80\n" in mermaid


def test_save_writes_by_suffix_and_refuses_what_it_cannot(tmp_path: Any) -> None:
    waterfall = Waterfall(RequestTimeline("GET", "/p", 0.05, [call("a", 0.0, 0.04)]))
    assert "a GET /r" in waterfall.save(tmp_path / "w.txt").read_text()
    assert "gantt" in waterfall.save(tmp_path / "w.mmd").read_text()
    again = Waterfall.from_dict(json.loads(waterfall.save(tmp_path / "w.json").read_text()))
    assert str(again) == str(waterfall)
    with pytest.raises(WaterfallError, match="use one of"):
        check_target(tmp_path / "w.gif")
    with pytest.raises(WaterfallError, match="no such folder"):
        check_target(tmp_path / "nope" / "w.txt")


def test_save_svg_draws_with_matplotlib(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    waterfall = Waterfall(RequestTimeline("GET", "/p", 0.05, [call("a", 0.0, 0.04)]))
    svg = waterfall.save(tmp_path / "w.svg").read_text()
    assert "<svg" in svg and "a GET /r" in svg


# ---- findings -------------------------------------------------------------------------


def test_findings_of_a_repeated_call_paid_twice_then_an_unrelated_one() -> None:
    calls = [
        call("auth", 0.00, 0.02, "/user/u1", digest="same"),
        call("auth", 0.02, 0.04, "/user/u1", digest="same"),
        call("rev", 0.04, 0.06, "/by-user/u1"),
    ]
    waterfall = Waterfall(RequestTimeline("GET", "/profile", 0.07, calls))
    found = {f.kind: f for f in static_findings(waterfall)}
    assert set(found) == {"repeated-call", "paid-repeatedly", "sequential-calls"}
    assert found["repeated-call"].ms_at_stake == pytest.approx(20.0)
    assert found["sequential-calls"].tested is False  # read off the waterfall: untested
    ((earlier, later),) = sequential_pairs(waterfall)
    assert (earlier.upstream, later.upstream) == ("auth", "rev")


@pytest.mark.parametrize("status", [429, 503, 0])
def test_retries_of_a_failed_call_are_not_calls_a_cache_would_save(status: int) -> None:
    """Issue 33: 18 tries of one call answered 429 were "the same request 18 times ... a
    cache would save 17"; a retry after a 429, a 5xx or a cut connection is not redundant."""
    failed = [
        replace(call("llm", i * 0.02, i * 0.02 + 0.01, "/v1/chat", "same"), status=status)
        for i in range(3)
    ]
    last = call("llm", 0.06, 0.08, "/v1/chat", digest="same")
    waterfall = Waterfall(RequestTimeline("POST", "/label", 0.1, [*failed, last]))
    assert not {"repeated-call", "paid-repeatedly"} & {f.kind for f in static_findings(waterfall)}
    assert len(retries_of(waterfall.timeline.calls, 0.1)) == 3
    # The same four calls all answered 200: a cache would save three of them.
    answered = [replace(c, status=200) for c in waterfall.timeline.calls]
    again = Waterfall(RequestTimeline("POST", "/label", 0.1, answered))
    (repeated,) = [f for f in static_findings(again) if f.kind == "repeated-call"]
    assert "the same request 4 times" in repeated.message and "save 3 call(s)" in repeated.message


def test_a_repeat_begun_while_the_failed_call_ran_is_not_a_retry() -> None:
    first = replace(call("llm", 0.0, 0.05, "/v1/chat", "same"), status=429)
    second = call("llm", 0.01, 0.03, "/v1/chat", digest="same")
    waterfall = Waterfall(RequestTimeline("POST", "/label", 0.06, [first, second]))
    assert retries_of(waterfall.timeline.calls, 0.06) == []
    assert "repeated-call" in {f.kind for f in static_findings(waterfall)}


def test_the_pair_is_with_the_group_that_ended_last() -> None:
    calls = [call("a", 0.0, 0.02), call("b", 0.0, 0.05), call("c", 0.05, 0.06)]
    waterfall = Waterfall(RequestTimeline("GET", "/p", 0.07, calls))
    assert [(e.upstream, later.upstream) for e, later in sequential_pairs(waterfall)] == [
        ("b", "c")
    ]


# ---- the weight fit -------------------------------------------------------------------


def test_the_fit_recovers_exact_weights_of_a_drifting_endpoint() -> None:
    targets = [Target("a", "", 1, 30, 30), Target("b", "", 1, 30, 30), Target("c", "", 6, 30, 30)]
    rows = design(3, 20)
    # latency = 100 + 2a + 0b + 6c ms, and a machine that drifts +0.5 ms per run.
    runs = []
    for index, row in enumerate(rows):
        changes = [3.0 * level for level in row]
        runs.append((changes, 100 + 2 * changes[0] + 6 * changes[2] + 0.5 * index))
    fit(targets, runs)
    assert [t.weight for t in targets] == [pytest.approx(w, abs=1e-9) for w in (2, 0, 6)]
    assert all(t.half_width == pytest.approx(0, abs=1e-6) for t in targets)
    assert not any(t.bend for t in targets) and targets[0].changed_runs == 16


def test_a_hiccup_of_the_machine_is_left_out_of_the_fit() -> None:
    targets = [Target("a", "", 1, 30, 30), Target("b", "", 1, 30, 30)]
    noise = random.Random(3)
    runs = [
        ([3.0 * row[0], 3.0 * row[1]], 100 + 3.0 * row[0] + noise.gauss(0, 0.3))
        for row in design(2, 20)
    ]
    runs[7] = (runs[7][0], runs[7][1] + 60)  # a 60 ms stall in one run
    fit(targets, runs)
    assert targets[0].weight == pytest.approx(1.0, abs=0.1)
    assert targets[1].weight == pytest.approx(0.0, abs=0.1)
    assert targets[0].half_width < 0.2  # kept in, the stall would widen it past 1


@pytest.mark.parametrize("changed", [1, 2, 3])
def test_a_budget_spent_after_a_few_runs_still_gives_the_weight(changed: int) -> None:
    """The first runs of a target's design (-2 steps, then 0, 0) cannot split its sides or
    its two step sizes; the weight (one slope) stands, with its interval: a loaded runner
    spent `budget_s=4` there and the saved weight had none, so the gate could not judge it."""
    target = Target("default", "", 2, 20, 20, rounds=2, extra_ms=7.0, faster_ms=3.0)
    noise = random.Random(changed)
    runs: list[tuple[list[float], float]] = [([0.0], 44 + noise.gauss(0, 1)) for _ in range(4)]
    for (level,) in design(1, design_runs(1))[:changed]:
        change = target.level_ms(level)
        runs.append(([change], 44 + 2 * change + noise.gauss(0, 1)))
    fit([target], runs)
    assert math.isfinite(target.weight) and math.isfinite(target.half_width)
    assert abs(target.weight - 2) <= target.half_width < 1
    assert math.isnan(target.slower) and math.isnan(target.near) and not target.bend


def test_each_target_takes_every_level_equally_often_in_an_order_of_its_own() -> None:
    rows = design(4, 20)
    for column in range(4):
        levels = [row[column] for row in rows]
        assert sorted(levels) == sorted(list(LEVELS) * 4)
    assert len({tuple(row[c] for row in rows) for c in range(4)}) == 4
    assert design(4, 20) == rows  # the same experiment every time
    assert t95(7) == pytest.approx(2.365) and t95(0) == float("inf")


def test_a_bend_is_found_and_saves_come_from_the_faster_runs() -> None:
    near_tie = Target("inv", "", 1, 40, 40, faster_ms=5.0, extra_ms=5.0)
    # Slower costs 1 ms per ms (its branch overtakes the other), faster saves nothing.
    runs = [
        ([5.0 * level], 100 + max(5.0 * level, 0.0) + 0.01 * (i % 3))
        for i, level in enumerate(row[0] for row in design(1, 20))
    ]
    fit([near_tie], runs)
    assert near_tie.faster == pytest.approx(0.0, abs=0.01)
    assert near_tie.slower == pytest.approx(1.0, abs=0.01)
    assert near_tie.bend and near_tie.saves_per_10ms == pytest.approx(0.0, abs=0.1)


def test_a_slack_used_up_by_the_second_step_is_a_bend() -> None:
    docs = Target("docs", "", 1, 15, 15, faster_ms=5.0, extra_ms=5.0)
    # 5 ms of slack: one step slower costs nothing, the second one 5 ms.
    levels = [row[0] for row in design(1, 20)]
    runs = [
        ([5.0 * level], 100 + max(5.0 * level - 5, 0.0) + 0.01 * (i % 3))
        for i, level in enumerate(levels)
    ]
    fit([docs], runs)
    assert docs.near == pytest.approx(0.0, abs=0.05) and docs.far > 0.4
    assert docs.bend and "the second" in str(CriticalPath("GET", "/p", 0.1, [docs]))


def _calls_of(spans: list[tuple[str, float, float]]) -> RequestTimeline:
    calls = [call(name, start / 1000, end / 1000, f"/{name}") for name, start, end in spans]
    calls.sort(key=lambda c: c.start_s)
    return RequestTimeline("GET", "/p", max(c.end_s for c in calls) + 0.001, calls)


def test_rounds_are_counted_from_the_timeline_not_from_the_calls() -> None:
    semaphore = [("s", 20 * (i // 5) + 0.1 * i, 20 * (i // 5) + 0.1 * i + 19.9) for i in range(30)]
    assert count_rounds(_calls_of(semaphore).calls) == 6
    gather = [("g", 0.2 * i, 0.2 * i + 20) for i in range(20)]
    assert count_rounds(_calls_of(gather).calls) == 1
    assert count_rounds(_calls_of([("p", 31 * i, 31 * i + 30) for i in range(3)]).calls) == 3


def test_slack_and_margin_come_from_the_timeline() -> None:
    timeline = _calls_of(
        [("auth", 0, 20), ("billing", 21, 61), ("docs", 21, 36), ("audit", 62, 72)]
    )
    targets = find_targets(timeline)
    shape_targets(targets, [timeline])
    by_name = {t.upstream: t for t in targets}
    assert by_name["docs"].gap_ms == pytest.approx(25.0)  # billing ran on 25 ms
    assert by_name["billing"].gap_ms == 0.0  # the app alone after it: its own work
    assert by_name["auth"].gap_ms == 0.0
    # A busy app: 6 ms alone between two calls in turn is its own work, not slack.
    busy = _calls_of([("auth", 0, 30), ("stock", 36, 76)])
    (auth, stock) = find_targets(busy)
    shape_targets([auth, stock], [busy])
    assert auth.gap_ms == 0.0 and stock.gap_ms == 0.0
    assert by_name["billing"].margin_ms == pytest.approx(25.0)
    assert by_name["audit"].gap_ms == 0.0  # the app answers after it: its own time
    choose_steps(targets, baseline_ms=72, noise_ms=1.0)
    # Two slower steps stay inside 30% of docs' slack; two faster inside billing's margin.
    assert 2 * by_name["docs"].extra_ms <= 0.3 * 25.0 + 1e-9
    assert 2 * by_name["billing"].faster_ms <= 0.3 * 25.0 + 1e-9
    assert by_name["auth"].extra_ms == 15.0


def test_steps_are_divided_by_the_rounds_not_by_the_calls() -> None:
    semaphore = Target("s", "", 30, 20, 20, rounds=6)
    gather = Target("g", "", 20, 20, 20, rounds=1)
    choose_steps([semaphore, gather], baseline_ms=150, noise_ms=1.0)
    # 15 ms a step / 6 rounds = 2.5 ms a call: raised to the 5 ms floor (30 ms a step).
    assert semaphore.extra_ms == 5.0 and semaphore.extra_ms * semaphore.rounds <= 0.5 * 150
    assert gather.extra_ms == 15.0 and gather.faster_ms == 5.0  # a quarter of its 20 ms
    in_turn = Target("p", "", 12, 30, 30, rounds=3)  # 12 calls, 4 at once, in 3 rounds
    choose_steps([in_turn], baseline_ms=300, noise_ms=10.0)
    assert in_turn.extra_ms == 13.0  # 40 / 3 in whole ms, not 40 / 12


def test_steps_are_whole_milliseconds() -> None:
    # The stub's loop sleeps in whole ms: a step of 1.5 ms would run as 1 or 2 (a biased weight).
    odd = Target("o", "", 7, 20, 20, rounds=7, margin_ms=11.0)
    choose_steps([odd], baseline_ms=200, noise_ms=3.0)
    assert odd.extra_ms == 5.0 and odd.faster_ms == 1.0  # 30 / 7 = 4.3 raised to 5; 1.65 -> 1
    tight = Target("t", "", 1, 20, 20, rounds=1, margin_ms=5.0)  # a step of 0.75 ms faster
    choose_steps([tight], baseline_ms=40, noise_ms=1.0, extra_ms=0.4)
    assert tight.faster_ms == 0.0 and tight.extra_ms == 1.0  # not run faster; 0.4 raised to 1


def test_find_targets_splits_an_upstream_only_when_it_has_several_routes() -> None:
    calls = [call("inv", 0, 0.04, "/stock"), call("inv", 0, 0.04, "/stock")]
    calls += [call("inv", 0.1, 0.12, "/reserve"), call("auth", 0, 0.03, "/token")]
    targets = find_targets(RequestTimeline("GET", "/p", 0.2, calls))
    assert [(t.upstream, t.route, t.calls_per_request) for t in targets] == [
        ("inv", "GET /stock", 2),
        ("inv", "GET /reserve", 1),
        ("auth", "", 1),
    ]


class SimulatedStub:
    """A stub's control client for a simulated endpoint: remembers the extra delay and
    logs its call where the world's structure puts it."""

    def __init__(self, name: str, world: Simulated) -> None:
        self.name, self.world = name, world
        self.control = self

    def get(self, path: str, params: dict) -> Any:
        start, end = self.world.span[self.name]
        calls = [
            {
                "arrival_s": params["since"] + start / 1000,
                "answered_s": params["since"] + end / 1000,
                "method": "GET",
                "path": "/r",
                "route": "/r",
                "delay_ms": self.world.delay_ms[self.name],
                "status": 200,
                "digest": self.name,
            }
        ]
        return _Answer({"calls": calls, "seen": 1})

    def post(self, path: str, json: dict) -> Any:
        self.world.extra[self.name] = json["extra_ms"]
        return _Answer({})


class _Answer:
    status_code = 200

    def __init__(self, data: dict) -> None:
        self.data = data

    def raise_for_status(self) -> _Answer:
        return self

    def json(self) -> dict:
        return self.data


class Simulated:
    """auth, then billing beside docs, then pricing paid 3 times in turn, then the answer:
    latency = 5 + auth + max(billing, docs) + 3 pricing + noise; a clock that moves."""

    def __init__(self, noise_ms: float) -> None:
        self.noise_ms = noise_ms
        self.delay_ms = {"auth": 30.0, "billing": 40.0, "docs": 15.0, "pricing": 20.0}
        self.extra = dict.fromkeys(self.delay_ms, 0.0)
        self.span = {"auth": (0, 30), "billing": (31, 71), "docs": (31, 46), "pricing": (72, 92)}
        self.weights = {"auth": 1.0, "billing": 1.0, "docs": 0.0, "pricing": 3.0}
        self.clock = 1000.0
        self.random = random.Random(7)

    def send(self) -> tuple[float, float]:
        d = {u: self.delay_ms[u] + self.extra[u] for u in self.delay_ms}
        ms = 5 + d["auth"] + max(d["billing"], d["docs"]) + 3 * d["pricing"]
        ms += self.random.gauss(0, self.noise_ms)
        sent = self.clock
        self.clock += ms / 1000 + 0.001
        return sent, sent + ms / 1000


def test_critical_path_recovers_known_weights_and_slack_of_a_noisy_endpoint() -> None:
    world = Simulated(noise_ms=1.0)
    stubs = {name: SimulatedStub(name, world) for name in world.delay_ms}
    lines: list[str] = []
    result = critical_path(
        world.send, stubs, method="GET", path="/p", budget_s=30, progress=lines.append
    )
    for target in result.targets:
        truth = world.weights[target.upstream]
        assert abs(target.weight - truth) <= max(target.half_width, 0.05), str(result)
    assert set(world.extra.values()) == {0.0}  # every extra taken back off
    assert result.slack["docs"] == pytest.approx(25.0, abs=1.5) and result.slack["auth"] == 0.0
    docs = next(t for t in result.targets if t.upstream == "docs")
    assert docs.off_path and math.isnan(docs.saves_per_10ms)
    table = str(result)
    assert "10 ms faster here saves" in table and "off the path: at least 25 ms slower" in table
    # Progress: the plan, each target, then every run, in order.
    assert lines[0].startswith("critical path of GET /p") and len(lines) == 1 + 4 + 10
    assert lines[-1].startswith("  run 10/10: ")


def test_a_path_without_upstream_calls_takes_only_the_unchanged_runs() -> None:
    sent: list[int] = []

    def send() -> tuple[float, float]:
        sent.append(1)
        return float(len(sent)), len(sent) + 0.01

    result = critical_path(send, {}, method="GET", path="/health")
    assert len(sent) == result.runs == 6 and result.targets == []
    assert result.weights == {} and result.baseline_s == pytest.approx(0.01)


def test_critical_path_refuses_a_bad_budget() -> None:
    with pytest.raises(ValueError, match="budget_s"):
        critical_path(lambda: (0.0, 0.0), {}, method="GET", path="/", budget_s=0)


def test_the_app_alone_between_calls_of_one_group_is_in_its_note() -> None:
    calls = [call("p", 0.000, 0.030, "/q", "1"), call("p", 0.035, 0.065, "/q", "2")]
    calls.append(call("p", 0.070, 0.100, "/q", "3"))
    waterfall = Waterfall(RequestTimeline("GET", "/p", 0.1, calls))
    assert [r[1] for r in waterfall.rows()] == ["p GET /q x3"]
    assert waterfall.rows()[0][4] == "one at a time, the app alone 10.0 ms between"
    assert waterfall.app_alone_s == pytest.approx(0.010)


# ---- what the gate reads --------------------------------------------------------------


def _record(weights: dict[str, float], half: float = 0.1) -> dict[str, Any]:
    targets = [
        {"upstream": u, "route": "", "weight": w, "half_width": half} for u, w in weights.items()
    ]
    return {"critical_path": {"targets": targets}}


def test_a_second_round_is_a_regression_from_any_machine() -> None:
    base = _record({"auth": 1.0, "pricing": 1.02})
    now = _record({"auth": 0.97, "pricing": 2.01})
    (change,) = weight_changes(base, now)
    assert change.upstream == "pricing" and change.regressed
    assert "about once -> twice per request" in str(change)


def test_small_or_noisy_changes_and_missing_weights_are_not_structure() -> None:
    assert weight_changes(_record({"a": 1.0}), _record({"a": 1.4})) == []  # under half a round
    assert weight_changes(_record({"a": 1.0}, 0.4), _record({"a": 1.6}, 0.4)) == []  # noise
    assert weight_changes({}, _record({"a": 3.0})) == [] and not comparable({}, _record({}))
    no_interval = {"critical_path": {"targets": [{"upstream": "a", "weight": 2.0}]}}
    assert not comparable(_record({"a": 1.0}), no_interval)


def test_a_new_upstream_on_the_critical_path_is_a_regression() -> None:
    (change,) = weight_changes(_record({"a": 1.0}), _record({"a": 1.0, "b": 1.0}))
    assert change.upstream == "b" and change.base == 0.0 and change.regressed


def test_waterfall_markdown_shows_both_sides_or_nothing() -> None:
    timeline = Waterfall(RequestTimeline("GET", "/p", 0.05, [call("a", 0.0, 0.04)])).to_dict()
    text = waterfall_markdown({"timeline": timeline}, {"timeline": timeline})
    assert text.count("```mermaid") == 2 and "**baseline**" in text and "**now**" in text
    one = waterfall_markdown({}, {"timeline": timeline})
    assert one.count("```mermaid") == 1 and "baseline: no waterfall recorded" in one
    assert waterfall_markdown({}, {}) == ""


# ---- the hook in the stub (its ASGI app in-process) ------------------------------------


def _stub_calls(behaviour: Behaviour, paths: list[str], settings: dict | None = None) -> list:
    stub = StubUpstream(behaviour)

    async def scenario() -> list[dict]:
        async with httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=stub),
            base_url="http://stub",
            headers={"Authorization": f"Bearer {stub.token}"},
        ) as client:
            if settings:
                (await client.post("/__upstream__/timeline", json=settings)).raise_for_status()
            # a dropped call ends the in-process transport with an error: expected
            await asyncio.gather(*(client.get(p) for p in paths), return_exceptions=True)
            return (await client.get("/__upstream__/timeline")).json()["calls"]

    return asyncio.run(scenario())


def test_the_stub_logs_every_call_with_its_status_and_applied_delay() -> None:
    calls = _stub_calls(
        Behaviour(delay_ms=5, max_inflight=2),
        ["/items/1", "/items/2", "/items/3", "/x?status=503"],
        {"extra_ms": 3},
    )
    assert len(calls) == 4
    statuses = sorted(c["status"] for c in calls)
    assert statuses == [200, 200, 429, 429] or statuses == [200, 429, 429, 503]
    served = [c for c in calls if c["status"] != 429]
    assert {c["delay_ms"] for c in served} == {8.0}  # 5 ms + the experiment's 3
    assert all(c["answered_s"] >= c["arrival_s"] for c in calls)


def test_a_dropped_call_is_logged_unanswered() -> None:
    (only,) = _stub_calls(Behaviour(delay_ms=0), ["/x?fault=drop"])
    assert only["status"] == 0 and only["route"] == "/x"


def test_without_matplotlib_an_image_is_refused_in_one_line(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    with pytest.raises(WaterfallError, match=r"needs matplotlib: pip install") as error:
        check_target(tmp_path / "w.png")
    assert "\n" not in str(error.value)
    assert check_target(tmp_path / "w.txt").name == "w.txt"  # text needs nothing


def test_two_groups_started_together_after_one_make_two_pairs() -> None:
    calls = [call("auth", 0.0, 0.03), call("inv", 0.031, 0.07), call("rev", 0.031, 0.05)]
    waterfall = Waterfall(RequestTimeline("GET", "/p", 0.08, calls))
    pairs = [(e.upstream, later.upstream) for e, later in sequential_pairs(waterfall)]
    assert sorted(pairs) == [("auth", "inv"), ("auth", "rev")]


def test_own_time_is_the_timelines_app_alone_not_what_noisy_weights_leave() -> None:
    # Two calls in turn (20 ms each) with 4 ms of the app's own work before, between and
    # after: 12 ms alone. Weights that over-explain the baseline (1.9 and 1.5 for 1 and 1)
    # would leave "own time 0.0 ms"; the timeline says 12.
    calls = [call("a", 0.004, 0.024), call("b", 0.028, 0.048)]
    timeline = RequestTimeline("GET", "/p", 0.052, calls)
    targets = [Target("a", "", 1, 20, 20, weight=1.9), Target("b", "", 1, 20, 20, weight=1.5)]
    result = CriticalPath("GET", "/p", 0.052, targets, timeline=timeline)
    assert result.own_s == pytest.approx(0.012)
    assert "own time 12.0 ms" in str(result)
    assert CriticalPath("GET", "/p", 0.052, targets).own_s == 0.0  # no timeline: the formula


def test_a_refused_call_is_not_the_targets_delay() -> None:
    refused = replace(call("q", 0.0, 0.001), status=429, delay_ms=0.0)
    calls = [call("q", 0.0, 0.020), call("q", 0.0, 0.020), refused]
    (target,) = find_targets(RequestTimeline("GET", "/p", 0.03, calls))
    assert target.calls_per_request == 3
    assert target.delay_ms == pytest.approx(20.0) and target.min_delay_ms == pytest.approx(20.0)
