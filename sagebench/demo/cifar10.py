"""CIFAR-10 (real 32x32 RGB photos, 10 classes) for the default embedded benchmark.

Why a parquet of JPEG bytes: the shipped test split is the Hugging Face parquet of a public
mirror that stores every image as a JPEG file (quality 75); the bytes are kept as they are, so
what the benchmark decodes is exactly what the mirror serves. Users with internet can train on
(or evaluate) the hub copy ``uoft-cs/cifar10`` instead, whose pixels are the original lossless
ones: that is a *different* benchmark (other pixels), which the results' fingerprint tells apart.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from sagebench.errors import DataError

HUB_NAME = "uoft-cs/cifar10"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _decode_parquet(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq
    from PIL import Image

    table = pq.read_table(path)
    if table.num_rows == 0:
        raise DataError(f"{path} holds no rows")
    image_col = "image" if "image" in table.column_names else "img"
    if image_col not in table.column_names or "label" not in table.column_names:
        raise DataError(f"{path} has columns {table.column_names}; expected image (or img) and label")
    images = []
    for cell in table.column(image_col).to_pylist():
        data = cell["bytes"] if isinstance(cell, dict) else cell
        with Image.open(io.BytesIO(data)) as img:
            images.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
    labels = np.asarray(table.column("label").to_pylist(), dtype=np.int64)
    return np.stack(images), labels


def load_split(split: str, data_path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[n, 32, 32, 3]`` uint8 and labels ``[n]`` int64 of one split ("train" or "test").

    ``data_path`` is a folder holding ``<split>.parquet`` (e.g. ``../shared/data/cifar10``) or,
    when None, the hub copy ``uoft-cs/cifar10`` (needs internet or a filled cache).
    """
    if data_path is not None:
        path = Path(data_path)
        file = path / f"{split}.parquet" if path.is_dir() else path
        if not file.is_file():
            raise DataError(f"no CIFAR-10 {split} split at {file}: pass --data-path DIR holding {split}.parquet")
        return _decode_parquet(file)
    try:
        import datasets

        ds = datasets.load_dataset(HUB_NAME, split=split)
    except Exception as exc:  # network, auth, missing package
        raise DataError(
            f"the hub copy {HUB_NAME!r} could not be loaded ({type(exc).__name__}: {exc}); "
            "pass --data-path DIR holding train.parquet / test.parquet"
        ) from exc
    images = np.stack([np.asarray(img.convert("RGB"), dtype=np.uint8) for img in ds["img"]])
    return images, np.asarray(ds["label"], dtype=np.int64)
