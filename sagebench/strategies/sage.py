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
   i.e. more attended, candidate. Zero embeddings normalise to zero (similarity 0 to all). The
   similarities are computed in float64 and snapped to a grid (:func:`cosine_gram`), so that
   mathematically equal ones are equal: a tie is decided by attention, not by float rounding.
3. Stop at exactly B picks; return them in the order picked (most wanted first).

``prefilter`` must be >= 1. With ``prefilter=1`` the candidates are exactly the top-B patches, so
the returned *set* equals ``attention_prefix``'s; the *order* is the farthest-point order (it
starts with the same most attended patch, then diverges), which matters when a byte budget
is filled from the front. A very large ``prefilter`` (even ``inf``) makes every patch a candidate.

``importance="rollout"`` ranks (prefilter, first pick, ties) by attention rollout instead of the
last layer's attention (see :mod:`sagebench.strategies.importance`).
"""

from __future__ import annotations

import math

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.errors import ConfigError
from sagebench.strategies.base import Strategy
from sagebench.strategies.importance import check_importance, importance_order, importance_requires
from sagebench.strategies.registry import register_strategy


class PrefilterError(ConfigError, ValueError):
    """An invalid ``prefilter``: a ConfigError for the CLI, a ValueError for Python callers."""


def num_candidates(prefilter: float, budget: int, num_patches: int) -> int:
    """``min(N, ceil(prefilter * budget))``, robust to float noise (``1.1 * 10`` gives 11, not 12)."""
    k = prefilter * budget
    if k >= num_patches:
        return num_patches
    return max(budget, math.ceil(round(k, 9)))


#: The grid :func:`cosine_gram` snaps similarities to (as ``kdpp``'s ``unit_cosine``): ``2**-32``,
#: ~2e-10, about a million times float64's rounding of a cosine and far below float32's resolution.
COSINE_GRID = 2.0 ** -32


def cosine_gram(emb: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``([b, K, K] float32 cosine similarities of the L2-normalised rows of emb, finite)``, exact on ties.

    Computed in float64 and snapped to multiples of :data:`COSINE_GRID` before the one rounding to
    float32. Why: farthest-point sampling's ties are equal similarities, e.g. two candidates that
    each duplicate an already picked patch (both at similarity 1) or two copies of one embedding.
    In float32, ``u . u`` is 1 only up to a few ulps that depend on ``u``, and a BLAS kernel may
    round the same dot product differently at another position in the batch, so rounding, not
    attention, decided such ties (issue 25: 9). float64 errs by ~1e-15, far inside one step of the
    grid, so mathematically equal similarities snap to the same value and the tie goes to the more
    attended candidate as documented. A self-similarity is exactly 1 (on the grid, 2**-33 from a
    rounding boundary). Not a proof for every tie: had a BLAS kernel rounded two copies' float64
    dot products differently (none did on the CPUs tested), they would straddle a boundary of the
    grid with a probability of about 1e-5. An exact integer dot product would not help: ``u . u``
    of a quantised ``u`` is not exactly 1.

    With finite embeddings the diagonal is +inf (see :func:`farthest_point_from_gram`); zero rows
    normalise to zero (similarity 0 to all). ``finite`` is False when an embedding holds NaN/Inf.
    """
    x = emb.double()
    # All pairwise dot products in one batched matmul, then one row read per step: a [b, K, 1]
    # matrix-vector product per step is ~10x slower on CPU (batched gemv with tiny matrices).
    # Dot products of the raw embeddings, divided by the norms from their diagonal: the same
    # snapped values as normalising first (checked on 2M similarities), ~25 % less time.
    dots = torch.bmm(x, x.transpose(1, 2))
    norms = dots.diagonal(dim1=1, dim2=2).sqrt()  # [b, K]
    finite = bool(torch.isfinite(norms).all())  # finite norms <=> finite embeddings <=> finite similarities
    norms = norms.clamp_min(1e-12)  # as F.normalize: zero rows give similarity 0 to all
    scale = (norms.unsqueeze(2) * norms.unsqueeze(1)).mul_(COSINE_GRID)
    # snapped: an integer number of grid steps (|.| <= 2**32), then exactly scaled by the power of two
    gram = dots.div_(scale).round_().float().mul_(COSINE_GRID)  # NaN stays NaN
    if finite:
        # a candidate's similarity to itself is +inf: once picked, its own row puts +inf in its
        # max_sim slot, which later maxima keep (similarities are finite) -- no masking step needed
        gram.diagonal(dim1=1, dim2=2).fill_(math.inf)
    return gram, finite


def similarity_keys(gram: torch.Tensor) -> torch.Tensor:
    """int32 keys in the same order as the float32 similarities of ``gram`` (no NaN): ``a < b``
    exactly when ``key(a) < key(b)``; ``-0.0`` and ``+0.0`` get the same key, ``+inf`` the largest.

    Why: farthest-point sampling only compares similarities (a maximum and an argmin per step),
    so any order-preserving map gives the same picks, ties included. On CPU a float argmin tests
    every element for NaN and branches on data that changes every step; over int32 keys the same
    argmin took 13 us instead of 47 us per step on 500 x 48 candidates, and the whole selection
    ~45 % less time. The map: the float's bits read as a sign-magnitude integer, made two's
    complement (``key = sign * magnitude``).
    """
    bits = gram.float().contiguous().view(torch.int32)
    sign = bits >> 31  # 0 for +, -1 for -
    keys = bits & 0x7FFFFFFF  # magnitude: monotone in |x| for non-NaN floats
    return keys.bitwise_xor_(sign).sub_(sign)  # -magnitude where negative (-0.0 -> 0)


def farthest_point_from_gram(gram: torch.Tensor, k: int, budget: int, finite: bool) -> torch.Tensor:
    """``[b, budget]`` positions in ``[0, k)`` chosen by farthest-point sampling on the leading
    ``k x k`` block of ``gram [b, M, M]`` (from :func:`cosine_gram`, or its
    :func:`similarity_keys` when ``finite``; ``M >= k``).

    Starts at position 0; each step takes the position whose largest similarity to the chosen
    set is smallest, the first such position on ties. Reading the leading block of a larger
    Gram matrix is what lets one matrix (all patches in attention order) serve every budget.
    """
    b, m, _ = gram.shape
    rows = gram.reshape(b * m, m)  # row i*M + j: image i, position j
    base = torch.arange(b, device=gram.device) * m
    picks = [torch.zeros(b, dtype=torch.int64, device=gram.device)]
    taken = None if finite else torch.zeros(b, k, dtype=torch.bool, device=gram.device)
    max_sim = None
    for step in range(1, budget):
        current = picks[-1]
        sim = rows.index_select(0, base + current)[:, :k]  # [b, K]: similarity of the last pick to every candidate
        max_sim = sim if max_sim is None else torch.maximum(max_sim, sim)
        if finite:
            score = max_sim
        else:  # non-finite embeddings: mask explicitly (a NaN would survive the +inf)
            taken.scatter_(1, current.unsqueeze(1), True)
            score = max_sim.masked_fill(taken, math.inf)
        # argmin returns the first minimum: ties -> the earlier (more attended) candidate
        picks.append(torch.argmin(score, dim=1))
    return torch.stack(picks, dim=1)


def farthest_point_order(emb: torch.Tensor, budget: int) -> torch.Tensor:
    """``[b, budget]`` positions into ``emb`` ``[b, K, D]`` chosen by cosine farthest-point sampling.

    Starts at position 0; each step takes the position whose largest similarity to the chosen
    set is smallest, the first such position on ties.
    """
    gram, finite = cosine_gram(emb)
    return farthest_point_from_gram(similarity_keys(gram) if finite else gram, emb.shape[1], budget, finite)


def ranked_gram(evidence: EdgeEvidence, kind: str = "last_layer") -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(order [b, N], gram [b, N, N], finite)``: patches by decreasing importance and the cosine
    Gram matrix of their embeddings *in that order* (as :func:`similarity_keys` when ``finite``),
    computed once per evidence object, ready for :func:`farthest_point_from_gram`.

    Why: sage at every budget (its candidates are a prefix of ``order``, so their Gram matrix is
    the leading block) and diversity_only (all of it) share one sort and one batched matmul per
    batch instead of one per (strategy, budget). Read-only for callers.
    """
    order = importance_order(evidence, kind)
    embeddings = evidence.embeddings

    def compute() -> tuple[torch.Tensor, bool]:
        b, n, d = embeddings.shape
        rows = (order + torch.arange(b, device=order.device).unsqueeze(1) * n).reshape(-1)
        emb = embeddings.reshape(b * n, d).index_select(0, rows).reshape(b, n, d)  # a gather, faster
        gram, finite = cosine_gram(emb)
        return (similarity_keys(gram) if finite else gram), finite

    gram, finite = evidence.memo.get_or_compute(("ranked_gram", kind), (order, embeddings), compute)
    return order, gram, finite


@register_strategy("sage")
class SageStrategy(Strategy):
    """Attention prefilter (top ceil(prefilter*B)) then cosine farthest-point sampling: relevant and diverse."""

    def __init__(self, prefilter: float = 2.0, importance: str = "last_layer") -> None:
        if isinstance(prefilter, bool):
            raise PrefilterError(f"sage: prefilter must be a number >= 1, got {prefilter!r}")
        try:
            value = float(prefilter)
        except (TypeError, ValueError):
            raise PrefilterError(f"sage: prefilter must be a number >= 1, got {prefilter!r}") from None
        if not value >= 1.0:  # also rejects NaN
            raise PrefilterError(f"sage: prefilter must be >= 1 (candidates = ceil(prefilter * budget)), got {prefilter!r}")
        self.prefilter = value
        self.importance = check_importance(importance, "sage")
        self.requires = importance_requires(self.importance)

    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        n = evidence.num_patches
        k = num_candidates(self.prefilter, budget, n)
        order, gram, finite = ranked_gram(evidence, self.importance)  # shared by every budget of the batch
        picks = farthest_point_from_gram(gram, k, budget, finite)  # candidates = the k most attended
        return torch.gather(order[:, :k], 1, picks)

    def selection_macs(self, budget: int, edge) -> int:
        """``B K D`` (farthest-point sampling of B of the K = min(N, ceil(prefilter B)) most attended, D-dim
        embeddings) plus the importance map's (:func:`sagebench.cost.importance_macs`); the sort: no MACs."""
        from sagebench.cost import farthest_point_macs, importance_macs

        k = num_candidates(self.prefilter, budget, edge.num_patches)
        return farthest_point_macs(budget, k, edge.dim) + importance_macs(self.importance, edge)
