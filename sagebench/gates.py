"""Offloading gates: which images the edge sends to the server.

A gate maps edge logits ``[b, C]`` to a boolean mask ``[b]`` (True = offload). The edge answers
the images it keeps.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from sagebench.errors import ConfigError


def min_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``-log2(max softmax)`` per image, in bits: 0 when certain, log2(C) when uniform."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -log_p.max(dim=-1).values / math.log(2.0)


def offload_all(logits: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """Offload every image (the server-only setting)."""
    return torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)


def offload_min_entropy(logits: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """Offload when the edge's min-entropy exceeds ``threshold`` bits (eta=1.0: max softmax < 0.5)."""
    return min_entropy(logits) > threshold


GATES: dict[str, Callable[..., torch.Tensor]] = {
    "all": offload_all,
    "min_entropy": offload_min_entropy,
}


def get_gate(name: str) -> Callable[..., torch.Tensor]:
    if name not in GATES:
        raise ConfigError(f"Unknown gate {name!r}. Known gates: {', '.join(sorted(GATES))}.")
    return GATES[name]
