"""Natural-looking JPEGs of ImageNet's sizes, made on the spot: for decoder tests and the GPU check.

Why: the decode paths (:mod:`sagebench.data.decode`) must be compared, and the GPU check timed, on
photos of ImageNet's shapes and JPEG statistics without downloading ImageNet. A "photo" here is
smooth colour gradients, a few flat-coloured discs (edges: where resizing and chroma subsampling
differ most) and sensor-like noise, at ImageNet's typical sizes (shorter side 240-500, aspect
3:4 to 16:9, both orientations) and JPEG qualities (75-95, 4:2:0), a few of them grayscale.
Their files are 20-140 kB (70 kB on average; ImageNet val's average ~110 kB, so entropy decoding
costs somewhat less here than on ImageNet).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def photo(rng: np.random.Generator, height: int, width: int, *, gray: bool = False) -> Image.Image:
    """One synthetic photo (RGB, or L when ``gray``) of ``height`` x ``width`` pixels."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    for c in range(3):
        a, b, phase = rng.uniform(-1, 1, 3)
        img[..., c] = 128 + 60 * np.sin(a * x / 37 + b * y / 53 + phase) + 40 * np.cos((x * b - y * a) / 91)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(10, min(height, width) / 3)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 14, img.shape).astype(np.float32)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return out.convert("L") if gray else out


def jpeg_bytes(rng: np.random.Generator) -> bytes:
    """One encoded synthetic photo at an ImageNet-like size, aspect ratio and quality."""
    short = int(rng.integers(240, 501))
    long = int(short * rng.uniform(1.0, 16 / 9))
    height, width = (short, long) if rng.random() < 0.75 else (long, short)  # mostly landscape
    buf = io.BytesIO()
    photo(rng, height, width, gray=rng.random() < 0.03).save(buf, "JPEG", quality=int(rng.integers(75, 96)))
    return buf.getvalue()


def _chunk(args: tuple[int, int]) -> list[bytes]:
    seed, count = args
    rng = np.random.default_rng(seed)
    return [jpeg_bytes(rng) for _ in range(count)]


def jpeg_parquet(path: str | Path, num_images: int, *, seed: int = 0, num_classes: int = 1000,
                 processes: int = 1) -> Path:
    """A parquet data set of ``num_images`` synthetic JPEGs (``image`` as ``{"bytes", "path"}``, as ImageNet's
    hub copy stores them; ``label`` an unnamed integer in ``[0, num_classes)``, so that no label names are
    matched against a model's classes); made in ``processes`` processes."""
    import datasets

    chunks = [(seed * 1_000_003 + k, n) for k, n in enumerate(np.diff(np.linspace(0, num_images, 64 + 1).astype(int)))
              if n > 0]
    if processes > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(processes) as pool:
            parts = list(pool.map(_chunk, chunks))
    else:
        parts = [_chunk(c) for c in chunks]
    images = [{"bytes": b, "path": None} for part in parts for b in part]
    labels = np.random.default_rng(seed).integers(0, num_classes, num_images).tolist()
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    path = Path(path)
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(str(path))
    return path
