"""Byte budgets: as many of a strategy's patches as fit in ``budget_bytes``, per image.

Why a search and not a fixed unit count: with a real codec the size of a request depends on
the pixels (a flat background compresses to almost nothing), so the number of patches that fit
differs from image to image. For each image we find the largest unit count ``B`` whose request
fits -- ``bytes(B) <= budget`` while ``bytes(B + 1) > budget`` -- by bisection over ``B``,
asking the strategy for its own choice at each ``B`` tried. For strategies whose choice grows
by appending (random, attention_prefix, diversity_only) this is exactly filling their priority
order front to back until the next patch would not fit; strategies whose choice depends on
``B`` (sage's ``k * B`` candidates, uniform's lattice, tome, bat) are asked what they would
send at that ``B``, so a byte budget compares them at their own best unit count.

Bisection assumes the payload grows with ``B`` (true for raw bytes; for a codec, nearly, since
each patch adds pixels): it always returns a ``B`` with ``bytes(B) <= budget < bytes(B + 1)``,
checked on the actual encoded requests. An image whose first patch alone exceeds the budget
sends nothing (0 units, 0 bytes) and the server answers from its prefix tokens alone.

Every decision depends on the image alone, so results do not depend on batch size or process.
"""

from __future__ import annotations

from typing import Callable

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.strategies.base import Strategy

#: ``(rows [m], indices [m, B]) -> bytes [m]``: the payload of those images' requests.
PayloadFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fill_byte_budget(strategy: Strategy, evidence: EdgeEvidence, budget_bytes: int,
                     payload: PayloadFn) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per image, the largest selection of ``strategy`` whose request fits ``budget_bytes``.

    Returns ``{units: (rows, indices [len(rows), units])}`` grouping the batch's images by how
    many patches they send (``units`` 0 holds an empty ``[m, 0]`` selection).
    """
    n = evidence.logits.shape[0]
    num_patches = evidence.num_patches
    device = evidence.logits.device
    lo = torch.zeros(n, dtype=torch.long, device=device)             # fits (0 units always does)
    hi = torch.full((n,), num_patches + 1, dtype=torch.long, device=device)  # does not fit
    best = torch.zeros(n, num_patches, dtype=torch.long, device=device)  # row i: its fitting selection, first lo[i]
    while True:
        active = (hi - lo) > 1
        if not bool(active.any()):
            break
        mid = (lo + hi) // 2
        for m in torch.unique(mid[active]).tolist():
            rows = (active & (mid == m)).nonzero().squeeze(1)
            indices = strategy.choose(evidence.subset(rows), int(m)).indices
            fits = payload(rows, indices).to(device) <= budget_bytes
            lo[rows[fits]] = m
            hi[rows[~fits]] = m
            best[rows[fits], :m] = indices[fits]
    groups: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for units in torch.unique(lo).tolist():
        rows = (lo == units).nonzero().squeeze(1)
        groups[int(units)] = (rows, best[rows, :units])
    return groups
