"""The gate's statistics: a Mann-Whitney U test and a bootstrap interval, in pure Python.

Why here and pure: the gate must say "beyond the noise" without SciPy at run
time, and the same numbers must come out of the same files every time (the
bootstrap is seeded). Nothing here knows about cases, runs or rules.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

from pytest_fanout.measurement import percentile


def _normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Mid-ranks (1-based) of `values` and the sizes of the groups of ties."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


@lru_cache(maxsize=4096)
def _u_counts(n1: int, n2: int) -> tuple[int, ...]:
    """How many orderings of n1 x's and n2 y's give U = 0, 1, ..., n1*n2 (no ties)."""
    if n1 == 0 or n2 == 0:
        return (1,)
    # The largest value is an x (it beats all n2 y's) or a y (it adds nothing).
    with_x = _u_counts(n1 - 1, n2)
    with_y = _u_counts(n1, n2 - 1)
    counts = [0] * (n1 * n2 + 1)
    for u, c in enumerate(with_x):
        counts[u + n2] += c
    for u, c in enumerate(with_y):
        counts[u] += c
    return tuple(counts)


@lru_cache(maxsize=4096)
def _u_tails(n1: int, n2: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """P(U >= u) and P(U <= u) for u = 0 .. n1*n2 (no ties): each p-value is one lookup."""
    counts = _u_counts(n1, n2)
    total = sum(counts)
    upper, lower = [0.0] * len(counts), [0.0] * len(counts)
    running = 0
    for u in range(len(counts) - 1, -1, -1):
        running += counts[u]
        upper[u] = running / total
    running = 0
    for u, c in enumerate(counts):
        running += c
        lower[u] = running / total
    return tuple(upper), tuple(lower)


#: Exact p-values (no ties) up to this many x*y pairs; the normal approximation above.
EXACT_LIMIT = 400


def mann_whitney_u(
    x: Sequence[float], y: Sequence[float], alternative: str = "greater"
) -> tuple[float, float]:
    """U statistic of `x` and a p-value for "x tends to be greater than y" (or less, two-sided).

    Exact when there are no ties and the samples are small; otherwise the
    normal approximation with tie and continuity corrections (as SciPy's
    `method="asymptotic"`). Why rank-based: timing samples are skewed with
    outliers, and a rank test does not let one stalled sample decide.
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"unknown alternative {alternative!r}")
    u1, greater, less, exact = _mann_whitney(x, y)
    if alternative == "greater":
        return u1, greater
    if alternative == "less":
        return u1, less
    if exact:
        return u1, min(1.0, 2 * min(greater, less))
    n1, n2 = len(x), len(y)
    n = n1 + n2
    _, ties = _ranks([*x, *y])
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1))
    variance = n1 * n2 / 12 * ((n + 1) - tie_term)
    if variance <= 0:
        return u1, 1.0
    z = (abs(u1 - n1 * n2 / 2) - 0.5) / math.sqrt(variance)
    return u1, min(1.0, 2 * _normal_sf(z))


def mann_whitney_tails(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """(U, p for "x greater", p for "x less") from ONE ranking: what the gate needs per metric."""
    u1, greater, less, _ = _mann_whitney(x, y)
    return u1, greater, less


def _mann_whitney(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float, bool]:
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    ranks, ties = _ranks([*x, *y])
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    if not ties and n1 * n2 <= EXACT_LIMIT:
        upper, lower = _u_tails(n1, n2)
        k = round(u1)
        return u1, upper[k], lower[k], True
    n = n1 + n2
    mean = n1 * n2 / 2
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1))
    variance = n1 * n2 / 12 * ((n + 1) - tie_term)
    if variance <= 0:
        return u1, 1.0, 1.0, False
    sd = math.sqrt(variance)
    greater = _normal_sf((u1 - mean - 0.5) / sd)
    less = _normal_sf((mean - u1 - 0.5) / sd)
    return u1, greater, less, False


def smallest_p(n1: int, n2: int) -> float:
    """The smallest one-sided p-value n1 and n2 samples can give (complete separation)."""
    if n1 < 1 or n2 < 1:
        return 1.0
    if n1 * n2 <= EXACT_LIMIT:
        return 1 / math.comb(n1 + n2, n1)
    return _normal_sf((n1 * n2 / 2 - 0.5) / math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12))


def repeat_needed(alpha: float, least: int = 3) -> int:
    """The fewest samples a side (at least `least`) with which a shift can reach `alpha`."""
    r = least
    while smallest_p(r, r) >= alpha:
        r += 1
    return r


def power_note(n1: int, n2: int, alpha: float, least: int = 3) -> str:
    """ "cannot be flagged with 3 samples a side at alpha 0.01; use repeat >= 5", or "" when
    these sample counts can reach `alpha`."""
    if min(n1, n2) >= least and smallest_p(n1, n2) < alpha:
        return ""
    counts = f"{n1} samples a side" if n1 == n2 else f"{n1} and {n2} samples"
    return (
        f"cannot be flagged with {counts} at alpha {alpha:g}; "
        f"use repeat >= {repeat_needed(alpha, least)}"
    )


#: Most values a side the bootstrap resamples: more are thinned to evenly spaced order
#: statistics (same shape, same answer every time, and 100,000 samples stay fast).
BOOTSTRAP_LIMIT = 500


def _thin(values: Sequence[float], limit: int = BOOTSTRAP_LIMIT) -> list[float]:
    if len(values) <= limit:
        return list(values)
    ordered = sorted(values)
    step = len(ordered) / limit
    return [ordered[int((i + 0.5) * step)] for i in range(limit)]


def bootstrap_interval(
    base: Sequence[float],
    now: Sequence[float],
    statistic: Callable[[Sequence[float]], float] = statistics.median,
    *,
    relative: bool = True,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(now) - statistic(base) (relative if asked).

    Seeded, so the same files always give the same report. More than
    BOOTSTRAP_LIMIT values a side are thinned first.
    """
    rng = random.Random(seed)
    base, now = _thin(base), _thin(now)
    diffs = []
    for _ in range(resamples):
        b = statistic(rng.choices(base, k=len(base)))
        n = statistic(rng.choices(now, k=len(now)))
        if relative:
            if b == 0:
                continue
            diffs.append((n - b) / abs(b))
        else:
            diffs.append(n - b)
    if not diffs:
        return (math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    return percentile(diffs, tail), percentile(diffs, 100 - tail)


#: Most values a histogram gives the rank test, each side (see `histogram_sample`).
HISTOGRAM_SAMPLE_LIMIT = 2000


def histogram_sample(
    histogram: Mapping[float, int], limit: int = HISTOGRAM_SAMPLE_LIMIT
) -> list[float]:
    """The values a histogram counts, or `limit` evenly spaced quantiles of them when more.

    Why thinned: a load run's requests are not independent draws (they share
    the machine's moments), so thousands of them would make any tiny shift
    "significant"; `limit` quantiles keep the distribution's shape, the same
    histogram always gives the same values, and the rank test stays fast.
    """
    buckets = sorted((float(value), int(count)) for value, count in histogram.items() if count > 0)
    total = sum(count for _, count in buckets)
    if total <= limit:
        return [value for value, count in buckets for _ in range(count)]
    out: list[float] = []
    seen, index = 0, 0
    for i in range(limit):
        rank = (i + 0.5) * total / limit  # the middle of the i-th of `limit` equal slices
        while seen + buckets[index][1] <= rank:
            seen += buckets[index][1]
            index += 1
        out.append(buckets[index][0])
    return out


#: Most values a side the smallest-detectable-change computation uses (more are thinned).
DETECTABLE_LIMIT = 200


def _critical_u(n1: int, n2: int, alpha: float) -> int | None:
    """The smallest U (pairs where x beats y) whose one-sided p-value is below `alpha`."""
    if n1 * n2 <= EXACT_LIMIT:
        upper, _ = _u_tails(n1, n2)
        return next((u for u, p in enumerate(upper) if p < alpha), None)
    mean = n1 * n2 / 2
    sd = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    u = math.floor(mean + 0.5 + sd * statistics.NormalDist().inv_cdf(1 - alpha)) + 1
    while u > 0 and _normal_sf((u - 1 - mean - 0.5) / sd) < alpha:
        u -= 1
    while u <= n1 * n2 and _normal_sf((u - mean - 0.5) / sd) >= alpha:
        u += 1
    return u if u <= n1 * n2 else None


@lru_cache(maxsize=4096)
def _detectable(
    base: tuple[float, ...],
    now: tuple[float, ...],
    alpha: float,
    worse_is_higher: bool,
    relative: bool,
    statistic: Callable[[Sequence[float]], float],
) -> float | None:
    b, n = _thin(base, DETECTABLE_LIMIT), _thin(now, DETECTABLE_LIMIT)
    u_star = _critical_u(len(n), len(b), alpha)
    if u_star is None or u_star == 0:
        return None if u_star is None else 0.0
    b_stat, n_stat = statistic(b), statistic(n)
    if relative and (b_stat <= 0 or n_stat <= 0):
        return None
    thresholds = []
    for x in n:
        for y in b:
            # The shift d at which this head sample, moved in the bad direction, passes y.
            if relative:
                ratio = y / (b_stat * x / n_stat) if x > 0 else math.inf
                thresholds.append(ratio - 1 if worse_is_higher else 1 - ratio)
            else:
                moved = b_stat + (x - n_stat)
                thresholds.append(y - moved if worse_is_higher else moved - y)
    thresholds.sort()
    shift = thresholds[u_star - 1]
    if not math.isfinite(shift) or (relative and not worse_is_higher and shift >= 1):
        return None
    return max(0.0, shift)


def smallest_detectable_change(
    base: Sequence[float],
    now: Sequence[float],
    alpha: float,
    *,
    worse_is_higher: bool,
    relative: bool = True,
    statistic: Callable[[Sequence[float]], float] = statistics.median,
) -> float | None:
    """The smallest change in the bad direction the rank test would call beyond the noise.

    Why: a reviewer must see when `repeat` is too small ("catches changes of
    at least 8%"). The head's samples keep their shape (their spread around
    their own statistic) and are moved from the baseline's statistic by d,
    multiplied by 1+d (or 1-d when lower is worse) when `relative`, shifted by
    d otherwise; the answer is the least d at which the one-sided
    Mann-Whitney test of those against the baseline's samples gives p < alpha.
    None when no shift can (too few samples). At most DETECTABLE_LIMIT values
    a side are used.
    """
    if not base or not now:
        return None
    return _detectable(tuple(base), tuple(now), alpha, worse_is_higher, relative, statistic)
