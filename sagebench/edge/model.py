"""The edge model: one forward per image gives the prediction and all evidence strategies use."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from sagebench.edge.evidence import EdgeEvidence
from sagebench.vit.internals import (
    check_class_token,
    check_vit,
    grid_size,
    head_attention,
    head_mean_cls_attention,
    num_prefix_tokens,
)

ATTENTION_KINDS = ("last_layer", "rollout")
#: The attention rollouts the edge computes in its forward on request, each an evidence name
#: (:data:`sagebench.edge.evidence.EVIDENCE_KINDS`) and a field of :class:`EdgeEvidence`:
#:
#: - ``"rollout"``: Abnar & Zuidema's (2020) attention rollout. Per block the attention averaged
#:   over heads, plus the identity (the residual connection), rows renormalised to sum to 1;
#:   multiplied from the first block on (``R = A_L ... A_1``); the CLS row over the patches.
#: - ``"rollout_per_head"``: the order of Im et al.'s code (``compute_rollout_attention`` in
#:   iil-postech/semantic-attention): per head, the attention plus the identity, multiplied from
#:   the first block on, so each head keeps its own chain (``R_h = (A_L,h + I) ... (A_1,h + I)``);
#:   heads averaged at the end; the CLS row over the patches. As in their code the rows are not
#:   renormalised per block: a softmax row plus the identity sums to 2, which scales the product
#:   by ``2**L`` (up to float rounding), and the final renormalisation over the patches cancels it.
#:
#: Both are renormalised over the patches at the end (rows sum to 1), as every importance is.
ROLLOUT_KINDS = ("rollout", "rollout_per_head")


def rollout_options(required: Iterable[str]) -> dict[str, bool]:
    """The :class:`EdgeModel` keyword arguments that compute exactly the rollouts in ``required``
    (evidence names, e.g. :func:`sagebench.strategies.base.required_evidence` of the strategies)."""
    required = set(required)
    return {"with_rollout": "rollout" in required, "with_rollout_per_head": "rollout_per_head" in required}


class EdgeModel(nn.Module):
    """Wraps a timm ViT and returns :class:`EdgeEvidence` instead of logits.

    ``attention="last_layer"``: the last block's CLS->patch attention averaged over heads (the
    importance signal of the paper). ``attention="rollout"``: Abnar & Zuidema's attention rollout
    (heads averaged per block, see :data:`ROLLOUT_KINDS`).

    ``with_rollout=True`` also fills ``EdgeEvidence.rollout`` (for strategies with
    ``importance="rollout"``) and ``with_rollout_per_head=True`` ``EdgeEvidence.rollout_per_head``
    (Im et al.'s order, for ``importance="rollout_per_head"``), in the same single forward pass,
    whatever ``attention`` is; each costs one more ``t x t`` product per block (per head for the
    second), so it is computed only when a strategy requires it (:func:`rollout_options`).
    """

    def __init__(self, vit: nn.Module, attention: str = "last_layer", with_rollout: bool = False,
                 input_map: tuple | None = None, with_rollout_per_head: bool = False) -> None:
        """``input_map=(from_mean, from_std, to_mean, to_std)``: images arrive normalised with ``from_*``
        (the server's view of the same crop) and are renormalised to the edge's own ``to_*`` first."""
        super().__init__()
        check_vit(vit, "edge")
        check_class_token(vit, "edge")
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
        self.vit = vit
        self.attention_kind = attention
        self.with_rollout = bool(with_rollout)
        self.with_rollout_per_head = bool(with_rollout_per_head)
        self.grid = grid_size(vit)
        self.num_prefix = num_prefix_tokens(vit)
        self.input_map = None
        if input_map is not None:
            fm, fs, tm, ts = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in input_map)
            # x_edge = (x_server * from_std + from_mean - to_mean) / to_std
            self.register_buffer("_in_scale", fs / ts, persistent=False)
            self.register_buffer("_in_shift", (fm - tm) / ts, persistent=False)
            self.input_map = tuple(tuple(float(x) for x in v) for v in input_map)

    @property
    def rollouts(self) -> tuple[str, ...]:
        """The rollouts asked of this edge (:data:`ROLLOUT_KINDS` order): what its evidence adds
        to the logits, attention and embeddings, and so part of the edge cache's key."""
        return tuple(k for k, on in zip(ROLLOUT_KINDS, (self.with_rollout, self.with_rollout_per_head)) if on)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, sample_ids: torch.Tensor, seed: int = 0) -> EdgeEvidence:
        vit = self.vit
        if self.input_map is not None:
            images = images * self._in_scale.to(images.dtype) + self._in_shift.to(images.dtype)
        x = vit.patch_embed(images)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        blocks = list(vit.blocks)
        rollout = per_head = None
        want_rollout = self.attention_kind == "rollout" or self.with_rollout
        for i, blk in enumerate(blocks):
            if want_rollout or self.with_rollout_per_head:
                heads = head_attention(blk.attn, blk.norm1(x))  # [b, h, t, t], once for both rollouts
                eye = torch.eye(heads.shape[-1], device=heads.device, dtype=heads.dtype)
            if want_rollout:  # Abnar & Zuidema: heads averaged first, rows renormalised
                a = heads.mean(dim=1)
                a = a + eye
                a = a / a.sum(dim=-1, keepdim=True)
                rollout = a if rollout is None else a @ rollout
            if self.with_rollout_per_head:  # Im et al.: a chain per head, identity added, no renormalising
                h = heads + eye
                per_head = h if per_head is None else h @ per_head
            if self.attention_kind != "rollout" and i == len(blocks) - 1:
                attention = head_mean_cls_attention(blk.attn, blk.norm1(x), self.num_prefix)
            x = blk(x)
        rollout_patches = per_head_patches = None
        if rollout is not None:
            patch = rollout[:, 0, self.num_prefix:]
            rollout_patches = (patch / patch.sum(dim=-1, keepdim=True)).float()
            if self.attention_kind == "rollout":
                attention = rollout_patches
        if per_head is not None:
            patch = per_head[:, :, 0, self.num_prefix:].mean(dim=1)  # heads averaged at the end
            per_head_patches = (patch / patch.sum(dim=-1, keepdim=True)).float()
        x = vit.norm(x)
        logits = vit.forward_head(x)
        return EdgeEvidence(
            logits=logits.float(),
            attention=attention.float(),
            embeddings=x[:, self.num_prefix:],
            grid=self.grid,
            sample_ids=sample_ids,
            seed=seed,
            rollout=rollout_patches,
            rollout_per_head=per_head_patches,
        )
