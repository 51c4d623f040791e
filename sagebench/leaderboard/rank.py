"""The order of a board: rows (entry, strategy), measured ones ranked with tie groups, the rest apart.

The published rule (docs/comparing.md, "Ranks and ties"):

1. **Which rows are ranked.** A row is one strategy of one entry. Rows of *verified* entries
   (measured, with a per-sample file whose records reproduce every figure) are ranked. Measured
   rows without a per-sample file are listed apart, never grouped or ranked; reported rows
   (numbers copied from a paper) are listed apart, never ranked; so are oracle rows (strategies
   marked ``oracle: true``, which use evidence the edge does not have): a reference, not a rival.
   Identical rows (a baseline resubmitted with a new method) are listed once, under their first
   verified entry.
2. **Score.** The mean ceiling ratio over the budgets every ranked row has (the common budgets).
   Beside it, the HELM mean win rate over those budgets (:func:`sagebench.stats.win_rate`: per
   budget, the share of the other ranked rows with a lower ceiling ratio, ties counting 1/2).
3. **Tie groups per budget.** On the images every ranked entry offloaded, the row with the
   highest offloaded accuracy at budget B is that budget's best; every other row is compared
   with it by the exact McNemar test, the p-values Holm-adjusted as one family per budget, and
   the rows with adjusted p >= alpha (0.05) share the best's group (:func:`sagebench.stats.tie_group`).
4. **Tied ranks.** A row is *indistinguishable from the leader* when it is in the best's group at
   a strict majority of the common budgets. Going down the rows in score order, the leader and
   every following row that is indistinguishable from the leader (or has exactly the score of
   the row above) form the top tie class, printed ``1-k`` (k rows); the walk stops at the first
   row that is not, and the rows from there on get their position (equal scores share a rank).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from sagebench.cells import Cell
from sagebench.leaderboard.store import Entry
from sagebench.leaderboard.validate import load_samples
from sagebench.results.model import RunResults
from sagebench.runtime.log import warn

ALPHA = 0.05


@dataclass
class Row:
    """One (entry, strategy) line of a board."""

    entry: str
    strategy: str
    cells: dict[int, tuple[float | None, float | None]]  # budget -> (offloaded accuracy, ceiling ratio)
    ceiling: float | None
    edge: str
    server: str
    version: str
    date: str
    reported: bool = False
    source: str | None = None
    rank: int | None = None
    score: float | None = None
    key: tuple = field(default=(), repr=False)
    verified: bool = False  # a measured row whose per-sample file was read and checked
    oracle: bool = False  # the strategy uses evidence the edge does not have (a reference line)
    rank_label: str = "-"  # "1", "1-3" (tied with the leader), "4"
    tied: bool = False  # in the top tie class with more than one row
    win_rate: float | None = None
    in_group: dict[int, bool] = field(default_factory=dict)  # budget -> in the best row's tie group
    correct: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.strategy} ({self.entry})"

    def mean_ratio(self, budgets: Sequence[int]) -> float | None:
        values = [self.cells[b][1] for b in budgets if b in self.cells]
        if len(values) != len(budgets) or not values or any(v is None for v in values):
            return None
        return sum(values) / len(values)


def _version(prov: Mapping[str, Any]) -> str:
    """``0.1.0`` or ``0.1.0@2246bc6`` (``+dirty`` when the checkout had local changes)."""
    version = str(prov.get("sagebench_version") or "-")
    sha = str(prov.get("git_sha") or "")
    if sha:
        version += "@" + sha[:7] + ("+dirty" if sha.endswith("-dirty") else "")
    return version


def _rows(entries: Iterable[Entry]) -> list[Row]:
    rows: list[Row] = []
    for e in entries:
        d = RunResults.from_json(e.data)
        prov = d.provenance or {}
        options = {s["label"]: s.get("options") for s in d.strategies or []}
        oracles = {s["label"] for s in d.strategies or [] if s.get("oracle")}
        for strategy in dict.fromkeys(r["strategy"] for r in d.results):
            mine = [r for r in d.results if r["strategy"] == strategy]
            ceiling = d.ceiling.get("offloaded_accuracy")
            cells = {}
            for r in mine:
                ratio = r.get("ceiling_ratio")
                if ratio is None and r.get("offloaded_accuracy") is not None and ceiling:
                    ratio = r["offloaded_accuracy"] / ceiling
                cells[int(r["budget"])] = (r.get("offloaded_accuracy"), ratio)
            date = str(prov.get("utc_time") or (d.extra.get("submission") or {}).get("utc_time") or "")[:10]
            rows.append(Row(
                entry=e.name, strategy=strategy, cells=cells, ceiling=ceiling,
                edge=d.benchmark["edge"]["name"], server=d.benchmark["server"]["name"],
                version=_version(prov), date=date, reported=e.reported,
                source=d.extra.get("source"), oracle=strategy in oracles,
                key=(e.reported, strategy, json.dumps(options.get(strategy), sort_keys=True),
                     tuple(sorted((int(r["budget"]), r.get("num_correct"), r.get("offloaded_accuracy")) for r in mine)))))
    return rows


@dataclass
class Ranking:
    budgets: list[int]  # every budget on the board (columns)
    rank_budgets: list[int]  # budgets the mean ceiling ratio is taken over (common to every ranked row)
    ranked: list[Row]  # verified measured rows, in rank order
    reported: list[Row]  # copied from a source: never ranked
    unverified: list[Row] = field(default_factory=list)  # measured, no (usable) per-sample file: never ranked
    oracles: list[Row] = field(default_factory=list)  # oracle strategies: reference lines, never ranked
    groups: dict[int, dict[str, Any]] = field(default_factory=dict)  # budget -> best, members, p-values
    num_paired: int = 0  # images every ranked entry offloaded: the tie-group tests' sample
    alpha: float = ALPHA
    tie_size: int = 1  # rows in the top tie class


def _records(entry: Entry) -> dict[str, np.ndarray] | None:
    """The entry's checked records (read now unless the board read them), None if unusable (warned)."""
    if entry.columns is not None:
        return entry.columns
    if entry.samples_path is None or entry.reported:
        return None
    try:
        entry.columns = load_samples(entry.data, entry.samples_path, str(entry.samples_path))
    except Exception as exc:  # a LeaderboardError, or a file that vanished meanwhile
        warn(f"entry {entry.name!r} is listed but not ranked: its per-sample file is unusable ({exc})")
        return None
    return entry.columns


def attach_correctness(rows: Sequence[Row], entries: Sequence[Entry]) -> tuple[list[Row], list[Row], int]:
    """Give every row of a verified entry its per-budget correctness on the images all of them offloaded.

    Returns ``(verified rows, rows that could not be verified, number of paired images)``. Entries
    whose records name other images than the first verified entry's cannot be paired: their rows
    come back unverified (with a warning).
    """
    by_name = {e.name: e for e in entries}
    aligned: dict[str, dict[str, np.ndarray]] = {}
    ref_ids: np.ndarray | None = None
    ref_label: np.ndarray | None = None
    for name in dict.fromkeys(r.entry for r in rows):
        entry = by_name[name]
        cols = _records(entry)
        if cols is None:
            continue
        order = np.argsort(cols["sample_id"], kind="stable")
        ids, label = cols["sample_id"][order], cols["label"][order]
        if ref_ids is None:
            ref_ids, ref_label = ids, label
        elif len(ids) != len(ref_ids) or not np.array_equal(ids, ref_ids) or not np.array_equal(label, ref_label):
            warn(f"entry {name!r} is listed but not ranked: its records are of other images than "
                 f"entry {next(iter(aligned))!r}'s, so it cannot be paired with them")
            continue
        aligned[name] = {"order": order, **cols}
    if not aligned:
        return [], list(rows), 0
    common_off = np.logical_and.reduce([cols["offloaded"][cols["order"]].astype(bool) for cols in aligned.values()])
    verified, unverified = [], []
    for row in rows:
        cols = aligned.get(row.entry)
        if cols is None:
            unverified.append(row)
            continue
        unit = by_name[row.entry].data["results"][0].get("budget_unit", "patches")
        label = cols["label"][cols["order"]]
        row.correct = {b: (cols[Cell(row.strategy, b, unit).key("pred")][cols["order"]] == label)[common_off]
                       for b in row.cells}
        row.verified = True
        verified.append(row)
    return verified, unverified, int(common_off.sum())


def _tie_groups(rows: Sequence[Row], budgets: Sequence[int], alpha: float) -> dict[int, dict[str, Any]]:
    from sagebench.stats import tie_group

    groups: dict[int, dict[str, Any]] = {}
    for b in budgets:
        present = [(str(i), r) for i, r in enumerate(rows) if b in r.correct and r.correct[b].size]
        if not present:
            continue
        # the best: highest offloaded accuracy on the paired images; the first in score order wins ties
        best_id, best = max(present, key=lambda kv: (float(kv[1].correct[b].mean()), -int(kv[0])))
        out = tie_group(best_id, {i: r.correct[b] for i, r in present}, alpha=alpha)
        members = set(out["members"])
        for i, r in present:
            r.in_group[b] = i in members
        groups[b] = {"best": best.label, "members": [r.label for i, r in present if i in members],
                     "p_adjusted": {r.label: out["p_adjusted"][i] for i, r in present if i != best_id}}
    return groups


def rank(entries: Sequence[Entry], alpha: float = ALPHA) -> Ranking:
    """Rows ranked by the rule of this module's docstring; reported and unverified rows apart."""
    from sagebench.stats import win_rate

    seen: set[tuple] = set()
    rows = []
    has_records = {e.name: e.samples_path is not None for e in entries}
    # duplicates are listed once: under a verified entry if one holds them, else under the first
    for row in sorted(_rows(entries), key=lambda r: (not has_records[r.entry], r.date, r.entry)):
        if row.key in seen:
            continue
        seen.add(row.key)
        rows.append(row)
    reported = [r for r in rows if r.reported]
    oracles = [r for r in rows if r.oracle and not r.reported]
    measured, unverified, num_paired = attach_correctness([r for r in rows if not r.reported and not r.oracle],
                                                          entries)
    budgets = sorted({b for r in rows for b in r.cells})
    common = sorted(set.intersection(*(set(r.cells) for r in measured))) if measured else []
    for r in measured + unverified + reported + oracles:
        r.score = r.mean_ratio(common) if common else None
    measured.sort(key=lambda r: (r.score is None, -(r.score or 0.0), r.strategy, r.entry))
    rates = win_rate({str(i): [r.cells[b][1] for b in common] for i, r in enumerate(measured)}) if common else {}
    for i, r in enumerate(measured):
        rate = rates.get(str(i), math.nan)
        r.win_rate = None if math.isnan(rate) else rate
    groups = _tie_groups(measured, common, alpha) if common else {}
    tie_size = _assign_ranks(measured, common)
    unverified.sort(key=lambda r: (r.score is None, -(r.score or 0.0), r.strategy, r.entry))
    oracles.sort(key=lambda r: (r.score is None, -(r.score or 0.0), r.strategy, r.entry))
    reported.sort(key=lambda r: (r.score is None, -(r.score or 0.0), r.strategy))
    return Ranking(budgets, common, measured, reported, unverified, oracles, groups, num_paired, alpha, tie_size)


def _same_score(a: Row, b: Row) -> bool:
    return a.score is not None and b.score is not None and math.isclose(a.score, b.score, rel_tol=0, abs_tol=1e-12)


def _assign_ranks(rows: Sequence[Row], budgets: Sequence[int]) -> int:
    """Ranks and labels (rule 4 of the module docstring); returns the size of the top tie class."""
    scored = [r for r in rows if r.score is not None]
    k = 0
    for i, r in enumerate(scored):
        with_leader = sum(r.in_group.get(b, False) for b in budgets) * 2 > len(budgets)
        if i == 0 or with_leader or _same_score(r, scored[i - 1]):
            k += 1
        else:
            break
    for i, r in enumerate(scored):
        if i < k:
            r.rank, r.tied = 1, k > 1
            r.rank_label = f"1-{k}" if k > 1 else "1"
        else:  # competition ranking below the tie class: equal scores share a rank (4, 4, 6)
            r.rank = scored[i - 1].rank if i > k and _same_score(r, scored[i - 1]) else i + 1
            r.rank_label = str(r.rank)
    for r in rows:
        if r.score is None:
            r.rank, r.rank_label = None, "-"
    return max(k, 1)
