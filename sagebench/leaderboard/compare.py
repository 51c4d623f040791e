"""Paired comparison of two entries (or two strategies) on the images both evaluated."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sagebench.cells import Cell
from sagebench.errors import LeaderboardError
from sagebench.leaderboard.render import _pct
from sagebench.leaderboard.store import (
    Board,
    _diff_fields,
    default_root,
    list_boards,
    load_run,
    safe_name,
)
from sagebench.leaderboard.validate import (
    benchmark_fields,
    read_samples,
    validate_entry,
    validate_samples,
)

BOOTSTRAP_RESAMPLES = 2000


BOOTSTRAP_SEED = 0


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of ``b`` vs ``c`` discordant pairs at p = 1/2."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1))  # exact integers
    return min(1.0, 2 * tail / 2 ** n)


def paired_bootstrap_ci(a_ok: np.ndarray, b_ok: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(a_ok) - mean(b_ok) under resampling the paired images.

    The per-image difference takes only the values -1, 0, 1, so a resample of ``n`` pairs is
    a multinomial draw of those three counts: exactly the index bootstrap, in O(resamples).
    """
    a_ok, b_ok = np.asarray(a_ok, bool), np.asarray(b_ok, bool)
    n = len(a_ok)
    if n == 0:
        return (float("nan"), float("nan"))
    only_a = int((a_ok & ~b_ok).sum())
    only_b = int((~a_ok & b_ok).sum())
    p = np.array([only_a, only_b, n - only_a - only_b], dtype=float) / n
    counts = np.random.default_rng(seed).multinomial(n, p, size=resamples)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    alpha = (1 - level) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha])
    return float(lo), float(hi)


def resolve_ref(ref: str, root: Path | None = None, board: str | None = None) -> tuple[dict[str, Any], Path | None, str]:
    """An entry by path (run folder, results JSON, entry file) or by entry name on a board."""
    path = Path(ref)
    if path.exists():
        return load_run(path)
    root = Path(root or default_root())
    boards = [safe_name(board, "board name")] if board else list_boards(root)
    name = safe_name(ref, "entry name")
    hits = [Board(root, b) for b in boards if (Board(root, b).entries_dir / f"{name}.json").is_file()]
    if not hits:
        raise LeaderboardError(f"{ref!r} is neither a path nor an entry of {'board ' + board if board else 'any board'} "
                               f"under {root}.")
    if len(hits) > 1:
        raise LeaderboardError(f"entry {ref!r} exists on several boards ({', '.join(h.name for h in hits)}): use --board.")
    return load_run(hits[0].entries_dir / f"{name}.json")


def _pick_strategy(entry: dict[str, Any], wanted: str | None, where: str) -> str:
    labels = list(dict.fromkeys(r["strategy"] for r in entry["results"]))
    if wanted is None:
        if len(labels) == 1:
            return labels[0]
        raise LeaderboardError(f"{where} has several strategies ({', '.join(labels)}): choose with --strategy.")
    if wanted not in labels:
        raise LeaderboardError(f"{where} has no strategy {wanted!r}; it has {', '.join(labels)}.")
    return wanted


def compare(ref_a: str, ref_b: str, strategies: Sequence[str] = (), root: Path | None = None,
            board: str | None = None, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
            ) -> dict[str, Any]:
    """Paired comparison of two entries (or two strategies of one entry) on the same images.

    For every budget both have: offloaded accuracy of A and B over the images both offloaded,
    the difference A - B with a 95% paired bootstrap percentile interval, the discordant counts
    and the exact McNemar p-value. ``strategies``: none (each entry has one strategy), one (the
    same label in both), or two (A's, B's). Refused when the benchmarks or the images differ or
    a per-sample file is missing.
    """
    if len(strategies) > 2:
        raise LeaderboardError("give at most two strategies: A's and B's.")
    a, a_samples, a_where = resolve_ref(ref_a, root, board)
    b, b_samples, b_where = resolve_ref(ref_b, root, board)
    for entry, samples, where in ((a, a_samples, a_where), (b, b_samples, b_where)):
        validate_entry({k: v for k, v in entry.items() if k not in ("output_dir", "report")}, where)
        if samples is None:
            raise LeaderboardError(f"{where} has no per-sample file: a paired comparison needs one "
                                   "(samples.parquet beside results.json, or <entry>.samples.parquet).")
    sa = _pick_strategy(a, strategies[0] if strategies else None, a_where)
    sb = _pick_strategy(b, strategies[-1] if strategies else None, b_where)
    if a["benchmark"]["fingerprint"] != b["benchmark"]["fingerprint"]:
        diff = _diff_fields(benchmark_fields(a["benchmark"]), benchmark_fields(b["benchmark"]))
        raise LeaderboardError(f"{a_where} and {b_where} are different benchmarks (fingerprints "
                               f"{a['benchmark']['fingerprint']} vs {b['benchmark']['fingerprint']}; differ in "
                               f"{', '.join(diff)}): not a paired comparison.")
    ca, cb = read_samples(a_samples), read_samples(b_samples)
    validate_samples(a, ca, str(a_samples))
    validate_samples(b, cb, str(b_samples))
    order_a, order_b = np.argsort(ca["sample_id"], kind="stable"), np.argsort(cb["sample_id"], kind="stable")
    ids_a, ids_b = ca["sample_id"][order_a], cb["sample_id"][order_b]
    if len(ids_a) != len(ids_b) or not np.array_equal(ids_a, ids_b):
        only = np.setdiff1d(ids_a, ids_b).size + np.setdiff1d(ids_b, ids_a).size
        raise LeaderboardError(f"the two entries were measured on different images ({len(ids_a)} vs {len(ids_b)} "
                               f"images, {only} sample ids in only one): not a paired comparison.")
    label = ca["label"][order_a]
    if not np.array_equal(label, cb["label"][order_b]):
        raise LeaderboardError("the two entries give the same sample ids different labels: different images.")
    off = ca["offloaded"][order_a].astype(bool) & cb["offloaded"][order_b].astype(bool)
    budgets = sorted({r["budget"] for r in a["results"] if r["strategy"] == sa}
                     & {r["budget"] for r in b["results"] if r["strategy"] == sb})
    if not budgets:
        raise LeaderboardError(f"{sa!r} of A and {sb!r} of B share no budget.")
    unit = a["benchmark"].get("budget_unit", "patches")  # same fingerprint: the same unit for both
    rows = []
    for budget in budgets:
        a_ok = (ca[Cell(sa, budget, unit).key("pred")][order_a] == label)[off]
        b_ok = (cb[Cell(sb, budget, unit).key("pred")][order_b] == label)[off]
        n = int(off.sum())
        only_a, only_b = int((a_ok & ~b_ok).sum()), int((~a_ok & b_ok).sum())
        lo, hi = paired_bootstrap_ci(a_ok, b_ok, resamples, seed)
        rows.append({"budget": budget, "n": n, "acc_a": float(a_ok.mean()) if n else None,
                     "acc_b": float(b_ok.mean()) if n else None,
                     "diff": float(a_ok.mean() - b_ok.mean()) if n else None, "ci_low": lo, "ci_high": hi,
                     "only_a": only_a, "only_b": only_b, "p_mcnemar": mcnemar_exact(only_a, only_b)})
    return {"a": {"ref": ref_a, "strategy": sa}, "b": {"ref": ref_b, "strategy": sb},
            "fingerprint": a["benchmark"]["fingerprint"], "num_images": int(len(ids_a)),
            "num_offloaded_both": int(off.sum()),
            "offloaded_differ": int((ca["offloaded"][order_a].astype(bool) != cb["offloaded"][order_b].astype(bool)).sum()),
            "resamples": resamples, "seed": seed, "rows": rows}


def format_comparison(cmp: dict[str, Any]) -> str:
    lines = [f"A = {cmp['a']['strategy']} ({cmp['a']['ref']})",
             f"B = {cmp['b']['strategy']} ({cmp['b']['ref']})",
             f"paired on the {cmp['num_offloaded_both']} images both offloaded, of {cmp['num_images']} "
             f"(benchmark {cmp['fingerprint']})"
             + (f"; {cmp['offloaded_differ']} images offloaded by only one were left out" if cmp["offloaded_differ"] else ""),
             f"diff = offloaded accuracy A - B (percentage points); 95% paired bootstrap interval "
             f"({cmp['resamples']} resamples, seed {cmp['seed']}); exact McNemar test on the discordant images",
             ""]
    header = ["budget", "acc A %", "acc B %", "diff pp", "95% CI pp", "A only", "B only", "McNemar p"]
    body = [[str(r["budget"]), _pct(r["acc_a"]), _pct(r["acc_b"]),
             "-" if r["diff"] is None else f"{100 * r['diff']:+.2f}",
             f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]", str(r["only_a"]), str(r["only_b"]),
             f"{r['p_mcnemar']:.3g}"] for r in cmp["rows"]]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)
