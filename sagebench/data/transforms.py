"""How an image becomes model input: the timm data config, the eval transform, the colour mode."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.utils.data
from PIL import Image

from sagebench.data.spec import _INTERPOLATIONS, DataSpec, _float_tuple, _input_size
from sagebench.errors import DataError

Transform = Callable[[Image.Image], torch.Tensor]


_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def resolve_data_config(model: torch.nn.Module, spec: DataSpec) -> dict[str, Any]:
    """The model's timm data config with the spec's non-``None`` overrides applied.

    Raises :class:`DataError` when the result is inconsistent (``mean``/``std`` not one value per
    input channel, an unknown interpolation, ``crop_pct`` outside (0, 1]).
    """
    import timm.data

    config = dict(timm.data.resolve_data_config({}, model=model))
    if spec.input_size is not None:
        config["input_size"] = _input_size(spec.input_size)
    if spec.mean is not None:
        config["mean"] = _float_tuple(spec.mean, "data.mean")
    if spec.std is not None:
        config["std"] = _float_tuple(spec.std, "data.std")
    if spec.crop_pct is not None:
        config["crop_pct"] = float(spec.crop_pct)
    if spec.interpolation is not None:
        config["interpolation"] = spec.interpolation

    channels = _input_size(config["input_size"])[0]
    for key in ("mean", "std"):
        values = tuple(float(v) for v in config[key])
        if len(values) != channels:
            raise DataError(
                f"The data config's {key} has {len(values)} value(s) but the input has {channels} "
                f"channel(s): set data.mean and data.std with {channels} value(s) each."
            )
        config[key] = values
    if min(config["std"]) <= 0:
        raise DataError(f"data.std must be positive; got {config['std']}.")
    crop_pct = config.get("crop_pct")
    if crop_pct is not None and not 0 < crop_pct <= 1:
        raise DataError(f"data.crop_pct must be in (0, 1]; got {crop_pct}.")
    if config.get("interpolation") not in _INTERPOLATIONS:
        raise DataError(
            f"data.interpolation must be one of {', '.join(_INTERPOLATIONS)}; got {config.get('interpolation')!r}."
        )
    return config


def build_transform(data_config: dict[str, Any]) -> Transform:
    """timm's evaluation transform (resize, center crop, to tensor, normalise) for ``data_config``.

    The transform maps a PIL image already in the model's mode (see :func:`to_model_mode`) to a
    float tensor of shape ``data_config["input_size"]``.
    """
    import timm.data

    accepted = inspect.signature(timm.data.create_transform).parameters
    kwargs = {k: v for k, v in data_config.items() if k in accepted and k != "is_training"}
    return timm.data.create_transform(**kwargs, is_training=False)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """A float image's 8-bit pixels: 0..1 scaled by 255, 0..255 as they are, anything else refused."""
    if values.size == 0 or not np.isfinite(values).all():
        raise DataError("A 32-bit float image (mode 'F') holds NaN or Inf values: no 8-bit image follows from it. "
                        "Convert the image to 8 bits (RGB or L) before evaluating it.")
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        values = values * 255.0
    elif low < 0.0 or high > 255.0:
        raise DataError(f"A 32-bit float image (mode 'F') has values in [{low:g}, {high:g}]: sagebench reads float "
                        "images as 0..1 (or 0..255). Rescale it, or convert it to 8 bits (RGB or L).")
    return np.rint(values).astype(np.uint8)


def to_model_mode(img: Image.Image, channels: int) -> Image.Image:
    """``img`` as an 8-bit "RGB" (``channels == 3``) or "L" (``channels == 1``) image.

    * 16-bit grayscale ("I;16*", and "I", read as 16-bit) is scaled to 8 bits by ``>> 8``
      (65535 -> 255), not clipped at 255 as Pillow's own conversion does; values of an "I"
      image outside 0..65535 end up clipped to 0..255.
    * Transparent images (RGBA, LA, P or L with a transparent colour, ...) are first composited
      onto black, so transparent pixels are defined (black) whatever colour they store.
    * 32-bit float ("F", e.g. a float TIFF) is read as intensities in 0..1 (the float-image convention of
      scikit-image and matplotlib) and scaled by 255; values in 0..255 are taken as they are; anything else
      (negative, above 255, NaN) is refused, since no 8-bit image follows from it. Pillow's own conversion
      truncates 0..1 to 0 (an all-black image, counted as if it were the photo).
    * Everything else (L, 1, P, CMYK, YCbCr, ...) goes through ``Image.convert``.
    """
    if channels not in (1, 3):
        raise DataError(f"Models with {channels} input channels are not supported; only 1 (grayscale) or 3 (RGB).")
    target = "RGB" if channels == 3 else "L"
    if img.mode == "F":
        img = Image.fromarray(_float_to_uint8(np.asarray(img, dtype=np.float64)))
    elif img.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.int64) >> 8
        img = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    elif img.mode in _ALPHA_MODES or img.has_transparency_data:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    if img.mode == target:
        return img
    try:
        return img.convert(target)
    except ValueError as exc:
        raise DataError(f"Images of mode {img.mode!r} cannot be converted to {target!r}: {exc}.") from exc
