"""Shared fixtures: tiny timm ViTs and a tiny image data set made on the spot (no downloads)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import numpy as np
import pytest
import timm
import torch

import sagebench.demo.models  # noqa: F401
from helpers import tiny_vit  # noqa: F401


@pytest.fixture
def tiny_parquet(tmp_path):
    """A 13-image RGB parquet data set (odd count on purpose) with ClassLabel labels 0..9."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)) for _ in range(13)]
    labels = [int(x) for x in rng.integers(0, 10, 13)]
    feats = datasets.Features({"image": datasets.Image(),
                               "label": datasets.ClassLabel(names=[f"c{i}" for i in range(10)])})
    path = tmp_path / "tiny.parquet"
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=feats).to_parquet(str(path))
    return path
