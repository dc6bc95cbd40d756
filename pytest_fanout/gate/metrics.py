"""What a fail-on rule can name: each metric, how it is read from a case, which way is better.

Why apart from the rules: a metric turns a case's record into per-sample
values (for the noise test) and one headline number; the rule syntax and the
verdict only need that shape. Each metric belongs to one kind of case
(measurement or Locust row): a rule only ever judges cases of its metric's kind.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pytest_fanout.gate.runs import KIND_LOCUST, KIND_MEASUREMENT, Case, Run
from pytest_fanout.gate.stats import histogram_sample
from pytest_fanout.load.results import EndpointResult
from pytest_fanout.measurement import Measurement, percentile

#: Samples a side from which `cpu` is gated. A/A sessions (the same commit on both sides,
#: benchmarks/gate_validation.py) of a service spending 10 ms of CPU a request: over 10
#: samples the two processes differed by -14% to +11% (one +10.8% at p=0.0014, a false
#: alarm); over 20, by -4% to +5% (10 sessions, every p above 0.1).
CPU_MIN_SAMPLES = 20


@dataclass(frozen=True)
class Values:
    """A metric of one case: per-sample values (for the test) and the headline statistic.

    No samples ([]) means one number a side: the noise cannot be tested.
    """

    samples: list[float]
    stat: float


@dataclass(frozen=True)
class Metric:
    """What a rule can name: how to read it from a case, and which way is better."""

    name: str
    higher_is_better: bool
    #: "ratio" (plain number), "s" (seconds), "rps" (requests/s) or "count": the absolute units
    #: of a rule.
    unit: str
    portable: bool
    read: Callable[[Case, Run], Values | None]
    about: str
    #: The kind of case it reads; a rule never judges cases of another kind.
    kind: str = KIND_MEASUREMENT
    #: The headline statistic of the samples, for the bootstrap interval of the change.
    statistic: Callable[[Sequence[float]], float] = statistics.median
    #: False when a case holds one number, not samples (requests/s): threshold only, no test.
    sampled: bool = True
    #: Several values a case (structure: per upstream, rounds and calls), compared one by one;
    #: `read` is then unused. Keys name the part ("rounds[payments]").
    parts: Callable[[Case, Run], dict[str, Values] | None] | None = None
    #: Exact on any machine (a count, not a timing): no noise test, any change is real.
    exact: bool = False
    #: Only some cases have it (first-byte: an answer the app streamed). Where neither side
    #: has it, the rule does not apply: not compared, and not noted as missing.
    optional: bool = False
    #: Fewer samples a side than this and the metric is shown, not gated: its noise between
    #: two processes is larger than the rank test over fewer samples can see (cpu).
    min_samples: int = 0

    @property
    def bad_sign(self) -> str:
        return "-" if self.higher_is_better else "+"

    def format(self, value: float) -> str:
        """A value in this metric's unit, as the reports show it."""
        if self.unit == "s":
            return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
        if self.unit == "rps":
            return f"{value:.3g}/s"
        if self.unit == "count":
            return f"{value:.0f}"
        return f"{value:.3g}"


def p95_of(values: Sequence[float]) -> float:
    """The 95th percentile, the statistic of the p95 metrics."""
    return percentile(list(values), 95)


def _measured(case: Case) -> Measurement | None:
    m = case.measurement()
    return m if m is not None and m.samples else None


def _efficiency(case: Case, run: Run) -> Values | None:
    m = _measured(case)
    ideal = m.ideal_s if m is not None else None
    if m is None or ideal is None or any(s <= 0 for s in m.samples):
        return None
    return Values([ideal / s for s in m.samples], ideal / m.median_s)


def _overhead(case: Case, run: Run) -> Values | None:
    m = _measured(case)
    if m is None or m.ideal_s is None or not m.n:
        return None
    ideal, n = m.ideal_s, m.n
    return Values([(s - ideal) / n for s in m.samples], (m.median_s - ideal) / n)


def _median(case: Case, run: Run) -> Values | None:
    m = _measured(case)
    return None if m is None else Values(list(m.samples), m.median_s)


def _p95(case: Case, run: Run) -> Values | None:
    m = _measured(case)
    return None if m is None else Values(list(m.samples), m.p95_s)


def _first_byte(case: Case, run: Run) -> Values | None:
    """A streamed answer's time to its first byte, one value a sample; None when the app did
    not stream it (then the first byte says nothing the median does not)."""
    m = _measured(case)
    if m is None or not m.streamed or len(m.first_byte_per_sample) != len(m.samples):
        return None
    return Values(list(m.first_byte_per_sample), m.first_byte_median_s or 0.0)


def _speedup(case: Case, run: Run) -> Values | None:
    """Median of the same test's sequential path (concurrency 1, same n) over this case's."""
    m = _measured(case)
    if m is None or not m.n or m.concurrency in (None, 1):
        return None
    for other in run.cases:
        ref = _measured(other) if other is not case else None
        if ref is not None and ref.test == m.test and ref.n == m.n and ref.concurrency == 1:
            if any(s <= 0 for s in m.samples):
                return None
            return Values([ref.median_s / s for s in m.samples], ref.median_s / m.median_s)
    return None


def _cpu(case: Case, run: Run) -> Values | None:
    """The app process's CPU seconds per call of the path, one value per sample (the probe's)."""
    m = _measured(case)
    if m is None or not m.app_cpu_per_sample or m.cpu_per_request_s is None:
        return None
    return Values(list(m.app_cpu_per_sample), m.cpu_per_request_s)


def read_structure(record: dict) -> dict[str, list[int]] | None:
    """A record's `structure` (upstream name -> wave sizes of a held probe request), or None
    when absent or not of that shape (older files, other writers)."""
    raw = record.get("structure")
    if not isinstance(raw, dict) or not raw:
        return None
    out: dict[str, list[int]] = {}
    for name, waves in raw.items():
        if not isinstance(name, str) or not _is_counts(waves):
            return None
        out[name] = list(waves)
    return out


def _no_value(case: Case, run: Run) -> Values | None:
    return None


def counted_calls(record: dict) -> dict[str, int]:
    """Per upstream, the most calls the stub counted in one timed sample (exact counts), from
    `upstream_gauges`; {} when the record has none."""
    gauges = record.get("upstream_gauges")
    out: dict[str, int] = {}
    if not isinstance(gauges, dict):
        return out
    for name, lists in gauges.items():
        requests = lists.get("requests") if isinstance(lists, dict) else None
        if isinstance(requests, list) and requests:
            out[str(name)] = int(max(requests))
    return out


def _structure(case: Case, run: Run) -> dict[str, Values] | None:
    """Per upstream: rounds (waves of calls, one after another) and calls of one request.

    Without a structure (older records) the calls alone come from the stub's exact request
    counts of the timed samples, so a retry that doubles the calls is still caught.
    """
    if case.kind != KIND_MEASUREMENT:
        return None
    structure = read_structure(case.record)
    parts = {}
    if structure is None:
        for name, calls in sorted(counted_calls(case.record).items()):
            parts[f"calls[{name}]"] = Values([], float(calls))
        return parts or None
    probes = structure_probes(case.record)
    for name in sorted(structure):
        waves = structure[name]
        each = [p.get(name, []) for p in probes]
        parts[f"rounds[{name}]"] = Values([float(len(w)) for w in each], float(len(waves)))
        parts[f"calls[{name}]"] = Values([float(sum(w)) for w in each], float(sum(waves)))
    return parts


def structure_probes(record: dict) -> list[dict[str, list[int]]]:
    """Every held probe's structure of a record that took more than one (`structures`,
    `measure(..., held_probes=3)`), else [] (one probe: nothing to tell a variation by)."""
    raw = record.get("structures")
    if not isinstance(raw, list) or len(raw) < 2:
        return []
    probes = [read_structure({"structure": one}) for one in raw]
    return [p for p in probes if p is not None] if all(probes) else []


def structure_variants(record: dict, name: str) -> str:
    """ "[3] x4, [2, 1] x1": the waves at upstream `name` of each held probe, counted, when
    they differ between the probes; "" when they agree (or one probe was taken)."""
    counts: dict[str, int] = {}
    for probe in structure_probes(record):
        key = str(probe.get(name, []))
        counts[key] = counts.get(key, 0) + 1
    if len(counts) < 2:
        return ""
    return ", ".join(f"{waves} x{n}" for waves, n in counts.items())


def _is_counts(value: object) -> bool:
    """`value` is a list of counts (ints >= 0, no bools): the one check of a saved list."""
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    )


def _int_list(value: object) -> list[int] | None:
    """`value` when it is a non-empty list of counts, else None (older or hand-made data)."""
    return list(value) if value and _is_counts(value) else None  # type: ignore[arg-type]


def connections_lists(record: dict) -> dict[str, tuple[list[int], list[int]]]:
    """Per upstream, (new connections of each timed sample, calls of each sample) from the
    stub's exact gauges; upstreams without the two lists of one length are left out."""
    gauges = record.get("upstream_gauges")
    out: dict[str, tuple[list[int], list[int]]] = {}
    if not isinstance(gauges, dict):
        return out
    for name, lists in gauges.items():
        if not isinstance(lists, dict):
            continue
        opened, calls = _int_list(lists.get("connections")), _int_list(lists.get("requests"))
        if opened is not None and calls is not None and len(opened) == len(calls):
            out[str(name)] = (opened, calls)
    return out


def _connections(case: Case, run: Run) -> dict[str, Values] | None:
    """Per upstream ("per request[pricing]"): the new connections of one request, one value a
    sample (a stable count is one number on every sample; the verdict refuses to judge a count
    that varied between samples: a pool that closes idle connections on a timer)."""
    if case.kind != KIND_MEASUREMENT:
        return None
    found = connections_lists(case.record)
    if case.record.get("warmup") == 0:  # the first sample opened the pool: not the steady count
        found = {k: (o[1:], c[1:]) for k, (o, c) in found.items() if len(o) > 1}
    parts = {
        f"per request[{name}]": Values(list(opened), float(statistics.median(opened)))
        for name, (opened, _) in sorted(found.items())
    }
    return parts or None


def _late(key: str) -> Callable[[Case, Run], Values | None]:
    """Calls per request that ran past the answer (`orphaned`) or the hang-up
    (`after_disconnect`), all upstreams summed, mean over the samples; None when the case
    did not measure them (older records, or the other mode)."""

    def read(case: Case, run: Run) -> Values | None:
        return _per_request(case, key, None)

    return read


def _per_request(case: Case, key: str, names: set[str] | None) -> Values | None:
    """The per-sample counts `key` of the upstreams `names` (None: all), summed, mean over
    the samples; None when the case did not count them."""
    gauges = case.record.get("upstream_gauges") if case.kind == KIND_MEASUREMENT else None
    if not isinstance(gauges, dict):
        return None
    counts = [
        g.get(key)
        for n, g in gauges.items()
        if (names is None or n in names) and isinstance(g, dict)
    ]
    lists = [c for c in counts if isinstance(c, list) and c]
    if not lists:
        return None
    samples = max(len(c) for c in lists)
    return Values([], sum(sum(c) for c in lists) / samples)


def limited_upstreams(record: dict) -> set[str]:
    """The upstreams a case's record names as limited (`upstream_limits`: a rate limit, a
    route's, or max_inflight); empty for older records and stacks without a limit."""
    limits = record.get("upstream_limits")
    if not isinstance(limits, dict):
        return set()
    return {
        str(name)
        for name, found in limits.items()
        if isinstance(found, dict)
        and (found.get("rate_limit") or found.get("routes") or found.get("max_inflight"))
    }


def _at_limited(key: str) -> Callable[[Case, Run], Values | None]:
    """Calls per request answered 429 (`rejected`) or repeating a failed call (`retries`)
    at the upstreams with a limit, summed, mean over the samples; None when the case has
    no limited upstream or did not count them (older records)."""

    def read(case: Case, run: Run) -> Values | None:
        limited = limited_upstreams(case.record)
        return _per_request(case, key, limited) if limited else None

    return read


def _row(case: Case) -> EndpointResult | None:
    row = case.load_row()
    return row if row is not None and row.requests > 0 else None


def _load_p95(case: Case, run: Run) -> Values | None:
    """Every request's response time (seconds) from the histogram; headline: Locust's p95."""
    row = _row(case)
    if row is None:
        return None
    histogram = {float(ms) / 1000: hits for ms, hits in row.histogram.items()}
    return Values(histogram_sample(histogram), row.p95_ms / 1000)


def _completed(case: Case, run: Run) -> Values | None:
    """Requests that completed without failing: one number a run (0 is a value, not missing)."""
    row = case.load_row()
    return None if row is None else Values([], float(max(0, row.requests - row.failures)))


def _rps(case: Case, run: Run) -> Values | None:
    row = _row(case)
    return None if row is None else Values([], row.rps)


def _fail_ratio(case: Case, run: Run) -> Values | None:
    """One 0/1 value per request (1 = failed), thinned like a histogram; headline: the ratio."""
    row = _row(case)
    if row is None:
        return None
    failed = min(row.failures, row.requests)
    outcomes = histogram_sample({0.0: row.requests - failed, 1.0: failed})
    return Values(outcomes, row.fail_ratio)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "efficiency",
            True,
            "ratio",
            True,
            _efficiency,
            "ideal time / measured time (1.0 = perfect fan-out)",
        ),
        Metric(
            "overhead",
            False,
            "s",
            True,
            _overhead,
            "(median - ideal) / n: the app's own cost per upstream call",
        ),
        Metric(
            "structure",
            False,
            "count",
            True,
            _no_value,
            "per upstream, the rounds (waves one after another) and the calls of one request, "
            "from the stub's held probe: exact on any machine",
            sampled=False,
            parts=_structure,
            exact=True,
        ),
        Metric(
            "orphaned",
            False,
            "count",
            True,
            _late("orphaned"),
            "upstream calls per request still in flight when the endpoint answered, or begun "
            "after (orphans of a failed gather): exact on any machine",
            sampled=False,
            exact=True,
            optional=True,
        ),
        Metric(
            "after_disconnect",
            False,
            "count",
            True,
            _late("after_disconnect"),
            "upstream calls per request still running after the caller hung up "
            "(measure(..., disconnect_after_s=)): exact on any machine",
            sampled=False,
            exact=True,
            optional=True,
        ),
        Metric(
            "rejected",
            False,
            "count",
            True,
            _at_limited("rejected"),
            "calls per request answered 429 at an upstream with a limit (rate_limit or"
            " max_inflight; every 429 it sent, whatever answered it): exact on any machine",
            sampled=False,
            exact=True,
            optional=True,
        ),
        Metric(
            "retries",
            False,
            "count",
            True,
            _at_limited("retries"),
            "calls per request to a rate-limited upstream that repeat a call answered 429 or "
            "5xx, or cut off: exact on any machine",
            sampled=False,
            exact=True,
            optional=True,
        ),
        Metric(
            "connections",
            False,
            "count",
            True,
            _no_value,
            "per upstream, the new connections one request opens (the stub's exact count of"
            " each timed sample): judged where that count was the same in every sample of both"
            " sides, else not gated (a pool closing idle connections varies): exact on any"
            " machine",
            sampled=False,
            parts=_connections,
            exact=True,
            optional=True,
        ),
        Metric(
            "speedup",
            True,
            "ratio",
            True,
            _speedup,
            "same test's sequential median / this median, measured in the same run",
        ),
        Metric(
            "cpu",
            False,
            "s",
            False,
            _cpu,
            "the app process's CPU time per request (from the probe; same machine only)",
            min_samples=CPU_MIN_SAMPLES,
        ),
        Metric("median", False, "s", False, _median, "median wall time (raw seconds)"),
        Metric(
            "p95",
            False,
            "s",
            False,
            _p95,
            "95th percentile wall time (raw seconds)",
            statistic=p95_of,
        ),
        Metric(
            "first-byte",
            False,
            "s",
            False,
            _first_byte,
            "a streamed answer's median time to its first byte, the first token (raw seconds;"
            " only cases whose app streamed)",
            optional=True,
        ),
        Metric(
            "load-p95",
            False,
            "s",
            False,
            _load_p95,
            "a Locust row's 95th percentile response time; the test uses its whole histogram",
            kind=KIND_LOCUST,
            statistic=p95_of,
        ),
        Metric(
            "rps",
            True,
            "rps",
            False,
            _rps,
            "a Locust row's requests per second (one number a run: threshold only)",
            kind=KIND_LOCUST,
            sampled=False,
        ),
        Metric(
            "completed",
            True,
            "count",
            False,
            _completed,
            "a Locust row's requests that completed without failing (one number a run)",
            kind=KIND_LOCUST,
            sampled=False,
        ),
        Metric(
            "fail-ratio",
            False,
            "ratio",
            True,
            _fail_ratio,
            "a Locust row's failed requests / requests; the test uses one 0/1 per request",
            kind=KIND_LOCUST,
            statistic=statistics.fmean,
        ),
    )
}
