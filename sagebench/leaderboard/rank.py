"""The order of a board: one row per distinct method, ranked by score with simultaneous rank intervals.

The published rule (docs/comparing.md, "Ranks"):

1. **Rows.** A row is one distinct method: the (entry, strategy) pairs whose predictions are
   identical on every image at every budget are one row naming all of them (a baseline
   resubmitted with a new method, or strategies that coincide on this benchmark), so they count
   once. Nothing is dropped: a later entry's strategy with a label already on the board is its
   own row, shown with its entry's name. Rows of *verified* entries (measured, with a per-sample
   file whose records reproduce every figure) on every budget the board declares are ranked;
   the others are listed apart and never ranked: verified rows lacking a declared budget,
   measured rows without a per-sample file, oracle rows (strategies marked ``oracle: true``,
   which use evidence the edge does not have: a reference, not a rival) and reported rows
   (numbers copied from a paper).
2. **Paired images.** Ranked rows are compared on the images every ranked entry offloaded (the
   entries of a board normally offload the same ones; the count is printed). A row whose entry
   offloaded other images too shows its figures on these paired images, marked.
3. **Score.** The mean ceiling ratio over the budgets the board declares (``budgets`` in
   ``board.json``; a board without them uses its first entry's), with a paired 95% bootstrap
   interval. Rows are ordered by the score.
4. **Rank intervals.** For the score and for each declared budget's offloaded accuracy, every row
   gets a rank interval ``[lo, hi]`` that holds for all rows at once with 95% confidence
   (:func:`sagebench.stats.rank_sets`: paired bootstrap over the images, max-|t| over every pair
   of rows): ``lo`` = 1 + the number of rows significantly better, ``hi`` = k - the number
   significantly worse. Rows whose intervals overlap are not separated by the data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from sagebench.cells import Cell
from sagebench.errors import LeaderboardError, SageBenchError
from sagebench.leaderboard import record as record_lib
from sagebench.leaderboard.record import BenchmarkRecord
from sagebench.leaderboard.store import Entry
from sagebench.leaderboard.validate import load_samples
from sagebench.results.model import RunResults
from sagebench.runtime.log import warn
from sagebench.stats import RankSets, paired_bootstrap, rank_sets

CONFIDENCE = 0.95
RESAMPLES = 2000  # bootstrap replicates: the critical value's Monte Carlo error is small against its size
SEED = 0  # fixed: a board renders the same intervals every time
SCORE = "score"  # the key of the score's rank sets in Ranking.sets (budgets are ints)


@dataclass
class Row:
    """One distinct method of a board: one (entry, strategy) pair, or several with identical predictions."""

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
    score: float | None = None
    score_ci: tuple[float, float] | None = None  # paired 95% bootstrap interval of the score
    rank_low: int | None = None  # simultaneous 95% rank interval of the score
    rank_high: int | None = None
    budget_ranks: dict[int, tuple[int, int]] = field(default_factory=dict)  # budget -> rank interval
    key: tuple = field(default=(), repr=False)
    verified: bool = False  # a measured row whose per-sample file was read and checked
    oracle: bool = False  # the strategy uses evidence the edge does not have (a reference line)
    other_images: bool = False  # its entry offloaded images beyond the paired ones (cells are on the paired)
    aliases: list[tuple[str, str]] = field(default_factory=list)  # every (entry, strategy) it stands for
    correct: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    ceiling_ok: np.ndarray | None = field(default=None, repr=False, compare=False)
    digest: str | None = field(default=None, repr=False)  # of its predictions: equal digests = one method
    # budget -> (selection MACs, median single-thread select ms): results.json edge_cost (sagebench.cost); absent
    # in entries from before it was measured
    edge_cost: dict[int, tuple[int | None, float | None]] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.aliases:
            self.aliases = [(self.entry, self.strategy)]

    @property
    def label(self) -> str:
        return f"{self.strategy} ({self.entry})"

    @property
    def rank(self) -> int | None:
        """The best rank the row may have (the interval's low end); None when not ranked."""
        return self.rank_low

    @property
    def rank_label(self) -> str:
        return interval_label(self.rank_low, self.rank_high)

    @property
    def strategies(self) -> list[str]:
        return list(dict.fromkeys(s for _, s in self.aliases))

    @property
    def entries(self) -> list[str]:
        return list(dict.fromkeys(e for e, _ in self.aliases))

    def mean_ratio(self, budgets: Sequence[int]) -> float | None:
        values = [self.cells[b][1] for b in budgets if b in self.cells]
        if len(values) != len(budgets) or not values or any(v is None for v in values):
            return None
        return sum(values) / len(values)


def interval_label(low: int | None, high: int | None) -> str:
    """``"3"`` or ``"1-4"``; ``"-"`` when unranked."""
    if low is None or high is None:
        return "-"
    return str(low) if low == high else f"{low}-{high}"


def display_names(rows: Sequence[Row]) -> list[str]:
    """Each row's name: its strategies joined by `` = ``, each with ``(entry)`` where a label is on several rows."""
    count: dict[str, int] = {}
    for r in rows:
        for s in r.strategies:
            count[s] = count.get(s, 0) + 1
    names = []
    for r in rows:
        parts = []
        for e, s in r.aliases:
            part = f"{s} ({e})" if count[s] > 1 or len({ee for ee, ss in r.aliases if ss == s}) > 1 else s
            if part not in parts:
                parts.append(part)
        names.append(" = ".join(parts))
    return names


def _version(prov: Mapping[str, Any]) -> str:
    """``0.1.0`` or ``0.1.0@2246bc6`` (``+dirty`` when the checkout had local changes)."""
    version = str(prov.get("sagebench_version") or "-")
    sha = str(prov.get("git_sha") or "")
    if sha:
        version += "@" + sha[:7] + ("+dirty" if sha.endswith("-dirty") else "")
    return version


def _submitted(entry: Entry) -> str:
    data = entry.data
    return str((data.get("submission") or {}).get("utc_time") or (data.get("provenance") or {}).get("utc_time") or "")


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
            cost = {int(c["budget"]): (c.get("selection_macs"), c.get("select_ms"))
                    for c in (d.extra.get("edge_cost") or {}).get("cells") or [] if c.get("strategy") == strategy}
            rows.append(Row(
                entry=e.name, strategy=strategy, cells=cells, ceiling=ceiling,
                edge=d.benchmark["edge"]["name"], server=d.benchmark["server"]["name"],
                version=_version(prov), date=date, reported=e.reported,
                source=d.extra.get("source"), oracle=strategy in oracles, edge_cost=cost,
                key=(e.reported, strategy, json.dumps(options.get(strategy), sort_keys=True),
                     tuple(sorted((int(r["budget"]), r.get("num_correct"), r.get("offloaded_accuracy")) for r in mine)))))
    return rows


@dataclass
class Ranking:
    budgets: list[int]  # every budget on the board (columns)
    rank_budgets: list[int]  # the declared budgets: the score's, and those with per-budget rank intervals
    ranked: list[Row]  # verified measured rows on every declared budget, in score order
    reported: list[Row]  # copied from a source: never ranked
    unverified: list[Row] = field(default_factory=list)  # measured, no (usable) per-sample file: never ranked
    oracles: list[Row] = field(default_factory=list)  # oracle strategies: reference lines, never ranked
    incomplete: list[Row] = field(default_factory=list)  # verified, lacking a declared budget: never ranked
    # SCORE -> rank sets of the score; budget -> of the offloaded accuracy at that budget (rows in ranked order)
    sets: dict[int | str, RankSets] = field(default_factory=dict)
    num_paired: int = 0  # images every ranked entry offloaded: the rank intervals' sample
    declared: bool = True  # the budgets come from board.json (else from the board's first entry)
    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES
    seed: int = SEED
    reproduction: dict[str, dict[str, Any]] = field(default_factory=dict)  # entry -> stored verify --reproduce outcome


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


def attach_correctness(rows: Sequence[Row], entries: Sequence[Entry], ranked: Iterable[str] | None = None,
                       record: BenchmarkRecord | None = None) -> tuple[list[Row], list[Row], int]:
    """Give every row of a verified entry its per-budget correctness on the paired images.

    The images, their labels and the gate's decisions are the board's ``record`` (:mod:`.record`);
    without one (a single run, or a board from before records), the entries' own, when they all
    agree (none is preferred: an order of entries is whatever their files say). The paired images
    are those every entry named in ``ranked`` (default: every verified entry of ``rows``) offloaded.
    Each row also gets the server's ceiling correctness on them (``ceiling_ok``), the digest of its
    predictions over every image and budget (equal digests: one method), and ``other_images`` when
    its entry offloaded images outside the paired ones. Returns ``(verified rows, rows that could
    not be verified, number of paired images)``. An entry whose records disagree with the record
    comes back unverified (with a warning).
    """
    by_name = {e.name: e for e in entries}
    aligned: dict[str, dict[str, np.ndarray]] = {}
    mine: dict[str, BenchmarkRecord] = {}
    for name in dict.fromkeys(r.entry for r in rows):
        cols = _records(by_name[name])
        if cols is None:
            continue
        n = record.num_images if record is not None else len(cols["sample_id"])
        skipped = record_lib.skipped_of(by_name[name].data["benchmark"]) if record is not None else None
        try:
            mine[name] = record_lib.from_columns(cols, n, f"entry {name!r}", skipped)
            if record is not None:
                record_lib.match(record, cols, f"entry {name!r}", skipped)
        except LeaderboardError as exc:
            warn(f"entry {name!r} is listed but not ranked: {exc}")
            mine.pop(name, None)
            continue
        aligned[name] = {"order": record_lib.check_ids(cols["sample_id"], n, name, None), **cols}
    if record is None and mine:
        first = next(iter(mine.values()))
        if any(record_lib.differences(first, m) for m in mine.values()):
            warn("the entries disagree on their images, labels or gate decisions and the board has no record of "
                 "its benchmark to say which is right: none is ranked (rebuild the board from a rerun)")
            return [], list(rows), 0
    if not aligned:
        return [], list(rows), 0
    wanted = [n for n in (aligned if ranked is None else ranked) if n in aligned] or list(aligned)
    offloaded = {n: cols["offloaded"][cols["order"]].astype(bool) for n, cols in aligned.items()}
    common = np.logical_and.reduce([offloaded[n] for n in wanted])
    verified, unverified = [], []
    for row in rows:
        cols = aligned.get(row.entry)
        if cols is None:
            unverified.append(row)
            continue
        unit = by_name[row.entry].data["results"][0].get("budget_unit", "patches")
        label = cols["label"][cols["order"]].astype(np.int64)
        preds = {b: cols[Cell(row.strategy, b, unit).key("pred")][cols["order"]] for b in sorted(row.cells)}
        row.correct = {b: (p == label)[common] for b, p in preds.items()}
        row.ceiling_ok = (cols["ceiling_pred"][cols["order"]] == label)[common]
        row.other_images = bool((offloaded[row.entry] & ~common).any())
        digest = hashlib.sha256(repr(sorted(preds)).encode())
        for b in sorted(preds):
            digest.update(np.ascontiguousarray(preds[b], dtype=np.float64).tobytes())
        row.digest = digest.hexdigest()
        row.verified = True
        verified.append(row)
    return verified, unverified, int(common.sum())


def _merge(rows: Sequence[Row], same: Any) -> list[Row]:
    """One row per value of ``same(row)`` (None: always its own row), naming every (entry, strategy) it stands for."""
    out: list[Row] = []
    first: dict[Any, Row] = {}
    for row in rows:
        key = same(row)
        if key is not None and key in first:
            first[key].aliases += [a for a in row.aliases if a not in first[key].aliases]
            continue
        if key is not None:
            first[key] = row
        out.append(row)
    for row in out:  # entries in submission order (the first is the row's own), names sorted within an entry
        entry_order = {e: i for i, e in enumerate(dict.fromkeys(e for e, _ in row.aliases))}
        row.aliases.sort(key=lambda a: (entry_order[a[0]], a[1]))
        row.entry, row.strategy = row.aliases[0]
    return out


def _budgets(declared: Sequence[int] | None, entries: Sequence[Entry]) -> tuple[list[int], bool]:
    """The budgets the score is taken over: those declared in board.json, else the first entry's."""
    if declared is not None:
        if (not isinstance(declared, (list, tuple)) or not declared
                or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in declared)
                or len(set(declared)) != len(declared)):
            raise LeaderboardError(f"board.json: budgets must be a non-empty list of distinct positive integers, "
                                   f"got {declared!r}.")
        return sorted(int(b) for b in declared), True
    if not entries:
        return [], False
    first = min(entries, key=lambda e: (_submitted(e), e.name))
    return sorted({int(r["budget"]) for r in first.data["results"]}), False


def _on_paired_images(row: Row, budgets: Sequence[int]) -> None:
    """Cells recomputed on the paired images (only where the entry's own figures are over other images)."""
    if not row.other_images or row.ceiling_ok is None:
        return
    ceiling = int(row.ceiling_ok.sum())
    n = row.ceiling_ok.size
    for b in budgets:
        if b in row.correct:
            hits = int(row.correct[b].sum())
            row.cells[b] = (hits / n if n else None, hits / ceiling if ceiling else None)
    row.ceiling = ceiling / n if n else None


def _score_order(rows: list[Row]) -> None:
    rows.sort(key=lambda r: (r.score is None, -(r.score or 0.0), r.strategy, r.entry))


def rank(entries: Sequence[Entry], budgets: Sequence[int] | None = None, confidence: float = CONFIDENCE,
         resamples: int = RESAMPLES, seed: int = SEED, record: BenchmarkRecord | None = None,
         flagged: Iterable[str] = (), oracles: Mapping[str, Iterable[str]] | None = None) -> Ranking:
    """Rows ranked by the rule of this module's docstring; the others listed apart.

    ``budgets``: the board's declared budgets (``board.json``'s ``budgets``); None: the budgets of
    the board's first entry (what ``submit`` declares when it creates a board). ``record``: the
    board's record of its benchmark (:mod:`.record`), what every entry is paired on. ``flagged``:
    entries whose reproduction differed or could not be run (never ranked: listed as unverified). ``oracles``: entry ->
    the labels its reproduction found to be oracles (by the strategies' declared requirements): for
    those entries, exactly these are oracles, whatever the entry's file says.
    """
    rank_budgets, declared = _budgets(budgets, entries)
    rows = sorted(_rows(entries), key=lambda r: (r.date, r.entry))
    for r in rows:  # reproduced entries: oracle by the rebuilt strategy's requirements, not by the file's flag
        if r.entry in (oracles or {}):
            r.oracle = r.strategy in set(oracles[r.entry])
    flagged = set(flagged)
    for name in sorted(flagged & {r.entry for r in rows}):
        warn(f"entry {name!r} is listed but not ranked: its stored reproduction differs or could not be run")
    reported = _merge([r for r in rows if r.reported], lambda r: r.key)
    measured = [r for r in rows if not r.reported]
    complete = {r.entry for r in measured if not r.oracle and all(r.cells.get(b, (None, None))[1] is not None
                                                                   for b in rank_budgets)}
    complete -= flagged
    verified, unverified, num_paired = attach_correctness([r for r in measured if r.entry not in flagged], entries,
                                                          ranked=complete, record=record)
    unverified += [r for r in measured if r.entry in flagged]
    unverified = _merge(unverified, lambda r: r.key)
    verified = _merge(verified, lambda r: (r.oracle, r.digest))
    oracles = [r for r in verified + unverified if r.oracle]
    unverified = [r for r in unverified if not r.oracle]
    has_all = [r for r in verified if not r.oracle and all(b in r.correct for b in rank_budgets)]
    incomplete = [r for r in verified if not r.oracle and all(r is not h for h in has_all)]
    for r in has_all + [o for o in oracles if o.verified]:
        _on_paired_images(r, rank_budgets)
    sets: dict[int | str, RankSets] = {}
    if rank_budgets and num_paired:
        references = [o for o in oracles if o.verified and all(b in o.correct for b in rank_budgets)]
        try:
            sets = _rank(has_all, references, rank_budgets, confidence, resamples, seed)
        except SageBenchError as exc:  # e.g. the server right on none of the paired images: no ratio
            warn(f"the board is listed but not ranked: {exc}")
    for r in unverified + reported + incomplete + oracles:
        if r.score is None:
            r.score = r.mean_ratio(rank_budgets) if rank_budgets else None
    for group in (unverified, oracles, incomplete, reported):
        _score_order(group)
    ranked = has_all if sets else []
    if not sets:  # nothing to rank on (no paired image, no declared budget): listed as incomplete
        incomplete = has_all + incomplete
        for r in incomplete:
            r.score = r.mean_ratio(rank_budgets) if rank_budgets else None
        _score_order(incomplete)
    budgets_all = sorted({b for r in rows for b in r.cells})
    return Ranking(budgets_all, rank_budgets, ranked, reported, unverified, oracles, incomplete, sets, num_paired,
                   declared, confidence, resamples, seed)


def _rank(rows: list[Row], references: Sequence[Row], budgets: Sequence[int], confidence: float, resamples: int,
          seed: int) -> dict[int | str, RankSets]:
    """Scores, their intervals and the rank sets of ``rows`` (sorted in place by score); ``references``
    (oracles) get a score and its interval from the same replicates, never a rank."""
    everyone = list(rows) + list(references)
    if not rows:
        return {}
    m = len(budgets)
    hits = np.stack([np.stack([r.correct[b] for b in budgets]) for r in everyone]).astype(float)  # [k, m, n]
    ceilings = np.stack([r.ceiling_ok for r in everyone]).astype(float)[:, None, :]  # [k, 1, n]
    # one draw of images for both statistics: ceiling ratios (the score) and offloaded accuracies (per budget)
    estimate, replicates = paired_bootstrap(np.concatenate([hits, hits], axis=1),
                                            np.concatenate([np.broadcast_to(ceilings, hits.shape),
                                                            np.ones_like(hits)], axis=1), resamples, seed)
    scores, score_reps = estimate[:, :m].mean(axis=1), replicates[:, :, :m].mean(axis=2)
    alpha = 1.0 - confidence
    for i, r in enumerate(everyone):
        r.score = float(scores[i])
        lo, hi = np.quantile(score_reps[:, i], [alpha / 2, 1 - alpha / 2])
        r.score_ci = (float(lo), float(hi))
    order = sorted(range(len(rows)), key=lambda i: (-scores[i], rows[i].strategy, rows[i].entry))
    rows[:] = [rows[i] for i in order]
    sets: dict[int | str, RankSets] = {SCORE: rank_sets(scores[order], score_reps[:, order], confidence)}
    for j, b in enumerate(budgets):
        sets[b] = rank_sets(estimate[order, m + j], replicates[:, order, m + j], confidence)
    for i, r in enumerate(rows):
        r.rank_low, r.rank_high = int(sets[SCORE].rank_low[i]), int(sets[SCORE].rank_high[i])
        r.budget_ranks = {b: (int(sets[b].rank_low[i]), int(sets[b].rank_high[i])) for b in budgets}
    return sets
