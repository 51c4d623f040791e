"""Shared fixtures: tiny timm ViTs and a tiny image data set made on the spot (no downloads)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# What `import sagebench` sets for users, needed here because torch is imported below before sagebench
# (sagebench.runtime.speed): OpenMP threads that sleep when they wait. Spinning ones made tiny sweeps
# 3-10x slower on a shared 2-core machine (29 images in batches of 4: 17 CPU s, 50 s wall; 1.5 and 4 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import timm
import torch
from helpers import draw_no_figures, tiny_vit  # noqa: F401

import sagebench.demo.models  # noqa: F401


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


@pytest.fixture
def no_figures(monkeypatch):
    """A run draws no figures (curves.png, latency.png, overlays.png; W&B, when on, still logs the rest).

    Why: drawing them is about 80% of a tiny ``evaluate()`` (5 of 6 s for 24 images on a busy
    2-core machine). For tests that check records and results, never the figures: those are
    checked on ``small_run`` (tests/test_tracking.py) and by the tests that look at their own run's
    figures, which do not use this fixture.
    """
    draw_no_figures(monkeypatch)


@pytest.fixture(scope="session")
def random_demo_checkpoints(tmp_path_factory):
    """Random-init safetensors of the demo edge/server architectures (no trained weights needed)."""
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for role in ("edge", "server"):
        torch.manual_seed(1 if role == "edge" else 2)
        model = timm.create_model(f"sagebench_fmnist_{role}", pretrained=False)
        paths[role] = str(out / f"{role}.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, paths[role])
    return paths


@pytest.fixture(scope="session")
def random_models_overrides(random_demo_checkpoints):
    """Dotlist overrides that run the Fashion-MNIST embedded data with random-init models, quietly.

    (The default benchmark is CIFAR-10; these tests pin the smaller, faster Fashion-MNIST one, the
    same keys as ``conf/experiment/fmnist.yaml``.)"""
    return ["benchmark=fmnist-embedded", "data.path=${asset:demo/fashion_mnist_test.parquet}",
            "model.edge.name=sagebench_fmnist_edge", "model.server.name=sagebench_fmnist_server",
            "budgets=[4,8,12,16,24]", "batch_size=500",
            f"model.edge.checkpoint={random_demo_checkpoints['edge']}",
            f"model.server.checkpoint={random_demo_checkpoints['server']}",
            "progress=false", "data.num_workers=0", "logger=none"]


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, random_models_overrides):
    """One tiny run of the embedded benchmark with random models (60 images, B in {4, 8}), W&B offline.

    Returns ``(run_dir, results)``; shared by the tracking and leaderboard tests.
    """
    from sagebench.config import load_config
    from sagebench.sweep.evaluate import evaluate

    out = tmp_path_factory.mktemp("small_run") / "run"
    cfg = load_config(None, [*random_models_overrides, "data.limit=60", "budgets=[4,8]", f"output_dir={out}",
                             "logger=wandb", "wandb.name=small-run", "wandb.tags=[test]"])
    return out, evaluate(cfg)
