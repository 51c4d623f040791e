"""A board as text: the terminal table (``show``) and the rendered README.md + curves.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from sagebench.leaderboard.rank import Ranking, Row, rank
from sagebench.leaderboard.store import Board
from sagebench.runtime.files import atomic_write_bytes

TIE_MARK = "*"  # after a cell: in the best row's tie group at that budget


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _cell(row: Row, b: int) -> str:
    acc, ratio = row.cells.get(b, (None, None))
    if acc is None and ratio is None:
        return "-"
    return f"{_pct(acc)} ({_ratio(ratio)})" + (TIE_MARK if row.in_group.get(b) else "")


def _table(ranking: Ranking, rows: Sequence[Row], kind: str,
           budget_unit: str = "patches") -> tuple[list[str], list[list[str]]]:
    """``kind``: ``ranked``, ``unverified`` (measured, no per-sample file) or ``reported``."""
    label = "B=" if budget_unit == "patches" else "bytes="
    header = ["rank", "strategy", *[f"{label}{b}" for b in ranking.budgets], "mean CR", "win rate", "ceiling",
              "edge", "server", "sagebench", "date", "source" if kind == "reported" else "entry"]
    body = []
    for r in rows:
        first = {"reported": "reported", "unverified": "-", "oracles": "oracle"}.get(kind, r.rank_label)
        body.append([first, r.strategy, *[_cell(r, b) for b in ranking.budgets], _ratio(r.score),
                     "-" if r.win_rate is None else f"{r.win_rate:.2f}", _pct(r.ceiling),
                     r.edge, r.server, r.version, r.date, (r.source or "") if kind == "reported" else r.entry])
    return header, body


_SECTIONS = (
    ("ranked", ""),
    ("oracles", "oracle strategies (evidence the edge does not have; a reference, never ranked):"),
    ("unverified", "measured, without a per-sample file (not verified, never ranked):"),
    ("reported", "reported, not reproduced (not ranked):"),
)


def format_board(board: Board) -> str:
    """The ranked table of a board, for the terminal (entries that fail their checks are skipped, warned)."""
    ranking = rank(board.entries(strict=False, records=True))
    meta = board.meta()
    unit = meta.get("benchmark", {}).get("budget_unit", "patches")
    lines = [f"board {board.name}  (fingerprint {meta.get('fingerprint')}; {_describe(meta.get('benchmark', {}))})",
             _rank_note(ranking), _tie_note(ranking), "cells: offloaded accuracy % (ceiling ratio)"
             + (f"; {TIE_MARK}: in the best row's tie group at that budget" if ranking.groups else ""), ""]
    for kind, title in _SECTIONS:
        rows = getattr(ranking, kind)
        if not rows:
            continue
        header, body = _table(ranking, rows, kind, unit)
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
        if title:
            lines += ["", title]
        lines.append(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines.append("-+-".join("-" * w for w in widths))
        lines += [" | ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    if not (ranking.ranked or ranking.reported or ranking.unverified or ranking.oracles):
        lines.append("(no entries)")
    return "\n".join(lines)


def _describe(bench: Mapping[str, Any]) -> str:
    edge, server = bench.get("edge") or {}, bench.get("server") or {}
    gate = bench.get("gate")
    return (f"{bench.get('dataset')} {bench.get('split')}, {bench.get('num_images')} images, "
            f"{bench.get('num_patches')} patches; edge {edge.get('name')} ({edge.get('weights')}) -> server "
            f"{server.get('name')} ({server.get('weights')}); gate {gate}"
            + ("" if bench.get("threshold") is None else f" > {bench.get('threshold')}"))


def _rank_note(ranking: Ranking) -> str:
    if not ranking.rank_budgets:
        return "ranked by mean ceiling ratio (no budget common to every verified row: unranked)"
    return ("ranked by mean ceiling ratio (offloaded accuracy / server on all patches) over B = "
            + ", ".join(str(b) for b in ranking.rank_budgets)
            + "; win rate: HELM mean win rate over those budgets (ties 1/2)")


def _tie_note(ranking: Ranking) -> str:
    if not ranking.groups:
        return "ties: none tested (no verified rows with a common budget)"
    return (f"ties: per budget, rows not significantly different from the best (exact McNemar, Holm, "
            f"alpha {ranking.alpha:g}, on the {ranking.num_paired} images every ranked entry offloaded); "
            f"rank 1-k: in the leader's tie group at a majority of the budgets ({ranking.tie_size} "
            f"row{'s' if ranking.tie_size != 1 else ''} tied at the top)")


def render(board: Board) -> Path:
    """Rewrite the board's README.md (ranked table, unverified and reported rows apart) and curves.png.

    Both files are written through :func:`sagebench.runtime.files.atomic_write_bytes` (a new
    temporary file of an unpredictable name, renamed over the target), so a link planted in the
    board, at the target's name or any other, is replaced or ignored, never followed.
    """
    from sagebench.reporting import plots

    ranking = rank(board.entries(strict=False, records=True))
    meta = board.meta()

    def md(header: list[str], body: list[list[str]]) -> list[str]:
        esc = [[c.replace("|", "\\|").replace("*", "\\*") for c in row] for row in [header, *body]]
        return ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|",
                *("| " + " | ".join(r) + " |" for r in esc[1:])]

    lines = [f"# Leaderboard `{board.name}`", "",
             "<!-- Generated by `sagebench leaderboard render`; edits are overwritten. -->", "",
             f"Benchmark fingerprint `{meta.get('fingerprint')}`: {_describe(meta.get('benchmark', {}))}.", "",
             _rank_note(ranking) + ". Cells: offloaded accuracy % (ceiling ratio); ceiling = server accuracy "
             "on the offloaded images with all patches"
             + (f"; `{TIE_MARK}`: in the best row's tie group at that budget" if ranking.groups else "") + ".", "",
             _tie_note(ranking) + ". Rule: docs/comparing.md, \"Ranks and ties\".", ""]
    unit = meta.get("benchmark", {}).get("budget_unit", "patches")  # only byte-budget boards set it
    if ranking.ranked:
        lines += md(*_table(ranking, ranking.ranked, "ranked", unit))
    else:
        lines.append("No measured entries yet.")
    if ranking.oracles:
        lines += ["", "## Oracles (reference, not ranked)", "",
                  "Strategies that use evidence the edge does not have (e.g. the server's attention on the "
                  "full image): an upper reference line, never ranked with deployable strategies.", ""]
        lines += md(*_table(ranking, ranking.oracles, "oracles", unit))
    if ranking.unverified:
        lines += ["", "## Measured, not verified", "",
                  "Entries without a per-sample file: their figures cannot be checked against records, "
                  "so they are listed but never grouped or ranked.", ""]
        lines += md(*_table(ranking, ranking.unverified, "unverified", unit))
    if ranking.reported:
        lines += ["", "## Reported, not reproduced", "",
                  "Numbers copied from the cited source, not measured with sagebench: never ranked.", ""]
        lines += md(*_table(ranking, ranking.reported, "reported", unit))
    shown = ranking.ranked + ranking.oracles + ranking.unverified + ranking.reported
    series = [plots.Series(f"{r.strategy} ({r.entry})" if _ambiguous(shown, r) else r.strategy,
                           sorted(r.cells), [r.cells[b][0] for b in sorted(r.cells)],
                           [r.cells[b][1] for b in sorted(r.cells)], dashed=r.reported or not r.verified
                           or r.oracle)
              for r in shown]
    if series:
        ceilings = {r.ceiling for r in ranking.ranked if r.ceiling is not None}
        plots.plot_curves(series, board.path / plots.CURVES_FILE,
                          title=f"{board.name} (dashed: reported, oracle or not verified)",
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


def _ambiguous(rows: Sequence[Row], row: Row) -> bool:
    return sum(r.strategy == row.strategy for r in rows) > 1
