"""``random``: B patches drawn uniformly at random, the baseline that uses no evidence at all.

Why: any strategy that looks at the image has to beat this to be worth its edge compute.

The draw is a pure function of ``(evidence.seed, sample_id)``: each patch of an image gets a
score from a counter-based integer hash of ``(seed, sample_id, patch_index)`` and the ``B``
lowest scores win. No random-number generator state is involved, so an image gets the same
patches whatever batch it is in, its position in that batch, the device, or the number of
processes, and it is fully batched (one hash over a ``[b, N]`` grid, one sort).
"""

from __future__ import annotations

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.strategies.base import Strategy
from sagebench.strategies.registry import register_strategy

_MASK32 = 0xFFFFFFFF
_MASK16 = 0xFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in ``[0, 2**32)`` and a 32-bit constant ``c``.

    The product is split into 16-bit halves so that no intermediate reaches 2**63 (a plain
    ``x * c`` would overflow int64, which is undefined behaviour in the C++ kernels).
    """
    lo = (x & _MASK16) * c                      # < 2**48
    hi = (((x >> 16) * c) & _MASK16) << 16      # only the part that survives mod 2**32
    return (lo + hi) & _MASK32


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser (an avalanche mix) on int64 values in ``[0, 2**32)``."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def patch_hash(seed: int, sample_ids: torch.Tensor, num_patches: int) -> torch.Tensor:
    """``[b, num_patches]`` int64 pseudo-random 32-bit scores of ``(seed, sample_id, patch)``.

    A counter-based hash: every 32-bit word of the key (seed low/high, sample id low/high,
    patch index) is folded in with a MurmurHash3-style mix; all values stay in ``[0, 2**32)``.
    Computed on ``sample_ids``' device; negative ids and seeds are taken modulo 2**64.
    """
    ids = sample_ids.to(torch.int64).reshape(-1, 1)
    seed &= (1 << 64) - 1
    words = [seed & _MASK32, seed >> 32]
    h = torch.full_like(ids, 0x9E3779B9)  # any non-zero start; golden-ratio constant
    for i, w in enumerate(words):
        h = _fmix32(h ^ _fmix32(torch.full_like(ids, (w + 0x632BE5AB * (i + 1)) & _MASK32)))
    for i, w in enumerate((ids & _MASK32, (ids >> 32) & _MASK32)):
        h = _fmix32(h ^ _fmix32((w + 0x632BE5AB * (i + 3)) & _MASK32))
    patches = torch.arange(num_patches, device=ids.device, dtype=torch.int64).reshape(1, -1)
    return _fmix32(h ^ _fmix32((patches + 0x632BE5AB * 5) & _MASK32))


@register_strategy("random")
class RandomStrategy(Strategy):
    """Uniformly random B patches, reproducible per image from (seed, sample id); the no-evidence baseline."""

    seeded = True

    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        scores = patch_hash(evidence.seed, evidence.sample_ids.to(evidence.attention.device), evidence.num_patches)
        order = torch.sort(scores, dim=1, stable=True).indices  # ties (rare) -> lower patch index
        return order[:, :budget].contiguous()

    def selection_macs(self, budget: int, edge) -> int:
        """0: an integer hash per patch and a sort, no multiply-accumulate of evidence."""
        return 0
