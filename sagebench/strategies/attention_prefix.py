"""``attention_prefix``: the B patches the edge model attended to most, most attended first.

Why: the edge ViT's CLS attention is a free importance map, so sending its top-B patches is the
obvious evidence-aware baseline. Its weakness, which ``sage`` addresses, is redundancy: the
most attended patches often show the same part of the object several times.

Ties are broken by the lower patch index (a stable descending sort rather than ``topk``, whose
tie order is unspecified), so the result is deterministic on every device.

``importance="rollout"`` ranks by attention rollout instead of the last layer's attention
(see :mod:`sagebench.strategies.importance`).
"""

from __future__ import annotations

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.strategies.base import Strategy
from sagebench.strategies.importance import check_importance, importance_order, importance_requires
from sagebench.strategies.registry import register_strategy


@register_strategy("attention_prefix")
class AttentionPrefixStrategy(Strategy):
    """Top-B patches by edge attention, most attended first (ties: lower patch index)."""

    def __init__(self, importance: str = "last_layer") -> None:
        self.importance = check_importance(importance, "attention_prefix")
        self.requires = importance_requires(self.importance)

    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        return importance_order(evidence, self.importance)[:, :budget].clone()

    def selection_macs(self, budget: int, edge) -> int:
        """A sort of the importance map (no MACs) plus the map's own (:func:`sagebench.cost.importance_macs`:
        0 for the last layer's attention, the rollout's CLS row otherwise)."""
        from sagebench.cost import importance_macs

        return importance_macs(self.importance, edge)
