"""``sagebench report``: one tidy table of several runs, with 95% intervals, as Markdown, CSV or LaTeX.

One row per (run, strategy, budget); the runs of one (strategy, budget) cell are adjacent, so
several runs read side by side. Each metric comes with its interval: the ``*_ci`` field of the
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
from typing import Any, Callable, Sequence

import numpy as np

from sagebench.cells import Cell
from sagebench.errors import SageBenchError
from sagebench.results.check import checked_results
from sagebench.results.model import RunResults
from sagebench.stats import ratio_bootstrap_interval, wilson_interval

CONFIDENCE = 0.95
RATIO_RESAMPLES = 2000


@dataclass(frozen=True)
class Metric:
    name: str  # the results row field
    title: str
    scale: float  # 100 for percentages
    digits: int
    interval: bool


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("offloaded_accuracy", "offloaded acc %", 100.0, 1, True),
    Metric("ceiling_ratio", "ceiling ratio", 1.0, 3, True),
    Metric("overall_accuracy", "overall acc %", 100.0, 1, True),
    Metric("coverage", "coverage", 1.0, 3, False),
    Metric("units_sent", "units sent", 1.0, 1, False),
    Metric("bytes_sent", "bytes sent", 1.0, 0, False),
    Metric("num_correct", "correct", 1.0, 0, False),
)}
DEFAULT_METRICS = ("offloaded_accuracy", "ceiling_ratio", "overall_accuracy", "bytes_sent")


def _results_path(run: str | os.PathLike) -> Path:
    path = Path(run)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise SageBenchError(f"{run} is neither a run folder with results.json nor a results JSON file.")
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
    path = results_path.with_name("samples.parquet")
    if results_path.name != "results.json" and results_path.suffix == ".json":  # a leaderboard entry file
        path = results_path.with_name(results_path.stem + ".samples.parquet")
    cache: dict[str, Any] = {}

    def get(cell: Cell) -> tuple[np.ndarray, np.ndarray] | None:
        if not path.is_file():
            return None
        if "table" not in cache:
            import pyarrow.parquet as pq

            try:
                cache["table"] = pq.read_table(str(path))
            except Exception:  # an unreadable file gives no interval, not a failed report
                cache["table"] = None
        table = cache["table"]
        key = cell.key("pred")
        if table is None or key not in table.column_names:
            return None
        label = table.column("label").to_numpy()
        off = table.column("offloaded").to_numpy().astype(bool)
        hit = table.column(key).to_numpy() == label
        ceiling = table.column("ceiling_pred").to_numpy() == label
        return hit[off], ceiling[off]

    return get


def table_rows(runs: Sequence[str | os.PathLike], metrics: Sequence[str] = DEFAULT_METRICS) -> list[dict[str, Any]]:
    """The tidy rows: ``run, strategy, budget, budget_unit`` and per metric ``<m>``, ``<m>_low``, ``<m>_high``."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise SageBenchError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    paths = [_results_path(r) for r in runs]
    out: list[dict[str, Any]] = []
    for path, label in zip(paths, _labels(paths)):
        res = RunResults.from_json(checked_results(path))  # every figure recomputed from the records first
        samples = _samples(path)
        oracles = {s.get("label") for s in (res.strategies or []) if s.get("oracle")}
        for row in res.results:
            cell = Cell.from_row(row)
            tidy: dict[str, Any] = {"run": label, "strategy": cell.strategy, "budget": cell.budget,
                                    "budget_unit": cell.unit, "oracle": cell.strategy in oracles}
            for name in metrics:
                metric = METRICS[name]
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
            out.append(tidy)
    if len(paths) > 1:  # a cell's runs next to each other
        strategies = list(dict.fromkeys(r["strategy"] for r in out))
        run_order = list(dict.fromkeys(r["run"] for r in out))
        out.sort(key=lambda r: (strategies.index(r["strategy"]), r["budget_unit"], r["budget"],
                                run_order.index(r["run"])))
    return out


def _number(value: Any, metric: Metric) -> str:
    if value is None:
        return "-"
    return f"{value * metric.scale:.{metric.digits}f}"


def _text_cells(row: dict[str, Any], metrics: Sequence[str]) -> list[str]:
    cells = []
    for name in metrics:
        metric = METRICS[name]
        text = _number(row.get(name), metric)
        if metric.interval and row.get(f"{name}_low") is not None:
            text += f" [{_number(row[f'{name}_low'], metric)}, {_number(row[f'{name}_high'], metric)}]"
        cells.append(text)
    return cells


def _budget(row: dict[str, Any]) -> str:
    return str(row["budget"]) if row["budget_unit"] == "patches" else f"{row['budget']} bytes"


INTERVAL_NOTE = ("95% intervals: from results.json where the run wrote them, else Wilson score intervals of the "
                 "accuracies' counts and a paired bootstrap of the ceiling ratio over samples.parquet")


def format_table(rows: Sequence[dict[str, Any]], fmt: str = "md", metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """``rows`` of :func:`table_rows` as ``md`` (Markdown), ``csv`` (every number, fractions) or ``latex``."""
    if fmt == "csv":
        buf = io.StringIO()
        fields = ["run", "strategy", "budget", "budget_unit"]
        for name in metrics:
            fields += [name] + ([f"{name}_low", f"{name}_high"] if METRICS[name].interval else [])
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
        return buf.getvalue().rstrip("\n")
    header = ["run", "strategy", "budget", *(METRICS[m].title for m in metrics)]
    body = [[row["run"], row["strategy"], _budget(row), *_text_cells(row, metrics)] for row in rows]
    if fmt == "md":
        esc = [[c.replace("|", "\\|") for c in line] for line in [header, *body]]
        lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|",
                 *("| " + " | ".join(line) + " |" for line in esc[1:])]
        return "\n".join(lines + ["", INTERVAL_NOTE + "."])
    if fmt == "latex":
        lines = ["% " + INTERVAL_NOTE, "\\begin{tabular}{lll" + "r" * len(metrics) + "}", "\\toprule",
                 " & ".join(_latex(h) for h in header) + " \\\\", "\\midrule"]
        previous = None
        for row, line in zip(rows, body):
            if previous is not None and (row["strategy"], row["budget"]) != previous and len({r["run"] for r in rows}) > 1:
                lines.append("\\addlinespace")
            previous = (row["strategy"], row["budget"])
            lines.append(" & ".join(_latex(c) for c in line) + " \\\\")
        return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"])
    raise SageBenchError(f"unknown format {fmt!r}: md, csv or latex")


def format_wide(rows: Sequence[dict[str, Any]], fmt: str = "md", metric: str = "offloaded_accuracy") -> str:
    """``rows`` of :func:`table_rows` as a paper's table: one row per (strategy, run), one column per budget,
    each cell ``metric`` with its 95% interval; the highest point value of each budget among deployable rows
    is marked (bold in Markdown and LaTeX, ``best`` columns in CSV; oracles are named so and never marked). The mark is the point estimate only: whether the
    difference to the next row is significant is what ``sagebench leaderboard compare`` answers.
    """
    if metric not in METRICS:
        raise SageBenchError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    m = METRICS[metric]
    budgets = sorted({(r["budget_unit"], r["budget"]) for r in rows})
    runs = list(dict.fromkeys(r["run"] for r in rows))
    labels = list(dict.fromkeys((r["strategy"], r["run"]) for r in rows))
    cell = {(r["strategy"], r["run"], r["budget_unit"], r["budget"]): r for r in rows}
    best = {}
    for unit, b in budgets:
        values = [r.get(metric) for (s, run) in labels
                  if (r := cell.get((s, run, unit, b))) and r.get(metric) is not None and not r.get("oracle")]
        best[(unit, b)] = max(values) if values else None

    oracle = {(r["strategy"], r["run"]) for r in rows if r.get("oracle")}

    def name(strategy: str, run: str) -> str:  # an oracle is a reference: named so, never marked best
        text = strategy if len(runs) == 1 else f"{strategy} ({run})"
        return f"{text} (oracle)" if (strategy, run) in oracle else text

    def column(unit: str, b: int) -> str:
        return f"B={b}" if unit == "patches" else f"{b} bytes"

    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["strategy", "run", *(f"{column(u, b)} {k}" for u, b in budgets
                                               for k in (metric, "low", "high", "best"))])
        for s, run in labels:
            line: list[Any] = [s, run]
            for u, b in budgets:
                r = cell.get((s, run, u, b)) or {}
                value = r.get(metric)
                line += ["" if value is None else value, r.get(f"{metric}_low", "") or "",
                         r.get(f"{metric}_high", "") or "",
                         int(value is not None and not r.get("oracle") and value == best[(u, b)])]
            writer.writerow(line)
        return buf.getvalue().rstrip("\n")
    if fmt not in ("md", "latex"):
        raise SageBenchError(f"unknown format {fmt!r}: md, csv or latex")
    bold = (lambda t: f"**{t}**") if fmt == "md" else (lambda t: f"\\textbf{{{t}}}")
    esc = (lambda t: t.replace("|", "\\|")) if fmt == "md" else _latex
    body = []
    for s, run in labels:
        cells = [esc(name(s, run))]
        for u, b in budgets:
            r = cell.get((s, run, u, b))
            text = _text_cells(r, [metric])[0] if r else "-"
            text = esc(text)
            marked = r and not r.get("oracle") and r.get(metric) is not None and r[metric] == best[(u, b)]
            cells.append(bold(text) if marked else text)
        body.append(cells)
    header = [esc("strategy"), *(esc(column(u, b)) for u, b in budgets)]
    note = f"{m.title} with its {INTERVAL_NOTE[0].lower() + INTERVAL_NOTE[1:]}; the highest value of each budget in bold"
    if fmt == "md":
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
                          *("| " + " | ".join(line) + " |" for line in body), "", note + "."])
    return "\n".join(["% " + note, "\\begin{tabular}{l" + "r" * len(budgets) + "}", "\\toprule",
                      " & ".join(header) + " \\\\", "\\midrule", *(" & ".join(line) + " \\\\" for line in body),
                      "\\bottomrule", "\\end{tabular}"])


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))
