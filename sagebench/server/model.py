"""The frozen server model, classifying from the transmitted patches alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sagebench.transmission.patches import Transmission
from sagebench.vit.internals import check_vit, grid_size, patch_size, prefix_and_positions


class ServerModel(nn.Module):
    """Wraps a timm ViT so that it classifies a :class:`Transmission`.

    Each received patch is embedded with the model's own patch projection, gets the positional
    embedding of its grid position, the model's prefix tokens (CLS, distillation, registers) are
    prepended, and the rest of the network runs unchanged on that shorter sequence. Sending all
    N patches, in any order, reproduces ``vit(images)``.
    """

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        check_vit(vit, "server")
        proj = vit.patch_embed.proj
        if not isinstance(proj, nn.Conv2d) or tuple(proj.kernel_size) != tuple(proj.stride):
            raise ValueError("server patch_embed.proj must be a Conv2d with kernel size == stride")
        self.vit = vit
        self.grid = grid_size(vit)
        self.patch_size = patch_size(vit)
        self._tables: tuple[torch.Tensor, torch.Tensor] | None = None

    def _prefix_and_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Frozen model: computed once (and again only if moved to another device or dtype).
        ref = self.vit.pos_embed if getattr(self.vit, "pos_embed", None) is not None else next(self.vit.parameters())
        if self._tables is None or self._tables[1].device != ref.device or self._tables[1].dtype != ref.dtype:
            self._tables = prefix_and_positions(self.vit)
        return self._tables

    def embed(self, tx: Transmission) -> torch.Tensor:
        """Token sequence ``[b, P + B, D]`` for the transmitted patches."""
        if tuple(tx.grid) != tuple(self.grid):
            raise ValueError(f"transmission grid {tx.grid} does not match the server grid {self.grid}")
        vit = self.vit
        b, units = tx.indices.shape
        proj = vit.patch_embed.proj
        flat = tx.patches.reshape(b, units, proj.weight[0].numel()).to(proj.weight.dtype)  # units may be 0
        tokens = F.linear(flat, proj.weight.flatten(1), proj.bias)
        tokens = vit.patch_embed.norm(tokens)
        prefix, positions = self._prefix_and_positions()
        tokens = tokens + positions[tx.indices]
        return torch.cat([prefix.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)

    def forward(self, tx: Transmission) -> torch.Tensor:
        vit = self.vit
        x = self.embed(tx)
        x = vit.norm_pre(x)
        x = vit.blocks(x)
        x = vit.norm(x)
        return vit.forward_head(x)
