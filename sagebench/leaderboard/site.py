"""A static leaderboard site: ``sagebench leaderboard render --html DIR``.

``DIR/index.html`` lists the boards; ``DIR/<board>/index.html`` is one board: its ranked table (rank
intervals, the score's interval), sortable; accuracy- and ratio-vs-budget curves with interval bands
where strategies are shown or hidden; per row its entry's config, provenance, reproduction status and
per-class accuracy. Why static and self-contained: a board page must open from ``file://`` and publish
as is on any static host (GitHub Pages), with no server, no CDN and nothing fetched at runtime. Every
page carries its CSS, script and data inline (the assets in ``site_assets/`` are templates, inlined).

One owner per concept: the table's columns and cell texts are :func:`sagebench.leaderboard.render.columns`
(the README's), its sections and notes are render's, the line colours are
:func:`sagebench.reporting.plots.line_style` (curves.png's).

Safety: labels, sources, configs and everything else from an entry are untrusted text. The data is
embedded as JSON in a ``<script type="application/json">`` whose ``<``, ``>``, ``&`` and line separators
are escaped (:func:`embed_json`), so no string can close the element; the page's script builds the DOM
with ``textContent`` only (never ``innerHTML`` with data); the static HTML escapes what it prints.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

from sagebench.errors import LeaderboardError
from sagebench.leaderboard import reproduce as reproduce_lib
from sagebench.leaderboard.rank import Ranking, Row
from sagebench.leaderboard.render import (
    _SECTIONS,
    View,
    _all_rows,
    _cell_note,
    _describe,
    _names,
    _rank_note,
    _reproduction_note,
    _score_note,
    columns,
    rank_board,
)
from sagebench.leaderboard.store import Board, Entry, get_board, list_boards, safe_name
from sagebench.runtime.files import atomic_write_bytes

INDEX_FILE = "index.html"
ASSETS = "site_assets"
TEMPLATE = "board_template"  # the files `init-repo` copies: a board repository with its CI

_DASHES = {"-": "", "--": "7 3", "-.": "7 3 1.5 3", ":": "1.5 3"}  # matplotlib's line styles as SVG dash arrays
_NUMBER = re.compile(r"^(-?\d+(?:\.\d+)?)([kMG]?)(?=$|[\s(\[#+-])")  # a count may carry a suffix (49.2k MACs)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def sort_key(text: str) -> float | None:
    """The number a cell sorts by (its leading number: ``"1-4"`` -> 1, ``"45.3 (0.712) #2"`` -> 45.3, a count
    with the suffix :func:`sagebench.cost.macs_text` writes: ``"49.2k (0.30 ms)"`` -> 49200),
    None for a text cell (sorted as text: names, dates, versions) or an empty one (``-``, sorted last)."""
    if _DATE.match(text):
        return None
    m = _NUMBER.match(text)
    if not m:
        return None
    from sagebench.cost import MAC_SUFFIXES

    return float(m.group(1)) * MAC_SUFFIXES.get(m.group(2), 1.0)


def embed_json(data: Any) -> str:
    """``data`` as JSON safe inside a ``<script>`` element: ``<``, ``>``, ``&``, U+2028 and U+2029 written as
    ``\\u`` escapes (``</script>`` in a label cannot end the element; the JSON parses to the same data)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, sort_keys=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _svg_style(index: int, reference: bool) -> dict[str, str]:
    from matplotlib.colors import to_hex

    from sagebench.reporting.plots import line_style

    style = line_style(index, reference)
    return {"color": to_hex(style["color"]), "dash": _DASHES.get(style["linestyle"], ""), "marker": style["marker"]}


def _cell_intervals(entry: Mapping[str, Any] | None, row: Row) -> dict[str, list[Any]]:
    """The row's per-budget 95% intervals from its entry (none where its figures were recomputed on the
    paired images: the entry's intervals are over other images)."""
    out: dict[str, list[Any]] = {"offloaded_accuracy_ci": [], "ceiling_ratio_ci": []}
    by_budget = {int(r["budget"]): r for r in (entry or {}).get("results", []) if r.get("strategy") == row.strategy}
    for b in sorted(row.cells):
        r = {} if row.other_images else by_budget.get(b, {})
        for key in out:
            ci = r.get(key)
            ok = isinstance(ci, list) and len(ci) == 2 and all(_finite(v) is not None for v in ci)
            out[key].append([float(ci[0]), float(ci[1])] if ok else None)
    return out


def _outcome_line(entry: str, outcome: Mapping[str, Any] | None) -> str | None:
    """The stored outcome as ``verify --reproduce`` prints it (None: not checked)."""
    if not outcome:
        return None
    fields = {k: v for k, v in outcome.items() if k in reproduce_lib.Outcome.__dataclass_fields__ and k != "entry"}
    try:
        return reproduce_lib.Outcome(entry, **fields).line
    except TypeError:  # a stored file of another version: show its status only
        return str(outcome.get("status"))


def _entry_info(entries: Sequence[Entry], names: Collection[str], ranking: Ranking) -> dict[str, Any]:
    """Per entry: what a reader checks before trusting a row (config, provenance, reproduction, per class)."""
    out = {}
    for e in entries:
        if e.name not in names:
            continue
        d = e.data
        outcome = ranking.reproduction.get(e.name)
        out[e.name] = {
            "reported": e.reported, "source": d.get("source"), "verified": e.verified,
            "config": d.get("config"), "provenance": d.get("provenance"), "submission": d.get("submission"),
            "strategies": {s.get("label"): s for s in d.get("strategies") or [] if isinstance(s, dict)},
            "num_images": d.get("num_images"), "num_offloaded": d.get("num_offloaded"),
            "edge_accuracy": d.get("edge_accuracy"), "ceiling": d.get("ceiling"),
            "reproduction": {"label": reproduce_lib.status_label(outcome),
                             "line": _outcome_line(e.name, outcome),
                             "outcome": outcome},
            "per_class": d.get("per_class") or [],
        }
    return out


def board_data(board: Board) -> dict[str, Any]:
    """Everything a board page shows, as JSON-ready data (cell texts from :func:`render.columns`)."""
    ranking = rank_board(board)
    meta = board.meta()
    bench = meta.get("benchmark") or {}
    unit = bench.get("budget_unit", "patches")
    names = _names(ranking)
    rows = _all_rows(ranking)
    listed = board.entries(strict=False)
    entries = {e.name: e.data for e in listed}
    counts = {False: 0, True: 0}
    row_data, index = [], {}
    for kind, *_ in _SECTIONS:
        for r in getattr(ranking, kind):
            reference = r.reported or not r.verified or r.oracle  # as curves.png draws it (render.render)
            style = _svg_style(counts[reference], reference)
            counts[reference] += 1
            index[id(r)] = len(row_data)
            budgets = sorted(r.cells)
            row_data.append({
                "name": names[id(r)], "kind": kind, "reference": reference, "style": style,
                "aliases": [list(a) for a in r.aliases], "entries": r.entries,
                "score": _finite(r.score), "score_ci": [_finite(v) for v in r.score_ci] if r.score_ci else None,
                "rank": [r.rank_low, r.rank_high] if r.rank_low is not None else None,
                "other_images": r.other_images,
                "curve": {"budgets": budgets, "offloaded_accuracy": [_finite(r.cells[b][0]) for b in budgets],
                          "ceiling_ratio": [_finite(r.cells[b][1]) for b in budgets],
                          **_cell_intervals(entries.get(r.entry), r)},
            })
    sections = []
    for kind, _, heading, text in _SECTIONS:
        members = getattr(ranking, kind)
        if not members:
            continue
        cols = columns(ranking, kind, unit)
        view = View(ranking, kind, names)
        sections.append({"kind": kind, "heading": heading or "Ranked", "text": text,
                         "columns": [c.header for c in cols],
                         "rows": [{"row": index[id(r)],
                                   "cells": [[v, sort_key(v)] for v in (c.value(r, view) for c in cols)]}
                                  for r in members]})
    ceilings = {r.ceiling for r in ranking.ranked if r.ceiling is not None}
    notes = [_score_note(ranking), _rank_note(ranking), _cell_note(ranking)]
    if any(not r.reported for r in rows):
        notes.append(_reproduction_note(board, ranking))
    return {
        "name": board.name, "fingerprint": meta.get("fingerprint"), "description": _describe(bench),
        "budget_unit": unit, "budgets": ranking.budgets, "rank_budgets": ranking.rank_budgets,
        "num_patches": bench.get("num_patches"),
        "ceiling": _finite(ceilings.pop()) if len(ceilings) == 1 else None,
        "notes": notes, "sections": sections, "rows": row_data,
        "entries": _entry_info(listed, {e for r in rows for e in r.entries}, ranking),
        "version": _version(),
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sagebench")
    except PackageNotFoundError:
        return "unknown"


def _asset(name: str) -> str:
    return resources.files("sagebench.leaderboard").joinpath(ASSETS, name).read_text(encoding="utf-8")


_SLOT = re.compile(r"<!--@(\w+)@-->")


def _fill(template: str, parts: Mapping[str, str]) -> str:
    """One pass over the template's ``<!--@name@-->`` slots: text put into one slot is never scanned again."""
    return _SLOT.sub(lambda m: parts[m.group(1)], template)


def board_page(data: Mapping[str, Any]) -> str:
    """The self-contained HTML of one board (its CSS, script and data inline)."""
    script = _asset("board.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    # only this script may run and nothing may be fetched: an injection the escaping missed would still be inert
    csp = f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'"
    return _fill(_asset("board.html"), {
        "csp": csp, "title": html.escape(f"Leaderboard {data['name']} - sagebench"),
        "style": _asset("site.css"), "script": script, "data": embed_json(data)})


def index_page(boards: Sequence[Mapping[str, Any]]) -> str:
    """The site's front page: one line per board, linking its page (static HTML, every value escaped)."""
    e = html.escape
    lines = []
    for d in boards:
        top = [r for r in d["rows"] if r["kind"] == "ranked" and r["rank"] and r["rank"][0] == 1]
        ranked = sum(r["kind"] == "ranked" for r in d["rows"])
        lines.append(
            f'<tr><td><a href="{e(d["name"])}/{INDEX_FILE}">{e(d["name"])}</a></td>'
            f"<td class=wrap>{e(d['description'])}</td><td class=num>{len(d['entries'])}</td><td class=num>{ranked}</td>"
            f"<td>{e(', '.join(r['name'] for r in top)) or '-'}</td><td><code>{e(str(d['fingerprint']))}</code></td></tr>")
    body = ("<div class=scroll><table class=board><thead><tr><th>board</th><th>benchmark</th><th>entries</th><th>ranked rows</th>"
            "<th>rank 1 possible (95% rank interval)</th><th>fingerprint</th></tr></thead><tbody>"
            + "".join(lines) + "</tbody></table></div>") if lines else "<p>No boards.</p>"
    return _fill(_asset("index.html"), {"style": _asset("site.css"), "boards": body,
                                        "version": e(_version())})


def write_site(root: Path, out: Path, boards: Sequence[str] | None = None) -> Path:
    """Write the site of the boards under ``root`` (``boards``: these only) to ``out``; returns its index.

    Each file is written atomically (a new temporary file renamed over the target): a link planted in
    ``out`` is replaced, never followed.
    """
    names = list(boards) if boards else list_boards(root)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pages = []
    for name in names:
        board = get_board(name, root)
        folder = out / safe_name(board.name, "board name")
        if folder.is_symlink():
            raise LeaderboardError(f"refusing to write into {folder}: it is a symbolic link.")
        folder.mkdir(exist_ok=True)
        data = board_data(board)
        atomic_write_bytes(folder / INDEX_FILE, board_page(data).encode("utf-8"), durable=False)
        pages.append(data)
    return atomic_write_bytes(out / INDEX_FILE, index_page(pages).encode("utf-8"), durable=False)


def init_repo(target: Path) -> list[Path]:
    """Start a board repository in ``target`` from the shipped template (README, CI workflow that verifies
    and reproduces every pull request and publishes the site); refuses to overwrite any file there."""
    source = resources.files("sagebench.leaderboard").joinpath(TEMPLATE)
    with resources.as_file(source) as src:
        files = sorted(p for p in Path(src).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        clashes = [target / p.relative_to(src) for p in files if (target / p.relative_to(src)).exists()]
        if clashes:
            raise LeaderboardError(f"{target} already has {', '.join(str(c) for c in clashes)}: init-repo never "
                                   "overwrites a file (pick an empty folder).")
        written = []
        for p in files:
            dest = target / p.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dest)
            written.append(dest)
    (target / "leaderboards").mkdir(exist_ok=True)
    return written
