"""Counters that strategies report per call (``Strategy.select_with_stats``), summed over a sweep.

Why a torchmetrics ``Metric``: the counts must cover the whole data set, so under DDP each
process's sums are added up (``dist_reduce_fx="sum"``) exactly like the sweep records.
Only (strategy, budget) cells whose strategy declares ``stat_names`` are tracked; each also
counts the offloaded ``images`` it saw, so that rates can be derived (``cut_by_budget / images``).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torchmetrics import Metric


class StrategyStats(Metric):
    """Sums of strategy counters per (strategy label, budget) cell."""

    full_state_update = False

    def __init__(self, cells: Sequence[tuple[str, int]], names: Sequence[Sequence[str]]) -> None:
        super().__init__()
        if len(cells) != len(names):
            raise ValueError("one tuple of counter names per cell")
        self.cells = [tuple(c) for c in cells]
        self.cell_names = [tuple(n) for n in names]
        self.keys = ["images"] + sorted({k for n in self.cell_names for k in n} - {"images"})
        self.add_state("sums", default=torch.zeros(len(self.cells), len(self.keys), dtype=torch.float64),
                       dist_reduce_fx="sum")

    @property
    def active(self) -> bool:
        """Whether any cell reports counters (otherwise there is nothing to track or sync)."""
        return any(self.cell_names)

    def update(self, cell: int, images: int, stats: dict[str, torch.Tensor]) -> None:
        unknown = set(stats) - set(self.cell_names[cell])
        if unknown:
            raise ValueError(f"strategy {self.cells[cell][0]!r} reported undeclared counters {sorted(unknown)}")
        row = torch.zeros(len(self.keys), dtype=torch.float64, device=self.sums.device)
        row[0] = float(images)
        for name, value in stats.items():
            row[self.keys.index(name)] = torch.as_tensor(value, dtype=torch.float64).to(row.device).sum()
        self.sums[cell] += row

    def compute(self) -> list[dict]:
        """``[{"strategy", "budget", "images", <counter>: total, ...}]`` for the cells with counters."""
        sums = self.sums.cpu()
        out = []
        for j, ((label, budget), names) in enumerate(zip(self.cells, self.cell_names)):
            if not names:
                continue
            entry: dict = {"strategy": label, "budget": int(budget), "images": int(sums[j, 0])}
            for name in names:
                value = float(sums[j, self.keys.index(name)])
                entry[name] = int(value) if value.is_integer() else value
            out.append(entry)
        return out

    def totals(self) -> list[dict]:
        """:meth:`compute` without torchmetrics' warning for a process that saw no offloaded image."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
            return self.compute()
