"""diagnose(m) on constructed Measurements: each mistake gives exactly its finding."""

from __future__ import annotations

import sysconfig

import pytest

from pytest_fanout.diagnosis import KINDS, Finding, diagnose, finding_for, headline
from pytest_fanout.measurement import Measurement

HELPERS = "/srv/shop/shop/helpers.py"
SLEEP_STALL = {
    "duration_s": 0.2,
    "stacks": [
        {
            "count": 30,
            "frames": [
                {"file": HELPERS, "line": 14, "function": "load_rates"},
                {"file": "<built-in>", "line": 0, "function": "time.sleep"},
            ],
        }
    ],
}


def gauges(
    samples: int = 3,
    *,
    requests: int | list[int] = 10,
    peak: int | list[int] = 10,
    connections: int | list[int] = 0,
    rejected: int = 0,
    errors: int = 0,
    orphaned: int | None = None,
    after_disconnect: int | None = None,
    cut: int | None = None,
) -> dict[str, list[int]]:
    def per_sample(value: int | list[int]) -> list[int]:
        return list(value) if isinstance(value, list) else [value] * samples

    counts = {
        "requests": per_sample(requests),
        "peak_inflight": per_sample(peak),
        "connections": per_sample(connections),
        "rejected": [rejected] + [0] * (samples - 1),
        "errors": [errors] + [0] * (samples - 1),
    }
    for key, value in (("orphaned", orphaned), ("after_disconnect", after_disconnect)):
        if value is not None:
            counts[key] = per_sample(value)
    if cut is not None:
        counts["cut"] = per_sample(cut)
    return counts


def make(
    *,
    n: int | None = 10,
    concurrency: int | None = 10,
    lag_s: float = 0.004,
    stalls: list[dict] | None = None,
    upstreams: dict[str, dict[str, list[int]]] | None = None,
    samples: int = 3,
    waves: list[int] | None = None,
    delay_s: float = 0.1,
    cpu_s: float | None = None,
    **gauge: int | list[int],
) -> Measurement:
    upstreams = upstreams or {"upstream": gauges(samples, **gauge)}
    first = next(iter(upstreams.values()))
    return Measurement(
        structure={} if waves is None else {next(iter(upstreams)): waves},
        app_cpu_per_sample=[] if cpu_s is None else [cpu_s] * samples,
        path="/quote",
        samples=[0.12] * samples,
        upstream_requests_per_sample=first["requests"],
        upstream_peak_per_sample=first["peak_inflight"],
        loop_lag_per_sample=[lag_s] * samples,
        n=n,
        concurrency=concurrency,
        upstream_delay_s=delay_s,
        upstream_gauges=upstreams,
        stalls=stalls or [],
        warmup=1,
    )


def kinds(m: Measurement) -> list[str]:
    return [f.kind for f in diagnose(m)]


def test_a_healthy_fanout_has_no_finding() -> None:
    m = make()
    assert diagnose(m) == []
    assert headline(m) == "-"


def test_blocks_loop_names_the_line_and_its_margin() -> None:
    m = make(lag_s=0.2, stalls=[SLEEP_STALL], n=1, concurrency=1, requests=1, peak=1)
    (finding,) = diagnose(m)
    assert finding.kind == "blocks-loop"
    assert not finding.exact
    assert "helpers.py:14 in load_rates -> time.sleep" in finding.message
    assert "(held it 200 ms, 5.0x the 40 ms limit)" in finding.message


def test_blocks_loop_without_a_stack_says_so() -> None:
    (finding,) = diagnose(make(lag_s=0.2))
    assert finding.kind == "blocks-loop"
    assert "no stack" in finding.message


def test_an_uncaught_lag_the_app_spent_waiting_for_a_cpu_is_no_block() -> None:
    """A field run on a busy runner: a Flask route that held nothing read "blocks the loop:
    no stack ... stalled 100 ms". The sampler caught no stall because its own thread waited
    for a CPU with the loop; the sample's wait for a CPU says so, and the lag is the
    runner's, not the code's."""
    from pytest_fanout.diagnosis import lag_cause

    busy = make(lag_s=0.1)
    busy.app_wait_per_sample = [0.12, 0.05, 0.1]  # each sample's lag less its wait
    assert busy.blocking_lag_s == pytest.approx(0.05)  # the second: 50 ms still its own
    busy.loop_lag_per_sample = [0.1, 0.004, 0.004]
    busy.app_wait_per_sample = [0.12, 0.0, 0.0]
    assert busy.blocking_lag_s == pytest.approx(0.004)
    assert kinds(busy) == []
    assert lag_cause(busy) == (
        "waited for a CPU, the runner was busy: the app's threads waited 100 ms for one in "
        "that sample (the stack sampler caught no stall)"
    )
    # The wait explains only part of it: the rest still blocks, and the words say both.
    held = make(lag_s=0.1)
    held.app_wait_per_sample = [0.03, 0.0, 0.0]
    held.loop_lag_per_sample = [0.1, 0.004, 0.004]
    (finding,) = diagnose(held)
    assert finding.kind == "blocks-loop"
    assert "stalled 70 ms, 1.8x the 40 ms limit, besides 30 ms the app waited for a CPU" in (
        finding.message
    )
    # No figure for a sample's wait (not Linux, an older record): the raw lag, as before.
    unknown = make(lag_s=0.1)
    unknown.app_wait_per_sample = [None, 0.2, 0.2]
    assert unknown.blocking_lag_s == pytest.approx(0.1) and kinds(unknown) == ["blocks-loop"]


def test_a_blocked_loop_never_displaces_the_exact_sequential_finding() -> None:
    m = make(lag_s=0.2, stalls=[SLEEP_STALL], peak=1, waves=[1] * 10)
    assert kinds(m) == ["sequential", "blocks-loop"]


def test_sequential_is_exact_from_the_held_waves() -> None:
    (finding,) = diagnose(make(peak=1, waves=[1] * 10))
    assert finding == Finding(
        "sequential",
        "sequential: 10 calls to the upstream went one at a time (held waves [1] x 10) "
        "though /quote asks for concurrency 10: each call is awaited before the next "
        "(an `await` in a loop, or a blocking call)",
        exact=True,
    )
    assert finding.cell == "sequential: peak 1 of 10"


def test_without_a_held_probe_the_timed_peaks_stand_in_at_a_long_enough_delay() -> None:
    (finding,) = diagnose(make(peak=1))
    assert "(timed peak 1 in every sample)" in finding.message
    assert diagnose(make(peak=1, delay_s=0.0)) == []  # at delay 0 a gather peaks at 1 too
    assert diagnose(make(peak=4, delay_s=0.01)) == []


def test_a_gather_at_delay_zero_is_never_sequential_and_says_the_delay_is_too_short() -> None:
    m = make(peak=1, waves=[50], delay_s=0.0, n=50, concurrency=50, requests=50)
    (finding,) = diagnose(m)
    assert finding.kind == "delay-too-short" and not finding.exact
    assert "held probe shows 50 in flight at once" in finding.message


def test_a_lower_timed_peak_where_calls_were_refused_with_429_is_not_a_slow_client() -> None:
    # 3 at once in the held probe, 1 in the timed samples because the limit answered 3 of
    # 4 calls at once with 429 (fanout measure --rate-limit 2/min): not the client's speed.
    refused = make(peak=1, waves=[3, 1], n=None, concurrency=None, requests=4, rejected=3)
    assert "slow-client" not in [f.kind for f in diagnose(refused)]
    # (a CPU per call that can explain the lower peak: 50 ms each, 150 ms to issue 3)
    fix = make(peak=1, waves=[3, 1], n=None, concurrency=None, requests=4, cpu_s=0.2)
    assert "slow-client" in [f.kind for f in diagnose(fix)]


def test_a_lower_timed_peak_paced_to_the_upstreams_rate_limit_is_not_a_slow_client() -> None:
    """Gathered behind aiolimiter at the upstream's own limit, nothing refused: the limiter
    spaced the calls, so a lower timed peak says nothing of the client's speed (a field run
    on a quote service read "slow client ... timed samples reached 5" for 30 calls behind
    AsyncLimiter(10, 1) against 10/s)."""
    paced = make(peak=1, waves=[3, 1], n=None, concurrency=None, requests=4, cpu_s=0.2)
    paced.upstream_limits = {"upstream": {"rate_limit": "20/s", "per_s": 20.0, "burst": 20}}
    paced.sample_windows = [(0.0, 0.2)] * 3  # 4 calls in 0.2 s: 20 a second
    assert paced.upstream().calls_per_s is not None and paced.upstream().calls_per_s >= 10
    assert "slow-client" not in [f.kind for f in diagnose(paced)]
    # The same calls far under the limit (the pace is not the limit's): still named.
    slow = make(peak=1, waves=[3, 1], n=None, concurrency=None, requests=4, cpu_s=0.2)
    slow.upstream_limits = {"upstream": {"rate_limit": "1000/s", "per_s": 1000.0}}
    slow.sample_windows = [(0.0, 0.2)] * 3
    assert "slow-client" in [f.kind for f in diagnose(slow)]


def test_a_full_structure_with_a_lower_timed_peak_is_a_slow_client_not_a_pool_cap() -> None:
    m = make(peak=[21, 12, 30], waves=[100], n=100, concurrency=100, requests=100, cpu_s=0.25)
    (finding,) = diagnose(m)
    assert finding.kind == "slow-client" and not finding.exact
    assert finding.message == (
        "slow client: the code puts 100 calls in flight at once at the upstream (held probe) "
        "but the timed samples reached 30 at the 100 ms delay: the client cannot issue calls "
        "as fast as the upstream answers; the app spends 2.50 ms of CPU per call (250 ms for "
        "100 calls), so issuing 100 takes about 250 ms: at a delay above that the timed peak "
        "would reach 100"
    )
    assert "pool" not in finding.message and "semaphore" not in finding.message


def test_a_capped_structure_is_a_pool_cap_with_its_number_and_knobs() -> None:
    m = make(peak=[79, 62, 70], waves=[100, 100], n=200, concurrency=200, requests=200)
    (cap, slow) = diagnose(m)
    assert (cap.kind, slow.kind) == ("pool-cap", "slow-client")
    assert cap.message.startswith(
        "pool cap: at most 100 calls in flight at once at the upstream (held waves "
        "[100, 100]), though /quote asks for 200: a limit of 100 caps them (httpx.Limits("
    )
    assert "aiohttp" in cap.message and "Semaphore" in cap.message
    semaphore = make(peak=7, waves=[7, 7, 7, 7, 7, 5], n=40, concurrency=40, requests=40)
    assert kinds(semaphore) == ["pool-cap"]
    asked_for = make(peak=7, waves=[7, 7, 7, 7, 7, 5], n=40, concurrency=7, requests=40)
    assert diagnose(asked_for) == []


def test_sequential_needs_a_wider_concurrency() -> None:
    assert diagnose(make(peak=1, concurrency=1)) == []
    assert diagnose(make(peak=1, n=None, concurrency=None)) == []


def test_a_connection_per_call_is_no_reuse() -> None:
    assert kinds(make(connections=10)) == ["no-connection-reuse"]


def test_new_connections_fewer_than_calls_are_churn() -> None:
    (finding,) = diagnose(make(connections=8))
    assert finding.kind == "connection-churn"
    assert finding.message.startswith("connection churn: 8 new connections to the upstream")


def test_churn_must_happen_in_every_sample() -> None:
    assert diagnose(make(connections=[3, 0, 0])) == []


def test_the_same_timed_peak_below_the_asked_width_is_a_pool_cap_without_structure() -> None:
    (finding,) = diagnose(make(peak=4))
    assert finding.kind == "pool-cap"
    assert finding.exact
    assert "at most 4 calls in flight" in finding.message


def test_a_varying_peak_or_a_single_sample_is_not_a_pool_cap() -> None:
    assert diagnose(make(peak=[4, 6, 5])) == []
    assert diagnose(make(peak=4, samples=1)) == []


def test_429s_are_not_also_a_pool_cap() -> None:
    (finding,) = diagnose(make(peak=3, rejected=21, requests=10))
    assert finding.kind == "upstream-429"
    assert "refused 21 of 30 calls with 429" in finding.message


def test_error_statuses() -> None:
    (finding,) = diagnose(make(errors=30))
    assert finding.kind == "upstream-errors"
    assert finding.message == (
        "upstream errors: the upstream answered 30 of 30 calls with an error status"
    )


def test_findings_come_in_order_of_importance() -> None:
    m = make(peak=1, connections=10, errors=3, lag_s=0.004)
    assert kinds(m) == ["sequential", "no-connection-reuse", "upstream-errors"]
    assert [k for k in KINDS if k in kinds(m)] == kinds(m)
    assert headline(m).endswith("(+2 more)")
    assert finding_for(m, "upstream-errors").kind == "upstream-errors"
    assert finding_for(m, "pool-cap") is None


def test_each_upstream_is_diagnosed_by_name() -> None:
    m = make(
        upstreams={
            "inventory": gauges(requests=10, peak=10),
            "pricing": gauges(requests=10, peak=10, rejected=4),
        }
    )
    (finding,) = diagnose(m)
    assert finding.message.startswith("upstream 429: upstream 'pricing' refused 4 of 30")


@pytest.mark.parametrize("peak", [1, 4])
def test_a_saved_measurement_gives_the_same_findings(peak: int) -> None:
    m = make(peak=peak, lag_s=0.2, stalls=[SLEEP_STALL], connections=3)
    again = Measurement.from_dict(m.to_dict())
    assert diagnose(again) == diagnose(m)


def test_a_table_cell_is_a_few_words() -> None:
    assert headline(make(peak=4)) == "pool cap: peak 4 of 10"
    blocked = make(lag_s=0.2, stalls=[SLEEP_STALL], n=1, concurrency=1, requests=1, peak=1)
    assert headline(blocked) == (
        "blocks the loop: /srv/shop/shop/helpers.py:14 in load_rates -> time.sleep"
    )
    two = make(upstreams={"inventory": gauges(), "pricing": gauges(errors=2)})
    assert headline(two) == "upstream errors (pricing): 2 of 30 calls"


def test_without_warm_up_the_first_sample_opening_the_pool_is_not_churn() -> None:
    m = make(connections=[1, 0, 0], requests=20, peak=1, n=20, concurrency=1)
    m.warmup = 0
    assert "connection-churn" not in kinds(m)
    m.upstream_gauges["upstream"]["connections"] = [1, 1, 1]
    assert "connection-churn" in kinds(m)


SITE = "/venv/lib/python3.12/site-packages"
STDLIB = sysconfig.get_paths()["stdlib"]  # the standard library is never "your code"


def _frames(*names: tuple[str, str]) -> list[dict]:
    return [{"file": f, "line": i + 1, "function": fn} for i, (f, fn) in enumerate(names)]


SERIALISE = (
    (f"{SITE}/starlette/routing.py", "app"),
    (f"{SITE}/fastapi/routing.py", "app"),
    (f"{SITE}/fastapi/routing.py", "serialize_response"),
    (f"{SITE}/fastapi/encoders.py", "jsonable_encoder"),
    (f"{SITE}/fastapi/encoders.py", "jsonable_encoder"),
)


@pytest.mark.parametrize("weights", [(9, 3), (3, 9)])
def test_a_stall_in_library_code_gets_the_same_name_whichever_frame_won(weights) -> None:
    """Two runs of the same serialisation stall: the sampler caught `is_dataclass` more
    often in one, `jsonable_encoder` in the other. The name is the library's, both times."""
    stall = {
        "duration_s": 0.6,
        "stacks": [
            {"count": weights[0], "frames": _frames(*SERIALISE)},
            {
                "count": weights[1],
                "frames": _frames(*SERIALISE, (f"{STDLIB}/dataclasses.py", "is_dataclass")),
            },
        ],
    }
    (finding,) = diagnose(make(lag_s=0.6, stalls=[stall]))
    assert finding.message.startswith(
        "blocks the loop: fastapi (serialize_response -> jsonable_encoder) (no frame of your "
        "code) (held it 600 ms"
    ), finding.message


def gc_stall(duration_s: float, gc_s: float, starved_s: float = 0.0) -> dict:
    allocating = _frames(
        ("/srv/shop/shop/service.py", "load"), (f"{STDLIB}/json/decoder.py", "JSONDecoder.decode")
    )
    return {
        "duration_s": duration_s,
        "gc_s": gc_s,
        "gc_collections": 2,
        "gc_generation": 2,
        "starved_s": starved_s,
        "stacks": [
            {
                "count": 6,
                "frames": [
                    *allocating,
                    {"file": "<built-in>", "line": 0, "function": "garbage collection"},
                ],
            },
            {"count": 2, "frames": allocating},
        ],
    }


def test_a_stall_mostly_garbage_collection_is_gc_not_blocking_code() -> None:
    (finding,) = diagnose(make(lag_s=0.09, stalls=[gc_stall(0.09, 0.07)]))
    assert finding.kind == "gc-pauses" and not finding.exact
    assert finding.message.startswith(
        "garbage collection: the loop stalled 90 ms, 70 ms of it in 2 garbage collections "
        "(generation 2) while the code allocated at /srv/shop/shop/service.py:1 in load -> "
        "json.decoder.JSONDecoder.decode"
    ), finding.message


def test_blocking_code_beside_gc_says_how_much_was_gc() -> None:
    kinds_seen = diagnose(make(lag_s=0.2, stalls=[gc_stall(0.2, 0.05)]))
    assert [f.kind for f in kinds_seen] == ["blocks-loop", "gc-pauses"]
    assert "(held it 150 ms" in kinds_seen[0].message
    assert "the stall was 200 ms, 50 ms of it in garbage collection" in kinds_seen[0].message


def test_time_the_loop_waited_for_a_cpu_is_not_blocking() -> None:
    starved = {**SLEEP_STALL, "duration_s": 0.1, "starved_s": 0.08}
    assert diagnose(make(lag_s=0.1, stalls=[starved])) == []


@pytest.mark.parametrize("stall", [SLEEP_STALL, gc_stall(0.09, 0.07), gc_stall(0.03, 0.0)])
def test_the_verdict_does_not_depend_on_the_delay(stall: dict) -> None:
    verdicts = {
        tuple(
            f.message for f in diagnose(make(lag_s=stall["duration_s"], stalls=[stall], delay_s=d))
        )
        for d in (0.05, 0.1, 0.2)
    }
    assert len(verdicts) == 1, verdicts


def leaking() -> Measurement:
    """6 new connections a sample for 18 calls, none ever closed: a client never closed."""
    m = make(connections=6, requests=18)
    m.upstream_gauges["upstream"].update(connections_closed=[0] * 3, connections_live=[6, 12, 18])
    return m


def buffered() -> Measurement:
    """A streamed answer whose first byte came after the upstreams' last one."""
    m = make()
    m.streamed, m.first_byte_per_sample = True, [0.913] * 3
    m.upstream_first_byte_per_sample, m.upstream_last_byte_per_sample = [0.3] * 3, [0.905] * 3
    m.upstream_first_end_per_sample = [0.5] * 3
    return m


def rate_limited_cases() -> list[Measurement]:
    """A rate-limited upstream answering 429 (rate exceeded), immediate retries (a storm),
    short waits (Retry-After ignored) and 8 tries of one call in two layers."""
    limited = {"upstream": {"max_inflight": 0, "rate_limit": "5/s", "per_s": 5.0, "burst": 5}}
    cases = []
    for waited, tries in ((0.001, 2), (0.1, 2), (0.2, 8)):
        waits = [[0, "GET", "/q", 0.2, waited if i % 2 == 0 else 2.0] for i in range(tries - 1)]
        m = make(rejected=5)
        m.upstream_gauges["upstream"].update(
            retries=[tries - 1, 0, 0], distinct=[9, 10, 10], most_retries=[tries - 1, 0, 0]
        )
        rejected = m.upstream_gauges["upstream"]["rejected"]  # every 429 the limit's
        m.upstream_gauges["upstream"].update(limited=rejected, capped=[0] * len(rejected))
        m.upstream_limits, m.upstream_retry_waits = limited, {"upstream": waits}
        cases.append(m)
    return cases


def test_each_verdict_has_one_name_in_its_message_and_its_cell() -> None:
    from pytest_fanout.diagnosis import FAILURE_KINDS, NAMES, no_timeout

    cases = [
        make(peak=1, waves=[1] * 10),
        make(peak=4, waves=[4, 4, 2]),
        make(connections=10),
        make(connections=8),
        make(peak=3, rejected=21, requests=10),
        make(errors=30),
        make(lag_s=0.2, stalls=[SLEEP_STALL]),
        make(lag_s=0.09, stalls=[gc_stall(0.09, 0.07)]),
        make(peak=30, waves=[100], n=100, concurrency=100, requests=100),
        make(peak=1, waves=[50], delay_s=0.0, n=50, concurrency=50, requests=50),
        make(orphaned=3),
        make(after_disconnect=5),
        leaking(),
        buffered(),
        *rate_limited_cases(),
    ]
    seen = set()
    for m in cases:
        for finding in diagnose(m):
            name = NAMES[finding.kind]
            assert finding.message.startswith(name + " ") or finding.message.startswith(name + ":")
            assert finding.cell.startswith(name)
            seen.add(finding.kind)
    assert seen == set(KINDS) == set(NAMES) - set(FAILURE_KINDS)
    failed = no_timeout("GET /hung", {"parts": 1}, "GET /hung did not answer within 3 s")
    assert failed.message.startswith(NAMES[failed.kind] + ":")
    assert failed.cell.startswith(NAMES[failed.kind])


def test_orphans_and_work_after_a_hang_up_are_exact_findings() -> None:
    (orphans,) = diagnose(make(orphaned=3))
    assert orphans.kind == "orphaned-calls" and orphans.exact
    assert orphans.message.startswith(
        "orphaned calls: 9 calls to the upstream over 3 samples ran on after GET /quote "
        "answered 200"
    ), orphans.message
    assert diagnose(make(orphaned=0)) == []
    (after,) = diagnose(make(after_disconnect=2))
    assert after.kind == "work-after-disconnect" and "6 calls" in after.message


def test_new_connections_replacing_cancelled_ones_are_not_a_client_per_request() -> None:
    # Without cut counts: 3 new connections in every sample for 4 calls reads as churn.
    assert kinds(make(connections=3, requests=4)) == ["connection-churn"]
    # The app cancelled 3 calls a sample (TaskGroup): those connections closed unanswered,
    # and the next sample opens 3 new ones in their place.
    assert kinds(make(connections=3, requests=4, cut=3)) == []
    # More new connections than cut ones: still read as before.
    assert kinds(make(connections=4, requests=4, cut=1)) == ["no-connection-reuse"]
