"""Decoding on tensors: ``data.decode`` = ``pil`` (default) | ``tensor`` | ``auto``.

Why: on a GPU, PIL decoding in the DataLoader workers (13-17 ms per ImageNet JPEG per core) is the
bottleneck once the models run in bf16. ``tensor`` decodes JPEGs with torchvision's decoder
(libjpeg-turbo on the CPU, nvJPEG on CUDA) and then applies timm's evaluation transform on tensors:
the shorter side resized to ``floor(size / crop_pct)`` (antialiased, PIL's bicubic kernel), the
centre crop, ``/ 255`` and the mean/std normalisation, the same torchvision functions timm's
transform calls, on a uint8 tensor instead of a PIL image.

Where it runs: on a CUDA run the workers only read the encoded bytes and the decode happens on the
device when the batch is moved there (:func:`decode_batch`, called by the data module's
``transfer_batch_to_device``); elsewhere in the workers. ``auto`` is ``tensor`` on CUDA and ``pil``
elsewhere (the ImageNet experiments). Only JPEGs (RGB or grayscale, 3-channel models) take the
torchvision decoder; any other image (PNG, CMYK JPEGs, images already decoded by the data set,
1-channel models) is decoded by PIL exactly as ``pil`` does, then resized on tensors.

The decoded pixels are not bit-identical to PIL's in general (nvJPEG's IDCT and chroma upsampling
differ from libjpeg-turbo's; torch's antialiased resize rounds differently from Pillow's on ~0.4 % of
the pixels, by one level, measured): the decoder is part of the
benchmark's identity (:func:`decoder_of`, the run plan's ``decoder``), and
``tests/test_decode.py`` measures the agreement (docs/performance.md).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from sagebench.data.spec import check_decode  # data.decode's values are declared with the spec
from sagebench.errors import DataError

#: A JPEG file starts with the SOI marker and the first segment's marker.
_JPEG_MAGIC = b"\xff\xd8\xff"
#: timm interpolation names the tensor resize reproduces with PIL's kernels (antialiased); PIL's nearest
#: samples other pixels than torch's, and box / hamming / lanczos have no tensor kernel here.
_TENSOR_INTERPOLATIONS = ("bilinear", "bicubic")
_EXIF_ORIENTATION = 0x0112


def decode_device(decode: str, device_type: str) -> str | None:
    """Where ``data.decode`` decodes on a run on ``device_type``: ``None`` (PIL), ``"cpu"`` or ``"cuda"``."""
    check_decode(decode)
    on_cuda = device_type == "cuda"
    if decode == "pil" or (decode == "auto" and not on_cuda):
        return None
    return "cuda" if on_cuda else "cpu"


def decoder_name(decode: str, device_type: str) -> str:
    """The decoder a run on ``device_type`` uses for ``data.decode``, as its identity records it:
    ``pil`` | ``tensor:cpu`` | ``tensor:cuda``."""
    where = decode_device(decode, device_type)
    return "pil" if where is None else f"tensor:{where}"


def decoder_of(dataset: Any) -> str:
    """The decoder ``dataset`` was built with, named as by :func:`decoder_name` (``pil`` for PIL transforms)."""
    transform = getattr(dataset, "transform", None)
    if isinstance(transform, TensorTransform):
        return decoder_name("tensor", "cuda" if transform.on_device else "cpu")
    return "pil"


@dataclass(frozen=True)
class TensorView:
    """timm's evaluation transform (resize shorter side, centre crop, normalise) as numbers, for tensors."""

    resize: int  # the shorter side after resizing: floor(crop / crop_pct)
    crop_size: tuple[int, int]  # (height, width)
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int

    @classmethod
    def of(cls, data_config: dict[str, Any]) -> TensorView:
        """The view of a resolved timm data config; refuses what the tensor path does not reproduce."""
        import math

        channels, height, width = (int(v) for v in data_config["input_size"])
        crop_mode = data_config.get("crop_mode") or "center"
        interpolation = str(data_config.get("interpolation") or "bilinear")
        crop_pct = float(data_config.get("crop_pct") or 0.875)  # timm's default when unset
        if crop_mode != "center" or height != width or interpolation not in _TENSOR_INTERPOLATIONS:
            raise DataError(
                f"data.decode=tensor reproduces timm's centre crop of a square input with {', '.join(_TENSOR_INTERPOLATIONS)} "
                f"interpolation; this view has crop_mode {crop_mode!r}, input {height}x{width}, interpolation "
                f"{interpolation!r}. Use data.decode=pil for it.")
        return cls(resize=math.floor(height / crop_pct), crop_size=(height, width), interpolation=interpolation,
                   mean=tuple(float(m) for m in data_config["mean"]),
                   std=tuple(float(s) for s in data_config["std"]), channels=channels)

    def crop(self, pixels: torch.Tensor) -> torch.Tensor:
        """The resized, centre-cropped 8-bit pixels (C x H x W uint8) of 8-bit pixels of any size, on any device:
        torchvision's ``Resize(shorter side)`` (antialiased; uint8 on the CPU, float rounded back to uint8 on
        CUDA) and ``CenterCrop``, as timm's transform calls them."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        pixels = F.resize(pixels, [self.resize], interpolation=InterpolationMode(self.interpolation), antialias=True)
        return F.center_crop(pixels, list(self.crop_size))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Model input from cropped 8-bit pixels (one image or a batch): ``to_tensor``'s ``/ 255``, then
        ``Normalize``'s ``sub_(mean).div_(std)``; element by element, so a batch equals its images one by one."""
        out = pixels.to(torch.float32).div(255)
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=out.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=out.device).view(-1, 1, 1)
        return out.sub_(mean).div_(std)

    def finish(self, pixels: torch.Tensor) -> torch.Tensor:
        """Model input (float32, C x H x W) from 8-bit pixels (C x h x w, uint8) on any device."""
        return self.normalize(self.crop(pixels))


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """A PIL image in the model's mode as a C x H x W uint8 tensor (what ``to_tensor`` reads, before ``/ 255``)."""
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _jpeg_bytes(value: Any) -> tuple[bytes | None, bool]:
    """``(bytes, exif_applies)`` when ``value`` is an encoded JPEG the tensor decoder may read, else ``(None, _)``.

    ``exif_applies``: the data set's own decoder (``datasets.Image``, for ``{"bytes", "path"}`` rows)
    turns the image by its EXIF orientation; raw ``bytes`` rows are read by PIL as they are.
    """
    raw: bytes | None = None
    exif = False
    if isinstance(value, dict):
        exif = True
        raw = value.get("bytes")
        path = value.get("path")
        if raw is None and isinstance(path, str) and "://" not in path and "::" not in path:
            try:
                with open(path, "rb") as fh:
                    raw = fh.read()
            except OSError:
                return None, exif  # the PIL path reports the missing file as it always has
    elif isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    if raw is None or not raw.startswith(_JPEG_MAGIC):
        return None, exif
    return raw, exif


def _tensor_decodable(raw: bytes, exif: bool) -> tuple[bool, bool]:
    """``(decodable, turn)``: whether torchvision's decoder gives the pixels PIL's conversion would
    (an RGB or grayscale JPEG), and whether an EXIF orientation must be applied. Reads the header only."""
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.format != "JPEG" or img.mode not in ("RGB", "L"):
                return False, False
            turn = exif and img.getexif().get(_EXIF_ORIENTATION) not in (None, 1)
            return True, turn
    except Exception:  # unreadable header: the PIL path reports it, with the image's index
        return False, False


class TensorTransform:
    """The worker side of ``data.decode=tensor``: JPEG bytes in, model input (or the encoded bytes) out.

    ``on_device=False``: every item leaves the worker as model input (float32 C x H x W), JPEGs
    decoded by torchvision on the CPU. ``on_device=True`` (a CUDA run): JPEGs the device can decode
    leave as their encoded bytes (a 1-D uint8 tensor), decoded with the rest of the batch on the
    device by :func:`decode_batch`; anything else leaves as model input. Called on a PIL image (an
    image the data set decoded, or a placeholder) it is PIL's conversion and the tensor resize.
    """

    encoded_output = True

    def __init__(self, data_config: dict[str, Any], *, on_device: bool = False) -> None:
        self.view = TensorView.of(data_config)
        self.on_device = bool(on_device)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.view.finish(pil_to_uint8(img))

    def decode(self, value: Any, where: str) -> torch.Tensor | None:
        """Model input (or, on device, the JPEG's bytes) of a data set row's image value; ``None`` when
        the tensor decoder does not read it (the caller decodes it with PIL, as ``data.decode=pil`` does,
        and calls this transform on the PIL image)."""
        raw, exif = _jpeg_bytes(value) if self.view.channels == 3 else (None, False)
        decodable, turn = _tensor_decodable(raw, exif) if raw is not None else (False, False)
        if not decodable:
            return None
        encoded = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        if self.on_device and not turn:
            return encoded
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            pixels = decode_jpeg(encoded, mode=ImageReadMode.RGB, apply_exif_orientation=turn)
        except RuntimeError as exc:
            raise DataError(
                f"{where} cannot be decoded as an image (RuntimeError: {exc}); the file is corrupt or not an "
                "image. Repair or remove it, or set data.on_error=skip to skip such images (they are counted "
                "and listed in the results).") from exc
        return self.view.finish(pixels)


@dataclass
class EncodedBatch:
    """A batch's images as the workers left them for the device: JPEG bytes (1-D uint8) or model input."""

    items: list[torch.Tensor]
    view: TensorView
    on_error: str = "fail"

    def __len__(self) -> int:
        return len(self.items)


class EncodedCollate:
    """The DataLoader's ``collate_fn`` for on-device decoding: images kept as a list, labels and ids stacked."""

    def __init__(self, view: TensorView, on_error: str = "fail") -> None:
        self.view = view
        self.on_error = on_error

    def __call__(self, items: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> tuple[Any, ...]:
        images, labels, ids = zip(*items)
        return EncodedBatch(list(images), self.view, self.on_error), torch.stack(labels), torch.stack(ids)


def collate_for(dataset: Any) -> EncodedCollate | None:
    """The ``collate_fn`` ``dataset`` needs (None: the default), looking through :class:`PaddedView`."""
    inner = getattr(dataset, "dataset", None) if not hasattr(dataset, "transform") else dataset
    transform = getattr(inner, "transform", None)
    if isinstance(transform, TensorTransform) and transform.on_device:
        return EncodedCollate(transform.view, getattr(inner, "on_error", "fail"))
    return None


def decode_batch(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with its :class:`EncodedBatch` decoded on ``device`` into model input (B x C x H x W).

    Other batches are returned as they are. The JPEGs go to ``torchvision.io.decode_jpeg`` as one list
    (nvJPEG's batched decode on CUDA); should that fail, each is decoded alone, on the device, then on
    the CPU, and one that no decoder reads is a :class:`DataError` or, under ``data.on_error=skip``,
    a skipped image (label -1, negative sample id: no model sees it).
    """
    if not (isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], EncodedBatch)):
        return batch
    from torchvision.io import ImageReadMode, decode_jpeg

    from sagebench.data.images import skipped_sample_id

    encoded, labels, ids = batch[0], batch[1].clone(), batch[2].clone()
    device = torch.device(device)
    jpegs = [k for k, item in enumerate(encoded.items) if item.dim() == 1]
    decoded: dict[int, torch.Tensor | None] = {}
    if jpegs:
        try:
            out = decode_jpeg([encoded.items[k] for k in jpegs], mode=ImageReadMode.RGB, device=device)
            decoded = dict(zip(jpegs, out))
        except RuntimeError:
            for k in jpegs:
                decoded[k] = None
                for where in (device, torch.device("cpu")):
                    try:
                        decoded[k] = decode_jpeg(encoded.items[k], mode=ImageReadMode.RGB, device=where).to(device)
                        break
                    except RuntimeError:
                        continue
    out = torch.empty(len(encoded), encoded.view.channels, *encoded.view.crop_size, device=device)
    crops: dict[int, torch.Tensor] = {}
    for k, item in enumerate(encoded.items):
        if item.dim() != 1:  # model input already (decoded in the worker)
            out[k] = item.to(device, non_blocking=True)
            continue
        pixels = decoded.get(k)
        if pixels is None:
            sample = int(ids[k])
            if encoded.on_error != "skip":
                raise DataError(f"Image {sample} cannot be decoded as a JPEG on {device.type} or on the CPU; the file "
                                "is corrupt. Repair or remove it, or set data.on_error=skip to skip such images.")
            labels[k], ids[k] = -1, skipped_sample_id(sample)
            out[k] = 0
            continue
        crops[k] = encoded.view.crop(pixels)
    if crops:  # one normalisation for the batch: element by element, the same numbers as image by image
        index = torch.tensor(list(crops), device=device)
        out[index] = encoded.view.normalize(torch.stack(list(crops.values())))
    return out, labels.to(device, non_blocking=True), ids.to(device, non_blocking=True)
