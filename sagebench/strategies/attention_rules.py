"""Im et al.'s attention-aware patch selection rules, run under a hard patch budget.

Im, Kwon, Park, Woo, Lee & Kim, "Attention-aware Semantic Communications for Collaborative
Inference" (arXiv:2404.07217, 2024) let the edge ViT's attention decide *how
many* patches to send, with one of two rules:

* ``attention_threshold``: every patch whose attention score is ``>= delta``;
* ``attention_cumsum``: the most attended patches, in decreasing order of attention, as long as
  their cumulative attention stays ``<= delta`` (default 0.97 of the total).

The benchmark compares strategies at a fixed budget of B patches, so the rule's set is adapted:
it is ordered by attention (most attended first), **truncated to B** when the rule selects more
patches than the budget, and **padded by attention order** (the next most attended patches)
when it selects fewer. Both rule sets are prefixes of the attention order, so under a hard
budget the patches sent are exactly ``attention_prefix``'s with the same ``importance``; what
these strategies add is the record of how far the rule is from the budget. Each call reports
(see :meth:`Strategy.select_with_stats`) ``cut_by_budget`` (images whose rule set had more than
B patches), ``padded`` (images whose rule set had fewer) and ``rule_patches`` (the rule sets'
sizes, summed); ``evaluate`` sums them over the data set per (strategy, budget) into
``results.json``'s ``strategy_stats``.

Both rules rank by ``evidence.attention`` (``importance="last_layer"``) or by attention rollout:
``importance="rollout_per_head"`` is Im et al.'s importance signal as their code computes it (a
rollout per head, heads averaged at the end), ``importance="rollout"`` Abnar & Zuidema's (heads
averaged in every block).
"""

from __future__ import annotations

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.strategies.base import Strategy
from sagebench.strategies.importance import (
    attention_order,
    check_importance,
    check_real,
    importance,
    importance_requires,
)
from sagebench.strategies.registry import register_strategy

RULE_STATS = ("cut_by_budget", "padded", "rule_patches")
# float32 scores summing to 1 carry rounding of about 1e-7: 0.4 + 0.3 + 0.15 must count as <= 0.85
CUMSUM_TOLERANCE = 1e-6


class _AttentionRule(Strategy):
    """A rule that picks a prefix of the attention order of per-image length; B by truncation/padding."""

    stat_names = RULE_STATS

    def rule_size(self, scores: torch.Tensor) -> torch.Tensor:
        """``[b]`` int64 number of patches the rule selects, given the ``[b, N]`` importance."""
        raise NotImplementedError

    def select_with_stats(self, evidence: EdgeEvidence, budget: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        scores = importance(evidence, self.importance)
        picks = attention_order(scores)[:, :budget].contiguous()
        size = self.rule_size(scores)
        stats = {
            "cut_by_budget": (size > budget).sum(),
            "padded": (size < budget).sum(),
            "rule_patches": size.sum(),
        }
        return picks, stats

    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        return self.select_with_stats(evidence, budget)[0]

    def selection_macs(self, budget: int, edge) -> int:
        """A sort and a threshold or running sum of the importance map (no MACs), plus the map's own."""
        from sagebench.cost import importance_macs

        return importance_macs(self.importance, edge)


@register_strategy("attention_threshold")
class AttentionThresholdStrategy(_AttentionRule):
    """Im et al.'s threshold rule (attention >= delta), cut to B / padded by attention order; counts cuts.

    From Im et al. (arXiv:2404.07217): send the patches whose attention score is at least
    ``delta``. Adaptation to a hard budget: the rule's set, most attended first, is truncated to
    B or padded with the next most attended patches; ``delta`` is absolute, in units of the
    renormalised attention (each image's scores sum to 1, so uniform attention is ``1/N``).

    The default ``delta = 0.01`` is therefore ``0.01 * N`` times uniform, a different rule on each
    grid: 1.96x uniform on 14x14 (N = 196, DeiT at 224 px: only clearly above-average patches),
    but 0.64x uniform on the 8x8 grid of the default CIFAR-10 benchmark (N = 64) and 0.49x uniform
    on Fashion-MNIST's 7x7 (N = 49): *below* uniform, so every patch with at least 64 % (49 %) of the average
    attention passes, and on a flat attention map every patch does. The default is kept as it is
    (shipped results use it); for ``c`` times uniform on an N-patch grid, set ``delta = c / N``.
    """

    def __init__(self, delta: float = 0.01, importance: str = "last_layer") -> None:
        self.delta = check_real(delta, "delta", "attention_threshold", low=0.0, high=1.0)
        self.importance = check_importance(importance, "attention_threshold")
        self.requires = importance_requires(self.importance)

    def rule_size(self, scores: torch.Tensor) -> torch.Tensor:
        return (scores >= self.delta).sum(dim=1)


@register_strategy("attention_cumsum")
class AttentionCumsumStrategy(_AttentionRule):
    """Im et al.'s cumulative rule (top patches while cumulative attention <= delta), cut/padded to B.

    From Im et al. (arXiv:2404.07217): sort the patches by attention and send the longest prefix
    whose cumulative attention is at most ``delta`` (default 0.97). Adaptation to a hard budget:
    that prefix is truncated to B or padded with the next patches of the same order. Cumulative
    sums are taken in float64 and compared with ``delta + 1e-6`` to absorb float32 rounding (so
    ``delta=1`` keeps every patch); a first patch above ``delta`` alone gives an empty rule set.
    """

    def __init__(self, delta: float = 0.97, importance: str = "last_layer") -> None:
        self.delta = check_real(delta, "delta", "attention_cumsum", low=0.0, high=1.0)
        self.importance = check_importance(importance, "attention_cumsum")
        self.requires = importance_requires(self.importance)

    def rule_size(self, scores: torch.Tensor) -> torch.Tensor:
        ordered = torch.gather(scores, 1, attention_order(scores)).double()
        # cumulative sums of non-negative scores only grow: the rule's prefix is the count <= delta
        return (torch.cumsum(ordered, dim=1) <= self.delta + CUMSUM_TOLERANCE).sum(dim=1)
