"""Uncertainty and comparison statistics for leaderboard accuracies (pure numpy/scipy).

Accuracies in SageBench are counts of correct predictions over a fixed set of images, and
every entry is evaluated on the *same* images, so comparisons between entries are paired:
the functions here take per-image boolean correctness vectors and use paired methods
(McNemar's tests, Tango's score interval, the paired bootstrap, simultaneous rank intervals)
rather than treating two accuracies as independent binomials, which would overstate the
uncertainty of a difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np

from sagebench.errors import SageBenchError

__all__ = ["wilson_interval", "paired_difference_interval", "tango_interval", "mcnemar_exact", "mcnemar_score",
           "holm", "ratio_bootstrap_interval", "paired_bootstrap", "rank_sets", "RankSets", "pairwise_matrix"]


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise SageBenchError(f"confidence must be in (0, 1), got {confidence!r}")


def _as_bool_vector(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise SageBenchError(f"{name} must be a 1-D per-image correctness vector, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise SageBenchError(f"{name} must hold booleans (or 0/1), got dtype {arr.dtype}")
        arr = arr.astype(bool)
    return arr


def _paired(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_bool_vector(a, names[0]), _as_bool_vector(b, names[1])
    if a.shape != b.shape:
        raise SageBenchError(f"{names[0]} and {names[1]} cover different numbers of images "
                             f"({a.size} vs {b.size}); paired statistics need the same images")
    return a, b


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion ``successes / n``; None when ``n == 0``.

    Why Wilson: unlike the Wald interval it stays inside [0, 1], is non-degenerate at 0/n and
    n/n, and its coverage stays close to nominal at small n (Wilson 1927, JASA 22:209-212;
    Newcombe 1998, Stat Med 17:857-872, method 3; Brown, Cai & DasGupta 2001, Stat Sci 16:101).
    """
    _check_confidence(confidence)
    if n < 0 or not 0 <= successes <= n:
        raise SageBenchError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return None
    from scipy.stats import norm  # scipy.stats costs ~1 s to import: only when an interval is computed

    z = float(norm.ppf(0.5 + confidence / 2))
    p, z2 = successes / n, z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` (A right, B wrong) and ``c``.

    Under H0 (equal accuracy) b | b+c ~ Binomial(b+c, 1/2); the p-value doubles the smaller tail,
    ``min(1, 2 * P(X <= min(b, c)))``, and is 1.0 when there are no discordant pairs. The exact
    form is used because benchmark slices are often small, where the chi-square version is
    unreliable (McNemar 1947, Psychometrika 12:153; Fagerland, Lydersen & Laake 2013, BMC Med Res
    Methodol 13:91).
    """
    if b < 0 or c < 0:
        raise SageBenchError(f"discordant counts must be non-negative, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    from scipy.stats import binom

    return float(min(1.0, 2.0 * binom.cdf(min(b, c), b + c, 0.5)))


#: Continuity correction (in images) of the paired score statistic: half a count off |b - c - n delta|, the
#: Yates-type correction for a count that moves in steps of 1. Without it Tango's interval covers only 93.3%
#: at n=100 near psi = 0.15, d = psi (one strategy never loses); with it never below 95.0% on the grid.
CONTINUITY = 0.5


def mcnemar_score(b: int, c: int, correction: float = CONTINUITY) -> float:
    """Two-sided McNemar score test p-value (asymptotic) from the discordant counts ``b`` and ``c``.

    ``z = max(|b - c| - correction, 0) / sqrt(b + c)``, ``p = P(|Z| >= z)``; 1.0 when there are no
    discordant pairs. Why this one beside :func:`mcnemar_exact`: it is the test that
    :func:`paired_difference_interval` inverts (Tango's statistic at a difference of 0 is exactly
    this z), so a comparison's interval excludes 0 if and only if this p is below
    ``1 - confidence``: a table never shows a "significant" interval beside a non-significant p.
    """
    if b < 0 or c < 0:
        raise SageBenchError(f"discordant counts must be non-negative, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(math.erfc(max(abs(b - c) - correction, 0.0) / math.sqrt(2.0 * (b + c))))


def _tango_statistic(delta: np.ndarray, b: np.ndarray, c: np.ndarray, n: np.ndarray,
                     correction: float) -> np.ndarray:
    """Tango's score statistic T(delta) = (b - c - n delta) / sqrt(n (2 q21 + delta - delta^2)).

    ``q21`` is the maximum-likelihood P(A wrong, B right) restricted to p12 - p21 = delta, in
    closed form (Tango 1998, Stat Med 17:891-908): the positive root of ``A q^2 + B q + C`` with
    A = 2n, B = -b - c + (2n - b + c) delta, C = -c delta (1 - delta). The numerator's magnitude
    is reduced by ``correction`` (not below 0).
    """
    big_a = 2.0 * n
    big_b = -b - c + (2.0 * n - b + c) * delta
    big_c = -c * delta * (1.0 - delta)
    q21 = (np.sqrt(np.maximum(big_b * big_b - 4.0 * big_a * big_c, 0.0)) - big_b) / (2.0 * big_a)
    var = np.maximum(n * (2.0 * q21 + delta - delta * delta), 1e-300)
    x = b - c - n * delta
    return np.sign(x) * np.maximum(np.abs(x) - correction, 0.0) / np.sqrt(var)


def tango_interval(b: np.ndarray | int, c: np.ndarray | int, n: np.ndarray | int, confidence: float = 0.95,
                   correction: float = CONTINUITY) -> tuple[np.ndarray, np.ndarray]:
    """Tango's score interval for p12 - p21 from discordant counts ``b``, ``c`` of ``n`` pairs (vectorised).

    The interval is ``{delta: |T(delta)| <= z}`` (:func:`_tango_statistic`): T falls from +inf
    to -inf across (-1, 1) and is 0 at the estimate (b - c)/n, so each bound is the one crossing
    on its side, found by 64 bisection steps (to float precision) for every table at once.
    """
    _check_confidence(confidence)
    b, c, n = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (b, c, n)))
    if (n <= 0).any() or (b < 0).any() or (c < 0).any() or (b + c > n).any():
        raise SageBenchError("tango_interval needs counts 0 <= b, c with b + c <= n and n >= 1")
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    est = (b - c) / n
    bounds = []
    for target, lo, hi in ((z, np.full(b.shape, -1.0), est.copy()), (-z, est.copy(), np.full(b.shape, 1.0))):
        for _ in range(64):  # T - target changes sign once on [lo, hi]: keep the crossing inside
            mid = 0.5 * (lo + hi)
            above = _tango_statistic(mid, b, c, n, correction) > target
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        bounds.append(0.5 * (lo + hi))
    low = np.where(b - c <= -n, -1.0, bounds[0])  # an estimate of -1 or +1 is its own bound
    high = np.where(b - c >= n, 1.0, bounds[1])
    return low, high


def paired_difference_interval(a_ok: np.ndarray, b_ok: np.ndarray,
                               confidence: float = 0.95) -> tuple[float, float]:
    """Tango's score interval (continuity-corrected) for acc(A) - acc(B) measured on the same images.

    Method: with b = #(A right, B wrong), c = #(A wrong, B right) and n images, the difference is
    (b - c)/n; the interval is the set of differences that Tango's score test does not reject
    (:func:`tango_interval`; Tango 1998, Stat Med 17:891, recommended by Fagerland, Lydersen &
    Laake 2014, Stat Methods Med Res 24:224), with half a count of continuity correction
    (:data:`CONTINUITY`). It inverts the McNemar score test with the same correction
    (:func:`mcnemar_score`), so it contains 0 exactly when that p >= 1 - confidence.

    Why not the exact-conditional interval used before: it treats the number of discordant images
    as fixed, so its width ignores that randomness and it undercovers whenever the difference is
    large relative to the discordance (about 89% at n=3000, d=0.20, psi=0.30; 36-60% when one
    strategy never loses), however many discordant images there are. Newcombe's hybrid score
    interval (his method 10) was measured too and rejected: 87.8% at n=100, psi=0.05, d=psi.

    Measured coverage of the 95% interval, exact (every 2x2 table of probability above 1e-12
    enumerated, ``benchmarks/paired_interval_coverage.py``), over psi = p12 + p21 in
    {0.05, 0.1, 0.2, 0.3, 0.5}, d = p12 - p21 in {0, psi/4, psi/2, 3psi/4, psi} (d = psi: B never
    beats A), n in {100, 300, 1000, 3000}: minimum 95.1%, mean 95.8%; on a finer grid (psi in
    0.05..0.5 by 0.05, d/psi in -1..1 by 0.1, n in {100, 137, 200, 500}) minimum 95.0%. Without the
    correction the minimum is 93.3% (n=100). ``tests/test_stats.py`` re-checks a seeded simulation.
    With no discordant image the interval is not a point: no discordance among n images is evidence
    of a small difference, not of none.
    """
    _check_confidence(confidence)
    a, b = _paired(a_ok, b_ok, ("a_ok", "b_ok"))
    n = a.size
    if n == 0:
        raise SageBenchError("paired_difference_interval needs at least one image")
    b_only, c_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    low, high = tango_interval(b_only, c_only, n, confidence)
    return float(low), float(high)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, returned in the input order.

    The i-th smallest p is multiplied by (m - i + 1), a running maximum makes the sequence
    monotone, and values are capped at 1. Holm controls the family-wise error rate under any
    dependence between the tests, uniformly more powerful than Bonferroni (Holm 1979, Scand J
    Statist 6:65-70); the comparisons here share images, so they are dependent.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise SageBenchError("holm expects a flat sequence of p-values")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise SageBenchError(f"p-values must lie in [0, 1], got {list(pvalues)}")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted.tolist()


def ratio_bootstrap_interval(num_ok: np.ndarray, den_ok: np.ndarray, resamples: int = 2000,
                             seed: int = 0, confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the ceiling ratio sum(num_ok) / sum(den_ok).

    The ratio (accuracy with the budgeted patches over accuracy with all patches, same images)
    has no simple closed-form interval, and its numerator and denominator are correlated, so
    images are resampled *jointly* (Efron & Tibshirani 1993, An Introduction to the Bootstrap,
    ch. 13, percentile method). The statistic depends only on how many resampled images fall in
    each of the four (num, den) cells, so one draw of n indices is replaced by the equivalent
    multinomial draw of the four cell counts: the same bootstrap distribution, vectorised over
    all resamples in O(resamples) memory. Resamples with a zero denominator are dropped; None
    when ``den_ok`` is all False (or every resample was dropped). Seeded: deterministic.
    """
    _check_confidence(confidence)
    if resamples < 1:
        raise SageBenchError(f"resamples must be >= 1, got {resamples}")
    num, den = _paired(num_ok, den_ok, ("num_ok", "den_ok"))
    n = num.size
    if n == 0 or not den.any():
        return None
    cells = np.array([np.sum(num & den), np.sum(num & ~den), np.sum(~num & den)], dtype=float)
    probs = np.append(cells, n - cells.sum()) / n
    counts = np.random.default_rng(seed).multinomial(n, probs, size=resamples)
    num_s, den_s = counts[:, 0] + counts[:, 1], counts[:, 0] + counts[:, 2]
    keep = den_s > 0
    if not keep.any():
        return None
    ratios = num_s[keep] / den_s[keep]
    alpha = 1.0 - confidence
    lo, hi = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


#: Bootstrap replicates drawn per block: bounds the weight matrix at BLOCK x n (10,000 images: 20 MB).
BLOCK = 250


def paired_bootstrap(numerators: np.ndarray, denominators: np.ndarray | None = None, resamples: int = 2000,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ratios of per-image sums and their paired bootstrap replicates: ``(estimate [...], replicates [R, ...])``.

    ``numerators[..., n]`` (e.g. rows x budgets x images of 0/1 correctness) and ``denominators``
    of the same shape or broadcastable to it (None: every image counts 1, so the ratio is a mean).
    The statistic is ``sum_i w_i num[..., i] / sum_i w_i den[..., i]`` with ``w = 1`` for the
    estimate and ``w`` = how often each image was drawn in a replicate of n draws with replacement.
    *Paired*: one draw of images serves every row and column, so a replicate keeps the correlation
    between strategies measured on the same images, which is what makes their differences precise.
    Replicates with a zero denominator anywhere are dropped (all columns together, keeping the
    pairing). Seeded (numpy ``default_rng(seed)``, blocks of :data:`BLOCK`): the same inputs give
    the same replicates. Cost: one ``[BLOCK, n] @ [n, cells]`` product per block.
    """
    if resamples < 1:
        raise SageBenchError(f"resamples must be >= 1, got {resamples}")
    num = np.asarray(numerators, dtype=float)
    if num.ndim < 1 or num.shape[-1] == 0:
        raise SageBenchError("paired_bootstrap needs at least one image (the last axis)")
    den = np.ones_like(num) if denominators is None else np.broadcast_to(np.asarray(denominators, float), num.shape)
    shape, n = num.shape[:-1], num.shape[-1]
    flat_num, flat_den = num.reshape(-1, n), den.reshape(-1, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = (flat_num.sum(1) / flat_den.sum(1)).reshape(shape)
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, resamples, BLOCK):
        size = min(BLOCK, resamples - start)
        draws = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        weights = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(float)
        sums_num, sums_den = weights @ flat_num.T, weights @ flat_den.T
        keep = (sums_den != 0).all(axis=1)
        out.append(sums_num[keep] / sums_den[keep])
    replicates = np.concatenate(out).reshape(-1, *shape)
    if not replicates.shape[0]:
        raise SageBenchError("every bootstrap replicate had a zero denominator: no interval")
    return estimate, replicates


@dataclass(frozen=True)
class RankSets:
    """Simultaneous confidence sets for the ranks of k scores (higher is better); see :func:`rank_sets`."""

    estimate: np.ndarray  # [k] the scores
    low: np.ndarray  # [k] marginal percentile interval of each score (one row at a time)
    high: np.ndarray
    rank_low: np.ndarray  # [k] 1 + number of rows significantly better
    rank_high: np.ndarray  # [k] k - number of rows significantly worse
    diff_low: np.ndarray  # [k, k] simultaneous bounds of estimate[i] - estimate[j]
    diff_high: np.ndarray
    critical: float  # the max-|t| critical value (nan with fewer than two rows to compare)
    confidence: float
    resamples: int  # replicates used

    @property
    def better(self) -> np.ndarray:
        """``[i, j]``: row i is significantly better than row j (its simultaneous interval is above 0)."""
        return self.diff_low > 0


def rank_sets(estimate: np.ndarray, replicates: np.ndarray, confidence: float = 0.95) -> RankSets:
    """Simultaneous rank intervals of k scores from paired bootstrap replicates (Mogstad et al. 2024).

    Method (Mogstad, Romano, Shaikh & Wilhelm, "Inference for ranks with applications to mobility
    across neighbourhoods and academic achievement across countries", Review of Economic Studies
    2024, sec. 3): for every pair i < j the difference D_ij = s_i - s_j has the bootstrap standard
    error se_ij; the critical value c is the ``confidence`` quantile (the next order statistic up)
    of max over all pairs of |D*_ij - D_ij| / se_ij across replicates, so the intervals
    D_ij +- c se_ij hold for every pair at once with probability ``confidence``. Row j's rank set is
    ``[1 + #{i: D_ij > 0 surely}, k - #{i: D_ji > 0 surely}]``; when every pairwise interval holds,
    every row's true rank (1 + the number of truly better rows) is inside its set, so the sets
    cover jointly. Ties cost nothing: equal rows simply never separate.

    A pair whose bootstrap difference never varies (the same value on every image) cannot be
    studentised: it is left out of the maximum and never declared significant (interval between
    0 and its difference).
    """
    _check_confidence(confidence)
    est = np.asarray(estimate, dtype=float)
    reps = np.asarray(replicates, dtype=float)
    k = est.size
    if reps.ndim != 2 or reps.shape[1] != k:
        raise SageBenchError(f"replicates must be [resamples, {k}], got {reps.shape}")
    alpha = 1.0 - confidence
    low, high = (np.quantile(reps, [alpha / 2, 1 - alpha / 2], axis=0) if k else (np.zeros(0), np.zeros(0)))
    diff = est[:, None] - est[None, :]
    diff_low, diff_high = np.minimum(diff, 0.0), np.maximum(diff, 0.0)
    critical = math.nan
    if k > 1:
        i, j = np.triu_indices(k, 1)
        d, dr = diff[i, j], reps[:, i] - reps[:, j]
        se = dr.std(axis=0, ddof=1) if reps.shape[0] > 1 else np.zeros(d.size)
        ok = se > 1e-12
        if ok.any():
            tmax = (np.abs(dr[:, ok] - d[ok]) / se[ok]).max(axis=1)
            critical = float(np.quantile(tmax, confidence, method="higher"))
            lo, hi = d[ok] - critical * se[ok], d[ok] + critical * se[ok]
            diff_low[i[ok], j[ok]], diff_high[i[ok], j[ok]] = lo, hi
            diff_low[j[ok], i[ok]], diff_high[j[ok], i[ok]] = -hi, -lo
    better = diff_low > 0
    rank_low = 1 + better.sum(axis=0)
    rank_high = k - better.sum(axis=1)
    return RankSets(est, np.asarray(low), np.asarray(high), rank_low, rank_high, diff_low, diff_high, critical,
                    confidence, int(reps.shape[0]))


def pairwise_matrix(correct: Mapping[str, np.ndarray], confidence: float = 0.95) -> list[dict]:
    """Every unordered pair (a, b), in input order: accuracy difference, interval, McNemar p.

    Each row holds ``a``, ``b``, ``accuracy_a``, ``accuracy_b``, ``difference`` (acc a - acc b),
    ``ci_low``/``ci_high`` (:func:`paired_difference_interval`, per pair, not simultaneous),
    ``a_only``/``b_only`` (discordant counts), ``p_value`` (:func:`mcnemar_score`, the test the
    interval inverts) and
    ``p_adjusted`` (Holm over all pairs, so a pair whose own interval excludes 0 can still have
    ``p_adjusted`` above alpha once the whole family is accounted for).
    """
    vectors = {name: _as_bool_vector(vec, name) for name, vec in correct.items()}
    rows: list[dict] = []
    for name_a, name_b in combinations(vectors, 2):
        a, b = _paired(vectors[name_a], vectors[name_b], (name_a, name_b))
        if a.size == 0:
            raise SageBenchError("pairwise_matrix needs at least one image")
        a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
        low, high = paired_difference_interval(a, b, confidence)
        rows.append({"a": name_a, "b": name_b, "accuracy_a": float(a.mean()),
                     "accuracy_b": float(b.mean()), "difference": (a_only - b_only) / a.size,
                     "ci_low": low, "ci_high": high, "a_only": a_only, "b_only": b_only,
                     "p_value": mcnemar_score(a_only, b_only)})
    for row, adjusted in zip(rows, holm([row["p_value"] for row in rows])):
        row["p_adjusted"] = adjusted
    return rows
