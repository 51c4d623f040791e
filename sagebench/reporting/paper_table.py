"""``sagebench report``: one table of several runs or of a board, with 95% intervals, as Markdown, CSV or LaTeX.

Long (:func:`format_table`): one row per (run, strategy, budget); the runs of one (strategy, budget)
cell are adjacent, so several runs read side by side; latency is one column per uplink channel.
Wide (:func:`format_wide`): strategies x budgets, the best of each budget in bold and the rows tied
with it (simultaneous rank interval holding rank 1: :func:`run_ranks`, or the board's) marked. A
board's rows come from :func:`board_rows`. Each metric comes with its interval: the ``*_ci`` field of the
results row when the run wrote one (``offloaded_accuracy_ci``, ``overall_accuracy_ci``,
``ceiling_ratio_ci``), else computed here: the Wilson score interval
(:func:`sagebench.stats.wilson_interval`) of the counts behind an accuracy (``num_correct`` of
``num_offloaded`` for the offloaded accuracy; the overall accuracy's correct images of
``num_images``), and for the ceiling ratio the paired percentile bootstrap
(:func:`sagebench.stats.ratio_bootstrap_interval`, 2000 resamples, seed 0) over the run's
``samples.parquet`` (a leaderboard entry's ``<entry>.samples.parquet``) when it is there (no
interval otherwise). The mean fields (coverage, units
and bytes sent) have no interval.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from sagebench.cells import Cell
from sagebench.errors import SageBenchError
from sagebench.results.check import checked_results, samples_path_of
from sagebench.results.model import METRIC_ALIASES, RunResults
from sagebench.stats import paired_bootstrap, rank_sets, ratio_bootstrap_interval, wilson_interval

if TYPE_CHECKING:
    from sagebench.leaderboard.store import Board

BOARD_FILE = "board.json"  # what makes a folder a board (sagebench.leaderboard.store.BOARD_FILE)
CONFIDENCE = 0.95
RATIO_RESAMPLES = 2000
RANK_RESAMPLES = 2000  # the rank intervals' bootstrap, as a board's (sagebench.leaderboard.rank)
RANK_SEED = 0


@dataclass(frozen=True)
class Metric:
    name: str  # the results row field (``latency``: ``latency_ms[channel]``)
    title: str
    scale: float  # 100 for percentages
    digits: int
    interval: bool
    better: str | None = "high"  # which end a wide table marks best ("low": latency; None: not marked)
    ranked: bool = False  # the accuracy's rank intervals say which rows are tied with the best


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("offloaded_accuracy", "offloaded acc %", 100.0, 1, True, ranked=True),
    Metric("ceiling_ratio", "ceiling ratio", 1.0, 3, True, ranked=True),
    Metric("overall_accuracy", "overall acc %", 100.0, 1, True, ranked=True),
    Metric("coverage", "coverage", 1.0, 3, False, better=None),
    Metric("units_sent", "units sent", 1.0, 1, False, better=None),
    Metric("bytes_sent", "bytes sent", 1.0, 0, False, better=None),
    Metric("latency", "latency ms", 1.0, 1, False, better=None),  # equal at a patch budget: context, not a contest
    Metric("num_correct", "correct", 1.0, 0, False),
)}
ALIASES = METRIC_ALIASES  # short names the CLI also accepts (``--metric ratio``)
DEFAULT_METRICS = ("offloaded_accuracy", "ceiling_ratio", "overall_accuracy", "bytes_sent", "latency")


def metric_name(name: str) -> str:
    """The :data:`METRICS` name of ``name`` or its alias; a clear error for anything else."""
    name = ALIASES.get(name, name)
    if name not in METRICS:
        raise SageBenchError(f"unknown metric {name!r}; choose from {', '.join([*METRICS, *ALIASES])}")
    return name


def _results_path(run: str | os.PathLike) -> Path:
    path = Path(run)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise SageBenchError(f"{run} is neither a run folder with results.json, a board folder with board.json, "
                             "nor a results JSON file.")
    return path


def _labels(paths: Sequence[Path]) -> list[str]:
    """Each run's folder name, or its path where two runs share a name."""
    names = [p.parent.name if p.name == "results.json" else p.stem for p in paths]
    return [str(p.parent if p.name == "results.json" else p) if names.count(n) > 1 else n
            for p, n in zip(paths, names)]


def _as_interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return float(value[0]), float(value[1])
    return None


def _wilson(successes: Any, n: Any) -> tuple[float, float] | None:
    if not isinstance(successes, (int, float)) or not isinstance(n, (int, float)) or not n:
        return None
    return wilson_interval(int(round(successes)), int(n), CONFIDENCE)


def _samples(results_path: Path) -> Callable[[Cell], tuple[np.ndarray, np.ndarray] | None]:
    """``cell -> (correct with B patches, correct with all patches)`` over the offloaded images, read lazily."""
    table = _lazy_samples(results_path)

    def get(cell: Cell) -> tuple[np.ndarray, np.ndarray] | None:
        columns = table()
        key = cell.key("pred")
        if columns is None or key not in columns:
            return None
        off = columns["offloaded"]
        return (columns[key] == columns["label"])[off], (columns["ceiling_pred"] == columns["label"])[off]

    return get


def _lazy_samples(results_path: Path) -> Callable[[], dict[str, np.ndarray] | None]:
    """The run's per-sample columns in sample-id order (``offloaded`` as bool), read once on first use."""
    path = samples_path_of(results_path)
    cache: dict[str, Any] = {}

    def get() -> dict[str, np.ndarray] | None:
        if "columns" not in cache:
            cache["columns"] = None
            if path.is_file():
                import pyarrow.parquet as pq

                try:
                    table = pq.read_table(str(path))
                    order = np.argsort(table.column("sample_id").to_numpy(), kind="stable")
                    columns = {name: table.column(name).to_numpy()[order] for name in table.column_names}
                    columns["offloaded"] = columns["offloaded"].astype(bool)
                    cache["columns"] = columns
                except Exception:  # an unreadable file gives no interval, not a failed report
                    pass
        return cache["columns"]

    return get


def _tidy(row: dict[str, Any], res: RunResults, run: str, metrics: Sequence[str], oracle: bool,
          samples: Callable[[Cell], tuple[np.ndarray, np.ndarray] | None]) -> dict[str, Any]:
    """One tidy row of a results row: its figures and their intervals (see the module doc)."""
    cell = Cell.from_row(row)
    tidy: dict[str, Any] = {"run": run, "strategy": cell.strategy, "budget": cell.budget,
                            "budget_unit": cell.unit, "oracle": oracle, "rank_low": None, "rank_high": None}
    for name in metrics:
        metric = METRICS[name]
        if name == "latency":
            tidy["latency_ms"] = {str(k): v for k, v in (row.get("latency_ms") or {}).items()}
            continue
        tidy[name] = row.get(name)
        if not metric.interval:
            continue
        ci = _as_interval(row.get(f"{name}_ci"))
        if ci is None and row.get(name) is not None:
            if name == "offloaded_accuracy":
                ci = _wilson(row.get("num_correct"), res.num_offloaded)
            elif name == "overall_accuracy":
                ci = _wilson(row["overall_accuracy"] * res.num_images, res.num_images)
            elif name == "ceiling_ratio":
                pair = samples(cell)
                ci = (ratio_bootstrap_interval(pair[0], pair[1], RATIO_RESAMPLES, 0, CONFIDENCE)
                      if pair is not None and pair[1].any() else None)
        tidy[f"{name}_low"], tidy[f"{name}_high"] = ci if ci is not None else (None, None)
    return tidy


def table_rows(runs: Sequence[str | os.PathLike], metrics: Sequence[str] = DEFAULT_METRICS,
               ranks: bool = True) -> list[dict[str, Any]]:
    """The tidy rows: ``run, strategy, budget, budget_unit, oracle, rank_low, rank_high`` and per metric ``<m>``,
    ``<m>_low``, ``<m>_high`` (``latency_ms``: ``{channel: ms}``).

    A path that is a board folder (``board.json``) gives that board's rows (:func:`board_rows`). With
    ``ranks``, every deployable row gets its simultaneous 95% rank interval of the offloaded accuracy at
    each budget (:func:`run_ranks`), when all the runs are paired (see there).
    """
    metrics = [metric_name(m) for m in metrics]
    boards = [Path(r) for r in runs if (Path(r) / BOARD_FILE).is_file()]
    if boards:
        if len(boards) != len(runs):
            raise SageBenchError("give either run folders or one board folder to `sagebench report`, not both.")
        return [row for b in boards for row in board_rows(board_at(b), metrics)]
    paths = [_results_path(r) for r in runs]
    out: list[dict[str, Any]] = []
    loaded = []
    for path, label in zip(paths, _labels(paths)):
        res = RunResults.from_json(checked_results(path))  # every figure recomputed from the records first
        samples = _samples(path)
        oracles = {s.get("label") for s in (res.strategies or []) if s.get("oracle")}
        loaded.append((label, res, path))
        out += [_tidy(row, res, label, metrics, str(row["strategy"]) in oracles, samples) for row in res.results]
    if ranks:
        found = run_ranks(loaded)
        for tidy in out:
            tidy["rank_low"], tidy["rank_high"] = found.get(
                (tidy["run"], tidy["strategy"], tidy["budget_unit"], tidy["budget"]), (None, None))
    if len(paths) > 1:  # a cell's runs next to each other
        strategies = list(dict.fromkeys(r["strategy"] for r in out))
        run_order = list(dict.fromkeys(r["run"] for r in out))
        out.sort(key=lambda r: (strategies.index(r["strategy"]), r["budget_unit"], r["budget"],
                                run_order.index(r["run"])))
    return out


def run_ranks(runs: Sequence[tuple[str, RunResults, Path]]) -> dict[tuple[str, str, str, int], tuple[int, int]]:
    """``(run, strategy, unit, budget) -> (rank_low, rank_high)``: simultaneous 95% rank intervals of the
    offloaded accuracy of every deployable (non-oracle) row at each budget, from the per-sample records.

    As a board ranks (:func:`sagebench.stats.rank_sets`: paired bootstrap over the offloaded images, max-|t|
    over every pair of rows, :data:`RANK_RESAMPLES` replicates, seed :data:`RANK_SEED`). Rows are paired only
    when they are on the same images: every run must have the same benchmark fingerprint, its per-sample
    file, and the same offloaded images; otherwise there is nothing to compare on and the answer is empty
    (no row is marked tied). Within one paired set the ceiling and the kept images are common to all rows,
    so the ranks of the ceiling ratio and the overall accuracy are these too.
    """
    if not runs or len({res.fingerprint for _, res, _ in runs}) != 1:
        return {}
    loaded = []
    for label, res, path in runs:
        columns = _lazy_samples(path)()
        if columns is None:
            return {}
        loaded.append((label, res, columns))
    ids = [cols["sample_id"][cols["offloaded"]] for _, _, cols in loaded]
    if any(not np.array_equal(ids[0], other) for other in ids[1:]) or not ids[0].size:
        return {}
    by_budget: dict[tuple[str, int], list[tuple[str, str, np.ndarray]]] = {}
    for label, res, cols in loaded:
        oracles = {s.get("label") for s in (res.strategies or []) if s.get("oracle")}
        off = cols["offloaded"]
        for row in res.results:
            cell = Cell.from_row(row)
            if cell.strategy in oracles or cell.key("pred") not in cols:
                continue
            hit = (cols[cell.key("pred")] == cols["label"])[off]
            by_budget.setdefault((cell.unit, cell.budget), []).append((label, cell.strategy, hit))
    out: dict[tuple[str, str, str, int], tuple[int, int]] = {}
    for (unit, budget), rows in by_budget.items():
        if len(rows) == 1:
            out[(rows[0][0], rows[0][1], unit, budget)] = (1, 1)
            continue
        estimate, replicates = paired_bootstrap(np.stack([h for _, _, h in rows]).astype(float),
                                                resamples=RANK_RESAMPLES, seed=RANK_SEED)
        sets = rank_sets(estimate, replicates, CONFIDENCE)
        for i, (label, strategy, _) in enumerate(rows):
            out[(label, strategy, unit, budget)] = (int(sets.rank_low[i]), int(sets.rank_high[i]))
    return out


def board_at(path: str | os.PathLike, root: str | os.PathLike | None = None) -> "Board":
    """The board of a board folder (``leaderboards/<board>``), or of a board name under ``root``."""
    from sagebench.leaderboard.store import Board, get_board

    folder = Path(path)
    if (folder / BOARD_FILE).is_file():
        return Board(folder.resolve().parent, folder.resolve().name)
    return get_board(str(path), Path(root) if root is not None else None)


def board_rows(board: "Board", metrics: Sequence[str] = DEFAULT_METRICS) -> list[dict[str, Any]]:
    """The tidy rows of a board: one per distinct method (the board's rows, :mod:`sagebench.leaderboard.rank`:
    identical predictions are one row naming every strategy it stands for) and budget, in the board's order
    (ranked rows by score, then the unranked groups); the figures and intervals are the row's entry's own, and
    ``rank_low`` / ``rank_high`` are the board's simultaneous rank interval of the offloaded accuracy at that
    budget (ranked rows on declared budgets only). ``run`` is the board's name, ``entry`` the row's entry.
    """
    from sagebench.leaderboard.rank import display_names
    from sagebench.leaderboard.render import rank_board

    metrics = [metric_name(m) for m in metrics]
    ranking = rank_board(board)
    rows = [*ranking.ranked, *ranking.incomplete, *ranking.unverified, *ranking.oracles, *ranking.reported]
    entries = {e.name: e for e in board.entries(strict=False)}
    out: list[dict[str, Any]] = []
    for row, name in zip(rows, display_names(rows)):
        entry = entries[row.entry]
        res = RunResults.from_json(entry.data)
        samples = _samples(entry.path)
        for r in res.results:
            if str(r["strategy"]) != row.strategy:
                continue
            tidy = _tidy(r, res, board.name, metrics, row.oracle, samples)
            tidy.update(strategy=name, entry=row.entry)
            tidy["rank_low"], tidy["rank_high"] = row.budget_ranks.get(int(r["budget"]), (None, None))
            out.append(tidy)
    return out


def _number(value: Any, metric: Metric) -> str:
    if value is None:
        return "-"
    return f"{value * metric.scale:.{metric.digits}f}"


def _value(row: dict[str, Any], metric: str, channel: str | None = None) -> Any:
    """The row's figure of ``metric`` (``latency``: over ``channel``)."""
    if metric == "latency":
        return (row.get("latency_ms") or {}).get(channel)
    return row.get(metric)


def _text_cells(row: dict[str, Any], metrics: Sequence[str], channels: Sequence[str] = ()) -> list[str]:
    cells = []
    for name in metrics:
        metric = METRICS[name]
        if name == "latency":
            cells += [_number(_value(row, name, ch), metric) for ch in channels]
            continue
        text = _number(row.get(name), metric)
        if metric.interval and row.get(f"{name}_low") is not None:
            text += f" [{_number(row[f'{name}_low'], metric)}, {_number(row[f'{name}_high'], metric)}]"
        cells.append(text)
    return cells


def _budget(row: dict[str, Any]) -> str:
    return str(row["budget"]) if row["budget_unit"] == "patches" else f"{row['budget']} bytes"


def channels_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The uplink channels the rows report latency for, in the results' order."""
    return list(dict.fromkeys(ch for r in rows for ch in (r.get("latency_ms") or {})))


def _rank(row: dict[str, Any]) -> str:
    low, high = row.get("rank_low"), row.get("rank_high")
    return "-" if low is None else (str(low) if low == high else f"{low}-{high}")


INTERVAL_NOTE = ("95% intervals: from results.json where the run wrote them, else Wilson score intervals of the "
                 "accuracies' counts and a paired bootstrap of the ceiling ratio over samples.parquet")
RANK_NOTE = ("rank: simultaneous 95% rank interval of the offloaded accuracy among the deployable rows at that budget "
             "(paired bootstrap over the offloaded images)")
LATENCY_NOTE = "latency: mean request latency in ms over each uplink channel (transmission.channels of results.json)"


def format_table(rows: Sequence[dict[str, Any]], fmt: str = "md", metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """``rows`` of :func:`table_rows` as ``md`` (Markdown), ``csv`` (every number, fractions) or ``latex``: one line
    per (run, strategy, budget); ``latency`` is one column per channel; a ``rank`` column when ranks are known."""
    metrics = [metric_name(m) for m in metrics]
    channels = channels_of(rows) if "latency" in metrics else []
    ranked = any(r.get("rank_low") is not None for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        fields = ["run", "strategy", "budget", "budget_unit"]
        for name in metrics:
            if name == "latency":
                fields += [f"latency_ms_{ch}" for ch in channels]
                continue
            fields += [name] + ([f"{name}_low", f"{name}_high"] if METRICS[name].interval else [])
        fields += ["rank_low", "rank_high"] if ranked else []
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            flat = {**row, **{f"latency_ms_{ch}": _value(row, "latency", ch) for ch in channels}}
            writer.writerow({k: ("" if flat.get(k) is None else flat.get(k)) for k in fields})
        return buf.getvalue().rstrip("\n")
    titles = [t for m in metrics for t in ([f"latency {ch} ms" for ch in channels] if m == "latency"
                                            else [METRICS[m].title])]
    header = ["run", "strategy", "budget", *titles, *(["rank"] if ranked else [])]
    body = [[row["run"], row["strategy"], _budget(row), *_text_cells(row, metrics, channels),
             *([_rank(row)] if ranked else [])] for row in rows]
    notes = [INTERVAL_NOTE, *([LATENCY_NOTE] if channels else []), *([RANK_NOTE] if ranked else [])]
    if fmt == "md":
        esc = [[c.replace("|", "\\|") for c in line] for line in [header, *body]]
        lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|",
                 *("| " + " | ".join(line) + " |" for line in esc[1:])]
        return "\n".join(lines + ["", "; ".join(notes) + "."])
    if fmt == "latex":
        lines = [*("% " + n for n in notes), "\\begin{tabular}{lll" + "r" * (len(header) - 3) + "}", "\\toprule",
                 " & ".join(_latex(h) for h in header) + " \\\\", "\\midrule"]
        previous = None
        for row, line in zip(rows, body):
            if previous is not None and (row["strategy"], row["budget"]) != previous and len({r["run"] for r in rows}) > 1:
                lines.append("\\addlinespace")
            previous = (row["strategy"], row["budget"])
            lines.append(" & ".join(_latex(c) for c in line) + " \\\\")
        return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"])
    raise SageBenchError(f"unknown format {fmt!r}: md, csv or latex")


TIED_MD = "\u2020"  # a dagger after the cell


def format_wide(rows: Sequence[dict[str, Any]], fmt: str = "md", metric: str = "offloaded_accuracy",
                channel: str | None = None) -> str:
    """``rows`` of :func:`table_rows` as a paper's table: one row per (strategy, run), one column per budget,
    each cell ``metric`` with its 95% interval (``latency``: over ``channel``, default the first the results
    list). Marks, explained in the table's note line: the best point value of each budget among deployable
    rows in bold (the highest accuracy or ratio; latency is not marked); a dagger on every other row whose
    simultaneous 95% rank interval of the accuracy at that budget includes rank 1 (``rank_low`` of the rows,
    :func:`run_ranks` or the board's), i.e. tied with the best: the data do not separate it from the best.
    Oracles are named so and never marked. CSV: ``best`` and ``tied`` columns (0/1) beside each value.
    """
    metric = metric_name(metric)
    m = METRICS[metric]
    if metric == "latency":
        channels = channels_of(rows)
        if not channels:
            raise SageBenchError("these results report no latency (no transmission.channels).")
        if channel is None:
            channel = channels[0]
        elif channel not in channels:
            raise SageBenchError(f"no latency over channel {channel!r}; the results list {', '.join(channels)}")
    budgets = sorted({(r["budget_unit"], r["budget"]) for r in rows})
    runs = list(dict.fromkeys(r["run"] for r in rows))
    labels = list(dict.fromkeys((r["strategy"], r["run"]) for r in rows))
    cell = {(r["strategy"], r["run"], r["budget_unit"], r["budget"]): r for r in rows}
    pick = {"high": max, "low": min}.get(m.better or "")
    best = {}
    for unit, b in budgets:
        values = [_value(r, metric, channel) for (s, run) in labels
                  if (r := cell.get((s, run, unit, b))) and _value(r, metric, channel) is not None
                  and not r.get("oracle")]
        best[(unit, b)] = pick(values) if values and pick else None

    def is_best(r: dict[str, Any] | None, unit: str, b: int) -> bool:
        return bool(r) and not r.get("oracle") and best[(unit, b)] is not None and \
            _value(r, metric, channel) == best[(unit, b)]

    def is_tied(r: dict[str, Any] | None, unit: str, b: int) -> bool:
        return bool(r) and m.ranked and not r.get("oracle") and r.get("rank_low") == 1 and not is_best(r, unit, b)

    oracle = {(r["strategy"], r["run"]) for r in rows if r.get("oracle")}

    def name(strategy: str, run: str) -> str:  # an oracle is a reference: named so, never marked best
        text = strategy if len(runs) == 1 else f"{strategy} ({run})"
        return f"{text} (oracle)" if (strategy, run) in oracle else text

    def column(unit: str, b: int) -> str:
        return f"B={b}" if unit == "patches" else f"{b} bytes"

    def text_of(r: dict[str, Any]) -> str:
        return _number(_value(r, metric, channel), m) if metric == "latency" else _text_cells(r, [metric])[0]

    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["strategy", "run", *(f"{column(u, b)} {k}" for u, b in budgets
                                               for k in (metric, "low", "high", "best", "tied"))])
        for s, run in labels:
            line: list[Any] = [s, run]
            for u, b in budgets:
                r = cell.get((s, run, u, b)) or {}
                value = _value(r, metric, channel)
                line += ["" if value is None else value, r.get(f"{metric}_low", "") or "",
                         r.get(f"{metric}_high", "") or "", int(is_best(r, u, b)), int(is_tied(r, u, b))]
            writer.writerow(line)
        return buf.getvalue().rstrip("\n")
    if fmt not in ("md", "latex"):
        raise SageBenchError(f"unknown format {fmt!r}: md, csv or latex")
    bold = (lambda t: f"**{t}**") if fmt == "md" else (lambda t: f"\\textbf{{{t}}}")
    tied = (lambda t: f"{t} {TIED_MD}") if fmt == "md" else (lambda t: f"{t}$^\\dagger$")
    esc = (lambda t: t.replace("|", "\\|")) if fmt == "md" else _latex
    body = []
    any_tied = False
    for s, run in labels:
        cells = [esc(name(s, run))]
        for u, b in budgets:
            r = cell.get((s, run, u, b))
            text = esc(text_of(r)) if r else "-"
            if is_best(r, u, b):
                text = bold(text)
            elif is_tied(r, u, b):
                text, any_tied = tied(text), True
            cells.append(text)
        body.append(cells)
    header = [esc("strategy"), *(esc(column(u, b)) for u, b in budgets)]
    what = (f"mean request latency in ms over the {channel} channel" if metric == "latency"
            else f"{m.title} with its {INTERVAL_NOTE[0].lower() + INTERVAL_NOTE[1:]}")
    marks = {"high": "; bold: the highest value of each budget", "low": "; bold: the lowest value of each budget"}
    note = what + marks.get(m.better or "", "") + (" among deployable rows (oracles are references, never marked)"
                                                    if m.better else "")
    if any_tied:
        note += ("; dagger: not separated from the best, its simultaneous 95% rank interval of the offloaded "
                 "accuracy at that budget includes rank 1 (paired bootstrap over the offloaded images)")
    if fmt == "md":
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
                          *("| " + " | ".join(line) + " |" for line in body), "", note + "."])
    marks_line = []  # what the marks mean, printed under the table (the comment line above it says it all)
    if m.better:
        marks_line.append(f"Bold: the {'highest' if m.better == 'high' else 'lowest'} value of each budget")
    if any_tied:
        marks_line.append("$^\\dagger$: not separated from it (95\\% simultaneous rank interval includes rank 1)")
    footnote = ["\\par\\smallskip{\\footnotesize " + "; ".join(marks_line) + ".}"] if marks_line else []
    return "\n".join(["% " + note, "\\begin{tabular}{l" + "r" * len(budgets) + "}", "\\toprule",
                      " & ".join(header) + " \\\\", "\\midrule", *(" & ".join(line) + " \\\\" for line in body),
                      "\\bottomrule", "\\end{tabular}", *footnote])


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))
