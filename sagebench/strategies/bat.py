"""``bat``: BAT's split of the budget into attentive patches and diverse representatives of the rest.

From Long et al., "Beyond Attentive Tokens: Incorporating Token Importance and Diversity for
Efficient Vision Transformers" (CVPR 2023). BAT ranks tokens by the
CLS attention, keeps the attentive ones, and instead of discarding the inattentive ones clusters
them with DPC-KNN (density-peak clustering with k-nearest-neighbour density) and merges each
cluster into one token, so that the kept set is both important and diverse.

Adaptation here (one real patch must be sent per slot):

1. Attentive part: the ``k = ceil(alpha * B)`` most important patches (attention order; ties
   to the lower index), sent first.
2. Diverse part: the remaining ``M = N - k`` (inattentive) patches are scored by DPC-KNN on
   their final-layer embeddings, with distances ``d_ij = ||x_i - x_j|| / sqrt(D)``:
   density ``rho_i = exp(-mean of d_ij^2 over its K nearest neighbours)`` (``K = neighbors``,
   clipped to ``M - 1``); ``delta_i`` = distance to the nearest patch of higher density (the
   densest patch gets the largest distance in the image); centre score ``rho_i * delta_i``.
   Density ties are broken by importance (the more attended patch counts as denser) instead of
   the random jitter of the reference clustering, so the result is deterministic.
3. The ``B - k`` highest-scoring cluster centres are sent as the representatives, highest
   score first (ties: more attended first). BAT would merge each cluster's members into the
   centre token; a patch cannot be merged, so the centre patch itself is sent.

Computed with log-scores (``log rho + log delta``) so that tiny densities do not underflow.
Batched over images; no Python loop at all.
"""

from __future__ import annotations

import math

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.strategies.base import Strategy
from sagebench.strategies.importance import (
    check_importance,
    check_positive_int,
    check_real,
    importance_order,
    importance_requires,
)
from sagebench.strategies.registry import register_strategy


def num_attentive(alpha: float, budget: int) -> int:
    """``ceil(alpha * budget)``, robust to float noise, within ``[0, budget]``."""
    return min(budget, max(0, math.ceil(round(alpha * budget, 9))))


def dpc_knn_scores(emb: torch.Tensor, neighbors: int) -> torch.Tensor:
    """``[b, M]`` log DPC-KNN centre scores ``log(rho * delta)`` of ``[b, M, D]`` tokens.

    Density ties go to the earlier token (callers pass tokens in importance order).
    """
    b, m, d = emb.shape
    x = emb.float()
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(max(d, 1))  # [b, M, M]
    k = min(neighbors, m - 1)
    if k >= 1:
        # the k + 1 smallest distances of a row include the token's own 0 (or an equal 0 of a duplicate)
        nearest = torch.topk(dist, k + 1, dim=-1, largest=False, sorted=True).values[..., 1:]
        log_density = -(nearest ** 2).mean(dim=-1)
    else:
        log_density = torch.zeros(b, m, device=emb.device)
    pos = torch.arange(m, device=emb.device)
    li, lj = log_density.unsqueeze(2), log_density.unsqueeze(1)
    higher = (lj > li) | ((lj == li) & (pos.view(1, 1, m) < pos.view(1, m, 1)))  # [b, i, j]: j denser than i
    delta = torch.where(higher, dist, torch.full_like(dist, math.inf)).amin(dim=-1)
    farthest = dist.amax(dim=(1, 2)).unsqueeze(1).expand(b, m)
    delta = torch.where(higher.any(dim=-1), delta, farthest)  # the densest token: the largest distance
    return log_density + torch.log(delta)  # log(0) = -inf: duplicates of a denser token score lowest


@register_strategy("bat")
class BATStrategy(Strategy):
    """BAT: top ceil(alpha*B) attentive patches plus DPC-KNN cluster centres of the inattentive rest.

    Adapted from Long et al., "Beyond Attentive Tokens: Incorporating Token Importance and
    Diversity for Efficient Vision Transformers" (CVPR 2023): the inattentive patches are
    clustered with DPC-KNN on the edge's final embeddings and the B - k highest-scoring cluster
    centres are sent as real patches (BAT merges each cluster into one token instead). See the
    module docstring for details.
    """

    def __init__(self, alpha: float = 0.5, neighbors: int = 5, importance: str = "last_layer") -> None:
        self.alpha = check_real(alpha, "alpha", "bat", low=0.0, high=1.0)
        self.neighbors = check_positive_int(neighbors, "neighbors", "bat")
        self.importance = check_importance(importance, "bat")
        self.requires = importance_requires(self.importance)

    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        order = importance_order(evidence, self.importance)  # [b, N] (shared, read-only)
        k = num_attentive(self.alpha, budget)
        if k == budget:
            return order[:, :budget].clone()
        rest = order[:, k:]  # the inattentive patches, most attended first
        emb = torch.gather(evidence.embeddings, 1, rest.unsqueeze(-1).expand(-1, -1, evidence.embeddings.shape[-1]))
        scores = dpc_knn_scores(emb, self.neighbors)
        centres = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :budget - k]
        return torch.cat([order[:, :k], torch.gather(rest, 1, centres)], dim=1)
