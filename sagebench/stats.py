"""Uncertainty and comparison statistics for leaderboard accuracies (pure numpy/scipy).

Accuracies in SageBench are counts of correct predictions over a fixed set of images, and
every entry is evaluated on the *same* images, so comparisons between entries are paired:
the functions here take per-image boolean correctness vectors and use paired methods
(exact McNemar, a discordant-pair interval, paired bootstrap) rather than treating two
accuracies as independent binomials, which would overstate the uncertainty of a difference.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np

from sagebench.errors import SageBenchError

__all__ = ["wilson_interval", "paired_difference_interval", "mcnemar_exact", "holm",
           "ratio_bootstrap_interval", "tie_group", "win_rate", "pairwise_matrix"]


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


def paired_difference_interval(a_ok: np.ndarray, b_ok: np.ndarray,
                               confidence: float = 0.95) -> tuple[float, float]:
    """Exact-conditional interval for acc(A) - acc(B) measured on the same images.

    Method: with b = #(A right, B wrong), c = #(A wrong, B right), m = b + c and n images,
    the difference is (b - c)/n = (m/n)(2*pi - 1) where pi = P(A right | discordant). A
    Clopper-Pearson interval [pL, pU] for pi = b/m (scipy ``binomtest(...).proportion_ci(
    method="exact")``) is mapped to ((m/n)(2 pL - 1), (m/n)(2 pU - 1)) (Newcombe 1998, Stat Med
    17:2635-2650, the conditional method; Liddell 1983).

    Why this one: it is the interval that inverts the exact McNemar test, so it contains 0 if
    and only if ``mcnemar_exact(b, c) >= 1 - confidence``; a table never shows a "significant"
    interval next to a non-significant p-value. Newcombe's hybrid score method 10 was checked
    and rejected: at n=14 it excludes 0 for b=4, c=0 (McNemar p=0.125) for most concordant
    splits. Caveat: m/n is treated as fixed, so the *width* undercovers when discordant pairs are
    rare (the upper bound can never exceed m/n); with m = 0 the interval is (0.0, 0.0).
    """
    _check_confidence(confidence)
    a, b = _paired(a_ok, b_ok, ("a_ok", "b_ok"))
    n = a.size
    if n == 0:
        raise SageBenchError("paired_difference_interval needs at least one image")
    b_only, c_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    m = b_only + c_only
    if m == 0:
        return 0.0, 0.0
    from scipy.stats import binomtest

    ci = binomtest(b_only, m, 0.5).proportion_ci(confidence_level=confidence, method="exact")
    scale = m / n
    return scale * (2.0 * float(ci.low) - 1.0), scale * (2.0 * float(ci.high) - 1.0)


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


def tie_group(best: str, correct: Mapping[str, np.ndarray], alpha: float = 0.05) -> dict:
    """Entries not significantly different from ``best`` (exact McNemar, Holm-adjusted).

    ``best`` is compared with every other entry on the same images; the m - 1 p-values are
    Holm-adjusted as one family, and an entry joins the group when its adjusted p >= alpha (a
    two-sided test: an entry significantly *better* than ``best`` is also left out). Returns
    ``{"members": [...] (best included, input order), "p_values": {name: raw p},
    "p_adjusted": {name: Holm p}}``; the p dicts cover the other entries only.
    """
    if best not in correct:
        raise SageBenchError(f"best entry {best!r} is not among {list(correct)}")
    if not 0.0 < alpha < 1.0:
        raise SageBenchError(f"alpha must be in (0, 1), got {alpha!r}")
    ref = _as_bool_vector(correct[best], best)
    others = [name for name in correct if name != best]
    raw: dict[str, float] = {}
    for name in others:
        r, o = _paired(ref, correct[name], (best, name))
        raw[name] = mcnemar_exact(int(np.sum(r & ~o)), int(np.sum(~r & o)))
    adjusted = dict(zip(others, holm([raw[name] for name in others])))
    members = [name for name in correct if name == best or adjusted[name] >= alpha]
    return {"members": members, "p_values": raw, "p_adjusted": adjusted}


def win_rate(scores: Mapping[str, Sequence[float | None]]) -> dict[str, float]:
    """HELM mean win rate of each entry over columns (budgets); higher scores are better.

    Per column, an entry's win rate is (#others with a lower score + 0.5 * #others tied) /
    #others present; columns where the entry is missing (None or NaN) or where fewer than two
    entries are present are skipped, and the column win rates are averaged (Liang et al. 2022,
    "Holistic Evaluation of Language Models", sec. 4; ``compute_aggregate_row_win_rates`` in
    stanford-crfm/helm). Averaging per column keeps a column with many missing entries from
    weighing more or less than another. An entry never comparable gets NaN.
    """
    names = list(scores)
    widths = {len(scores[name]) for name in names}
    if len(widths) > 1:
        raise SageBenchError(f"all entries need the same number of columns, got {sorted(widths)}")
    width = widths.pop() if widths else 0
    per_entry: dict[str, list[float]] = {name: [] for name in names}
    for j in range(width):
        column = {name: float(scores[name][j]) for name in names
                  if scores[name][j] is not None and not math.isnan(float(scores[name][j]))}
        if len(column) < 2:
            continue
        for name, value in column.items():
            wins = sum(1.0 if value > other else 0.5 if value == other else 0.0
                       for other_name, other in column.items() if other_name != name)
            per_entry[name].append(wins / (len(column) - 1))
    return {name: float(np.mean(rates)) if rates else math.nan for name, rates in per_entry.items()}


def pairwise_matrix(correct: Mapping[str, np.ndarray], confidence: float = 0.95) -> list[dict]:
    """Every unordered pair (a, b), in input order: accuracy difference, interval, McNemar p.

    Each row holds ``a``, ``b``, ``accuracy_a``, ``accuracy_b``, ``difference`` (acc a - acc b),
    ``ci_low``/``ci_high`` (:func:`paired_difference_interval`, per pair, not simultaneous),
    ``a_only``/``b_only`` (discordant counts), ``p_value`` (:func:`mcnemar_exact`) and
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
                     "p_value": mcnemar_exact(a_only, b_only)})
    for row, adjusted in zip(rows, holm([row["p_value"] for row in rows])):
        row["p_adjusted"] = adjusted
    return rows
