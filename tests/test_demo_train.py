"""`sagebench train-demo`: the recipe that trains the embedded benchmarks' ViTs, and the data it reads.

The Fashion-MNIST IDX reader and its parquet export, the CIFAR-10 parquet reader, and the
recipe's parts (normalisation, augmentation, learning-rate schedule, one training step) on tiny
tensors, and the command itself for one epoch on a 16-image IDX split made here (one step: about
a second). The shipped weights' accuracies are checked in tests/test_demo_assets.py (slow).
"""

from __future__ import annotations

import gzip
import json
import struct
import warnings
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import small_world  # noqa: F401  (autouse: one thread, tmp datasets cache)
from PIL import Image

from sagebench.demo import cifar10, fashion_mnist
from sagebench.demo.models import FMNIST_CLASSES
from sagebench.demo.train import BENCHMARKS, DemoClassifier, TrainRecipe, _augment, _normalise
from sagebench.errors import DataError

IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def write_idx(path: Path, array: np.ndarray, dtype_code: int = 0x08) -> None:
    """An IDX file as Fashion-MNIST ships them: a magic (0, dtype, ndim), the sizes, then the bytes; gzipped."""
    header = struct.pack(">HBB", 0, dtype_code, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def idx_split(folder: Path, split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / IDX_FILES[split][0], images)
    write_idx(folder / IDX_FILES[split][1], labels)
    return images, labels


# -- the data the recipe reads ------------------------------------------------------------------


def test_fashion_mnist_reads_idx_files_and_exports_a_classlabel_parquet(tmp_path):
    images, labels = idx_split(tmp_path / "idx", "test", 5)
    got_images, got_labels = fashion_mnist.load_split("test", tmp_path / "idx")
    assert np.array_equal(got_images, images) and got_images.dtype == np.uint8
    assert got_labels.tolist() == labels.tolist() and got_labels.dtype == np.int64

    path = fashion_mnist.export_parquet(got_images, got_labels, tmp_path / "out" / "test.parquet")
    ds = datasets.Dataset.from_parquet(str(path))
    assert ds.features["label"].names == list(FMNIST_CLASSES)
    assert ds["label"] == labels.tolist()
    assert all(np.array_equal(np.asarray(img), want) and img.mode == "L" for img, want in zip(ds["image"], images))

    write_idx(tmp_path / "idx" / IDX_FILES["test"][0], images, dtype_code=0x0D)  # float32, not unsigned bytes
    with pytest.raises(DataError, match="is not an unsigned-byte IDX file"):
        fashion_mnist.load_split("test", tmp_path / "idx")


def _image_parquet(path: Path, images: list[Image.Image], labels: list[int], column: str = "image") -> Path:
    feats = datasets.Features({column: datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({column: images, "label": labels}, features=feats).to_parquet(str(path))
    return path


def test_cifar10_reads_a_parquet_of_image_bytes_as_rgb_arrays(tmp_path):
    """The split is ``<folder>/<split>.parquet`` (or the file itself), images under ``image`` or ``img``
    (the hub copy's name), decoded to RGB uint8; anything else is a DataError saying what was expected."""
    rng = np.random.default_rng(1)
    rgb = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    gray = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    folder = tmp_path / "cifar"
    folder.mkdir()
    _image_parquet(folder / "test.parquet", [Image.fromarray(a) for a in rgb] + [Image.fromarray(gray)], [3, 0, 9],
                   column="img")
    images, labels = cifar10.load_split("test", folder)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8 and labels.tolist() == [3, 0, 9]
    assert np.array_equal(images[0], rgb[0]) and np.array_equal(images[1], rgb[1])  # PNG: lossless
    assert all(np.array_equal(images[2][..., c], gray) for c in range(3))  # gray -> RGB
    assert np.array_equal(cifar10.load_split("test", folder / "test.parquet")[0], images)

    with pytest.raises(DataError, match="no CIFAR-10 train split"):
        cifar10.load_split("train", folder)
    empty = _image_parquet(tmp_path / "empty.parquet", [], [])
    with pytest.raises(DataError, match="holds no rows"):
        cifar10.load_split("test", empty)
    pq.write_table(pq.read_table(folder / "test.parquet").rename_columns(["picture", "label"]), tmp_path / "odd.parquet")
    with pytest.raises(DataError, match=r"expected image \(or img\) and label"):
        cifar10.load_split("test", tmp_path / "odd.parquet")


# -- the recipe's parts ---------------------------------------------------------------------------


def test_normalise_puts_channels_first_and_standardises():
    gray = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)  # [1, 2, 2]
    x = _normalise(gray, (0.5,), (0.25,))
    assert x.shape == (1, 1, 2, 2)
    assert torch.allclose(x[0, 0], (gray[0].float() / 255 - 0.5) / 0.25)
    rgb = torch.arange(2 * 2 * 2 * 3, dtype=torch.uint8).reshape(2, 2, 2, 3)  # [n, H, W, C]
    y = _normalise(rgb, (0.1, 0.2, 0.3), (1.0, 2.0, 4.0))
    assert y.shape == (2, 3, 2, 2)
    for c, (m, s) in enumerate(zip((0.1, 0.2, 0.3), (1.0, 2.0, 4.0))):
        assert torch.allclose(y[:, c], (rgb[..., c].float() / 255 - m) / s)


def test_augment_flips_and_shifts_in_whole_pixels_padding_with_the_background():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    flipped_or_not = _augment(x, torch.zeros(1, 1, 1, 1), max_shift=0)
    for out, orig in zip(flipped_or_not, x):
        assert torch.equal(out, orig) or torch.equal(out, orig.flip(-1))
    assert any(torch.equal(o, i.flip(-1)) for o, i in zip(flipped_or_not, x)), "16 images, none flipped"
    background = torch.full((1, 1, 1, 1), -0.7)
    assert torch.allclose(_augment(torch.full((4, 1, 8, 8), -0.7), background, max_shift=2), background.expand(4, 1, 8, 8))
    shifted = _augment(x, background, max_shift=2)
    for out, orig in zip(shifted, x):  # every output pixel is an input pixel or the background (nearest, no blur)
        candidates = torch.cat([orig.flatten(), torch.tensor([-0.7])])
        assert (out.flatten()[:, None] - candidates[None]).abs().min(dim=1).values.max() < 1e-5
    assert not torch.allclose(shifted, x) and not torch.allclose(shifted, x.flip(-1))


def test_the_schedule_warms_up_then_decays_to_zero_and_biases_norms_and_positions_do_not_decay():
    recipe = TrainRecipe(model="sagebench_fmnist_edge", epochs=3, warmup_epochs=1.0, lr=1e-3, weight_decay=0.05)
    module = DemoClassifier(recipe, steps_per_epoch=4, bench=BENCHMARKS["fmnist"])
    opt = module.configure_optimizers()
    schedule = opt["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]  # warm-up: 1 epoch of 4 steps
    assert schedule(4) == 1.0 and schedule(8) == pytest.approx(0.5) and schedule(12) == pytest.approx(0.0)
    decay, no_decay = opt["optimizer"].param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert all(p.ndim > 1 and "pos_embed" not in names[id(p)] for p in decay["params"])
    assert all(p.ndim == 1 or names[id(p)] == "pos_embed" for p in no_decay["params"])
    assert {"pos_embed", "head.bias", "norm.weight"} <= {names[id(p)] for p in no_decay["params"]}


def test_one_training_step_of_the_augmented_recipe_gives_a_finite_loss_and_gradients():
    recipe = BENCHMARKS["fmnist"].recipes["server"]
    assert recipe.augment  # the path with shifts and flips
    module = DemoClassifier(recipe, steps_per_epoch=1, bench=BENCHMARKS["fmnist"])
    images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    with warnings.catch_warnings():  # no Trainer here: Lightning warns that self.log has nowhere to go
        warnings.simplefilter("ignore")
        loss = module.training_step((images, torch.tensor([0, 1, 2, 3])), 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.model.parameters())


# -- the command ----------------------------------------------------------------------------------


def test_train_demo_on_a_tiny_split_writes_weights_that_load_and_a_summary(tmp_path, capsys):
    import timm
    from safetensors.torch import load_file

    from sagebench.cli import main

    idx_split(tmp_path / "idx", "train", 16, seed=1)
    idx_split(tmp_path / "idx", "test", 8, seed=2)
    out = tmp_path / "out"
    assert main(["train-demo", "--benchmark", "fmnist", "--data-dir", str(tmp_path / "idx"), "--out", str(out),
                 "--roles", "server", "--epochs", "1", "--seed", "3"]) == 0
    assert "server: test accuracy" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["fashion_mnist_test.parquet", "server.safetensors",
                                                     "server_training.json"]  # no .partial file left
    model = timm.create_model("sagebench_fmnist_server", pretrained=False)
    model.load_state_dict(load_file(out / "server.safetensors"), strict=True)
    summary = json.loads((out / "server_training.json").read_text())
    assert summary["role"] == "server" and summary["benchmark"] == "fmnist" and summary["weights"] == "server.safetensors"
    assert summary["recipe"]["epochs"] == 1 and summary["recipe"]["seed"] == 3 and summary["recipe"]["augment"]
    assert summary["test_accuracy"] in {k / 8 for k in range(9)}  # a share of the 8 test images
    assert summary["num_parameters"] == sum(p.numel() for p in model.state_dict().values())
    exported = datasets.Dataset.from_parquet(str(out / "fashion_mnist_test.parquet"))
    assert len(exported) == 8 and np.asarray(exported[0]["image"]).shape == (28, 28)
