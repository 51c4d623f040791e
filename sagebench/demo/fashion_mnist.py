"""Fashion-MNIST from its original IDX files (Debian's ``dataset-fashion-mnist``) or the hub.

Why IDX first: the files are a Debian package (``apt-get install dataset-fashion-mnist``), so
training the demo models needs no network. Users with internet can use the hub copy
``zalando-datasets/fashion_mnist`` instead.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from sagebench.errors import DataError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HUB_NAME = "zalando-datasets/fashion_mnist"
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(split: str, data_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[n, 28, 28]`` uint8 and labels ``[n]`` int64 of one split ("train" or "test")."""
    data_dir = Path(data_dir) if data_dir is not None else DEBIAN_DIR
    images_name, labels_name = _FILES[split]
    if (data_dir / images_name).is_file():
        images = _read_idx(data_dir / images_name)
        labels = _read_idx(data_dir / labels_name).astype(np.int64)
        return images, labels
    try:
        import datasets

        ds = datasets.load_dataset(HUB_NAME, split=split)
    except Exception as exc:  # network, auth, missing package
        raise DataError(
            f"Fashion-MNIST not found under {data_dir} and the hub copy {HUB_NAME!r} could not be "
            f"loaded ({type(exc).__name__}: {exc}). Install the IDX files with "
            "`apt-get install dataset-fashion-mnist` or pass --data-dir DIR."
        ) from exc
    images = np.stack([np.asarray(img, dtype=np.uint8) for img in ds["image"]])
    return images, np.asarray(ds["label"], dtype=np.int64)


def export_parquet(images: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """Write images and labels as a Hugging Face ``datasets`` parquet file (PNG bytes, ClassLabel)."""
    import datasets
    from PIL import Image

    from sagebench.demo.models import FMNIST_CLASSES

    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(FMNIST_CLASSES)),
    })
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(img, mode="L") for img in images], "label": labels.tolist()},
        features=features,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path
