"""``kdpp``: the B patches of a quality-diversity DPP, by fast greedy MAP inference.

Sources: the quality-diversity kernel ``L = diag(q) S diag(q)`` of Kulesza & Taskar,
"Determinantal Point Processes for Machine Learning" (2012): ``det L_S`` grows with the qualities
of the picked items and with the volume their feature vectors span, so it rewards sets that are
relevant *and* non-redundant. Greedy MAP inference in the incremental-Cholesky form of Chen,
Zhang & Zhou, "Fast Greedy MAP Inference for Determinantal Point Process" (NeurIPS 2018, Alg. 1).

Adaptation here:

* Items are patches; ``S`` is the cosine similarity of the L2-normalised edge embeddings (a zero
  or non-finite embedding becomes the zero vector: similarity 0 to all, itself included), in
  float64, snapped to a multiple of ``2**-32`` (~2e-10: ~1000x the float64 rounding, far below a
  float32 embedding's own precision), with the diagonal set exactly (1, or 0 for those). Why:
  equal embeddings then give *exactly* equal similarities whatever the batch layout or BLAS
  kernel, so their ties go to the lower index and an image's picks do not depend on the batch.
* Quality ``q = (a / max a) ** alpha``, ``a`` = last-layer attention (or rollout with
  ``importance="rollout"``), non-finite or negative values as 0. ``alpha=0`` is diversity only
  (q = 1, attention is ignored). Dividing by the row maximum changes no greedy choice (a scale
  ``c`` adds ``|S| log c`` to every candidate's log det) but puts ``eps`` on a fixed scale.
* ``L = diag(q) S diag(q) + eps * I``. ``S`` has rank <= D, so without the jitter ``det L_S = 0``
  for every ``|S| > D`` and greedy MAP would stop before B; with it ``L`` is positive definite
  and every budget up to N is reachable. Default ``eps = 1e-4`` relative to the top patch's
  ``q^2 = 1``: it changes a gain only where a patch's own residual ``q_i^2 (1 - proj)`` is below
  ~1e-4 (attention under ~1 % of the top patch's, or embedding ~99.99 % in the span of the
  picked ones), and it bounds the condition number by ~N/eps, which float64 resolves with more
  than ten digits to spare (the whole greedy runs in float64 for that reason).
* Exactly B picks: each step adds the patch with the largest ``d_i^2 = det L_{S+i} / det L_S``
  (the largest gain in ``log det``); ties go to the lower patch index. Output order = pick order.

Batched over images: ``d2 [b, N]`` and the Cholesky rows ``c [b, B, N]``; the only Python loop
is over the B steps, ``O(b N B^2)`` in all.
"""

from __future__ import annotations

import math

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.strategies.base import Strategy
from sagebench.strategies.importance import check_importance, check_real, importance, importance_requires
from sagebench.strategies.registry import register_strategy


def unit_cosine(embeddings: torch.Tensor) -> torch.Tensor:
    """``[b, N, N]`` float64 cosine similarities, snapped to multiples of ``2**-32``; zero or
    non-finite embeddings count as the zero vector; the diagonal is exactly 1 (0 for those)."""
    x = embeddings.double()
    norms = x.norm(dim=-1, keepdim=True)
    valid = torch.isfinite(norms) & (norms > 0)  # [b, N, 1]
    unit = torch.where(valid, x / torch.where(valid, norms, torch.ones_like(norms)), torch.zeros_like(x))
    cos = torch.bmm(unit, unit.transpose(1, 2)).mul_(2.0 ** 32).round_().div_(2.0 ** 32)  # exact snapping
    cos.diagonal(dim1=1, dim2=2).copy_(valid.squeeze(-1).double())
    return cos


def finite_weights(scores: torch.Tensor) -> torch.Tensor:
    """``[b, N]`` float64 copy of ``scores`` with non-finite and negative values set to 0."""
    return torch.nan_to_num(scores.double(), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)


def greedy_dpp_map(kernel: torch.Tensor, budget: int) -> torch.Tensor:
    """``[b, budget]`` greedy MAP picks of the positive definite ``kernel [b, N, N]`` (Chen et al.
    2018, Alg. 1): each step the largest ``d_i^2`` among the unpicked, ties to the lower index."""
    b, n, _ = kernel.shape
    rows = torch.arange(b, device=kernel.device)
    d2 = kernel.diagonal(dim1=1, dim2=2).clone()  # d_i^2 = L_ii for the empty set
    c = kernel.new_zeros(b, max(budget - 1, 0), n)  # c[:, k, i]: row k of the Cholesky factor
    taken = torch.zeros(b, n, dtype=torch.bool, device=kernel.device)
    picks = []
    for k in range(budget):
        j = d2.masked_fill(taken, -math.inf).argmax(dim=1)  # first maximum: lower index on ties
        picks.append(j)
        taken[rows, j] = True
        if k + 1 == budget:
            break
        dj = d2[rows, j].clamp_min(torch.finfo(torch.float64).tiny).sqrt()  # > 0 as L is PD
        cj = c[:, :k].gather(2, j.view(b, 1, 1).expand(b, k, 1))  # [b, k, 1]
        # <c_j, c_i> as a sum over k, not a bmm: equal columns stay bitwise equal (exact ties)
        e = (kernel[rows, j] - (cj * c[:, :k]).sum(dim=1)) / dj.unsqueeze(1)
        c[:, k] = e
        d2 = d2 - e * e
    return torch.stack(picks, dim=1)


@register_strategy("kdpp")
class KDPPStrategy(Strategy):
    """Quality-diversity DPP (q = attention**alpha, cosine similarity), greedy MAP (Chen et al. 2018).

    Kernel ``L = diag(q) S diag(q) + eps I`` over the patches (Kulesza & Taskar 2012); exactly B
    picks by fast greedy MAP inference, most wanted (picked first) first. See the module docstring.
    """

    def __init__(self, alpha: float = 1.0, eps: float = 1e-4, importance: str = "last_layer") -> None:
        self.alpha = check_real(alpha, "alpha", "kdpp", low=0.0)
        self.eps = check_real(eps, "eps", "kdpp", low=0.0, low_open=True)
        self.importance = check_importance(importance, "kdpp")
        self.requires = importance_requires(self.importance)

    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        cos = unit_cosine(evidence.embeddings)
        if self.alpha == 0.0:  # diversity only: do not even read the attention
            q = torch.ones(cos.shape[:2], dtype=cos.dtype, device=cos.device)
        else:
            a = finite_weights(importance(evidence, self.importance))
            q = (a / a.amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)).pow(self.alpha)
        kernel = q.unsqueeze(2) * cos * q.unsqueeze(1)
        kernel.diagonal(dim1=1, dim2=2).add_(self.eps)
        return greedy_dpp_map(kernel, budget)
