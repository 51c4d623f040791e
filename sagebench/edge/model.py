"""The edge model: one forward per image gives the prediction and all evidence strategies use."""

from __future__ import annotations

import torch
from torch import nn

from sagebench.edge.evidence import EdgeEvidence
from sagebench.vit.internals import (
    check_class_token,
    check_vit,
    full_attention,
    grid_size,
    head_mean_cls_attention,
    num_prefix_tokens,
)

ATTENTION_KINDS = ("last_layer", "rollout")


class EdgeModel(nn.Module):
    """Wraps a timm ViT and returns :class:`EdgeEvidence` instead of logits.

    ``attention="last_layer"``: the last block's CLS->patch attention averaged over heads (the
    importance signal of the paper). ``attention="rollout"``: attention rollout (Abnar & Zuidema,
    as used by Im et al.): per block, head-mean attention plus identity, rows renormalised,
    multiplied from the first block on; the CLS row over patches.

    ``with_rollout=True`` also fills ``EdgeEvidence.rollout`` (for strategies with
    ``importance="rollout"``) in the same single forward pass, whatever ``attention`` is.
    """

    def __init__(self, vit: nn.Module, attention: str = "last_layer", with_rollout: bool = False,
                 input_map: tuple | None = None) -> None:
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
        self.grid = grid_size(vit)
        self.num_prefix = num_prefix_tokens(vit)
        self.input_map = None
        if input_map is not None:
            fm, fs, tm, ts = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in input_map)
            # x_edge = (x_server * from_std + from_mean - to_mean) / to_std
            self.register_buffer("_in_scale", fs / ts, persistent=False)
            self.register_buffer("_in_shift", (fm - tm) / ts, persistent=False)
            self.input_map = tuple(tuple(float(x) for x in v) for v in input_map)

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
        rollout = None
        want_rollout = self.attention_kind == "rollout" or self.with_rollout
        for i, blk in enumerate(blocks):
            if want_rollout:
                a = full_attention(blk.attn, blk.norm1(x))
                a = a + torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
                a = a / a.sum(dim=-1, keepdim=True)
                rollout = a if rollout is None else a @ rollout
            if self.attention_kind != "rollout" and i == len(blocks) - 1:
                attention = head_mean_cls_attention(blk.attn, blk.norm1(x), self.num_prefix)
            x = blk(x)
        rollout_patches = None
        if rollout is not None:
            patch = rollout[:, 0, self.num_prefix:]
            rollout_patches = (patch / patch.sum(dim=-1, keepdim=True)).float()
            if self.attention_kind == "rollout":
                attention = rollout_patches
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
        )
