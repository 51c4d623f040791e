"""Known-answer and property tests of sagebench.stats (pure numpy/scipy, fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, norm

from sagebench.errors import SageBenchError
from sagebench.stats import (
    holm,
    mcnemar_exact,
    paired_difference_interval,
    pairwise_matrix,
    ratio_bootstrap_interval,
    tie_group,
    wilson_interval,
    win_rate,
)


def paired(a: int, b: int, c: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness vectors with a both-right, b A-only, c B-only and d both-wrong images."""
    first = np.array([True] * a + [True] * b + [False] * c + [False] * d)
    second = np.array([True] * a + [False] * b + [True] * c + [False] * d)
    return first, second


# --- Wilson -------------------------------------------------------------------------------

@pytest.mark.parametrize("x, n, low, high", [
    # Newcombe (1998), Stat Med 17:857-872, Table I, method 3 (Wilson score, no correction).
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_newcombe_table_1(x, n, low, high):
    lo, hi = wilson_interval(x, n)
    assert round(lo, 4) == low and round(hi, 4) == high


@pytest.mark.parametrize("x, n, conf", [(3, 10, 0.95), (50, 100, 0.9), (999, 1000, 0.99), (7, 7, 0.95)])
def test_wilson_matches_closed_form(x, n, conf):
    # Wilson (1927): the roots of (p - p_hat)^2 = z^2 p (1 - p) / n, solved as a quadratic in p.
    z = norm.ppf(0.5 + conf / 2)
    p_hat = x / n
    qa, qb, qc = 1 + z * z / n, -(2 * p_hat + z * z / n), p_hat * p_hat
    disc = math.sqrt(qb * qb - 4 * qa * qc)
    expected = ((-qb - disc) / (2 * qa), (-qb + disc) / (2 * qa))
    assert wilson_interval(x, n, conf) == pytest.approx(expected, abs=1e-12)


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) is None
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and 0 < lo < 1
    with pytest.raises(SageBenchError):
        wilson_interval(5, 4)
    with pytest.raises(SageBenchError):
        wilson_interval(1, 4, confidence=1.0)


# --- McNemar and Holm ---------------------------------------------------------------------

def test_mcnemar_known_answers():
    assert mcnemar_exact(4, 0) == pytest.approx(0.125)
    assert mcnemar_exact(0, 4) == pytest.approx(0.125)
    assert mcnemar_exact(7, 0) == pytest.approx(2 * 0.5 ** 7)
    assert mcnemar_exact(0, 0) == 1.0
    for k in (1, 5, 30):
        assert mcnemar_exact(k, k) == 1.0
    assert mcnemar_exact(10, 2) == pytest.approx(2 * sum(math.comb(12, i) for i in range(3)) / 2 ** 12)


def test_holm_hand_example():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02, 0.02]) == pytest.approx([0.04, 0.04])  # ties
    assert holm([]) == []
    with pytest.raises(SageBenchError):
        holm([0.1, 1.5])


# --- paired difference interval -----------------------------------------------------------

@pytest.mark.parametrize("a", range(11))
def test_interval_b4_c0_n14_includes_zero_for_every_concordant_split(a):
    first, second = paired(a, 4, 0, 10 - a)
    assert mcnemar_exact(4, 0) == pytest.approx(0.125)
    lo, hi = paired_difference_interval(first, second)
    assert lo <= 0.0 <= hi
    # b/m = 1: Clopper-Pearson upper bound is 1, so the upper end is the estimate m/n itself.
    assert lo < hi == pytest.approx(4 / 14)


def test_interval_b7_c0_n14_excludes_zero():
    first, second = paired(3, 7, 0, 4)
    lo, hi = paired_difference_interval(first, second)
    assert 0.0 < lo < 7 / 14
    # b/m = 1 -> Clopper-Pearson lower bound (alpha/2)^(1/7); mapped by (m/n)(2p - 1).
    assert lo == pytest.approx(7 / 14 * (2 * 0.025 ** (1 / 7) - 1))
    assert hi == pytest.approx(7 / 14)


def test_interval_known_answer_and_antisymmetry():
    first, second = paired(20, 9, 3, 18)
    lo, hi = paired_difference_interval(first, second)
    # Clopper-Pearson bounds for 9/12 via binomial tails: P(X >= 9 | pL) = P(X <= 9 | pU) = 0.025.
    assert binom.sf(8, 12, (lo * 50 / 12 + 1) / 2) == pytest.approx(0.025, abs=1e-9)
    assert binom.cdf(9, 12, (hi * 50 / 12 + 1) / 2) == pytest.approx(0.025, abs=1e-9)
    assert paired_difference_interval(second, first) == pytest.approx((-hi, -lo))
    assert paired_difference_interval(first, first) == (0.0, 0.0)


def test_interval_agrees_with_exact_mcnemar_on_every_split_of_up_to_40_images():
    """Every (b, c) with b + c <= 40, i.e. every sample of up to 40 images, each once (it was 3000 random
    samples of 5-40 images: the same cases, some many times, 3.5x the time). Containing 0, and containing
    the observed difference, depend on b and c only (n scales the interval and the difference alike);
    the concordant images around them are drawn at random."""
    rng = np.random.default_rng(1234)
    agree_ns = agree_sig = n_ns = n_sig = 0
    for b in range(41):
        for c in range(41 - b):
            both = int(rng.integers(0, 41 - b - c))
            first, second = paired(both, b, c, int(rng.integers(0, 41 - b - c - both)))
            if first.size == 0:
                continue
            p = mcnemar_exact(b, c)
            lo, hi = paired_difference_interval(first, second)
            contains = lo <= 0.0 <= hi
            if p >= 0.05:
                n_ns += 1
                agree_ns += contains
            else:
                n_sig += 1
                agree_sig += not contains
            assert lo <= (b - c) / first.size <= hi
    assert n_ns > 300 and n_sig > 300
    # The interval inverts the exact McNemar test, so the agreement is total, not just a majority.
    assert (agree_ns, agree_sig) == (n_ns, n_sig)


def test_interval_agrees_with_mcnemar_exhaustively_at_90_percent():
    for b in range(17):
        for c in range(17 - b):
            first, second = paired(0, b, c, 16 - b - c)
            lo, hi = paired_difference_interval(first, second, confidence=0.9)
            assert (lo <= 0.0 <= hi) == (mcnemar_exact(b, c) >= 0.1), (b, c)


def test_interval_rejects_mismatched_vectors():
    with pytest.raises(SageBenchError):
        paired_difference_interval(np.ones(5, bool), np.ones(6, bool))
    with pytest.raises(SageBenchError):
        paired_difference_interval(np.array([], bool), np.array([], bool))


# --- ceiling-ratio bootstrap --------------------------------------------------------------

def test_ratio_bootstrap_is_deterministic_and_contains_the_estimate():
    rng = np.random.default_rng(7)
    den = rng.random(500) < 0.8
    num = den & (rng.random(500) < 0.9) | (~den & (rng.random(500) < 0.1))
    first = ratio_bootstrap_interval(num, den, seed=3)
    assert first == ratio_bootstrap_interval(num, den, seed=3)
    assert first != ratio_bootstrap_interval(num, den, seed=4)
    lo, hi = first
    assert lo < num.sum() / den.sum() < hi
    assert hi - lo < 0.1


def test_ratio_bootstrap_matches_index_resampling_in_distribution():
    # The cell-count (multinomial) draw must reproduce the plain paired index bootstrap.
    rng = np.random.default_rng(11)
    den = rng.random(300) < 0.7
    num = den & (rng.random(300) < 0.8) | (~den & (rng.random(300) < 0.2))
    idx = rng.integers(0, 300, size=(20000, 300))
    naive = np.quantile(num[idx].sum(1) / den[idx].sum(1), [0.025, 0.975])
    assert ratio_bootstrap_interval(num, den, resamples=20000, seed=5) == pytest.approx(naive, abs=0.01)


def test_ratio_bootstrap_edge_cases():
    assert ratio_bootstrap_interval(np.ones(10, bool), np.zeros(10, bool)) is None
    lo, hi = ratio_bootstrap_interval(np.ones(10, bool), np.ones(10, bool))
    assert lo == hi == 1.0
    # One correct image in the denominator: many resamples have den == 0 and are dropped.
    den = np.zeros(20, bool)
    den[0] = True
    lo, hi = ratio_bootstrap_interval(den.copy(), den)
    assert lo == hi == 1.0


# --- tie groups, win rate, pairwise matrix ------------------------------------------------

def test_tie_group_on_constructed_vectors():
    rng = np.random.default_rng(0)
    best = rng.random(200) < 0.85
    near = best.copy()
    near[np.flatnonzero(best)[:2]] = False  # 2 discordant pairs: p = 0.5
    worse = best & (rng.random(200) < 0.6)  # loses ~68 images, wins none
    group = tie_group("best", {"worse": worse, "best": best, "same": best.copy(), "near": near})
    assert group["members"] == ["best", "same", "near"]
    assert set(group["p_values"]) == {"worse", "same", "near"}
    assert group["p_values"]["same"] == 1.0 and group["p_values"]["near"] == pytest.approx(0.5)
    assert group["p_adjusted"]["worse"] < 1e-10
    assert group["p_adjusted"]["near"] == pytest.approx(1.0)
    with pytest.raises(SageBenchError):
        tie_group("missing", {"best": best})


def test_win_rate_hand_example_with_tie():
    scores = {"A": [0.9, 0.8, None], "B": [0.7, 0.8, 0.5], "C": [0.6, 0.1, 0.6]}
    rates = win_rate(scores)
    # column 0: A 1, B 0.5, C 0; column 1: A 0.75 (beats C, ties B), B 0.75, C 0;
    # column 2 (A missing): B 0, C 1.
    assert rates == pytest.approx({"A": 0.875, "B": (0.5 + 0.75 + 0) / 3, "C": 1 / 3})
    assert math.isnan(win_rate({"A": [1.0], "B": [None]})["A"])
    with pytest.raises(SageBenchError):
        win_rate({"A": [1.0], "B": [1.0, 2.0]})


def test_pairwise_matrix_rows():
    a, b = paired(5, 7, 0, 2)
    c = np.ones(14, bool)
    rows = pairwise_matrix({"A": a, "B": b, "C": c})
    assert [(row["a"], row["b"]) for row in rows] == [("A", "B"), ("A", "C"), ("B", "C")]
    first = rows[0]
    assert first["difference"] == pytest.approx(0.5)
    assert (first["a_only"], first["b_only"]) == (7, 0)
    assert first["p_value"] == pytest.approx(2 * 0.5 ** 7)
    assert (first["ci_low"], first["ci_high"]) == pytest.approx(paired_difference_interval(a, b))
    assert [row["p_adjusted"] for row in rows] == pytest.approx(holm([row["p_value"] for row in rows]))
    assert first["accuracy_a"] == pytest.approx(12 / 14) and first["accuracy_b"] == pytest.approx(5 / 14)
