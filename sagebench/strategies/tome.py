"""``tome``: ToMe's bipartite soft matching merges the patches into B groups; one patch per group.

From Bolya, Fu, Dai, Zhang, Feichtenhofer & Hoffman, "Token Merging: Your ViT But Faster"
(ICLR 2023). ToMe shrinks a ViT's token set between blocks with *bipartite soft matching*:
split the tokens alternately into two sets A and B, connect every A token to its most similar
B token (cosine similarity), keep the r most similar edges and merge each of those A tokens into
its B partner (a size-weighted average), then concatenate the unmerged A tokens and B.

Adaptation here (the edge cannot merge pixels, it must send real patches):

1. Matching runs on the edge's final-layer patch embeddings (``evidence.embeddings``), not on
   the attention keys of every block, and all the merging happens after the edge forward, in
   rounds, until exactly B groups remain. Round with T groups (in raster order at first): A =
   groups at even positions, B = odd positions; ``r = min(T - B, T // 2, max(1, ceil(rate * |A|)))``
   edges merge, ``T // 2`` being ToMe's own cap on a round (``r = min(r, (t - protected) // 2)``
   in its ``merge.py``; no token is protected here); the next round's sequence is, as in ToMe,
   the unmerged A groups (most similar edge first) followed by the B groups. The default
   ``rate=1`` merges as much as ToMe allows per round, ``floor(T / 2)`` groups: with T even every
   A group merges, with T odd all but the one with the least similar edge, which leads the next
   round's sequence; there are about ``log2(N / B)`` rounds.
   A smaller rate (e.g. 0.25, ~20 rounds for 196 -> 16) is closer to ToMe's small per-block r:
   in our synthetic check (2-30 random clusters on 14x14) it covered more distinct clusters
   (about 95 % vs 74 %), but it recovered grid-contiguous clusters exactly far less often
   (``rate=1`` splits e.g. 14x14 into its rows, 2x2 blocks or horizontal pairs exactly; no
   schedule is exact on every layout, see below). A group's
   feature is the sum of its members' embeddings, whose cosine equals that of ToMe's
   size-weighted mean. Ties: an A group's partner is the first most similar B group; edges of
   equal similarity merge in sequence order.
2. Group membership is tracked; each group sends **one** patch, its member with the highest
   importance (last-layer attention, or rollout with ``importance="rollout"``; ties to the lower
   patch index).
3. Groups are ordered by that maximum importance, most attended group first, so a byte budget
   filled from the front keeps the most wanted groups.

With B = N nothing merges and the result is the attention order; with B = 1 it is the single
most attended patch. As in ToMe, bipartite matching is greedy: a group whose only similar
partners sit in the same set (A) in a round can be merged with a dissimilar group.
Batched over images (same N and B for all): the only Python loop is over the rounds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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


def merges_per_round(t: int, num_groups: int, rate: float) -> int:
    """How many of ``t`` groups a round merges on the way to ``num_groups``: ``ceil(rate * |A|)``
    (at least 1) of the ``|A| = ceil(t / 2)`` A groups, capped as ToMe caps it at ``t // 2`` (the
    number of B groups; its ``merge.py``: ``r = min(r, (t - protected) // 2)``) and at what is
    left to merge, ``t - num_groups``."""
    return min(t - num_groups, t // 2, max(1, math.ceil(round(rate * ((t + 1) // 2), 9))))


def bipartite_merge(emb: torch.Tensor, num_groups: int, rate: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge ``[b, N, D]`` tokens to ``num_groups`` groups by rounds of bipartite soft matching.

    Each round merges :func:`merges_per_round` of the ``|A| = ceil(T / 2)`` A tokens, at most
    ``T // 2`` (ToMe's cap), so with ``rate=1`` and an odd T one A token stays. Returns ``(owner, survivors)``: ``owner`` ``[b, N]`` is, for every token, the index
    of the token that represents its group (the group's surviving B token); ``survivors``
    ``[b, num_groups]`` are those representatives (in the final sequence order).
    """
    b, n, d = emb.shape
    device = emb.device
    feat = emb.float()
    ids = torch.arange(n, device=device).expand(b, n).contiguous()
    owner = ids.clone()
    identity = torch.arange(n, device=device).expand(b, n)
    t = n
    while t > num_groups:
        a_pos = torch.arange(0, t, 2, device=device)
        b_pos = torch.arange(1, t, 2, device=device)
        r = merges_per_round(t, num_groups, rate)
        feat_a, feat_b = feat[:, a_pos], feat[:, b_pos]
        ids_a, ids_b = ids[:, a_pos], ids[:, b_pos]
        sim = torch.bmm(F.normalize(feat_a, dim=-1), F.normalize(feat_b, dim=-1).transpose(1, 2))  # [b, A, B]
        partner = sim.argmax(dim=-1)  # first maximum: ties to the earlier B token
        best = torch.gather(sim, 2, partner.unsqueeze(-1)).squeeze(-1)
        edges = torch.sort(best, dim=1, descending=True, stable=True).indices  # ties: earlier A token
        merged, kept = edges[:, :r], edges[:, r:]
        into = torch.gather(partner, 1, merged)  # [b, r] B positions
        feat_b = feat_b.scatter_add(1, into.unsqueeze(-1).expand(-1, -1, d),
                                    torch.gather(feat_a, 1, merged.unsqueeze(-1).expand(-1, -1, d)))
        remap = identity.clone().scatter_(1, torch.gather(ids_a, 1, merged), torch.gather(ids_b, 1, into))
        owner = torch.gather(remap, 1, owner)
        ids = torch.cat([torch.gather(ids_a, 1, kept), ids_b], dim=1)
        feat = torch.cat([torch.gather(feat_a, 1, kept.unsqueeze(-1).expand(-1, -1, d)), feat_b], dim=1)
        t -= r
    return owner, ids


def best_member_per_group(scores: torch.Tensor, owner: torch.Tensor, survivors: torch.Tensor) -> torch.Tensor:
    """For each group, its most important member; groups ordered by that importance (``[b, G]``)."""
    b, n = scores.shape
    order = attention_order(scores)  # [b, N]
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=scores.device).expand(b, n))
    best_rank = torch.full_like(rank, n).scatter_reduce(1, owner, rank, reduce="amin", include_self=True)
    group_rank = torch.sort(torch.gather(best_rank, 1, survivors), dim=1).values  # distinct ranks
    return torch.gather(order, 1, group_rank)


@register_strategy("tome")
class ToMeStrategy(Strategy):
    """ToMe bipartite soft matching merges patch embeddings into B groups; sends each group's most attended patch.

    Adapted from Bolya et al., "Token Merging: Your ViT But Faster" (ICLR 2023): merging runs in
    rounds on the edge's final patch embeddings (not per block on attention keys) until B groups
    remain (``rate``: the fraction of the A set merged per round, in (0, 1]; default 1 = as much as
    ToMe allows, ``floor(T / 2)`` of T groups), and each group is represented by its most attended real patch instead
    of the merged token; groups are sent most attended first. See the module docstring.
    """

    def __init__(self, rate: float = 1.0, importance: str = "last_layer") -> None:
        self.rate = check_real(rate, "rate", "tome", low=0.0, high=1.0, low_open=True)
        self.importance = check_importance(importance, "tome")
        self.requires = importance_requires(self.importance)

    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        scores = importance(evidence, self.importance)
        owner, survivors = bipartite_merge(evidence.embeddings, budget, self.rate)
        return best_member_per_group(scores, owner, survivors)
