"""``diversity_only``: cosine farthest-point sampling over *all* patches, no attention prefilter.

Why: the ablation of ``sage``'s prefilter. SAGE = attention prefilter + diversity; this is the
diversity half alone, so that the benchmark can show what the prefilter contributes
(``attention_prefix`` is the other half alone).

Algorithm: exactly ``sage``'s farthest-point step (:func:`sagebench.strategies.sage.farthest_point_order`)
with every patch a candidate, candidates in attention order: the first pick is the most attended
patch, each next pick is the patch whose largest cosine similarity to the picked set is
smallest, ties to the more attended patch (then the lower index). Attention therefore only
chooses the starting point and breaks ties; the result equals ``sage`` with ``prefilter=inf``.
"""

from __future__ import annotations

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.strategies.base import Strategy
from sagebench.strategies.importance import check_importance, importance_requires
from sagebench.strategies.registry import register_strategy
from sagebench.strategies.sage import farthest_point_from_gram, ranked_gram


@register_strategy("diversity_only")
class DiversityOnlyStrategy(Strategy):
    """Cosine farthest-point sampling over all patches from the most attended one (sage without prefilter)."""

    def __init__(self, importance: str = "last_layer") -> None:
        self.importance = check_importance(importance, "diversity_only")
        self.requires = importance_requires(self.importance)

    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        order, gram, finite = ranked_gram(evidence, self.importance)  # shared with sage, read-only
        return torch.gather(order, 1, farthest_point_from_gram(gram, evidence.num_patches, budget, finite))

    def selection_macs(self, budget: int, edge) -> int:
        """``B N D``: farthest-point sampling over all N patches, plus the importance map's (its first pick)."""
        from sagebench.cost import farthest_point_macs, importance_macs

        return farthest_point_macs(budget, edge.num_patches, edge.dim) + importance_macs(self.importance, edge)
