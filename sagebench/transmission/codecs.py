"""How the chosen patches travel: raw 8-bit pixels, or a real image codec (PNG, JPEG, WebP).

Why a codec at all: a patch budget counts evidence units, but an uplink carries bytes. With a
real codec the device packs the chosen patches the way it would send them -- one *mosaic*
image (the patches side by side, in raster order of their grid positions) plus an *index map*
saying where each patch belongs -- encodes it with Pillow, and the server decodes that payload
and classifies the decoded pixels. ``bytes_sent`` is then the real payload size (the encoded
file, headers included, plus the index map), and a lossy codec's artefacts reach the server.

The index map costs ``min(ceil(N / 8), ceil(B * ceil(log2 N) / 8))`` bytes: a bitmap of the N
grid cells or a list of B positions, whichever is smaller. Because the map says *which* cells
were sent and the mosaic holds them in raster order, the payload depends on the set of patches
only, not on the order a strategy ranked them in.

One class per codec, registered by name (``sagebench codecs``); its ``__init__`` keyword arguments
are its options (``codec: {name: jpeg, quality: 75}``) and :meth:`Codec.describe` is what results
and fingerprints record of it. A new image format is one subclass with :meth:`Codec.encode`.

``raw`` keeps the historical accounting: ``C * ph * pw`` bytes per patch, no index map, and the
server receives the model-ready pixels untouched. A lossless codec (PNG) sends 8-bit pixels, so
the server sees the preprocessed image rounded to 8 bits -- the price of putting pixels on a wire.
"""

from __future__ import annotations

import copy
import io
import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Mapping, Sequence

import numpy as np
import torch

from sagebench.errors import ConfigError
from sagebench.plugins import CODECS
from sagebench.registry import Configurable

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Codec", "JpegCodec", "PngCodec", "RawCodec", "WebpCodec", "codec_from_config", "get_codec",
           "index_map_bytes", "mosaic_shape", "register_codec"]


def index_map_bytes(units: int, num_patches: int) -> int:
    """Bytes that tell the server which grid cells the ``units`` patches fill (0 when nothing is sent)."""
    if units <= 0:
        return 0
    bits_per_index = max(1, math.ceil(math.log2(num_patches)))
    return min(math.ceil(num_patches / 8), math.ceil(units * bits_per_index / 8))


def mosaic_shape(units: int) -> tuple[int, int]:
    """(rows, cols) of the mosaic holding ``units`` patches: as square as possible, filled row by row."""
    cols = max(1, math.ceil(math.sqrt(units)))
    return math.ceil(units / cols), cols


class Codec(Configurable, ABC):
    """Encodes and decodes the patches of one request.

    Subclasses implement :meth:`encode` (one mosaic image -> bytes) and, when Pillow cannot open
    their bytes, :meth:`decode`; their ``__init__`` keyword arguments are their options. ``mean``/
    ``std`` are the model's normalisation, undone to get 8-bit pixels back (the images in the
    pipeline are already normalised): the run's, not an option, given by :meth:`with_normalisation`.
    """

    name: str = "codec"
    #: True: the server receives the model-ready pixels untouched and a patch costs ``C * ph * pw`` bytes
    is_raw: ClassVar[bool] = False
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def with_normalisation(self, mean: Sequence[float], std: Sequence[float]) -> Codec:
        """A copy of this codec for images normalised with ``mean``/``std`` (one value, or one per channel)."""
        out = copy.copy(self)
        out.mean, out.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        return out

    def describe(self) -> dict:
        """What identifies the codec in results: its name and options (``{"name": "jpeg", "quality": 75}``)."""
        return {"name": self.name, **self.options()}

    @abstractmethod
    def encode(self, image: Image.Image) -> bytes:
        """One request's mosaic (8-bit ``L`` or ``RGB``) -> the bytes that cross the uplink."""

    def decode(self, blob: bytes) -> Image.Image:
        """The bytes of :meth:`encode` -> the image the server sees (default: whatever Pillow opens)."""
        from PIL import Image

        return Image.open(io.BytesIO(blob))

    # -- pixels <-> bytes -------------------------------------------------------------------------
    def _stats(self, channels: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.as_tensor(list(self.mean), dtype=torch.float32, device=like.device)
        std = torch.as_tensor(list(self.std), dtype=torch.float32, device=like.device)
        if mean.numel() == 1:
            mean, std = mean.expand(channels), std.expand(channels)
        return mean.view(1, 1, channels, 1, 1), std.view(1, 1, channels, 1, 1)

    def to_uint8(self, patches: torch.Tensor) -> np.ndarray:
        """Model-ready ``[n, B, C, ph, pw]`` -> 8-bit pixels as the device holds them."""
        mean, std = self._stats(patches.shape[2], patches)
        pixels = (patches.float() * std + mean).mul_(255.0).round_().clamp_(0, 255)
        return pixels.to(torch.uint8).cpu().numpy()

    def from_uint8(self, pixels: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        """8-bit ``[n, B, C, ph, pw]`` -> model-ready tensor with ``like``'s device and dtype."""
        x = torch.from_numpy(pixels).to(like.device).float().div_(255.0)
        mean, std = self._stats(x.shape[2], x)
        return ((x - mean) / std).to(like.dtype)

    def _encode_one(self, pixels: np.ndarray) -> bytes:
        """One request's patches ``[B, C, ph, pw]`` (uint8, raster order) -> the encoded mosaic."""
        from PIL import Image

        units, c, ph, pw = pixels.shape
        rows, cols = mosaic_shape(units)
        canvas = np.zeros((rows * ph, cols * pw, c), dtype=np.uint8)
        for k in range(units):
            r, q = divmod(k, cols)
            canvas[r * ph:(r + 1) * ph, q * pw:(q + 1) * pw] = pixels[k].transpose(1, 2, 0)
        image = Image.fromarray(canvas[:, :, 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB")
        return self.encode(image)

    def _decode_one(self, blob: bytes, units: int, channels: int, ph: int, pw: int) -> np.ndarray:
        canvas = np.asarray(self.decode(blob).convert("L" if channels == 1 else "RGB"))
        if channels == 1:
            canvas = canvas[:, :, None]
        _, cols = mosaic_shape(units)
        out = np.empty((units, channels, ph, pw), dtype=np.uint8)
        for k in range(units):
            r, q = divmod(k, cols)
            out[k] = canvas[r * ph:(r + 1) * ph, q * pw:(q + 1) * pw].transpose(2, 0, 1)
        return out

    def payload_bytes(self, patches: torch.Tensor, num_patches: int) -> torch.Tensor:
        """int64 ``[n]``: bytes each request of ``patches [n, B, C, ph, pw]`` (raster order) takes."""
        n, units = patches.shape[:2]
        if self.is_raw or units == 0:
            per = units * int(np.prod(patches.shape[2:])) if self.is_raw else 0
            return torch.full((n,), per, dtype=torch.int64)
        pixels = self.to_uint8(patches)
        extra = index_map_bytes(units, num_patches)
        return torch.tensor([len(self._encode_one(p)) + extra for p in pixels], dtype=torch.int64)

    def transmit(self, patches: torch.Tensor, num_patches: int) -> tuple[torch.Tensor, torch.Tensor]:
        """What the server receives and what it cost: (decoded patches like ``patches``, bytes ``[n]``)."""
        n, units, c, ph, pw = patches.shape
        if self.is_raw or units == 0:
            return patches, self.payload_bytes(patches, num_patches)
        pixels = self.to_uint8(patches)
        extra = index_map_bytes(units, num_patches)
        decoded = np.empty_like(pixels)
        sizes = []
        for i in range(n):
            blob = self._encode_one(pixels[i])
            sizes.append(len(blob) + extra)
            decoded[i] = self._decode_one(blob, units, c, ph, pw)
        return self.from_uint8(decoded, patches), torch.tensor(sizes, dtype=torch.int64)


#: Class decorator: ``@register_codec("name")`` makes a :class:`Codec` subclass available as ``codec.name=name``.
register_codec = CODECS.register


def get_codec(name: str, *, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,), **options: Any) -> Codec:
    """The codec registered as ``name`` with its options, for images normalised with ``mean``/``std``."""
    return CODECS.create(name, **options).with_normalisation(mean, std)


@register_codec("raw")
class RawCodec(Codec):
    """8-bit pixels counted, not encoded: the server receives the model-ready pixels untouched."""

    is_raw = True
    ignored_options = frozenset({"quality"})  # `codec.name=raw` works whatever quality a config file sets

    def encode(self, image: Image.Image) -> bytes:
        raise NotImplementedError("raw sends pixels as they are: nothing is encoded")


@register_codec("png")
class PngCodec(Codec):
    """PNG (lossless): the server sees the preprocessed image rounded to 8 bits."""

    ignored_options = frozenset({"quality"})

    def encode(self, image: Image.Image) -> bytes:
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=False)
        return buf.getvalue()


class _QualityCodec(Codec):
    """A lossy codec with a quality setting."""

    def __init__(self, quality: Annotated[int, "1..100: higher sends more bytes and fewer artefacts"] = 75) -> None:
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ConfigError(f"codec.quality must be between 1 and 100 for {self.name}, got {quality}.")
        self.quality = int(quality)


@register_codec("jpeg")
class JpegCodec(_QualityCodec):
    """JPEG (lossy) at a quality: the server sees its block artefacts."""

    def encode(self, image: Image.Image) -> bytes:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=self.quality)
        return buf.getvalue()


@register_codec("webp")
class WebpCodec(_QualityCodec):
    """WebP (lossy) at a quality, encoder effort 4."""

    def encode(self, image: Image.Image) -> bytes:
        buf = io.BytesIO()
        image.save(buf, format="WEBP", quality=self.quality, method=4)
        return buf.getvalue()


def codec_from_config(node: Mapping[str, Any], data_config: dict) -> Codec:
    """The run's codec from ``codec: {name, <options>}`` (checked by the config) and the server's normalisation."""
    options = {str(k): v for k, v in node.items()}
    name = str(options.pop("name"))
    return get_codec(name, mean=tuple(float(m) for m in (data_config.get("mean") or (0.0,))),
                     std=tuple(float(s) for s in (data_config.get("std") or (1.0,))), **options)
