"""The gate never says "same" for what it did not judge: a rule short of samples is said apart.

Made-up measurements (no server, no clock): the A/B rules, a clear +24% CPU shift with the
wall time unchanged. With 10 samples a side the cpu rule cannot judge (it needs 20): the case
is "same (not gated: cpu)" and the summary counts it apart; with 20 it is a regression.
"""

from __future__ import annotations

import json
import random

from pytest_fanout.gate import (
    GateConfig,
    Run,
    compare_runs,
    render_comparison_markdown,
    render_comparison_text,
)
from pytest_fanout.gate.report import summary_line
from pytest_fanout.measurement import Measurement

#: The A/B mode's rules: the defaults and cpu+5%.
AB = GateConfig.from_options(None).for_ab()
TEST = "tests/t.py::test_fanout"


def measured(path: str, cpu_s: float, k: int, seed: int) -> Measurement:
    """k samples of ~110 ms wall time and ~cpu_s of app CPU per request, +-2% noise."""
    rng = random.Random(seed)
    n = int(path.rsplit("/", 1)[1])
    return Measurement(
        path=path,
        samples=[0.110 * (1 + rng.uniform(-0.02, 0.02)) for _ in range(k)],
        app_cpu_per_sample=[cpu_s * (1 + rng.uniform(-0.02, 0.02)) for _ in range(k)],
        n=n,
        concurrency=n,
        upstream_delay_s=0.1,
        test=TEST,
    )


def ab(k: int, config: GateConfig = AB):
    """Two cases, base at 3.84 ms of CPU a request, head at 4.75 ms (+24%), k samples a side."""
    paths = ("/async/10", "/async/20")
    base = Run.from_measurements([measured(p, 0.00384, k, i) for i, p in enumerate(paths)])
    head = Run.from_measurements([measured(p, 0.00475, k, 10 + i) for i, p in enumerate(paths)])
    return compare_runs(base, head, config, same_machine=True)


def test_ten_samples_a_side_is_never_a_bare_same() -> None:
    comparison = ab(10)
    for v in comparison.verdicts:
        cpu = next(c for c in v.changes if c.rule.metric.name == "cpu")
        assert not cpu.gated and not cpu.regressed
        assert cpu.unjudged.startswith("not judged with 10 samples a side: cpu needs 20")
        assert "use repeat >= 20" in cpu.unjudged
        # The other rules judged it and found nothing: same, with cpu listed apart.
        assert v.verdict == "same"
        assert v.shown_verdict == "same (not gated: cpu)"
    assert comparison.not_judged_counts() == {"cpu": 2}
    assert summary_line(comparison) == "fanout gate passed: 2 same, not gated: cpu in 2"
    # Not judging a metric is not a failure: the exit status is the run's.
    assert not comparison.failed and comparison.exit_status == 0

    text = render_comparison_text(comparison)
    assert "same (not gated: cpu)" in text
    assert "not gated: cpu (not judged with 10 samples a side" in text
    assert text.count("use repeat >= 20") >= 2  # one line per case
    assert text.splitlines()[-1] == "fanout gate passed: 2 same, not gated: cpu in 2"

    markdown = render_comparison_markdown(comparison)
    assert "fanout gate passed: 2 same, not gated: cpu in 2" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| `tests/t.py")]
    assert len(rows) == 2
    for row in rows:
        assert "| same (not gated: cpu) |" in row
        assert "not gated: cpu (not judged with 10 samples a side" in row
        assert "use repeat &gt;= 20" in row  # escaped in a Markdown cell

    data = json.loads(json.dumps(comparison.to_dict()))
    assert data["not_judged"] == {"cpu": 2} and data["exit_status"] == 0
    for case in data["cases"]:
        assert case["verdict"] == "same" and case["shown_verdict"] == "same (not gated: cpu)"
        assert "use repeat >= 20" in case["not_judged"]["cpu"]
        [cpu] = [x for x in case["metrics"] if x["metric"] == "cpu"]
        assert cpu["not_judged"].startswith("not judged with 10 samples a side")


def test_twenty_samples_a_side_judge_the_cpu() -> None:
    comparison = ab(20)
    assert [v.verdict for v in comparison.verdicts] == ["regression", "regression"]
    for v in comparison.verdicts:
        assert v.shown is not None and v.shown.rule.text == "cpu+5%"
        assert v.shown_verdict == "regression" and not v.not_judged
    assert comparison.not_judged_counts() == {}
    assert summary_line(comparison) == "fanout gate FAILED: 2 regression"
    assert comparison.exit_status == 1


def test_a_case_no_rule_could_judge_is_not_gated_with_why() -> None:
    """Only the cpu rule, 10 samples a side: nothing judged the cases, so not "same"."""
    comparison = ab(10, GateConfig.from_options("cpu+5%"))
    for v in comparison.verdicts:
        assert v.verdict == "not gated" and v.shown_verdict == "not gated"
        assert v.reason.startswith("cpu: not judged with 10 samples a side: cpu needs 20")
        assert "use repeat >= 20" in v.reason
    assert comparison.counts()["same"] == 0
    line = summary_line(comparison)
    # Counted once: as not gated (no rule judged them), not again as "not gated: cpu".
    assert line.startswith("fanout gate FAILED: 2 not gated; no case was gated: 2 cpu: ")
    assert "2 cpu: not judged with 10 samples a side" in line
    # Nothing gated at all: the existing "not gated" exit status, unless accepted.
    assert comparison.exit_status == 6
    accepted = ab(10, GateConfig.from_options("cpu+5%", allow_ungated=True))
    assert accepted.exit_status == 0 and "(accepted: --fanout-allow-ungated)" in summary_line(
        accepted
    )
    text = render_comparison_text(accepted)
    assert f"{TEST} /async/10: cpu: not judged with 10 samples a side" in text


def pooled(k: int, pool: int, head_cpu_s: float, *, short: str = "", processes: int = 0):
    """As `ab(k)`, each case also holding `pool` samples a side the A/B gate took itself
    (`ab_pool`), the head's at `head_cpu_s` of CPU a request."""
    from pytest_fanout.gate.verdict import POOL_KEY

    paths = ("/async/10", "/async/20")
    base = Run.from_measurements([measured(p, 0.00384, k, i) for i, p in enumerate(paths)])
    head = Run.from_measurements([measured(p, head_cpu_s, k, 10 + i) for i, p in enumerate(paths)])
    for run, cpu_s, seed in ((base, 0.00384, 20), (head, head_cpu_s, 30)):
        for index, case in enumerate(run.cases):
            extra = measured(case.path, cpu_s, pool, seed + index)
            case.record[POOL_KEY] = {
                "samples": extra.samples,
                "app_cpu_per_sample": extra.app_cpu_per_sample,
                "first_byte_per_sample": [],
                "processes": processes or -(-pool // 4),
                "needed": 20,
                "short": short,
            }
    return compare_runs(base, head, AB, same_machine=True)


def test_the_samples_the_ab_gate_took_itself_judge_the_cpu() -> None:
    """repeat=10 in the test, 10 more a side taken by the gate on fresh processes: judged."""
    comparison = pooled(10, 10, 0.00475)
    assert [v.verdict for v in comparison.verdicts] == ["regression", "regression"]
    for v in comparison.verdicts:
        cpu = next(c for c in v.changes if c.rule.metric.name == "cpu")
        assert cpu.regressed and cpu.gated and not cpu.unjudged
        assert v.shown_verdict == "regression" and not v.not_judged
        # Said where the samples came from: the median (10 a side was enough) was not pooled.
        assert "cpu from 20 samples a side over 4 app processes a side (the test took 10" in (
            v.note
        )
        median = next(c for c in v.changes if c.rule.metric.name == "median")
        assert "median" not in v.note.split(" from ")[0]
        assert median.gated
    assert comparison.not_judged_counts() == {}
    # The same pools, no change: A/A is "same", judged on every rule.
    same = pooled(10, 10, 0.00384)
    assert [v.shown_verdict for v in same.verdicts] == ["same", "same"]


def test_past_the_bound_the_metric_is_not_gated_with_the_bound() -> None:
    why = "needed 87 samples a side, the bound is 58"
    comparison = pooled(10, 0, 0.00475, short=why, processes=0)
    for v in comparison.verdicts:
        cpu = next(c for c in v.changes if c.rule.metric.name == "cpu")
        assert not cpu.gated and not cpu.regressed and cpu.unjudged == why
        assert v.verdict == "same" and v.not_judged == [cpu]
        assert why in v.unjudged_note
    assert comparison.not_judged_counts() == {"cpu": 2}


def test_a_pool_on_one_side_only_is_not_used() -> None:
    """A baseline saved without pools (an older file) against a head with them: not mixed."""
    from pytest_fanout.gate.verdict import POOL_KEY

    comparison = pooled(10, 10, 0.00475)
    base, head = comparison.baseline_run, pooled(10, 10, 0.00475).baseline_run
    assert base is not None and head is not None
    for case in base.cases:
        del case.record[POOL_KEY]
    for v in compare_runs(base, head, AB, same_machine=True).verdicts:
        cpu = next(c for c in v.changes if c.rule.metric.name == "cpu")
        assert cpu.unjudged.startswith("not judged with 10 samples a side")


def noisy(path: str, cpu_s: float, k: int, seed: int, spread: float) -> Measurement:
    rng = random.Random(seed)
    m = measured(path, cpu_s, k, seed)
    m.app_cpu_per_sample = [cpu_s * (1 + rng.uniform(-spread, spread)) for _ in range(k)]
    return m


def test_the_ab_sampler_is_told_what_the_rules_still_want() -> None:
    """What the A/B sampler tops a test's repeat up with: the count cpu needs, then more only
    while the noise hides a change of its limit (5%); never for a test whose own samples do."""
    from pytest_fanout.gate.verdict import samples_wanted

    def wanted(k: int, own: int, spread: float) -> tuple[int, bool]:
        head = noisy("/async/20", 0.004, k, 1, spread)
        base = noisy("/async/20", 0.004, k, 2, spread)
        return samples_wanted(AB, head, base, own)

    assert wanted(10, 10, 0.02) == (10, False)  # cpu needs 20 a side: 10 more
    assert wanted(20, 10, 0.02) == (0, False)  # enough, and quiet enough to see 5%
    assert wanted(20, 10, 0.40) == (0, True)  # enough to judge, too noisy to see 5%: more
    assert wanted(20, 20, 0.40) == (0, False)  # the test's own 20: its repeat, not topped up
    # Below the rank test's least (5 at alpha 0.01) the timings want more too.
    assert wanted(3, 3, 0.02) == (17, False)


def test_a_baseline_whose_cpu_held_the_probes_own_is_not_compared_on_cpu() -> None:
    """A run saved before the probe took its own CPU off (no `probe_cpu_per_sample`) read
    ~25 ms more a second of wall time: against today's figure, a false improvement."""
    paths = ("/async/10",)
    old = Run.from_measurements([measured(p, 0.0300, 20, i) for i, p in enumerate(paths)])
    for case in old.cases:  # as it was saved then: neither field
        del case.record["probe_cpu_per_sample"], case.record["cpu_method"]
    head = Run.from_measurements([measured(p, 0.0040, 20, 10 + i) for i, p in enumerate(paths)])
    for v in compare_runs(old, head, AB, same_machine=True).verdicts:
        cpu = next(c for c in v.changes if c.rule.metric.name == "cpu")
        assert not cpu.gated and not cpu.improved
        assert cpu.unjudged.startswith("the baseline was saved by an older pytest-fanout")
        assert "the probe's own CPU" in cpu.unjudged
        assert v.verdict != "improvement" and "not gated: cpu" in v.shown_verdict
    # Both sides of one kind compare as before: a 7.5x fall is an improvement.
    again = Run.from_measurements([measured(p, 0.0300, 20, i) for i, p in enumerate(paths)])
    verdict = compare_runs(again, head, AB, same_machine=True).verdicts[0]
    assert verdict.verdict == "improvement"


def test_a_baseline_whose_cpu_held_the_servers_timers_is_not_compared_on_cpu() -> None:
    """A run saved before `cpu_method` was recorded (method 1) left the server's own timers
    in its cpu, ~0.5 ms a second of wall time: either way round, cpu is not compared."""
    from pytest_fanout.limits import CPU_METHOD

    old = Run.from_measurements([measured("/async/10", 0.0045, 20, 1)])
    del old.cases[0].record["cpu_method"]  # saved then: probe_cpu_per_sample, no method
    new = Run.from_measurements([measured("/async/10", 0.0040, 20, 2)])
    assert new.cases[0].record["cpu_method"] == CPU_METHOD
    for base, head, side in ((old, new, "the baseline"), (new, old, "this run")):
        verdict = compare_runs(base, head, AB, same_machine=True).verdicts[0]
        cpu = next(c for c in verdict.changes if c.rule.metric.name == "cpu")
        assert not cpu.gated and not cpu.improved and not cpu.regressed
        assert cpu.unjudged == (
            f"{side} was saved by an older pytest-fanout, whose cpu held the server's own"
            " timers (about 0.5 ms a second of wall time): save it again to compare cpu"
        )
    # Two runs of this method compare as ever.
    again = Run.from_measurements([measured("/async/10", 0.0045, 20, 3)])
    cpu = next(
        c
        for c in compare_runs(again, new, AB, same_machine=True).verdicts[0].changes
        if c.rule.metric.name == "cpu"
    )
    assert cpu.gated
