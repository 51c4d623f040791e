"""``ats``: Adaptive Token Sampling's inverse-transform sampling of the score CDF, filled to B.

From Fayyaz et al., "Adaptive Token Sampling For Efficient Vision Transformers" (ECCV 2022).
ATS scores each token by its CLS attention times the norm of its value vector, normalises the
scores, sorts them, and samples tokens by inverse transform sampling of their cumulative
distribution at evenly spaced points (at inference); a token hit by several points is kept once,
so ATS keeps *at most* K tokens: many from the flat part of the distribution where a few tokens
hold most of the mass, a sparse sample of the long tail.

Adaptation here (a fixed budget of real patches):

1. Score = the patch's importance (last-layer attention, or rollout with ``importance="rollout"``),
   non-finite or negative values as 0 (all zero: a uniform distribution). ``score`` offers only
   ``"attention"``: ATS's ``attention_value_norm`` needs the last block's value vectors, and
   :class:`EdgeEvidence` carries only the final (normed) patch tokens, which are not the values.
2. Patches sorted by score, descending (ties: lower patch index); ``cdf`` = cumulative sum of the
   sorted scores divided by its last entry (so that it ends at exactly 1).
3. B evenly spaced quantiles ``(k + 0.5) / B``, ``k = 0..B-1`` (the midpoints: deterministic, and
   symmetric, so no quantile sits on 0 or 1); quantile k goes to the first sorted position
   whose ``cdf >= quantile``.
4. Where that position is already taken, the next untaken position in score order is used, so
   exactly B distinct patches go. Because the positions of step 3 never decrease, this rule is
   the closed form ``t_k = k + max_{j<=k}(p_j - j)``, one cummax, no loop at all. In exact
   arithmetic ``t_k <= N - B + k`` (the sorted CDF lies above the uniform one); the positions
   are clipped to that bound anyway so that rounding can never run out of patches.

Output in score order (most important first), which is also the quantile order.
"""

from __future__ import annotations

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.strategies.base import Strategy
from sagebench.strategies.importance import (
    StrategyOptionError,
    attention_order,
    check_importance,
    importance,
    importance_requires,
)
from sagebench.strategies.kdpp import finite_weights
from sagebench.strategies.registry import register_strategy

SCORES = ("attention",)


def ats_positions(cdf: torch.Tensor, budget: int) -> torch.Tensor:
    """``[b, budget]`` strictly increasing positions into a non-decreasing ``cdf [b, N]`` ending at 1."""
    b, n = cdf.shape
    k = torch.arange(budget, device=cdf.device)
    quantiles = ((k.double() + 0.5) / budget).expand(b, budget).contiguous()
    first = torch.searchsorted(cdf.contiguous(), quantiles, side="left")  # first cdf >= quantile
    first = torch.minimum(first, k + (n - budget))  # guard (never binds in exact arithmetic)
    return torch.cummax(first - k, dim=1).values + k  # duplicates -> the next untaken position


@register_strategy("ats")
class ATSStrategy(Strategy):
    """ATS: inverse-transform sampling of the sorted attention CDF at B even quantiles, filled to B.

    Adapted from Fayyaz et al., "Adaptive Token Sampling For Efficient Vision Transformers"
    (ECCV 2022): duplicates go to the next patch in score order so that exactly B distinct
    patches are sent. See the module docstring.
    """

    def __init__(self, score: str = "attention", importance: str = "last_layer") -> None:
        if not isinstance(score, str) or score not in SCORES:
            raise StrategyOptionError(
                f"ats: score must be one of {', '.join(SCORES)}, got {score!r} (attention_value_norm needs the "
                "last block's value vectors, which the edge evidence does not carry)")
        self.score = score
        self.importance = check_importance(importance, "ats")
        self.requires = importance_requires(self.importance)

    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        n = evidence.num_patches
        scores = finite_weights(importance(evidence, self.importance))
        order = attention_order(scores)  # descending, ties: lower patch index
        cum = scores.gather(1, order).cumsum(dim=1)
        total = cum[:, -1:]
        uniform = torch.arange(1, n + 1, dtype=cum.dtype, device=cum.device) / n
        cdf = torch.where(total > 0, cum / total.clamp_min(torch.finfo(cum.dtype).tiny), uniform)
        return order.gather(1, ats_positions(cdf, budget))
