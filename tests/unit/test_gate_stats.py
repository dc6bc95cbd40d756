"""The gate's statistics on made-up numbers: Mann-Whitney U (exact and approximate), bootstrap."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from pytest_fanout.gate.stats import _u_counts, bootstrap_interval, mann_whitney_u


def brute_force_p(x: list[float], y: list[float]) -> float:
    """P(U >= u_observed) over every way to split the pooled values: the definition."""
    pooled = [*x, *y]

    def u_of(xs: list[float], ys: list[float]) -> float:
        return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in xs for b in ys)

    observed = u_of(x, y)
    hits = total = 0
    for chosen in itertools.combinations(range(len(pooled)), len(x)):
        xs = [pooled[i] for i in chosen]
        ys = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        total += 1
        hits += u_of(xs, ys) >= observed - 1e-12
    return hits / total


def test_complete_separation_five_against_five_is_one_in_252() -> None:
    u, p = mann_whitney_u([6, 7, 8, 9, 10], [1, 2, 3, 4, 5], "greater")
    assert u == 25
    assert p == pytest.approx(1 / 252)


def test_alternatives_are_mirror_images() -> None:
    x, y = [1.0, 2.5, 3.0, 7.0], [2.0, 4.0, 5.0, 6.0, 8.0]
    _, greater = mann_whitney_u(x, y, "greater")
    _, less = mann_whitney_u(y, x, "less")
    assert greater == pytest.approx(less)
    _, two = mann_whitney_u(x, y, "two-sided")
    assert two == pytest.approx(min(1.0, 2 * min(greater, mann_whitney_u(x, y, "less")[1])))


@pytest.mark.parametrize("seed", range(6))
def test_exact_p_matches_enumerating_every_split(seed: int) -> None:
    rng = random.Random(seed)
    x = [rng.random() for _ in range(rng.randint(2, 6))]
    y = [rng.random() + 0.2 for _ in range(rng.randint(2, 6))]
    _, p = mann_whitney_u(x, y, "greater")
    assert p == pytest.approx(brute_force_p(x, y))


def test_u_distribution_counts_all_orderings() -> None:
    for n1, n2 in [(1, 1), (3, 4), (5, 5), (7, 3)]:
        counts = _u_counts(n1, n2)
        assert sum(counts) == math.comb(n1 + n2, n1)
        assert list(counts) == list(reversed(counts))  # symmetric around n1*n2/2


def test_ties_use_the_normal_approximation_with_tie_correction() -> None:
    # Worked by hand: pooled ranks of x = [1, 2, 2, 3] and y = [2, 3, 4, 4].
    x, y = [1.0, 2.0, 2.0, 3.0], [2.0, 3.0, 4.0, 4.0]
    u, p = mann_whitney_u(x, y, "less")
    # ranks: 1 -> 1; three 2s -> 3; two 3s -> 5.5; two 4s -> 7.5
    assert u == pytest.approx((1 + 3 + 3 + 5.5) - 4 * 5 / 2)
    n = 8
    variance = 16 / 12 * ((n + 1) - (24 + 6 + 6) / (n * (n - 1)))
    z = (8 - u - 0.5) / math.sqrt(variance)
    assert p == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)))


def test_identical_values_are_never_significant() -> None:
    _, p = mann_whitney_u([1.0] * 6, [1.0] * 6, "greater")
    assert p == 1.0


def test_large_samples_switch_to_the_approximation_and_agree_with_it() -> None:
    rng = random.Random(3)
    x = [rng.gauss(1.0, 0.1) for _ in range(30)]
    y = [rng.gauss(1.05, 0.1) for _ in range(30)]  # 900 pairs: normal approximation
    _, p = mann_whitney_u(x, y, "less")
    assert 0 < p < 0.2


def test_matches_scipy_when_it_is_installed() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(11)
    for size in (4, 8, 25):
        x = [round(rng.gauss(1.0, 0.2), 2) for _ in range(size)]  # rounded: ties
        y = [round(rng.gauss(1.1, 0.2), 2) for _ in range(size + 1)]
        for alternative in ("greater", "less", "two-sided"):
            ours = mann_whitney_u(x, y, alternative)
            theirs = stats.mannwhitneyu(x, y, alternative=alternative, method="asymptotic")
            assert ours[1] == pytest.approx(theirs.pvalue, rel=1e-6)


def test_refuses_empty_samples_and_unknown_alternatives() -> None:
    with pytest.raises(ValueError):
        mann_whitney_u([], [1.0])
    with pytest.raises(ValueError):
        mann_whitney_u([1.0], [1.0], "sideways")


def test_bootstrap_interval_is_seeded_and_brackets_the_shift() -> None:
    rng = random.Random(5)
    base = [rng.gauss(0.100, 0.002) for _ in range(10)]
    now = [s * 1.3 for s in base]
    low, high = bootstrap_interval(base, now)
    assert (low, high) == bootstrap_interval(base, now)  # same seed, same answer
    assert low < 0.3 < high or low == pytest.approx(0.3, abs=0.05)
    assert low > 0.15


def test_bootstrap_interval_of_equal_samples_holds_zero() -> None:
    rng = random.Random(6)
    base = [rng.gauss(0.1, 0.01) for _ in range(10)]
    now = [rng.gauss(0.1, 0.01) for _ in range(10)]
    low, high = bootstrap_interval(base, now)
    assert low < 0 < high
