"""Per-image fields, declared once, and the exact metrics derived from them.

Why records rather than running means: every metric is then an exact count over a known set
of images (no mean of per-rank means), the same records are the per-sample file used for
paired comparisons, and a duplicated or missing image is detected instead of counted.

Each per-image field is declared here once (:data:`BASE_FIELDS`, :data:`CELL_FIELDS`: name,
dtype, how it reduces), and everything that lays out, writes or reduces records iterates over
these declarations: a new field is one line here plus the code that fills it. How a cell's
columns and keys are *named* is :mod:`sagebench.cells`; how records are accumulated and which
sentinel values they hold is :mod:`sagebench.sweep.records`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from sagebench.cells import Cell


@dataclass(frozen=True)
class Sent:
    """What one (strategy, budget) cell sent for a group of offloaded images: the per-image cell fields
    are computed from it (:attr:`Field.fill`)."""

    indices: Any  # [n, units] patch indices sent, per image
    preds: Any  # [n] server predictions (float64; records.NONFINITE for NaN/Inf logits)
    sizes: Any  # [n] request bytes (raw pixels or the codec's payload)
    units: int  # patches per request in this group
    grid: tuple[int, int]


@dataclass(frozen=True)
class Field:
    """One per-image column: its name, its dtype in ``samples.parquet``, how it reduces and, for a cell
    field, how it is filled.

    ``reduce``: ``"id"`` (identifies the image), ``"accuracy"`` (a prediction, compared with the
    label), ``"flag"`` (a boolean), ``"mean_offloaded"`` (mean over the offloaded images, reported
    as ``summary``). ``fill``: the value of each image of a :class:`Sent` group (a tensor ``[n]`` or
    a number for all of them); the module writes every cell field through it, under patch and byte
    budgets alike, so a new per-image metric is one declaration here.
    """

    name: str
    dtype: str  # "int64" | "float64" | "bool"
    reduce: str
    summary: str | None = None
    doc: str = ""
    fill: Callable[[Sent], Any] | None = field(default=None, compare=False, repr=False)


BASE_FIELDS: tuple[Field, ...] = (
    Field("sample_id", "int64", "id", doc="index of the image in the data set"),
    Field("label", "int64", "id", doc="true class, in the model's label space"),
    Field("edge_pred", "int64", "accuracy", doc="edge prediction"),
    Field("offloaded", "bool", "flag", doc="the gate sent the image to the server"),
    Field("ceiling_pred", "int64", "accuracy", doc="server prediction from all N patches"),
)
CELL_FIELDS: tuple[Field, ...] = (
    Field("pred", "int64", "accuracy", doc="server prediction from the sent patches", fill=lambda s: s.preds),
    Field("coverage", "float64", "mean_offloaded", "coverage",
          doc="fraction of coarse cells (grid pooled 2x2) holding >= 1 sent patch",
          fill=lambda s: coverage(s.indices, s.grid)),
    Field("units", "int64", "mean_offloaded", "units_sent", doc="patches sent", fill=lambda s: float(s.units)),
    Field("bytes", "int64", "mean_offloaded", "bytes_sent", doc="request bytes (raw pixels or codec payload)",
          fill=lambda s: s.sizes),
)
#: The gate's per-image score (e.g. min-entropy in bits), recorded only in an operating-curve run (a list of
#: gate thresholds): each threshold's offloaded set is then ``score > threshold``. It is the *last* column, after
#: every cell's, so a run with one threshold keeps its historical layout byte for byte.
SCORE_FIELD = Field("gate_score", "float64", "score", doc="the gate's score (offload when score > threshold); "
                    "operating-curve runs only")
BASE_COLUMNS = tuple(f.name for f in BASE_FIELDS)
SWEEP_FIELDS = tuple(f.name for f in CELL_FIELDS)


@dataclass(frozen=True)
class RowMetric:
    """A figure of each (strategy, budget) row of results.json, and its W&B key prefix."""

    name: str
    wandb_key: str
    doc: str


ROW_METRICS: tuple[RowMetric, ...] = (
    RowMetric("offloaded_accuracy", "offloaded_acc", "server accuracy from the B sent patches, offloaded images"),
    RowMetric("ceiling_ratio", "ceiling_ratio", "offloaded_accuracy / ceiling offloaded accuracy"),
    RowMetric("overall_accuracy", "overall_acc", "system accuracy over all images"),
    *(RowMetric(f.summary, f.summary, f.doc) for f in CELL_FIELDS if f.summary),
    RowMetric("num_correct", "num_correct", "offloaded images the server got right from the sent patches"),
)


def coverage(indices, grid: tuple[int, int]):
    """Fraction of coarse cells (the grid pooled 2x2, edge cells kept) holding >= 1 chosen patch, per row."""
    import torch

    rows, cols = grid
    coarse_cols = (cols + 1) // 2
    num_coarse = ((rows + 1) // 2) * coarse_cols
    cell = (indices // cols) // 2 * coarse_cols + (indices % cols) // 2
    hit = torch.zeros(indices.shape[0], num_coarse, dtype=torch.bool, device=indices.device)
    hit.scatter_(1, cell, True)
    return hit.sum(dim=1).double() / num_coarse


@dataclass(frozen=True)
class SweepLayout:
    """Column layout of the record matrix: :data:`BASE_FIELDS`, then :data:`CELL_FIELDS` per (strategy, budget)."""

    cells: tuple[tuple[str, int], ...]  # (strategy label, budget) in sweep order
    budget_unit: str = "patches"  # patches (B = units sent) or bytes (a byte budget per request)
    scored: bool = False  # a last column holds the gate's score (SCORE_FIELD): an operating-curve run

    def cell(self, j: int) -> Cell:
        strategy, budget = self.cells[j]
        return Cell(strategy, budget, self.budget_unit)

    @property
    def num_columns(self) -> int:
        return len(BASE_FIELDS) + len(CELL_FIELDS) * len(self.cells) + int(self.scored)

    def column(self, field: str, cell: int | None = None) -> int:
        if cell is None and field == SCORE_FIELD.name:
            if not self.scored:
                raise KeyError(f"{SCORE_FIELD.name}: only an operating-curve run (a list of gate thresholds) records it")
            return self.num_columns - 1
        if cell is None:
            return BASE_COLUMNS.index(field)
        return len(BASE_FIELDS) + cell * len(CELL_FIELDS) + SWEEP_FIELDS.index(field)

    def fields(self) -> list[tuple[str, Field]]:
        """``(column name, declaration)`` for every column, in order."""
        out = [(f.name, f) for f in BASE_FIELDS]
        for j in range(len(self.cells)):
            out += [(self.cell(j).key(f.name), f) for f in CELL_FIELDS]
        if self.scored:
            out.append((SCORE_FIELD.name, SCORE_FIELD))
        return out

    def names(self) -> list[str]:
        return [name for name, _ in self.fields()]


#: How the 95% intervals of results.json are computed (recorded in every results file).
CONFIDENCE = 0.95
RATIO_RESAMPLES = 2000
INTERVALS = {
    "confidence": CONFIDENCE,
    "accuracy": "Wilson score interval (offloaded, overall, edge and ceiling accuracies)",
    "ceiling_ratio": f"percentile bootstrap over the offloaded images, resampled in pairs (B patches, all "
                     f"patches), {RATIO_RESAMPLES} resamples, seed 0",
}


def _wilson(successes: int, n: int) -> list[float] | None:
    from sagebench.stats import wilson_interval

    ci = wilson_interval(int(successes), int(n), CONFIDENCE)
    return None if ci is None else [float(ci[0]), float(ci[1])]


def _ratio_ci(num_ok: np.ndarray, den_ok: np.ndarray) -> list[float] | None:
    from sagebench.stats import ratio_bootstrap_interval

    if not den_ok.any():
        return None
    ci = ratio_bootstrap_interval(num_ok, den_ok, resamples=RATIO_RESAMPLES, seed=0, confidence=CONFIDENCE)
    return None if ci is None else [float(ci[0]), float(ci[1])]


def summarize(rows: np.ndarray, layout: SweepLayout) -> dict:
    """Exact metrics from the record matrix (accuracies as fractions), each with its 95% interval.

    offloaded_accuracy: server correct with B patches / offloaded images;
    ceiling_ratio: offloaded_accuracy / ceiling offloaded accuracy (server on all N patches);
    overall_accuracy: (edge correct on kept + server correct on offloaded) / all images;
    the ``mean_offloaded`` fields (coverage, units_sent, bytes_sent): means over offloaded images;
    ``*_ci``: ``[low, high]`` (:data:`INTERVALS` says how).
    """
    col = layout.column
    n = rows.shape[0]
    label = rows[:, col("label")]
    edge_ok = rows[:, col("edge_pred")] == label
    off = rows[:, col("offloaded")] > 0.5
    n_off = int(off.sum())
    kept_ok = int((edge_ok & ~off).sum())

    def frac(num: float, den: float) -> float | None:
        return float(num) / float(den) if den else None

    ceiling_hit = (rows[:, col("ceiling_pred")] == label) & off
    ceiling_ok = int(ceiling_hit.sum())
    ceiling_off_acc = frac(ceiling_ok, n_off)
    out = {
        "num_images": n,
        "num_offloaded": n_off,
        "offload_rate": frac(n_off, n),
        "edge_accuracy": frac(int(edge_ok.sum()), n),
        "edge_accuracy_ci": _wilson(int(edge_ok.sum()), n),
        "ceiling": {
            "offloaded_accuracy": ceiling_off_acc,
            "overall_accuracy": frac(kept_ok + ceiling_ok, n),
            "offloaded_accuracy_ci": _wilson(ceiling_ok, n_off),
            "overall_accuracy_ci": _wilson(kept_ok + ceiling_ok, n),
        },
        "intervals": INTERVALS,
        "results": [],
    }
    for j, (strategy, budget) in enumerate(layout.cells):
        hit = (rows[:, col("pred", j)] == label) & off
        ok = int(hit.sum())
        acc = frac(ok, n_off)
        entry = {
            "strategy": strategy,
            "budget": budget,
            "budget_unit": layout.budget_unit,
            "offloaded_accuracy": acc,
            "ceiling_ratio": (acc / ceiling_off_acc) if (acc is not None and ceiling_off_acc) else None,
            "overall_accuracy": frac(kept_ok + ok, n),
        }
        for f in CELL_FIELDS:
            if f.reduce == "mean_offloaded":
                entry[f.summary] = float(rows[off, col(f.name, j)].mean()) if n_off else None
        entry["num_correct"] = ok
        entry["offloaded_accuracy_ci"] = _wilson(ok, n_off)
        entry["overall_accuracy_ci"] = _wilson(kept_ok + ok, n)
        entry["ceiling_ratio_ci"] = _ratio_ci(hit[off], ceiling_hit[off]) if ceiling_ok else None
        out["results"].append(entry)
    return out


def per_class(rows: np.ndarray, layout: SweepLayout, class_names: list[str]) -> list[dict]:
    """Offloaded accuracy per class (the class of the true label): where the budget costs most.

    One entry per class: its images, how many were offloaded, the ceiling's accuracy on them and
    each cell's (``offloaded_accuracy`` keyed by :attr:`sagebench.cells.Cell.name`, e.g. ``sage/B8``).
    """
    col = layout.column
    label = rows[:, col("label")]
    off = rows[:, col("offloaded")] > 0.5
    out = []
    for c, name in enumerate(class_names):
        mine = label == c
        sent = mine & off
        n_sent = int(sent.sum())

        def acc(column: int) -> float | None:
            return float((rows[sent, column] == c).mean()) if n_sent else None

        out.append({
            "class": name, "index": c, "num_images": int(mine.sum()), "num_offloaded": n_sent,
            "ceiling_accuracy": acc(col("ceiling_pred")),
            "offloaded_accuracy": {layout.cell(j).name: acc(col("pred", j)) for j in range(len(layout.cells))},
        })
    return out


def interval_keys(row: dict) -> dict[str, float]:
    """The 95% interval ends of a results row as flat keys: ``<key>_low/<strategy>/<token>`` and ``_high``
    for each :data:`ROW_METRICS` figure with a ``<name>_ci`` (``offloaded_acc_low/sage/B8``)."""
    cell = Cell.from_row(row)
    out: dict[str, float] = {}
    for m in ROW_METRICS:
        ci = row.get(f"{m.name}_ci")
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and ci[0] is not None and ci[1] is not None:
            out[cell.key(f"{m.wandb_key}_low")], out[cell.key(f"{m.wandb_key}_high")] = float(ci[0]), float(ci[1])
    return out


def flat_summary(summary: dict, intervals: bool = False) -> dict[str, float]:
    """A summary (:func:`summarize`, or the results.json dict) as flat ``{key: number}``, the keys W&B and
    Lightning loggers get.

    ``offloaded_acc/<strategy>/<budget token>`` and the other :data:`ROW_METRICS` per cell,
    ``ceiling/offloaded_acc``, ``ceiling/overall_acc``, ``edge_acc``, ``num_images``,
    ``num_offloaded``, ``offload_rate``; with ``intervals`` also each 95% interval's ends
    (:func:`interval_keys`, ``edge_acc_low``, ``ceiling/offloaded_acc_low``, ...). ``None`` values are
    left out; every value is a Python float, exactly the summary's.
    """
    ceiling = summary.get("ceiling") or {}
    n, n_off = summary.get("num_images"), summary.get("num_offloaded")
    rate = summary.get("offload_rate")
    out: dict[str, Any] = {
        "num_images": n, "num_offloaded": n_off,
        "offload_rate": rate if rate is not None or not n or n_off is None else n_off / n,
        "edge_acc": summary.get("edge_accuracy"),
        "ceiling/offloaded_acc": ceiling.get("offloaded_accuracy"),
        "ceiling/overall_acc": ceiling.get("overall_accuracy"),
    }
    if intervals:
        for key, ci in (("edge_acc", summary.get("edge_accuracy_ci")),
                        ("ceiling/offloaded_acc", ceiling.get("offloaded_accuracy_ci")),
                        ("ceiling/overall_acc", ceiling.get("overall_accuracy_ci"))):
            if isinstance(ci, (list, tuple)) and len(ci) == 2:
                out[f"{key}_low"], out[f"{key}_high"] = ci
    for row in summary.get("results") or []:
        cell = Cell.from_row(row)
        for m in ROW_METRICS:
            out[cell.key(m.wandb_key)] = row.get(m.name)
        if intervals:
            out.update(interval_keys(row))
    return {k: float(v) for k, v in out.items() if v is not None}
