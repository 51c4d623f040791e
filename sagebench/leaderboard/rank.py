"""The order of a board: rows (entry, strategy), measured ones ranked, reported ones apart."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from sagebench.leaderboard.store import Entry
from sagebench.results.model import RunResults


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
                source=d.extra.get("source"),
                key=(e.reported, strategy, json.dumps(options.get(strategy), sort_keys=True),
                     tuple(sorted((int(r["budget"]), r.get("num_correct"), r.get("offloaded_accuracy")) for r in mine)))))
    return rows


@dataclass
class Ranking:
    budgets: list[int]  # every budget on the board (columns)
    rank_budgets: list[int]  # budgets the mean ceiling ratio is taken over
    ranked: list[Row]
    reported: list[Row]


def rank(entries: Sequence[Entry]) -> Ranking:
    """Measured rows ranked by mean ceiling ratio over the budgets every measured row has; reported apart.

    Identical measured rows (same strategy, options and numbers: baselines resubmitted with a
    new method) are listed once, under their first entry.
    """
    seen: set[tuple] = set()
    rows = []
    for row in sorted(_rows(entries), key=lambda r: (r.date, r.entry)):
        if row.key in seen:
            continue
        seen.add(row.key)
        rows.append(row)
    measured = [r for r in rows if not r.reported]
    reported = [r for r in rows if r.reported]
    budgets = sorted({b for r in rows for b in r.cells})
    common = sorted(set.intersection(*(set(r.cells) for r in measured))) if measured else []
    for r in measured + reported:
        r.score = r.mean_ratio(common) if common else None
    measured.sort(key=lambda r: (r.score is None, -(r.score or 0.0), r.strategy, r.entry))
    for i, r in enumerate(measured):  # competition ranking: equal scores share a rank (1, 1, 3)
        tie = i > 0 and measured[i - 1].score is not None and math.isclose(measured[i - 1].score, r.score or -1.0,
                                                                               rel_tol=0, abs_tol=1e-12)
        r.rank = None if r.score is None else (measured[i - 1].rank if tie else i + 1)
    reported.sort(key=lambda r: (r.score is None, -(r.score or 0.0), r.strategy))
    return Ranking(budgets, common, measured, reported)
