"""``uniform``: patches spread evenly over the image, ignoring its content.

Why: a content-blind control for spatial coverage. If an evidence-aware strategy cannot beat
"a bit of everything", its evidence is not helping.

Definition (one fixed priority order per grid, computed once and cached): cells are points at
their centres ``(row + 0.5, col + 0.5)``. The order starts with the cell whose centre is
nearest the grid centre ``(rows / 2, cols / 2)``; each next cell is the one whose Euclidean
distance to the nearest already ordered cell is largest (greedy farthest-point ordering).
Every tie is broken by the lower raster index. Any prefix of length B is therefore spread over
the whole grid: on 14x14 the first four cells land in the four quadrants. ``select`` returns
the first B cells of that order for every image. Distances are compared as exact integers
(squared, doubled coordinates), so the order does not depend on floating point.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.strategies.base import Strategy
from sagebench.strategies.registry import register_strategy


@lru_cache(maxsize=64)
def grid_order(rows: int, cols: int) -> torch.Tensor:
    """The ``[rows * cols]`` int64 farthest-point priority order of a grid's cells (CPU, cached)."""
    n = rows * cols
    r = torch.arange(n, dtype=torch.int64) // cols
    c = torch.arange(n, dtype=torch.int64) % cols
    # doubled centre coordinates are integers: 2r+1, 2c+1; the grid centre is (rows, cols)
    r2, c2 = 2 * r + 1, 2 * c + 1
    first = int(torch.argmin((r2 - rows) ** 2 + (c2 - cols) ** 2))  # first minimum: lowest raster index
    order = [first]
    mind = (r2 - r2[first]) ** 2 + (c2 - c2[first]) ** 2
    mind[first] = -1
    for _ in range(n - 1):
        nxt = int(torch.argmax(mind))  # first maximum: lowest raster index
        order.append(nxt)
        mind = torch.minimum(mind, (r2 - r2[nxt]) ** 2 + (c2 - c2[nxt]) ** 2)
        mind[nxt] = -1
    return torch.tensor(order, dtype=torch.int64)


@register_strategy("uniform")
class UniformGridStrategy(Strategy):
    """Content-blind spatial coverage: a fixed farthest-point order of grid cells, same for every image."""

    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        rows, cols = evidence.grid
        head = grid_order(int(rows), int(cols))[:budget].to(evidence.attention.device)
        return head.unsqueeze(0).repeat(evidence.batch_size, 1)  # a fresh tensor, never a view of the cache

    def selection_macs(self, budget: int, edge) -> int:
        """0: one fixed order per grid, computed once (not per image)."""
        return 0
