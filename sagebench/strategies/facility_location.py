"""``facility_location``: greedy maximisation of an attention-weighted facility-location coverage.

Source: the greedy algorithm of Nemhauser, Wolsey & Fisher, "An analysis of approximations for
maximizing submodular set functions" (Math. Programming, 1978), which reaches at least
``(1 - 1/e)`` of the optimum for a monotone submodular objective under a cardinality constraint,
applied to the facility-location function ``F(S) = sum_i w_i max_{j in S} sim(i, j)`` (every
patch i is "served" by its most similar sent patch, weighted by how much it matters).

Adaptation here:

* ``sim(i, j) = (1 + cos(i, j)) / 2`` in ``[0, 1]`` on the L2-normalised edge embeddings: the
  shift keeps F monotone (a sent patch can never lower any max, so the guarantee holds). A zero
  or non-finite embedding counts as the zero vector (``sim = 1/2`` to every patch, itself
  included); cosines are snapped as in ``kdpp`` (:func:`sagebench.strategies.kdpp.unit_cosine`)
  and ``sim(i, i) = 1`` exactly, so that equal embeddings tie exactly (to the lower index).
* ``w`` = importance (``weights="attention"``: last-layer attention, or rollout with
  ``importance="rollout"``; non-finite or negative values as 0) or ``weights="uniform"`` (every
  patch counts the same: pure coverage; attention is then not read at all).
* Greedy, exactly B steps: with ``cur_i = max_{j in S} sim(i, j)`` (0 for the empty set), the
  gain of j is ``sum_i w_i * relu(sim(i, j) - cur_i)``; the unpicked patch with the largest gain
  is added (ties: lower patch index) and ``cur`` is updated. Output order = pick order, so every
  prefix is itself the greedy solution for its size.

Batched over images (``cur [b, N]``, one ``[b, N, N]`` weighted column sum per step), in float64;
the only Python loop is over the B steps, ``O(b N^2 B)`` in all.
"""

from __future__ import annotations

import math

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.strategies.base import Strategy
from sagebench.strategies.importance import (
    StrategyOptionError,
    check_importance,
    importance,
    importance_requires,
)
from sagebench.strategies.kdpp import finite_weights, unit_cosine
from sagebench.strategies.registry import register_strategy

WEIGHTS = ("attention", "uniform")


def greedy_facility_location(sim: torch.Tensor, weights: torch.Tensor, budget: int) -> torch.Tensor:
    """``[b, budget]`` greedy maximisers of ``sum_i w_i max_{j in S} sim[i, j]`` (``sim >= 0``)."""
    b, n, _ = sim.shape
    rows = torch.arange(b, device=sim.device)
    cur = sim.new_zeros(b, n)
    taken = torch.zeros(b, n, dtype=torch.bool, device=sim.device)
    w = weights.unsqueeze(2)  # [b, N, 1]: w_i
    picks = []
    for _ in range(budget):
        # a sum over i, not a bmm: equal columns (duplicate patches) get bitwise equal gains
        gain = (sim - cur.unsqueeze(2)).clamp_min_(0.0).mul_(w).sum(dim=1)  # [b, N]
        j = gain.masked_fill(taken, -math.inf).argmax(dim=1)  # first maximum: lower index on ties
        picks.append(j)
        taken[rows, j] = True
        cur = torch.maximum(cur, sim.gather(2, j.view(b, 1, 1).expand(b, n, 1)).squeeze(2))  # column j
    return torch.stack(picks, dim=1)


@register_strategy("facility_location")
class FacilityLocationStrategy(Strategy):
    """Greedy (1-1/e) facility location: sent patches cover all patches, weighted by attention.

    Maximises ``sum_i w_i max_{j in S} (1 + cos(i, j)) / 2`` with the greedy of Nemhauser, Wolsey
    & Fisher (1978); ``weights`` is ``attention`` or ``uniform``. See the module docstring.
    """

    def __init__(self, weights: str = "attention", importance: str = "last_layer") -> None:
        if not isinstance(weights, str) or weights not in WEIGHTS:
            raise StrategyOptionError(f"facility_location: weights must be one of {', '.join(WEIGHTS)}, "
                                      f"got {weights!r}")
        self.weights = weights
        self.importance = check_importance(importance, "facility_location")
        self.requires = importance_requires(self.importance)

    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        sim = unit_cosine(evidence.embeddings).add_(1.0).mul_(0.5)
        if self.weights == "uniform":
            w = torch.ones(sim.shape[:2], dtype=sim.dtype, device=sim.device)
        else:
            w = finite_weights(importance(evidence, self.importance))
        return greedy_facility_location(sim, w, budget)
