"""Per-image records of a sweep, and the exact metrics derived from them.

Why records rather than running means: every metric is then an exact count over a known set
of images (no mean of per-rank means), the same records are the per-sample file used for
paired comparisons, and a duplicated or missing image is detected instead of counted.
Records live in a torchmetrics ``Metric`` so that Lightning/torchmetrics gather them across
processes.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics import Metric

BASE_COLUMNS = ("sample_id", "label", "edge_pred", "offloaded", "ceiling_pred")
SWEEP_FIELDS = ("pred", "coverage", "units", "bytes")
NOT_OFFLOADED = -1  # prediction value stored for server columns of images the edge kept


def coverage(indices: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Fraction of coarse cells (the grid pooled 2x2, edge cells kept) holding >= 1 chosen patch, per row."""
    rows, cols = grid
    coarse_cols = (cols + 1) // 2
    num_coarse = ((rows + 1) // 2) * coarse_cols
    cell = (indices // cols) // 2 * coarse_cols + (indices % cols) // 2
    hit = torch.zeros(indices.shape[0], num_coarse, dtype=torch.bool, device=indices.device)
    hit.scatter_(1, cell, True)
    return hit.sum(dim=1).double() / num_coarse


@dataclass(frozen=True)
class SweepLayout:
    """Column layout of the record matrix: base columns, then 4 columns per (strategy, budget)."""

    cells: tuple[tuple[str, int], ...]  # (strategy label, budget) in sweep order
    budget_unit: str = "patches"  # patches (B = units sent) or bytes (a byte budget per request)

    @property
    def budget_prefix(self) -> str:
        """Column-name prefix of a budget: ``B24`` (24 patches) or ``bytes512`` (512 bytes)."""
        return "B" if self.budget_unit == "patches" else "bytes"

    @property
    def num_columns(self) -> int:
        return len(BASE_COLUMNS) + len(SWEEP_FIELDS) * len(self.cells)

    def column(self, field: str, cell: int | None = None) -> int:
        if cell is None:
            return BASE_COLUMNS.index(field)
        return len(BASE_COLUMNS) + cell * len(SWEEP_FIELDS) + SWEEP_FIELDS.index(field)

    def names(self) -> list[str]:
        out = list(BASE_COLUMNS)
        for strategy, budget in self.cells:
            out += [f"{f}/{strategy}/{self.budget_prefix}{budget}" for f in SWEEP_FIELDS]
        return out


def _record_block(rows: int, columns: int, device: torch.device) -> torch.Tensor:
    """An empty float64 ``[rows, columns]`` block; on the CPU in its own private anonymous mapping
    (process memory, counted in RssAnon), away from the heap that activations reuse."""
    if device.type != "cpu":
        return torch.empty(rows, columns, dtype=torch.float64, device=device)
    nbytes = max(1, rows * columns * 8)
    try:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                        prot=mmap.PROT_READ | mmap.PROT_WRITE)
    except (AttributeError, TypeError, OSError, ValueError):  # no such flags (Windows) or no mapping: the heap will do
        return torch.empty(rows, columns, dtype=torch.float64)
    # the tensor holds a reference to the mapping, which is unmapped when the last view goes
    return torch.frombuffer(buf, dtype=torch.float64, count=rows * columns).view(rows, columns)


class SweepRecords(Metric):
    """Accumulates one float64 row per image; ``compute`` returns all rows sorted by sample id.

    float64 holds every integer field exactly (ids, labels, byte counts < 2**53).

    Rows are copied into a few large blocks (:attr:`BLOCK_BYTES` each, mapped outside the heap on
    the CPU) rather than kept as one small tensor per batch. Why: records are the only thing a
    sweep keeps for the rest of the run, and a per-batch tensor allocated between the batch's
    transient activations stays pinned in the middle of the heap: freed activation memory around
    it can then no longer be merged, and the heap grows batch after batch (measured: 50,000
    embedded images, +62 MB of stranded free heap on top of the records' own 29 MB). Blocks from
    the heap still moved the activations around (+18 MB beyond the records); mapped on their own,
    a warm process grows at the records' slope (docs/performance.md "Memory").
    """

    full_state_update = False
    BLOCK_BYTES = 8 * 2**20

    def __init__(self, layout: SweepLayout) -> None:
        super().__init__()
        self.layout = layout
        # A list state: torchmetrics gathers lists of uneven length across processes (tensor
        # states are stacked, which needs equal sizes). Its entries are views into the blocks.
        self.add_state("rows", default=[], dist_reduce_fx="cat")
        self.add_state("num_images", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self._block: torch.Tensor | None = None
        self._used = 0

    def store(self, rows: torch.Tensor) -> torch.Tensor:
        """:meth:`update` with ``rows``, returning the stored copy (a float64 view that lives as long as the records)."""
        self.update(rows)
        return self.rows[-1]

    def update(self, rows: torch.Tensor) -> None:
        """Add ``rows`` ([n, F], one per image)."""
        if rows.ndim != 2 or rows.shape[1] != self.layout.num_columns:
            raise ValueError(f"expected rows [n, {self.layout.num_columns}], got {tuple(rows.shape)}")
        n = rows.shape[0]
        block = self._block
        if block is None or block.device != rows.device or self._used + n > block.shape[0]:
            capacity = max(n, self.BLOCK_BYTES // (8 * self.layout.num_columns))
            block = self._block = _record_block(capacity, self.layout.num_columns, rows.device)
            self._used = 0
        stored = block[self._used:self._used + n]
        stored.copy_(rows)
        self._used += n
        self.rows.append(stored)
        self.num_images += n

    def reset(self) -> None:
        super().reset()
        self._block, self._used = None, 0

    def ensure_state(self, device: torch.device) -> None:
        """Give a process that saw no image an empty ``[0, F]`` block, so the gather has matching shapes."""
        if isinstance(self.rows, list) and not self.rows:
            self.rows.append(torch.zeros(0, self.layout.num_columns, dtype=torch.float64, device=device))

    def compute(self) -> np.ndarray:
        rows = self.rows if isinstance(self.rows, torch.Tensor) else torch.cat(self.rows)
        rows = rows.reshape(-1, self.layout.num_columns).cpu().numpy()
        ids = rows[:, 0]
        if len(ids) > 1 and np.any(ids[1:] < ids[:-1]):  # one process reads in order: no second copy then
            rows = rows[np.argsort(ids, kind="stable")]
            ids = rows[:, 0]
        if rows.shape[0] != int(self.num_images) or (len(ids) > 1 and np.any(ids[1:] == ids[:-1])):
            dup = np.unique(ids[1:][ids[1:] == ids[:-1]])[:5]
            raise RuntimeError(f"sample ids counted more than once: {dup.tolist()} (sampler bug)")
        return rows


def summarize(rows: np.ndarray, layout: SweepLayout) -> dict:
    """Exact metrics from the record matrix (accuracies as fractions).

    offloaded_accuracy: server correct with B patches / offloaded images;
    ceiling_ratio: offloaded_accuracy / ceiling offloaded accuracy (server on all N patches);
    overall_accuracy: (edge correct on kept + server correct on offloaded) / all images;
    coverage, units_sent, bytes_sent: means over offloaded images.
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

    ceiling_ok = int(((rows[:, col("ceiling_pred")] == label) & off).sum())
    ceiling_off_acc = frac(ceiling_ok, n_off)
    out = {
        "num_images": n,
        "num_offloaded": n_off,
        "offload_rate": frac(n_off, n),
        "edge_accuracy": frac(int(edge_ok.sum()), n),
        "ceiling": {
            "offloaded_accuracy": ceiling_off_acc,
            "overall_accuracy": frac(kept_ok + ceiling_ok, n),
        },
        "results": [],
    }
    for j, (strategy, budget) in enumerate(layout.cells):
        ok = int(((rows[:, col("pred", j)] == label) & off).sum())
        acc = frac(ok, n_off)
        out["results"].append({
            "strategy": strategy,
            "budget": budget,
            "budget_unit": layout.budget_unit,
            "offloaded_accuracy": acc,
            "ceiling_ratio": (acc / ceiling_off_acc) if (acc is not None and ceiling_off_acc) else None,
            "overall_accuracy": frac(kept_ok + ok, n),
            "coverage": float(rows[off, col("coverage", j)].mean()) if n_off else None,
            "units_sent": float(rows[off, col("units", j)].mean()) if n_off else None,
            "bytes_sent": float(rows[off, col("bytes", j)].mean()) if n_off else None,
            "num_correct": ok,
        })
    return out
