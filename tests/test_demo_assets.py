"""The embedded benchmarks' shipped assets: real data, trained weights that meet their targets, small.

Spec: Fashion-MNIST: server >= 89%, edge >= 84% and below the server. CIFAR-10 (the default,
issue 15): server >= 75%, edge at least 8 points below it, the min-entropy gate at eta = 1.0
offloads 25-50% of the 10,000 test images (>= 2,500). Every accuracy is recomputed from the shipped
weights on the shipped test split, and must equal the one recorded beside the weights. All shipped
data and weights together stay under 25 MB.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import timm
import torch
from PIL import Image

import sagebench.demo.models  # noqa: F401  (registers the demo models)
from sagebench import demo
from sagebench.demo.cifar10 import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from sagebench.demo.models import FMNIST_CLASSES, FMNIST_MEAN, FMNIST_STD
from sagebench.gates import offload_min_entropy

BENCHMARKS = {
    "fmnist": dict(data=demo.DATA_FILE, prefix="sagebench_fmnist", mean=FMNIST_MEAN, std=FMNIST_STD,
                   json="{role}_training.json", classes=FMNIST_CLASSES),
    "cifar10": dict(data=demo.CIFAR10_FILE, prefix="sagebench_cifar10", mean=CIFAR10_MEAN, std=CIFAR10_STD,
                    json="cifar10_{role}_training.json", classes=CIFAR10_CLASSES),
}


def _split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    table = pq.read_table(BENCHMARKS[name]["data"])
    images = np.stack([np.asarray(Image.open(io.BytesIO(c["bytes"]))) for c in table.column("image").to_pylist()])
    return torch.from_numpy(images), torch.tensor(table.column("label").to_pylist())


@pytest.fixture(scope="module")
def logits():
    """Edge and server logits of every benchmark's full test split, from the shipped weights."""
    out = {}
    for name, spec in BENCHMARKS.items():
        images, labels = _split(name)
        x = images.float().div(255.0)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        x = (x - torch.tensor(spec["mean"]).view(1, -1, 1, 1)) / torch.tensor(spec["std"]).view(1, -1, 1, 1)
        for role in ("edge", "server"):
            model = timm.create_model(f"{spec['prefix']}_{role}", pretrained=True).eval()
            with torch.inference_mode():
                out[name, role] = torch.cat([model(x[i:i + 1000]) for i in range(0, len(x), 1000)])
        out[name, "labels"] = labels
    return out


def _accuracy(logits, name, role) -> float:
    return float((logits[name, role].argmax(-1) == logits[name, "labels"]).float().mean())


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHMARKS)
def test_the_shipped_weights_give_the_accuracies_they_record(logits, name):
    for role in ("edge", "server"):
        recorded = json.loads((demo.DEMO_DIR / BENCHMARKS[name]["json"].format(role=role)).read_text())
        assert _accuracy(logits, name, role) == pytest.approx(recorded["test_accuracy"], abs=1e-3)


@pytest.mark.slow
def test_fmnist_meets_its_targets(logits):
    edge, server = _accuracy(logits, "fmnist", "edge"), _accuracy(logits, "fmnist", "server")
    assert server >= 0.89 and edge >= 0.84 and edge < server


@pytest.mark.slow
def test_cifar10_meets_the_papers_operating_point(logits):
    edge, server = _accuracy(logits, "cifar10", "edge"), _accuracy(logits, "cifar10", "server")
    assert server >= 0.75 and edge <= server - 0.08
    offloaded = int(offload_min_entropy(logits["cifar10", "edge"], 1.0).sum())
    assert 2500 <= offloaded <= 5000, f"{offloaded} of 10,000 offloaded at eta = 1.0"


def test_the_cifar10_file_is_10000_rgb_photos_of_10_named_classes():
    import datasets

    ds = datasets.Dataset.from_parquet(str(demo.CIFAR10_FILE))
    assert len(ds) == 10_000
    assert ds.features["label"].names == list(CIFAR10_CLASSES)
    first = ds[0]["image"]
    assert first.mode == "RGB" and first.size == (32, 32)
    assert np.bincount(ds["label"]).tolist() == [1000] * 10
    assert ds.features["label"].names and BENCHMARKS["fmnist"]["classes"] == FMNIST_CLASSES


def test_the_shipped_assets_fit_in_25_mb():
    files = [demo.DATA_FILE, demo.EDGE_WEIGHTS, demo.SERVER_WEIGHTS,
             demo.CIFAR10_FILE, demo.CIFAR10_EDGE_WEIGHTS, demo.CIFAR10_SERVER_WEIGHTS]
    assert sum(p.stat().st_size for p in files) <= 25 * 1024 * 1024
