"""``sage``: important *and* diverse patches: an attention prefilter, then farthest-point sampling.

Why: ``attention_prefix`` spends much of a small budget on near-duplicate patches (the same
eye, the same stretch of fur). SAGE keeps attention as the judge of *what* is relevant, but
picks, among the relevant patches, the ones that add new information.

Algorithm, per image (batched over images; the only Python loop is over the B steps):

1. Candidates: the ``K = ceil(prefilter * B)`` most attended patches (clipped to N), by a stable
   descending sort of ``evidence.attention`` (ties: lower patch index).
2. Farthest-point sampling on the candidates' L2-normalised embeddings with cosine similarity:
   the first pick is the most attended candidate; each further pick is the candidate whose
   *largest* cosine similarity to the already picked set is *smallest*; ties go to the earlier,
   i.e. more attended, candidate. Zero embeddings normalise to zero (similarity 0 to all).
3. Stop at exactly B picks; return them in the order picked (most wanted first).

``prefilter`` must be >= 1. With ``prefilter=1`` the candidates are exactly the top-B patches, so
the returned *set* equals ``attention_prefix``'s; the *order* is the farthest-point order (it
starts with the same most attended patch, then diverges), which matters when a byte budget
is filled from the front. A very large ``prefilter`` (even ``inf``) makes every patch a candidate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sagebench.errors import ConfigError
from sagebench.models.evidence import EdgeEvidence
from sagebench.strategies.attention_prefix import attention_order
from sagebench.strategies.base import Strategy, check_budget
from sagebench.strategies.registry import register_strategy


class PrefilterError(ConfigError, ValueError):
    """An invalid ``prefilter``: a ConfigError for the CLI, a ValueError for Python callers."""


def num_candidates(prefilter: float, budget: int, num_patches: int) -> int:
    """``min(N, ceil(prefilter * budget))``, robust to float noise (``1.1 * 10`` gives 11, not 12)."""
    k = prefilter * budget
    if k >= num_patches:
        return num_patches
    return max(budget, math.ceil(round(k, 9)))


def farthest_point_order(emb: torch.Tensor, budget: int) -> torch.Tensor:
    """``[b, budget]`` positions into ``emb`` ``[b, K, D]`` chosen by cosine farthest-point sampling.

    Starts at position 0; each step takes the position whose largest similarity to the chosen
    set is smallest, the first such position on ties.
    """
    b, k, _ = emb.shape
    unit = F.normalize(emb.float(), dim=-1, eps=1e-12)  # zero rows stay zero
    rows = torch.arange(b, device=emb.device)
    picks = torch.zeros(b, budget, dtype=torch.int64, device=emb.device)
    max_sim = torch.full((b, k), -math.inf, device=emb.device)
    taken = torch.zeros(b, k, dtype=torch.bool, device=emb.device)
    current = torch.zeros(b, dtype=torch.int64, device=emb.device)
    for step in range(budget):
        picks[:, step] = current
        taken[rows, current] = True
        if step + 1 == budget:
            break
        sim = torch.bmm(unit, unit[rows, current].unsqueeze(-1)).squeeze(-1)  # [b, K]
        max_sim = torch.maximum(max_sim, sim)
        # argmin returns the first minimum: ties -> the earlier (more attended) candidate
        current = torch.argmin(max_sim.masked_fill(taken, math.inf), dim=1)
    return picks


@register_strategy("sage")
class SageStrategy(Strategy):
    """Attention prefilter (top ceil(prefilter*B)) then cosine farthest-point sampling: relevant and diverse."""

    def __init__(self, prefilter: float = 2.0) -> None:
        if isinstance(prefilter, bool):
            raise PrefilterError(f"sage: prefilter must be a number >= 1, got {prefilter!r}")
        try:
            value = float(prefilter)
        except (TypeError, ValueError):
            raise PrefilterError(f"sage: prefilter must be a number >= 1, got {prefilter!r}") from None
        if not value >= 1.0:  # also rejects NaN
            raise PrefilterError(f"sage: prefilter must be >= 1 (candidates = ceil(prefilter * budget)), got {prefilter!r}")
        self.prefilter = value

    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        n = evidence.num_patches
        budget = check_budget(budget, n)
        k = num_candidates(self.prefilter, budget, n)
        candidates = attention_order(evidence.attention)[:, :k]  # [b, K], most attended first
        emb = torch.gather(
            evidence.embeddings, 1,
            candidates.unsqueeze(-1).expand(-1, -1, evidence.embeddings.shape[-1]),
        )
        picks = farthest_point_order(emb, budget)
        return torch.gather(candidates, 1, picks)
