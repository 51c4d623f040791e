"""The per-image records of a sweep: how they accumulate, and the sentinel values they hold.

Why one owner: every value that is not an ordinary prediction is defined here, once, and
everything that writes or reads records uses these names.

- :data:`NOT_OFFLOADED` (-1) in every server column of an image the edge kept;
- :data:`NONFINITE` (-2) in a prediction column when the model's logits for that image were
  NaN/Inf (the image counts as wrong, in the same denominators as every other image, and is
  reported in ``results.nonfinite``);
- a row whose ``label`` is :data:`SKIPPED_LABEL` (-1) is a corrupt image skipped under
  ``data.on_error=skip`` (reported in ``results.skipped``, excluded from every metric).

Records live in a torchmetrics ``Metric`` so that Lightning/torchmetrics gather them across
processes. The column layout is :class:`sagebench.metrics.SweepLayout`.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from sagebench.metrics import SweepLayout

NOT_OFFLOADED = -1  # prediction value stored for server columns of images the edge kept
NONFINITE = -2  # prediction stored when the logits were NaN or infinite
SKIPPED_LABEL = -1  # label stored in the record of a skipped (corrupt) image


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


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """``argmax`` per row as float64, :data:`NONFINITE` where a row holds NaN or +-Inf.

    (``argmax`` alone would return the position of a NaN, a made-up class.)
    """
    pred = logits.argmax(-1).double()
    bad = ~torch.isfinite(logits).all(-1)
    return torch.where(bad, torch.full_like(pred, float(NONFINITE)), pred)


def edge_rows(layout: SweepLayout, sample_ids: torch.Tensor, labels: torch.Tensor, edge_pred: torch.Tensor,
              offloaded: torch.Tensor) -> torch.Tensor:
    """The records of images after the edge and the gate: id, label, edge prediction (:func:`predictions`),
    gate decision; every server column :data:`NOT_OFFLOADED` (complete for a kept image, filled by the
    server for an offloaded one). One builder for the module and the research-loop cache."""
    rows = torch.full((sample_ids.shape[0], layout.num_columns), float(NOT_OFFLOADED), dtype=torch.float64,
                      device=sample_ids.device)
    rows[:, layout.column("sample_id")] = sample_ids.double()
    rows[:, layout.column("label")] = labels.double()
    rows[:, layout.column("edge_pred")] = edge_pred.double()
    rows[:, layout.column("offloaded")] = offloaded.double()
    return rows


def skipped_rows(indices: torch.Tensor, layout: SweepLayout) -> torch.Tensor:
    """Records of skipped images: their data set index, label :data:`SKIPPED_LABEL`, -1 elsewhere."""
    rows = torch.full((indices.shape[0], layout.num_columns), float(NOT_OFFLOADED), dtype=torch.float64,
                      device=indices.device)
    rows[:, layout.column("sample_id")] = indices.double()
    rows[:, layout.column("label")] = float(SKIPPED_LABEL)
    rows[:, layout.column("offloaded")] = 0.0
    return rows


def split_skipped(rows: np.ndarray, layout: SweepLayout) -> tuple[np.ndarray, list[int]]:
    """``(evaluated rows, sorted ids of the skipped images)``."""
    skipped = rows[:, layout.column("label")] == SKIPPED_LABEL
    ids = sorted(int(i) for i in rows[skipped, layout.column("sample_id")])
    return rows[~skipped], ids


def nonfinite_counts(rows: np.ndarray, layout: SweepLayout) -> dict[str, Any]:
    """How many images got NaN/Inf logits: from the edge, the server on all patches, each (strategy, budget)."""
    col = layout.column
    cells = [{"strategy": s, "budget": b, "count": int((rows[:, col("pred", j)] == NONFINITE).sum())}
             for j, (s, b) in enumerate(layout.cells)]
    return {
        "edge": int((rows[:, col("edge_pred")] == NONFINITE).sum()),
        "ceiling": int((rows[:, col("ceiling_pred")] == NONFINITE).sum()),
        "cells": cells,
        "total": int((rows[:, col("edge_pred")] == NONFINITE).sum() + (rows[:, col("ceiling_pred")] == NONFINITE).sum()
                     + sum(c["count"] for c in cells)),
    }


def nonfinite_warnings(counts: dict[str, Any], num_images: int) -> list[str]:
    out = []
    if counts["edge"]:
        out.append(f"the edge model gave NaN/Inf logits for {counts['edge']} of {num_images} image(s): they count "
                   "as wrong edge predictions and, unless the gate offloads them, as wrong answers "
                   "(results.nonfinite.edge).")
    if counts["ceiling"]:
        out.append(f"the server model gave NaN/Inf logits for {counts['ceiling']} offloaded image(s) with all "
                   "patches: counted as wrong (results.nonfinite.ceiling).")
    bad = [c for c in counts["cells"] if c["count"]]
    if bad:
        worst = ", ".join(f"{c['strategy']}@B{c['budget']}: {c['count']}" for c in bad[:6])
        out.append(f"the server model gave NaN/Inf logits in {len(bad)} (strategy, budget) cell(s) ({worst}"
                   f"{', ...' if len(bad) > 6 else ''}): counted as wrong (results.nonfinite.cells). "
                   "Check the weights and trainer.precision (fp16 overflows).")
    return out
