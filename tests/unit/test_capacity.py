"""The capacity search's pure logic, with a fake step function and a fake clock.

The fake service meets any p95 SLO up to its knee and breaks it above; each
step "costs" a fixed number of fake seconds, so budgets are exact.
"""

from __future__ import annotations

import json

import pytest

from pytest_fanout.load.capacity import (
    SearchSettings,
    Slo,
    StepResult,
    capacity_table,
    pool_size,
    search,
    write_json,
)


class FakeService:
    """p95 100 ms up to `knee` requests/s, 5 s above; each step costs `cost_s` fake seconds."""

    def __init__(self, knee: float, cost_s: float = 6.0) -> None:
        self.knee = knee
        self.cost_s = cost_s
        self.now = 0.0
        self.rates: list[float] = []

    def clock(self) -> float:
        return self.now

    def step(self, rate: float) -> StepResult:
        self.now += self.cost_s
        self.rates.append(rate)
        p95 = 100.0 if rate <= self.knee else 5000.0
        return StepResult(rate=rate, achieved_rps=rate, p95_ms=p95, requests=int(rate * 5))


SLO = Slo(p95_ms=500)
SETTINGS = SearchSettings(start_rps=5, factor=2, precision=0.1, step_cost_s=6)


def test_steps_up_then_bisects_to_the_knee_within_the_precision() -> None:
    service = FakeService(knee=137)
    result = search("/x", service.step, SLO, budget_s=600, settings=SETTINGS, clock=service.clock)
    # Up by 2x from 5 until the SLO breaks at 160; then bisection between 80 and 160.
    assert service.rates[:6] == [5, 10, 20, 40, 80, 160]
    assert result.capacity_rps is not None
    assert result.capacity_rps <= 137
    failure = result.first_failure
    assert failure is not None and failure.rate > 137
    assert failure.rate - result.capacity_rps <= 0.1 * result.capacity_rps
    assert failure.reason == "p95 5000 ms > 500 ms"
    assert result.stopped_early == ""
    assert all(s.ok == (s.rate <= 137) for s in result.steps)


def test_the_budget_bounds_the_number_of_steps() -> None:
    service = FakeService(knee=10_000, cost_s=6)
    result = search("/x", service.step, SLO, budget_s=20, settings=SETTINGS, clock=service.clock)
    assert len(service.rates) == 3  # 3 x 6 s fit in 20 s, a fourth would not
    assert service.now <= 20
    assert result.stopped_early == "budget"
    assert result.capacity_rps == 20


def test_a_budget_smaller_than_one_step_runs_nothing() -> None:
    service = FakeService(knee=100)
    result = search("/x", service.step, SLO, budget_s=5, settings=SETTINGS, clock=service.clock)
    assert service.rates == [] and result.capacity is None and result.steps == []


def test_the_first_rate_failing_steps_down() -> None:
    service = FakeService(knee=3)
    settings = SearchSettings(start_rps=20, factor=2, precision=0.1, step_cost_s=6)
    result = search("/x", service.step, SLO, budget_s=600, settings=settings, clock=service.clock)
    assert service.rates[:4] == [20, 10, 5, 2.5]
    assert result.capacity_rps is not None and 2.5 <= result.capacity_rps <= 3


def test_a_path_that_never_meets_the_slo_has_no_capacity() -> None:
    service = FakeService(knee=0)
    settings = SearchSettings(start_rps=4, factor=2, step_cost_s=6, min_rps=0.5)
    result = search("/x", service.step, SLO, budget_s=600, settings=settings, clock=service.clock)
    assert result.capacity is None
    assert service.rates == [4, 2, 1, 0.5]
    assert result.first_failure is not None and result.first_failure.rate == 0.5


def test_max_rps_stops_a_path_that_never_breaks() -> None:
    service = FakeService(knee=10_000)
    settings = SearchSettings(start_rps=5, max_rps=30, step_cost_s=6)
    result = search("/x", service.step, SLO, budget_s=600, settings=settings, clock=service.clock)
    assert service.rates == [5, 10, 20, 30]
    assert result.capacity_rps == 30 and result.first_failure is None
    assert result.stopped_early == "max rate 30/s met the SLO"


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        (StepResult(10, 10, 100, 50, failures=5), "failure ratio 0.1 > 0.01"),
        (StepResult(10, 10, 100, 50, dropped_ratio=0.2), "20.0% of starts dropped"),
        (StepResult(10, 10, 900, 50), "p95 900 ms > 500 ms"),
        (StepResult(10, 8, 100, 40), "the generator started only 8.0/s (< 95% of 10/s)"),
        (StepResult(10, 0, 0, 0), "no request was answered"),
    ],
)
def test_each_way_to_break_the_slo_says_why(step: StepResult, reason: str) -> None:
    broken = SLO.broken_by(step)
    assert broken is not None and broken.startswith(reason)


def test_a_step_within_every_limit_meets_the_slo() -> None:
    assert SLO.broken_by(StepResult(10, 9.8, 499, 50, failures=0, dropped_ratio=0.005)) is None


def test_pool_size_follows_littles_law_and_its_cap() -> None:
    assert pool_size(100, 500, 1000) == 2 * 100 * 0.5 + 10
    assert pool_size(10_000, 2000, 1000) == 1000


def test_table_and_json_name_path_capacity_p95_and_why(tmp_path) -> None:
    service = FakeService(knee=50)
    result = search("/a", service.step, SLO, budget_s=600, settings=SETTINGS, clock=service.clock)
    table = capacity_table([result])
    assert table.splitlines()[0].split() == [
        "path",
        "capacity",
        "(req/s)",
        "p95",
        "there",
        "(ms)",
        "first",
        "failing",
        "(req/s)",
        "why",
    ]
    assert "/a" in table and "p95 5000 ms > 500 ms" in table
    out = tmp_path / "capacity.json"
    write_json([result], out)
    data = json.loads(out.read_text())
    assert isinstance(data, list) and len(data) == 1
    row = data[0]
    assert row["path"] == "/a"
    assert row["capacity_rps"] == result.capacity_rps and row["p95_ms"] == 100.0
    assert row["first_failed_rps"] == result.first_failure.rate
    assert row["steps"] and row["machine"]["cpus"]


def test_processes_put_the_master_on_loopback_at_a_free_port_unless_told() -> None:
    """Issue 32 #9: the master of a `--processes` run binds 127.0.0.1 on a port of its own,
    its forked workers told where; a caller's own master flags are left alone."""
    from pytest_fanout.load.runner import locust_command

    def flags(command: list[str]) -> dict[str, str]:
        return {a: command[i + 1] for i, a in enumerate(command) if a.startswith("--master")}

    common = {"host": "http://127.0.0.1:1", "users": 1, "spawn_rate": 1, "run_time_s": 1}
    got = flags(locust_command("f.py", report_prefix="r", processes=2, **common))
    assert got["--master-bind-host"] == got["--master-host"] == "127.0.0.1"
    assert got["--master-bind-port"] == got["--master-port"] != "5557"
    assert flags(locust_command("f.py", report_prefix="r", **common)) == {}
    own = ["--master-bind-port", "6000"]
    command = locust_command("f.py", report_prefix="r", processes=2, extra_args=own, **common)
    assert flags(command) == {"--master-bind-port": "6000"}


def test_a_target_gone_is_its_death_or_a_host_that_no_longer_answers() -> None:
    """Issue 32 #8: after a step, the app's death (ours) or --host refusing every request
    stops the search; a step with failures from a live target does not."""
    import socket

    from pytest_fanout.load.capacity import target_gone

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there
    failed = StepResult(rate=5, achieved_rps=5, p95_ms=1, p99_ms=1, requests=10, failures=10)
    assert target_gone(failed, closed, lambda: "exit status 3") == (
        "the app process died (exit status 3)"
    )
    assert "does not answer" in target_gone(failed, closed, None)
    half = StepResult(rate=5, achieved_rps=5, p95_ms=1, p99_ms=1, requests=10, failures=5)
    assert target_gone(half, closed, lambda: None) == ""


def test_a_rate_limit_that_caps_the_capacity_is_named() -> None:
    """Issue 33: an upstream that allows 50/s, called once per request, caps the path near
    50 req/s: the search's knee is named after it."""
    from pytest_fanout.load.capacity import limit_caps, limit_note

    service = FakeService(knee=48)
    result = search("/q", service.step, SLO, budget_s=600, settings=SETTINGS, clock=service.clock)
    limits = {
        "quotes": {"max_inflight": 0, "rate_limit": "50/s", "per_s": 50.0, "burst": 50},
        "free": {"max_inflight": 0},
    }
    caps = limit_caps(limits, {"quotes": 400, "free": 800}, 400)
    assert [(c.upstream, c.cap_rps, c.times()) for c in caps] == [("quotes", 50.0, "once")]
    assert limit_note(result, caps) == (
        f"capacity {result.capacity_rps:g} req/s: upstream 'quotes' allows 50/s and each "
        "request calls it once (at most 50 req/s)"
    )
    twice = limit_caps(limits, {"quotes": 800}, 400)
    assert twice[0].cap_rps == 25.0 and twice[0].times() == "twice"
    assert limit_note(result, twice) == ""  # 48 req/s met the SLO past a 25 req/s cap
    # A knee far below the cap (something else broke the SLO) does not name the limit.
    slow = FakeService(knee=12)
    low = search("/q", slow.step, SLO, budget_s=600, settings=SETTINGS, clock=slow.clock)
    assert limit_note(low, caps) == ""
    assert limit_note(result, []) == ""


def test_a_capacity_past_the_limit_says_the_burst_carried_it() -> None:
    """Field (issue 33's audit, a Flask geocoder at 5/s, burst 5, 4 s steps): "capacity 6
    req/s: ... allows 5/s and each request calls it once (at most 5 req/s)" said two rates
    with no why. A step of 6/s for 4 s sends 24 calls, which the bucket's 5 tokens and 20
    refilled cover; a longer run at 6/s is refused. The words say so."""
    from pytest_fanout.load.capacity import limit_caps, limit_note

    service = FakeService(knee=6)
    result = search("/q", service.step, SLO, budget_s=600, settings=SETTINGS, clock=service.clock)
    assert result.capacity_rps is not None and result.capacity_rps > 5
    limits = {"geocoder": {"max_inflight": 0, "rate_limit": "5/s", "per_s": 5.0, "burst": 5}}
    caps = limit_caps(limits, {"geocoder": 24}, 24)
    assert limit_note(result, caps) == (
        f"capacity {result.capacity_rps:g} req/s: upstream 'geocoder' allows 5/s and each "
        "request calls it once (at most 5 req/s: the steps above it met the SLO only while "
        "the bucket's burst of 5 calls lasted, which a longer run spends)"
    )


def test_after_a_locust_run_a_limit_that_refused_calls_is_named() -> None:
    from pytest_fanout.load.capacity import load_limit_lines

    limits = {"max_inflight": 0, "rate_limit": "50/s", "per_s": 50.0, "burst": 50}
    stats = {
        "quotes": {"requests": 1200, "rejected": 212, "limits": limits},
        "free": {"requests": 600, "rejected": 0, "limits": {"max_inflight": 0}},
    }
    assert load_limit_lines(stats, 600, 60.0) == [
        "fanout: upstream 'quotes' answered 429 to 212 of 1200 calls; it allows 50/s and each "
        "request calls it twice: at most 25 req/s here (this run: 60/s)"
    ]
    calm = {"quotes": {"requests": 100, "rejected": 0, "limits": limits}}
    assert load_limit_lines(calm, 100, 5.0) == []  # far from the cap, nothing refused
    # Near the cap with nothing refused (field: "upstream 'geocoder' it allows 5/s ...").
    near = {"quotes": {"requests": 1200, "rejected": 0, "limits": limits}}
    assert load_limit_lines(near, 600, 20.0) == [
        "fanout: upstream 'quotes' refused no call; it allows 50/s and each request calls it "
        "twice: at most 25 req/s here (this run: 20/s)"
    ]
    # a route's own 429s (or max_inflight's) are not the limit's: only `limited` counts here
    mixed = {"quotes": {"requests": 1200, "rejected": 300, "limited": 212, "limits": limits}}
    assert load_limit_lines(mixed, 600, 60.0)[0].startswith(
        "fanout: upstream 'quotes' answered 429 to 212 of 1200 calls; it allows 50/s"
    )
    routes_only = {"quotes": {"requests": 100, "rejected": 40, "limited": 0, "limits": limits}}
    assert load_limit_lines(routes_only, 100, 5.0) == []  # far from the cap, none the limit's


@pytest.mark.parametrize("quiet", [False, True])
def test_quiet_capacity_prints_the_result_without_its_steps(
    quiet: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fanout capacity -q` keeps the table and drops the progress lines (the settings and
    each step), as `fanout measure -q` and `fanout critical-path -q` do; without -q each
    step is printed as it goes."""
    from pytest_fanout.cli import capacity, main

    service = FakeService(knee=40)

    def run_step(host: str, path: str, rate: float, slo: Slo, plan: object) -> tuple:
        return service.step(rate), 10

    monkeypatch.setattr(capacity, "run_step", run_step)
    monkeypatch.setattr(capacity, "host_problem", lambda host: "")
    monkeypatch.setattr(capacity, "path_problem", lambda host, path: "")
    argv = ["capacity", "--slo-p95-ms", "500", "--host", "http://127.0.0.1:9", "--path", "/x"]
    argv += ["--step-s", "2", "--budget-s", "60"] + (["-q"] if quiet else [])
    assert main(argv) == 0
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line.startswith("  /x at ")]
    assert len(service.rates) > 3  # the search stepped
    assert next(line for line in out.splitlines() if line.startswith("path")).split()[:2] == [
        "path",
        "capacity",
    ]
    if quiet:
        assert not steps and "fanout capacity:" not in out, out
    else:
        assert len(steps) == len(service.rates), out
        assert out.startswith("fanout capacity: SLO p95 <= 500 ms")


def test_calls_per_request_count_the_requests_the_app_began() -> None:
    """The field's case (docs/field.md): 33 calls, 7 requests Locust saw answered, 11 the app
    began (4 cut off as the run stopped, finished since): 3 calls each, not 4.7."""
    from pytest_fanout.load.capacity import AppRequests, load_limit_lines

    limits = {"max_inflight": 0, "rate_limit": "5/s", "per_s": 5.0, "burst": 5}
    stats = {"pricing": {"requests": 33, "rejected": 1, "limited": 1, "limits": limits}}
    assert load_limit_lines(stats, 7, 1.2, AppRequests(began=11)) == [
        "fanout: upstream 'pricing' answered 429 to 1 of 33 calls; it allows 5/s and each "
        "request calls it 3 times: at most 1.67 req/s here (this run: 1.2/s)"
    ]
    # Without the app's count (older behaviour): Locust's answered requests.
    assert "4.7 times on average" in load_limit_lines(stats, 7, 1.2)[0]
    # Requests still running (or cancelled) when read: a range, and the cap from its low end.
    [line] = load_limit_lines(stats, 7, 1.2, AppRequests(began=11, unfinished=2))
    assert "each request calls it between 3 and 3.7 times: at most 1.67 req/s" in line
    [line] = load_limit_lines(stats, 7, 1.2, AppRequests(began=11, unfinished=11))
    assert "each request calls it at least 3 times: at most 1.67 req/s" in line


def test_the_app_is_read_once_it_has_finished_the_cut_off_requests() -> None:
    from pytest_fanout.load.capacity import AppRequests, settled_app

    readings = iter([{"requests": 14, "inflight": 3}, {"requests": 14, "inflight": 1}])
    last = {"requests": 14, "inflight": 0, "cancelled": 1}
    slept: list[float] = []
    app = settled_app(lambda: next(readings, last), {"requests": 3}, sleep=slept.append)
    assert app == AppRequests(began=11, unfinished=1) and app.finished == 10
    assert len(slept) == 2
    # Bounded: an app that never settles is read as it is after wait_s.
    busy = settled_app(lambda: {"requests": 5, "inflight": 2}, {}, wait_s=0.2, sleep=slept.append)
    assert busy == AppRequests(began=5, unfinished=2) and len(slept) <= 2 + 5


def test_the_probe_counts_a_request_the_app_cancelled() -> None:
    """An app that stops a request when its client hangs up (aiohttp's handler_cancellation)
    may have made only part of its calls: the probe counts it apart, so the limit line's
    figure is a range, not a false exact one."""
    import asyncio

    from pytest_fanout.servers.probe import LoopProbe

    async def slow(scope: dict, receive: object, send: object) -> None:
        await asyncio.sleep(10)

    async def cancel_one() -> dict[str, int]:
        probe = LoopProbe(slow)
        task = asyncio.create_task(probe({"type": "http", "path": "/x"}, None, None))
        for _ in range(100):  # the task starts at the loop's next turn
            if probe.stats.inflight:
                break
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert probe._monitor is not None
        probe._monitor.cancel()
        return {
            "requests": probe.stats.requests,
            "inflight": probe.stats.inflight,
            "cancelled": probe.stats.cancelled,
        }

    assert asyncio.run(cancel_one()) == {"requests": 1, "inflight": 0, "cancelled": 1}
