"""A board as text: the terminal table (``show``) and the rendered README.md + curves.png.

Every column is one :class:`Column` declaration (its header and how a row's value is written,
together); the tables iterate over :func:`columns`. A new column is one more declaration there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from sagebench.leaderboard import reproduce as reproduce_lib
from sagebench.leaderboard.rank import SCORE, Ranking, Row, display_names, interval_label, rank
from sagebench.leaderboard.store import Board
from sagebench.leaderboard.validate import load_json
from sagebench.runtime.files import atomic_write_bytes

OTHER_IMAGES_MARK = "+"  # after a row's name: its entry offloaded other images too (figures on the paired ones)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


@dataclass(frozen=True)
class View:
    """What a column's value may depend on besides its row: the table's section and the rows' names."""

    ranking: Ranking
    kind: str  # ranked, oracles, incomplete, unverified, reported
    names: Mapping[int, str]  # id(row) -> display name


@dataclass(frozen=True)
class Column:
    """One board column: its header and how a row's value is written, declared together."""

    header: str
    value: Callable[[Row, View], str]


def _rank_value(row: Row, view: View) -> str:
    return {"ranked": row.rank_label, "reported": "reported", "oracles": "oracle"}.get(view.kind, "-")


def _name_value(row: Row, view: View) -> str:
    return view.names[id(row)] + (OTHER_IMAGES_MARK if row.other_images else "")


def _budget_column(budget: int, unit: str) -> Column:
    def value(row: Row, view: View) -> str:
        acc, ratio = row.cells.get(budget, (None, None))
        if acc is None and ratio is None:
            return "-"
        ranks = row.budget_ranks.get(budget) if view.kind == "ranked" else None
        return f"{_pct(acc)} ({_ratio(ratio)})" + (f" #{interval_label(*ranks)}" if ranks else "")

    return Column(f"{'B=' if unit == 'patches' else 'bytes='}{budget}", value)


#: Marks the machine-dependent part of the edge-cost column (the time); the count is comparable everywhere.
MACHINE_MARK = "†"


def cost_budget(ranking: Ranking) -> int | None:
    """The budget the edge-cost column shows: the middle of the declared (ranked) budgets."""
    budgets = sorted(ranking.rank_budgets or ranking.budgets)
    return budgets[(len(budgets) - 1) // 2] if budgets else None


def _edge_cost_column(ranking: Ranking, unit: str) -> Column:
    """Selection MACs (analytic, comparable) and, in parentheses, the median single-thread CPU ms of one image's
    selection on the submitter's machine (machine-dependent, marked) at the middle declared budget."""
    budget = cost_budget(ranking)

    def value(row: Row, view: View) -> str:
        macs, ms = row.edge_cost.get(budget, (None, None)) if budget is not None else (None, None)
        if macs is None and ms is None:
            return "-"
        from sagebench.cost import macs_text

        return macs_text(macs) + ("" if ms is None else f" ({ms:.2f} ms{MACHINE_MARK})")

    return Column(f"edge cost @{'B=' if unit == 'patches' else 'bytes='}{budget}: MACs (ms{MACHINE_MARK})", value)


def _score_value(row: Row, view: View) -> str:
    if row.score is None:
        return "-"
    return _ratio(row.score) + (f" [{row.score_ci[0]:.3f}, {row.score_ci[1]:.3f}]" if row.score_ci else "")


def _reproduced_value(row: Row, view: View) -> str:
    """What the board's stored ``verify --reproduce`` found for the row's entries (``-``: not checked)."""
    return ", ".join(dict.fromkeys(reproduce_lib.status_label(view.ranking.reproduction.get(e)) for e in row.entries))


def columns(ranking: Ranking, kind: str, budget_unit: str = "patches") -> list[Column]:
    """The columns of a section (``kind``: ranked, oracles, incomplete, unverified or reported)."""
    last = (Column("source", lambda r, v: r.source or "") if kind == "reported"
            else Column("entry", lambda r, v: ", ".join(r.entries)))
    return [
        Column("rank", _rank_value),
        Column("strategy", _name_value),
        *(_budget_column(b, budget_unit) for b in ranking.budgets),
        Column("score [95% CI]", _score_value),
        Column("ceiling", lambda r, v: _pct(r.ceiling)),
        *([] if kind == "reported" else [_edge_cost_column(ranking, budget_unit)]),
        Column("edge", lambda r, v: r.edge),
        Column("server", lambda r, v: r.server),
        Column("sagebench", lambda r, v: r.version),
        Column("date", lambda r, v: r.date),
        *([] if kind == "reported" else [Column("reproduced", _reproduced_value)]),
        last,
    ]


def _table(ranking: Ranking, rows: Sequence[Row], kind: str, names: Mapping[int, str],
           budget_unit: str = "patches") -> tuple[list[str], list[list[str]]]:
    cols = columns(ranking, kind, budget_unit)
    view = View(ranking, kind, names)
    return [c.header for c in cols], [[c.value(r, view) for c in cols] for r in rows]


# (Ranking attribute, terminal title, README heading, README text)
_SECTIONS = (
    ("ranked", "", "", ""),
    ("oracles", "oracle strategies (evidence the edge does not have; a reference, never ranked):",
     "Oracles (reference, not ranked)",
     "Strategies that use evidence the edge does not have (e.g. the server's attention on the full image): "
     "shown for reference, never ranked with deployable strategies. An oracle is not necessarily an upper "
     "bound: one can score below deployable rows (its score interval says where it stands)."),
    ("incomplete", "verified, lacking a budget the board declares (listed, not ranked):",
     "Verified, lacking a declared budget",
     "Rows without a figure at every budget the board declares: listed, never ranked, and they do not change "
     "the budgets the others are ranked on."),
    ("unverified", "measured, not verified (no usable per-sample file, or not reproduced; never ranked):",
     "Measured, not verified",
     "Entries without a usable per-sample file (missing, or disagreeing with the board's record of its benchmark), "
     "or whose reproduction differs from their records or could not be run by the board's verifier (`reproduced` "
     "column): listed but never ranked."),
    ("reported", "reported, not reproduced (not ranked):", "Reported, not reproduced",
     "Numbers copied from the cited source, not measured with sagebench: never ranked."),
)


def _all_rows(ranking: Ranking) -> list[Row]:
    return [r for kind, *_ in _SECTIONS for r in getattr(ranking, kind)]


def _names(ranking: Ranking) -> dict[int, str]:
    rows = _all_rows(ranking)
    return {id(r): name for r, name in zip(rows, display_names(rows))}


def rank_board(board: Board) -> Ranking:
    """The board's ranking on the budgets its ``board.json`` declares (entries failing their checks skipped,
    warned), paired on the board's record of its benchmark; entries whose stored reproduction differs, or
    could not be run (a strategy renamed to something nobody can rerun must not be ranked), are never
    ranked, and strategies their reproduction found to be oracles are oracles."""
    outcomes = reproduce_lib.stored(board)
    ranking = rank(board.entries(strict=False, records=True), budgets=board.meta().get("budgets"),
                   record=board.record(),
                   flagged=[n for n, o in outcomes.items()
                            if o.get("status") in (reproduce_lib.DIFFERS, reproduce_lib.CANNOT)],
                   oracles={n: o.get("oracles") or [] for n, o in outcomes.items()
                            if o.get("status") in (reproduce_lib.REPRODUCED, reproduce_lib.DIFFERS)})
    ranking.reproduction = outcomes
    return ranking


def format_board(board: Board) -> str:
    """The ranked table of a board, for the terminal."""
    ranking = rank_board(board)
    meta = board.meta()
    unit = meta.get("benchmark", {}).get("budget_unit", "patches")
    names = _names(ranking)
    lines = [f"board {board.name}  (fingerprint {meta.get('fingerprint')}; {_describe(meta.get('benchmark', {}))})",
             _score_note(ranking), _rank_note(ranking), _cell_note(ranking), ""]
    for kind, title, _, _ in _SECTIONS:
        rows = getattr(ranking, kind)
        if not rows:
            continue
        header, body = _table(ranking, rows, kind, names, unit)
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
        if title:
            lines += ["", title]
        lines.append(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines.append("-+-".join("-" * w for w in widths))
        lines += [" | ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    if not _all_rows(ranking):
        lines.append("(no entries)")
    return "\n".join(lines)


def _describe(bench: Mapping[str, Any]) -> str:
    edge, server = bench.get("edge") or {}, bench.get("server") or {}
    gate = bench.get("gate")
    return (f"{bench.get('dataset')} {bench.get('split')}, {bench.get('num_images')} images, "
            f"{bench.get('num_patches')} patches; edge {edge.get('name')} ({edge.get('weights')}) -> server "
            f"{server.get('name')} ({server.get('weights')}); gate {gate}"
            + ("" if bench.get("threshold") is None else f" > {bench.get('threshold')}"))


def _score_note(ranking: Ranking) -> str:
    if not ranking.rank_budgets:
        return "score: no budget declared (board.json budgets) and no entry: unranked"
    where = "declared in board.json" if ranking.declared else "of the board's first entry (board.json declares none)"
    return ("score: mean ceiling ratio (offloaded accuracy / server on all patches, same images) over B = "
            + ", ".join(str(b) for b in ranking.rank_budgets) + f" ({where}), with its paired 95% bootstrap interval")


def _rank_note(ranking: Ranking) -> str:
    if not ranking.sets:
        return "rank: none (no verified row on every declared budget with paired images)"
    crit = ranking.sets[SCORE].critical
    return ("rank: a 95% simultaneous rank interval: with 95% confidence every row's true rank lies in its "
            "interval, all rows at once; it runs from 1 + the number of rows significantly better to k - the "
            "number significantly worse, so rows whose intervals overlap are not separated by the data "
            f"(paired bootstrap over the {ranking.num_paired} images every ranked entry offloaded, "
            f"{ranking.resamples} replicates, seed {ranking.seed}, max-|t| over all pairs of rows"
            + ("" if math.isnan(crit) else f", critical value {crit:.2f}") + "; Mogstad et al. 2024)")


def _cell_note(ranking: Ranking) -> str:
    return ("cells: offloaded accuracy % (ceiling ratio)"
            + (" #rank interval of the offloaded accuracy at that budget" if ranking.sets else "")
            + (f"; {OTHER_IMAGES_MARK} after a name: its entry offloaded other images too, its figures are on the "
               "paired images" if any(r.other_images for r in ranking.ranked) else "")
            + ("; edge cost: the selection's multiply-accumulates per image (analytic, comparable across machines; "
               f"? = not derived) and ({MACHINE_MARK}, machine-dependent) the median wall ms of one image's selection "
               "on one CPU thread of the submitter's machine (results.json edge_cost.hardware; - = not measured)"
               if any(not r.reported for r in _all_rows(ranking)) else ""))  # the column measured rows have


def _reproduction_note(board: Board, ranking: Ranking) -> str:
    stored = reproduce_lib.stored(board)
    if not stored:
        return ("reproduced: not checked (`sagebench leaderboard verify --reproduce --write` reruns each entry's "
                "strategies on images the verifier draws)")
    meta = load_json(board.path / reproduce_lib.REPRODUCTION_FILE)
    return (f"reproduced: `verify --reproduce --sample {meta.get('sample')} --seed {meta.get('seed')}` on "
            f"{str(meta.get('utc_time'))[:10]} reran each entry's strategies on images the verifier drew and found "
            "identical predictions (`yes (n images)`), or not (`DIFFERS`, never ranked), or could not run them "
            "here (`not here`); CI reruns it, a stored status is only a claim (docs/comparing.md)")


def render(board: Board) -> Path:
    """Rewrite the board's README.md (ranked table, the other rows apart) and curves.png.

    Both files are written through :func:`sagebench.runtime.files.atomic_write_bytes` (a new
    temporary file of an unpredictable name, renamed over the target), so a link planted in the
    board, at the target's name or any other, is replaced or ignored, never followed.
    """
    from sagebench.reporting import plots

    ranking = rank_board(board)
    meta = board.meta()
    names = _names(ranking)

    def md(header: list[str], body: list[list[str]]) -> list[str]:
        esc = [[c.replace("|", "\\|").replace("*", "\\*") for c in row] for row in [header, *body]]
        return ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|",
                *("| " + " | ".join(r) + " |" for r in esc[1:])]

    lines = [f"# Leaderboard `{board.name}`", "",
             "<!-- Generated by `sagebench leaderboard render`; edits are overwritten. -->", "",
             f"Benchmark fingerprint `{meta.get('fingerprint')}`: {_describe(meta.get('benchmark', {}))}.", "",
             _score_note(ranking) + ". Ceiling = server accuracy on the offloaded images with all patches.", "",
             _rank_note(ranking) + ". Rule: docs/comparing.md, \"Ranks\".", "",
             _cell_note(ranking) + ".", ""]
    if any(not r.reported for r in _all_rows(ranking)):  # (a board of reported rows has nothing to rerun)
        lines += [_reproduction_note(board, ranking) + ".", ""]
    unit = meta.get("benchmark", {}).get("budget_unit", "patches")  # only byte-budget boards set it
    if ranking.ranked:
        lines += md(*_table(ranking, ranking.ranked, "ranked", names, unit))
    else:
        lines.append("No ranked entries yet.")
    for kind, _, heading, text in _SECTIONS[1:]:
        rows = getattr(ranking, kind)
        if rows:
            lines += ["", f"## {heading}", "", text, ""]
            lines += md(*_table(ranking, rows, kind, names, unit))
    shown = _all_rows(ranking)
    series = [plots.Series(names[id(r)], sorted(r.cells), [r.cells[b][0] for b in sorted(r.cells)],
                           [r.cells[b][1] for b in sorted(r.cells)],
                           dashed=r.reported or not r.verified or r.oracle)
              for r in shown]
    if series:
        ceilings = {r.ceiling for r in ranking.ranked if r.ceiling is not None}
        plots.plot_curves(series, board.path / plots.CURVES_FILE,
                          title=f"{board.name} (grey, dotted: reported, oracle or not verified)",
                          ceiling=ceilings.pop() if len(ceilings) == 1 else None,
                          num_patches=meta.get("benchmark", {}).get("num_patches"), budget_unit=unit)
        lines += ["", f"![curves]({plots.CURVES_FILE})"]
    lines += ["", "## Submitting", "",
              "```bash", "sagebench eval ...                       # writes runs/<name>/results.json + samples.parquet",
              f"sagebench leaderboard submit runs/<name> --board {board.name}",
              "sagebench leaderboard render", f"sagebench leaderboard verify {board.name}", "```", "",
              "Entries are validated against `sagebench/results/results.schema.json`, must have this board's "
              "fingerprint, and measured entries must come with their per-sample file, whose records must "
              "reproduce every figure; see docs/comparing.md.", ""]
    out = board.path / "README.md"
    atomic_write_bytes(out, "\n".join(lines).encode())
    return out
