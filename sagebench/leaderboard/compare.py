"""Paired comparisons on the images both evaluated: two strategies, or every pair (``--matrix``).

Intervals: :func:`sagebench.stats.paired_difference_interval`, Tango's score interval with half
a count of continuity correction, which inverts the McNemar score test with the same correction
(:func:`sagebench.stats.mcnemar_score`): an interval contains 0 exactly when the p-value is
>= 0.05, so a comparison never shows a "significant" interval beside a non-significant p. The
matrix mode adds Holm-adjusted p-values over all the pairs of a budget
(:func:`sagebench.stats.pairwise_matrix`) and, for a board, the simultaneous intervals behind
its rank intervals (max-|t| over every pair of ranked rows, :func:`sagebench.stats.rank_sets`).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sagebench import stats
from sagebench.cells import Cell
from sagebench.errors import LeaderboardError
from sagebench.leaderboard.render import _pct
from sagebench.leaderboard.store import (
    Board,
    Entry,
    _diff_fields,
    default_root,
    list_boards,
    load_run,
    safe_name,
)
from sagebench.leaderboard.validate import (
    benchmark_fields,
    load_samples,
    validate_entry,
)

CONFIDENCE = 0.95


INTERVAL_METHOD = ("Tango score interval with a continuity correction of 1/2 (it contains 0 exactly when the "
                   "McNemar score test's p >= 0.05, the test with the same correction)")


mcnemar_exact = stats.mcnemar_exact


def paired_bootstrap_ci(a_ok: np.ndarray, b_ok: np.ndarray, resamples: int = 2000,
                        seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Deprecated (compare no longer uses it): percentile bootstrap of mean(a_ok) - mean(b_ok).

    Kept for callers of the old API. The per-image difference takes only the values -1, 0, 1, so
    a resample of ``n`` pairs is a multinomial draw of those three counts (the index bootstrap).
    """
    a_ok, b_ok = np.asarray(a_ok, bool), np.asarray(b_ok, bool)
    n = len(a_ok)
    if n == 0 or resamples < 1:
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
    """An entry by path (run folder, results JSON, entry file) or by entry name on a board.

    An entry found by name is read with the board's checks (a plain file, the board's fingerprint).
    """
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
    entry = hits[0].entry(name)
    return entry.data, entry.samples_path, str(entry.path)


def _pick_strategy(entry: dict[str, Any], wanted: str | None, where: str) -> str:
    labels = list(dict.fromkeys(r["strategy"] for r in entry["results"]))
    if wanted is None:
        if len(labels) == 1:
            return labels[0]
        raise LeaderboardError(f"{where} has several strategies ({', '.join(labels)}): choose with --strategy.")
    if wanted not in labels:
        raise LeaderboardError(f"{where} has no strategy {wanted!r}; it has {', '.join(labels)}.")
    return wanted


def _checked(entry: dict[str, Any], samples: Path | None, where: str) -> dict[str, np.ndarray]:
    validate_entry({k: v for k, v in entry.items() if k not in ("output_dir", "report")}, where)
    if entry.get("reported"):
        raise LeaderboardError(f"{where} is a reported entry (numbers copied from a source): it has no records "
                               "to pair.")
    if samples is None:
        raise LeaderboardError(f"{where} has no per-sample file: a paired comparison needs one "
                               "(samples.parquet beside results.json, or <entry>.samples.parquet).")
    return load_samples(entry, samples, str(samples))


def _deprecated_resamples(resamples: int | None) -> str | None:
    if resamples is None:
        return None
    return (f"--resamples {resamples} is ignored: compare's interval is Tango's score interval (no bootstrap); "
            "the option will be removed.")


def _row(budget: int, a_ok: np.ndarray, b_ok: np.ndarray) -> dict[str, Any]:
    n = int(a_ok.size)
    only_a, only_b = int((a_ok & ~b_ok).sum()), int((~a_ok & b_ok).sum())
    lo, hi = stats.paired_difference_interval(a_ok, b_ok, CONFIDENCE) if n else (None, None)
    return {"budget": budget, "n": n, "acc_a": float(a_ok.mean()) if n else None,
            "acc_b": float(b_ok.mean()) if n else None,
            "diff": (only_a - only_b) / n if n else None, "ci_low": lo, "ci_high": hi,
            "only_a": only_a, "only_b": only_b, "p_mcnemar": stats.mcnemar_score(only_a, only_b),
            "p_exact": stats.mcnemar_exact(only_a, only_b)}


def compare(ref_a: str, ref_b: str | None = None, strategies: Sequence[str] = (), root: Path | None = None,
            board: str | None = None, resamples: int | None = None, seed: int | None = None, *,
            per_seed: bool = True) -> dict[str, Any]:
    """Paired comparison of two entries, or of two strategies of one entry, on the same images.

    Two strategies of one run with ``seeds=[...]`` (:mod:`sagebench.seeds`) where one or both draw randomness:
    the rows are the run seed's draw, and ``per_seed`` adds the same paired test at each other seed
    (``per_seed``: one entry per seed with its ``rows``). The tests are per seed, never pooled.

    For every budget both have: offloaded accuracy of A and B over the images both offloaded,
    the difference A - B with its 95% interval (:data:`INTERVAL_METHOD`), the discordant counts,
    the McNemar score test's p-value (``p_mcnemar``, the test the interval inverts) and the exact
    McNemar p (``p_exact``, for reference). ``ref_b`` None: the two strategies are of
    ``ref_a`` (``strategies`` must name two). ``strategies``: none (each entry has one strategy),
    one (the same label in both), or two (A's, B's). Refused when the benchmarks or the images
    differ or a per-sample file is missing or does not reproduce its entry. ``resamples`` and
    ``seed`` are ignored (the bootstrap is gone); a note says so.
    """
    if len(strategies) > 2:
        raise LeaderboardError("give at most two strategies: A's and B's.")
    if ref_b is None:
        if len(strategies) != 2:
            raise LeaderboardError(f"comparing two strategies of {ref_a}: name them, e.g. -s sage -s attention_prefix.")
        ref_b = ref_a
    a, a_samples, a_where = resolve_ref(ref_a, root, board)
    b, b_samples, b_where = (a, a_samples, a_where) if ref_b == ref_a else resolve_ref(ref_b, root, board)
    ca = _checked(a, a_samples, a_where)
    cb = ca if b is a else _checked(b, b_samples, b_where)
    sa = _pick_strategy(a, strategies[0] if strategies else None, a_where)
    sb = _pick_strategy(b, strategies[-1] if strategies else None, b_where)
    if a["benchmark"]["fingerprint"] != b["benchmark"]["fingerprint"]:
        diff = _diff_fields(benchmark_fields(a["benchmark"]), benchmark_fields(b["benchmark"]))
        raise LeaderboardError(f"{a_where} and {b_where} are different benchmarks (fingerprints "
                               f"{a['benchmark']['fingerprint']} vs {b['benchmark']['fingerprint']}; differ in "
                               f"{', '.join(diff)}): not a paired comparison.")
    order_a, order_b = np.argsort(ca["sample_id"], kind="stable"), np.argsort(cb["sample_id"], kind="stable")
    ids_a, ids_b = ca["sample_id"][order_a], cb["sample_id"][order_b]
    if len(ids_a) != len(ids_b) or not np.array_equal(ids_a, ids_b):
        only = np.setdiff1d(ids_a, ids_b).size + np.setdiff1d(ids_b, ids_a).size
        raise LeaderboardError(f"the two entries were measured on different images ({len(ids_a)} vs {len(ids_b)} "
                               f"images, {only} sample ids in only one): not a paired comparison.")
    label = ca["label"][order_a]
    if not np.array_equal(label, cb["label"][order_b]):
        raise LeaderboardError("the two entries give the same sample ids different labels: different images.")
    off_a, off_b = ca["offloaded"][order_a].astype(bool), cb["offloaded"][order_b].astype(bool)
    off = off_a & off_b
    budgets = sorted({r["budget"] for r in a["results"] if r["strategy"] == sa}
                     & {r["budget"] for r in b["results"] if r["strategy"] == sb})
    if not budgets:
        raise LeaderboardError(f"{sa!r} of A and {sb!r} of B share no budget.")
    unit = a["benchmark"].get("budget_unit") or a["results"][0].get("budget_unit", "patches")
    rows = [_row(budget, (ca[Cell(sa, budget, unit).key("pred")][order_a] == label)[off],
                 (cb[Cell(sb, budget, unit).key("pred")][order_b] == label)[off]) for budget in budgets]
    note = _deprecated_resamples(resamples)
    seeds = _per_seed(ref_a, sa, sb, a, root, board) if per_seed and b is a else []
    return {**({"per_seed": seeds} if seeds else {}), "a": {"ref": ref_a, "strategy": sa}, "b": {"ref": ref_b, "strategy": sb},
            "fingerprint": a["benchmark"]["fingerprint"], "num_images": int(len(ids_a)),
            "num_offloaded_both": int(off.sum()), "offloaded_differ": int((off_a != off_b).sum()),
            "confidence": CONFIDENCE, "interval": INTERVAL_METHOD, "rows": rows,
            **({"notes": [note]} if note else {})}


def _per_seed(ref: str, sa: str, sb: str, entry: dict[str, Any], root: Path | None,
              board: str | None) -> list[dict[str, Any]]:
    """The paired test of ``sa`` against ``sb`` at each seed of the run's ``seeds`` block other than the run's own
    (each seeded side at that seed, ``<label>@seed<k>``); empty when neither side was evaluated at other seeds."""
    from sagebench.seeds import SEP

    block = entry.get("seeds") or {}
    labels = {s["label"] for s in entry.get("strategies") or []}
    out = []
    for k in block.get("seeds") or []:
        if int(k) == int(block.get("run_seed", -1)):
            continue
        a, b = (f"{s}{SEP}{k}" if f"{s}{SEP}{k}" in labels else s for s in (sa, sb))
        if (a, b) != (sa, sb):
            out.append({"seed": int(k), "a": a, "b": b,
                        "rows": compare(ref, None, [a, b], root, board, per_seed=False)["rows"]})
    return out


def compare_against_rest(ref: str, strategy: str, root: Path | None = None,
                         board: str | None = None) -> list[dict[str, Any]]:
    """``strategy`` of ``ref`` (a run, results file or entry) against every other strategy of it, each a
    :func:`compare` result; per budget, the McNemar p-values of these k - 1 comparisons are Holm-adjusted
    (``p_holm``): "sage is better than X" for some X among many is a family of claims."""
    entry, _, where = resolve_ref(ref, root, board)
    label = _pick_strategy(entry, strategy, where)
    others = [s["label"] for s in entry.get("strategies", []) if s["label"] != label]
    if not others:
        raise LeaderboardError(f"{where} has no strategy besides {label!r} to compare it with.")
    results = [compare(ref, None, [label, other], root, board) for other in others]
    budgets = sorted({r["budget"] for res in results for r in res["rows"]})
    for budget in budgets:
        rows = [r for res in results for r in res["rows"] if r["budget"] == budget]
        for row, adjusted in zip(rows, stats.holm([r["p_mcnemar"] for r in rows])):
            row["p_holm"] = adjusted
    return results


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    return ["  ".join(h.rjust(w) for h, w in zip(header, widths)),
            *("  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body)]


def _pp(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.2f}"


def _ci(low: float | None, high: float | None) -> str:
    return "-" if low is None else f"[{100 * low:+.2f}, {100 * high:+.2f}]"


def format_comparison(cmp: dict[str, Any]) -> str:
    lines = [f"A = {cmp['a']['strategy']} ({cmp['a']['ref']})",
             f"B = {cmp['b']['strategy']} ({cmp['b']['ref']})",
             f"paired on the {cmp['num_offloaded_both']} images both offloaded, of {cmp['num_images']} "
             f"(benchmark {cmp['fingerprint']})"
             + (f"; {cmp['offloaded_differ']} images offloaded by only one were left out" if cmp["offloaded_differ"] else ""),
             f"diff = offloaded accuracy A - B (percentage points); {100 * cmp['confidence']:g}% {cmp['interval']}; "
             "McNemar p: the score test on the discordant images",
             *(f"note: {n}" for n in cmp.get("notes", [])), ""]
    holm = all("p_holm" in r for r in cmp["rows"])  # one of a family (compare_against_rest)
    header = ["budget", "acc A %", "acc B %", "diff pp", "95% CI pp", "A only", "B only", "McNemar p",
              *(["Holm p"] if holm else [])]
    body = [[str(r["budget"]), _pct(r["acc_a"]), _pct(r["acc_b"]), _pp(r["diff"]), _ci(r["ci_low"], r["ci_high"]),
             str(r["only_a"]), str(r["only_b"]), f"{r['p_mcnemar']:.3g}", *([f"{r['p_holm']:.3g}"] if holm else [])]
            for r in cmp["rows"]]
    lines += _table(header, body)
    if cmp.get("per_seed"):
        lines += ["", "the same paired test at each other seed (tests per seed, not pooled: a claim should hold at every "
                  "seed, the run seed's above included):"]
        lines += _table(["seed", "A", "B", "budget", "diff pp", "95% CI pp", "McNemar p"],
                        [[str(s["seed"]), s["a"], s["b"], str(r["budget"]), _pp(r["diff"]), _ci(r["ci_low"], r["ci_high"]),
                          f"{r['p_mcnemar']:.3g}"] for s in cmp["per_seed"] for r in s["rows"]])
    return "\n".join(lines)


# -- every pair ----------------------------------------------------------------------------------


def _matrix_from_rows(rows: Sequence[Any], labels: Sequence[str], budgets: Sequence[int],
                      sets: dict | None = None) -> list[dict[str, Any]]:
    """Per budget, every pair of the rows present (:func:`sagebench.stats.pairwise_matrix`); with a
    board's rank sets (``sets``: budget -> :class:`~sagebench.stats.RankSets` over ``rows``), each
    pair also gets its simultaneous interval (``simultaneous_low``/``_high``)."""
    out = []
    for b in budgets:
        present = [i for i, r in enumerate(rows) if b in r.correct]
        if len(present) < 2:
            continue
        pairs = stats.pairwise_matrix({labels[i]: rows[i].correct[b] for i in present}, CONFIDENCE)
        joint = (sets or {}).get(b)
        if joint is not None and len(present) == len(rows):
            for pair, (i, j) in zip(pairs, combinations(present, 2)):
                pair["simultaneous_low"] = float(joint.diff_low[i, j])
                pair["simultaneous_high"] = float(joint.diff_high[i, j])
        out.append({"budget": b, "n": int(rows[present[0]].correct[b].size), "pairs": pairs})
    return out


def compare_matrix(ref: str, root: Path | None = None, board: str | None = None,
                   resamples: int | None = None) -> dict[str, Any]:
    """Every pair of strategies of one run/entry, or of the ranked rows of a board.

    ``ref``: a path (run folder, results JSON, entry file), a board name, or an entry name. Per
    budget, every unordered pair: accuracies, difference with its interval (:data:`INTERVAL_METHOD`),
    the discordant counts, the McNemar score p and the Holm-adjusted p over all pairs of that
    budget. A board uses its ranked rows (one per distinct method) on the images every one of them
    offloaded, and adds each pair's simultaneous 95% interval at the declared budgets: the
    intervals behind the board's rank intervals, which hold for every pair at once.
    """
    from sagebench.leaderboard.rank import _rows, attach_correctness, display_names
    from sagebench.leaderboard.render import rank_board

    root_path = Path(root or default_root())
    board_name = None
    if not Path(ref).exists():
        try:
            name = safe_name(ref, "board name")
        except LeaderboardError:
            name = None
        if name in list_boards(root_path) and (board is None or safe_name(board, "board name") == name):
            board_name = name
    sets = None
    if board_name is not None:
        b = Board(root_path, board_name)
        ranking = rank_board(b)
        rows, budgets, kind, sets = ranking.ranked, ranking.budgets, "board", ranking.sets
        fp, num_paired = b.meta().get("fingerprint"), ranking.num_paired
        if len(rows) < 2:
            raise LeaderboardError(f"board {b.name!r} has {len(rows)} ranked row(s): nothing to pair.")
        labels = display_names(rows)
    else:
        data, samples, where = resolve_ref(ref, root, board)
        columns = _checked(data, samples, where)
        entry = Entry(Path(where).stem, data, Path(where), samples, columns)
        rows, _, num_paired = attach_correctness(_rows([entry]), [entry])
        if len(rows) < 2:
            raise LeaderboardError(f"{where} has {len(rows)} strategy: nothing to pair.")
        budgets, kind, fp = sorted({bb for r in rows for bb in r.cells}), "run", data["benchmark"]["fingerprint"]
        labels = [r.strategy for r in rows]
    per_budget = _matrix_from_rows(rows, labels, budgets, sets)
    note = _deprecated_resamples(resamples)
    return {"ref": ref, "kind": kind, "fingerprint": fp, "num_offloaded_paired": num_paired, "rows": labels,
            "confidence": CONFIDENCE, "interval": INTERVAL_METHOD,
            "adjustment": "Holm over all pairs of a budget"
                          + ("; simultaneous: max-|t| paired bootstrap over all pairs of ranked rows (the rank "
                             "intervals')" if sets else ""),
            "budgets": per_budget, **({"notes": [note]} if note else {})}


def format_matrix(mat: dict[str, Any]) -> str:
    lines = [f"every pair of {'the verified rows of board' if mat['kind'] == 'board' else 'the strategies of'} "
             f"{mat['ref']} (benchmark {mat['fingerprint']}), paired on the {mat['num_offloaded_paired']} images "
             "offloaded by all",
             f"diff = offloaded accuracy A - B (percentage points); {100 * mat['confidence']:g}% {mat['interval']}; "
             "McNemar score p, and p Holm-adjusted over the pairs of each budget"
             + ("; simult. CI: the 95% interval that holds for every pair of ranked rows at once (the board's "
                "rank intervals come from these)" if mat["kind"] == "board" else ""),
             *(f"note: {n}" for n in mat.get("notes", []))]
    header = ["A", "B", "acc A %", "acc B %", "diff pp", "95% CI pp", "A only", "B only", "p", "p Holm"]
    for block in mat["budgets"]:
        lines += ["", f"budget {block['budget']} ({block['n']} images):"]
        joint = any("simultaneous_low" in p for p in block["pairs"])
        body = [[p["a"], p["b"], _pct(p["accuracy_a"]), _pct(p["accuracy_b"]), _pp(p["difference"]),
                 _ci(p["ci_low"], p["ci_high"]), str(p["a_only"]), str(p["b_only"]), f"{p['p_value']:.3g}",
                 f"{p['p_adjusted']:.3g}" + (" *" if p["p_adjusted"] < 1 - mat["confidence"] else "")]
                + ([_ci(p["simultaneous_low"], p["simultaneous_high"])
                    + (" *" if p["simultaneous_low"] > 0 or p["simultaneous_high"] < 0 else "")] if joint else [])
                for p in block["pairs"]]
        lines += _table(header + (["simult. CI pp"] if joint else []), body)
    lines += ["", f"*: Holm-adjusted p < {1 - mat['confidence']:.2g}"
              + ("; after a simultaneous interval: it excludes 0" if mat["kind"] == "board" else "")]
    return "\n".join(lines)
