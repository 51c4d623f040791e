"""What crosses the uplink: the pixels of the chosen patches and their grid positions.

The server model only ever receives a :class:`Transmission`, so it cannot see pixels that were
not sent. Raw bytes are counted as 8-bit pixels (``C * ph * pw`` bytes per patch), the size of
the patch in the preprocessed image before normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Transmission:
    """``patches [b, B, C, ph, pw]`` (model-ready pixels) and ``indices [b, B]`` (raster positions)."""

    patches: torch.Tensor
    indices: torch.Tensor
    grid: tuple[int, int]

    @property
    def units(self) -> int:
        return self.indices.shape[1]

    @property
    def raw_bytes_per_image(self) -> int:
        _, _, c, ph, pw = self.patches.shape
        return self.units * c * ph * pw


def patchify(images: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """``[b, C, H, W]`` -> ``[b, N, C, ph, pw]`` in raster order (row-major over the grid)."""
    b, c, h, w = images.shape
    ph, pw = patch_size
    if h % ph or w % pw:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {ph}x{pw}")
    gh, gw = h // ph, w // pw
    x = images.reshape(b, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, gh * gw, c, ph, pw)


def transmit(patches: torch.Tensor, indices: torch.Tensor, grid: tuple[int, int]) -> Transmission:
    """Keep only the patches at ``indices`` (``[b, B]``) of already patchified images ``[b, N, C, ph, pw]``."""
    b, n = patches.shape[:2]
    idx = indices.reshape(b, -1, 1, 1, 1).expand(-1, -1, *patches.shape[2:])
    return Transmission(patches=torch.gather(patches, 1, idx), indices=indices, grid=grid)
