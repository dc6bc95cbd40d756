"""Causes `diagnose()` reads off the structure without `n` (issue 31 item 2): a loop of calls
of one route, a stream that waits for every call, a client built and never closed; and the
timeline's savings said as a bound. Constructed Measurements: exact inputs, exact words."""

from __future__ import annotations

import pytest

from pytest_fanout.assertions import FanoutAssertionError, assert_connection_reuse
from pytest_fanout.diagnosis import diagnose
from pytest_fanout.measurement import Measurement
from pytest_fanout.timeline.calls import Call, RequestTimeline
from pytest_fanout.timeline.findings import paid_repeatedly
from pytest_fanout.timeline.waterfall import Waterfall

ITEM = "GET /item/{i}"


def held(
    waves: list[int], routes: list[str], *, n: int | None = None, samples: int = 3
) -> Measurement:
    calls = sum(waves)
    return Measurement(
        path="/loop",
        samples=[0.1] * samples,
        n=n,
        concurrency=n,
        structure={"up": waves},
        structure_routes={"up": routes},
        upstream_gauges={
            "up": {
                "requests": [calls] * samples,
                "peak_inflight": [max(waves)] * samples,
                "connections": [0] * samples,
                "connections_closed": [0] * samples,
                "connections_live": [1] * samples,
            }
        },
        upstream_delay_s=0.1,
        warmup=1,
    )


def kinds(m: Measurement) -> list[str]:
    return [f.kind for f in diagnose(m)]


# ---- sequential without n ----------------------------------------------------------------


def test_a_loop_of_one_route_is_sequential_with_its_count_and_route() -> None:
    # The service: two calls in turn, then 30 of one route one at a time.
    m = held([1] * 32, ["GET /user/{id}", "GET /org/{id}"] + [ITEM] * 30)
    (finding,) = diagnose(m)
    assert finding.kind == "sequential" and finding.exact
    assert "30 calls of GET /item/{i} made one at a time" in finding.message
    assert "if the calls do not need each other's answers" in finding.message
    assert finding.cell == "sequential: 30 calls of GET /item/{i} one at a time"
    # Same code, same words.
    assert [f.message for f in diagnose(held([1] * 32, m.structure_routes["up"]))] == [
        finding.message
    ]


def test_its_fix_a_gather_is_not_sequential() -> None:
    assert kinds(held([30], [ITEM] * 30)) == []


@pytest.mark.parametrize(
    ("waves", "routes"),
    [
        ([1, 1], [ITEM, ITEM]),  # two calls: maybe two stages
        ([1, 1], ["GET /user/{id}", "GET /orders/{id}"]),  # a two-stage endpoint
        ([1, 1, 1, 1], ["GET /a", "GET /b", "GET /c", "GET /d"]),  # stages, each its own
        ([1, 1, 5, 1, 1], [ITEM] * 9),  # never 3 of one call in a row
    ],
)
def test_calls_in_turn_that_are_no_loop_are_not_sequential(
    waves: list[int], routes: list[str]
) -> None:
    assert kinds(held(waves, routes)) == []


def test_the_longest_run_is_named_and_waves_of_several_break_a_run() -> None:
    m = held([1, 1, 1, 4, 1, 1, 1, 1], [ITEM] * 3 + ["GET /x"] * 4 + ["GET /y"] * 4)
    (finding,) = diagnose(m)
    assert "4 calls of GET /y made one at a time" in finding.message


def test_without_routes_only_n_names_it_as_before() -> None:
    assert kinds(held([1] * 5, [])) == []
    (finding,) = diagnose(held([1] * 5, [], n=5))
    assert finding.message.startswith("sequential: 5 calls to the upstream went one at a time")


# ---- buffered-stream ----------------------------------------------------------------------


def streamed(
    first_byte: float, ups_first: float, ups_last: float, first_end: float, calls: int = 3
) -> Measurement:
    m = held([calls], ["GET /model/{id}"] * calls)
    m.path, m.streamed, m.samples = "/chat", True, [0.95] * 3
    m.first_byte_per_sample = [first_byte, first_byte + 0.002, first_byte - 0.001]
    m.upstream_first_byte_per_sample = [ups_first] * 3
    m.upstream_first_end_per_sample = [first_end] * 3
    m.upstream_last_byte_per_sample = [ups_last] * 3
    return m


def test_a_stream_that_waits_for_every_call_is_buffered_with_both_times() -> None:
    (finding,) = diagnose(streamed(0.913, 0.302, 0.905, first_end=0.33))
    assert finding.kind == "buffered-stream" and not finding.exact
    assert (
        "first byte came at 913 ms, after the upstreams' last byte at 905 ms: the answer waits "
        "for every call" in finding.message
    ), finding.message
    assert "up to 603 ms sooner" in finding.message


def test_a_stream_that_sends_each_answer_as_it_comes_is_not_buffered() -> None:
    assert kinds(streamed(0.332, 0.302, 0.905, first_end=0.33)) == []


def test_streams_that_end_together_buffered_whole_are_named_so() -> None:
    # Three model streams from 120 ms to their ends at 290-292 ms, read whole before the
    # first byte: waiting for all or for the first cannot be told apart; both wait.
    (finding,) = diagnose(streamed(0.300, 0.120, 0.292, first_end=0.290))
    assert "only once the upstreams' answers had ended (290 ms to 292 ms" in finding.message
    assert "waits for whole upstream answers" in finding.message
    # The same streams passed on piece by piece: the first byte before any ended.
    assert kinds(streamed(0.130, 0.120, 0.292, first_end=0.290)) == []


def test_calls_that_answer_at_once_leave_nothing_to_start_sooner() -> None:
    assert kinds(streamed(0.210, 0.2, 0.205, first_end=0.2)) == []


def test_one_sample_whose_first_byte_came_before_is_not_buffered() -> None:
    m = streamed(0.913, 0.302, 0.905, first_end=0.33)
    m.first_byte_per_sample[1] = 0.5
    assert kinds(m) == []


def test_an_answer_not_streamed_is_not_buffered() -> None:
    m = streamed(0.913, 0.302, 0.905, first_end=0.33)
    m.streamed = False
    assert kinds(m) == []


# ---- connection leak vs a small pool --------------------------------------------------------


def conns(opened: list[int], closed: list[int], live: list[int], calls: int = 18) -> Measurement:
    m = held([calls], [ITEM] * calls)
    m.upstream_gauges["up"].update(
        connections=opened, connections_closed=closed, connections_live=live
    )
    return m


def test_connections_never_closed_are_a_leak_not_a_small_pool() -> None:
    m = conns([6, 6, 6], [0, 0, 0], [18, 24, 30])
    (finding,) = diagnose(m)
    assert finding.kind == "connection-leak" and finding.exact
    assert "6 new connections to the upstream in every sample for 18 calls, all left open" in (
        finding.message
    )
    assert "a client built and not closed" in finding.message
    assert "keep-alive pool" not in finding.message
    with pytest.raises(FanoutAssertionError) as caught:
        assert_connection_reuse(m)
    assert "all left open (30 open at the end" in str(caught.value)
    assert "a client built and not closed (a leak), not a small pool" in str(caught.value)
    assert "outliving the request" not in str(caught.value)


def test_a_client_per_call_collected_later_is_a_leak_too() -> None:
    (finding,) = diagnose(conns([6, 6, 6], [0, 0, 0], [36, 36, 36], calls=6))
    assert finding.kind == "connection-leak"
    assert "none closed by the end of its request nor reused by the next" in finding.message


def test_a_small_pool_keeps_its_pool_words() -> None:
    # A constant set open, some new ones closed with the request: a keep-alive pool.
    (finding,) = diagnose(conns([4, 4, 4], [2, 2, 2], [32, 32, 32], calls=6))
    assert finding.kind == "connection-churn"
    assert "a keep-alive pool smaller than the fan-out?" in finding.message
    # New ones that close later, with the set open constant: still a pool, not a leak.
    assert kinds(conns([4, 4, 4], [0, 0, 0], [8, 8, 8], calls=6)) == ["connection-churn"]


def test_the_fix_has_no_connection_finding() -> None:
    assert kinds(conns([0, 0, 0], [0, 0, 0], [6, 6, 6])) == []


def test_connections_of_cancelled_calls_are_not_a_leak() -> None:
    m = conns([3, 3, 3], [0, 0, 0], [3, 6, 9], calls=4)
    m.upstream_gauges["up"]["cut"] = [3, 3, 3]
    assert kinds(m) == []


def test_without_live_counts_older_data_reads_as_before() -> None:
    m = conns([6, 6, 6], [0, 0, 0], [])
    del m.upstream_gauges["up"]["connections_live"]
    assert kinds(m) == ["connection-churn"]


# ---- savings as bounds ------------------------------------------------------------------------


def call(start: float, end: float, path: str) -> Call:
    return Call("llm", "POST", path, "/chat", start, end, 35.0, 200, path)


def three_rounds() -> Waterfall:
    calls = [call(0.0, 0.035, "/a"), call(0.035, 0.07, "/b"), call(0.07, 0.105, "/c")]
    return Waterfall(RequestTimeline("GET", "/answer", 0.11, calls))


def test_a_saving_read_off_the_waterfall_is_said_as_a_bound() -> None:
    (finding,) = paid_repeatedly(three_rounds())
    assert finding.message.startswith("llm: paid 3 times in turn")
    assert "if its calls do not need each other's answers" in finding.message
    assert "(a bound: untested)" in finding.message
    assert finding.tested is False


def test_calls_that_use_each_others_answers_get_no_saving() -> None:
    verdict = "it uses its own answers: llm's later requests changed when its answers changed"
    assert paid_repeatedly(three_rounds(), {"llm": verdict}) == []


def test_calls_tested_independent_get_the_saving_without_the_if() -> None:
    (finding,) = paid_repeatedly(three_rounds(), {"llm": "independent"})
    assert "do not need each other's answers (they asked the same" in finding.message
    assert "a bound" not in finding.message and finding.tested
