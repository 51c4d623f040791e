"""The recipe that trains the embedded benchmarks' edge and server ViTs (`sagebench train-demo`).

A Lightning fit on a benchmark's training split, evaluated on its test split (the benchmark's
data): ``cifar10`` (50,000 / 10,000 RGB photos, the default benchmark) or ``fmnist``
(Fashion-MNIST, 60,000 / 10,000). Reproducible: the same seed gives the same weights on the same
machine and library versions (``deterministic=True``). Augmentation (random integer shifts and
horizontal flips) runs batched on tensors.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset

import sagebench.demo.models  # noqa: F401  (registers the demo models with timm)
from sagebench.demo import DEMO_DIR, cifar10, fashion_mnist
from sagebench.demo.models import FMNIST_MEAN, FMNIST_STD


@dataclass
class TrainRecipe:
    model: str
    epochs: int
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 256
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    augment: bool = False
    max_shift: int = 2
    precision: str = "32-true"
    seed: int = 0


@dataclass(frozen=True)
class DemoBenchmark:
    """What the recipe needs of one embedded benchmark: its data, normalisation and recipes."""

    name: str
    load_split: Callable[[str, Path | None], tuple[np.ndarray, np.ndarray]]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    recipes: dict[str, TrainRecipe]
    test_file: str
    weight_files: dict[str, str]
    background: str  # "mean": pad shifted images with the mean colour; "min": with black


BENCHMARKS = {
    "fmnist": DemoBenchmark(
        name="fmnist", load_split=fashion_mnist.load_split, mean=FMNIST_MEAN, std=FMNIST_STD,
        recipes={
            # Measured on 3 epochs of the edge: no augmentation and no label smoothing trains faster
            # (83.6% vs 77.2%) at this short schedule, and the benchmark needs a short CPU recipe.
            "edge": TrainRecipe(model="sagebench_fmnist_edge", epochs=10, lr=3e-3),
            # 15 epochs without augmentation reached 88.6%: the server overfits, so it trains longer with
            # random shifts and flips (the embedded benchmark asks >= 89% of its server).
            "server": TrainRecipe(model="sagebench_fmnist_server", epochs=22, lr=2e-3, augment=True),
        },
        test_file="fashion_mnist_test.parquet",
        weight_files={"edge": "edge.safetensors", "server": "server.safetensors"},
        background="min",
    ),
    "cifar10": DemoBenchmark(
        name="cifar10", load_split=cifar10.load_split, mean=cifar10.CIFAR10_MEAN, std=cifar10.CIFAR10_STD,
        recipes={
            # A short schedule without augmentation: the edge is meant to be unsure on a good share
            # of the photos (the paper's edge is ~72% on ImageNet and offloads 36% at eta 1.0).
            # Label smoothing: without it the same 8 epochs gave 64.8% and offloaded only ~25% at
            # eta 1.0 (over-confident); smoothing lowers the top softmax of the unsure images.
            "edge": TrainRecipe(model="sagebench_cifar10_edge", epochs=8, lr=2e-3, batch_size=128,
                                label_smoothing=0.1),
            # Shifts of up to 4 px and flips (the standard CIFAR crop-and-flip), label smoothing,
            # bf16 autocast on the CPU (1.4x faster per step on AVX-512 BF16 cores than fp32).
            "server": TrainRecipe(model="sagebench_cifar10_server", epochs=24, lr=1e-3, batch_size=128,
                                  warmup_epochs=2.0, label_smoothing=0.1, augment=True, max_shift=4,
                                  precision="bf16-mixed"),
        },
        test_file="cifar10_test.parquet",
        weight_files={"edge": "cifar10_edge.safetensors", "server": "cifar10_server.safetensors"},
        background="mean",
    ),
}


def _normalise(images_u8: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 ``[n, H, W]`` (grayscale) or ``[n, H, W, C]`` -> normalised float ``[n, C, H, W]``."""
    x = images_u8.float().div_(255.0)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


def _augment(x: torch.Tensor, background: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Random integer translation (<= ``max_shift`` px, padded with ``background``) and h-flip."""
    n = x.shape[0]
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), device=x.device).float() * (2.0 / x.shape[-1])
    flip = torch.where(torch.rand(n, device=x.device) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = flip
    theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shifts
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x - background, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out + background


class DemoClassifier(L.LightningModule):
    """Supervised training of one timm ViT; the module the recipe fits."""

    def __init__(self, recipe: TrainRecipe, steps_per_epoch: int, bench: DemoBenchmark,
                 checkpoint: Path | None = None) -> None:
        super().__init__()
        self.recipe = recipe
        self.bench = bench
        self.steps_per_epoch = steps_per_epoch
        self.checkpoint = checkpoint
        self.model = timm.create_model(recipe.model, pretrained=False)
        mean = torch.tensor(bench.mean).view(1, -1, 1, 1)
        std = torch.tensor(bench.std).view(1, -1, 1, 1)
        pad = -mean / std if bench.background == "min" else torch.zeros_like(mean)  # black, or the mean colour
        self.register_buffer("background", pad, persistent=False)

    def _x(self, images: torch.Tensor) -> torch.Tensor:
        return _normalise(images, self.bench.mean, self.bench.std)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        x = self._x(images)
        if self.recipe.augment:
            x = _augment(x, self.background, self.recipe.max_shift)
        logits = self.model(x)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.recipe.label_smoothing)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        acc = (self.model(self._x(images)).argmax(-1) == labels).float().mean()
        self.log("test_acc", acc, prog_bar=True, reduce_fx="mean", batch_size=len(labels))

    def on_validation_epoch_end(self) -> None:
        acc = self.trainer.callback_metrics.get("test_acc")
        if acc is not None and not self.trainer.sanity_checking and self.trainer.state.fn == "fit":
            print(f"[train-demo] {self.recipe.model} epoch {self.current_epoch + 1}/{self.recipe.epochs}: "
                  f"test accuracy {100 * float(acc):.2f}%", flush=True)
        if self.checkpoint is not None:  # the latest weights, so that a stopped fit leaves something usable
            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, str(self.checkpoint), metadata={"model": self.recipe.model,
                                                              "epoch": str(self.current_epoch + 1)})

    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n)]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.recipe.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.recipe.lr,
        )
        total = self.recipe.epochs * self.steps_per_epoch
        warmup = max(1, int(self.recipe.warmup_epochs * self.steps_per_epoch))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _loader(images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    ds = TensorDataset(torch.from_numpy(images.copy()), torch.from_numpy(labels))
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen)


def train_one(role: str, out_dir: Path, data_dir: Path | None = None, epochs: int | None = None,
              seed: int = 0, benchmark: str = "fmnist", **recipe_overrides) -> dict:
    """Train the ``role`` ("edge" or "server") model of ``benchmark`` and write its weights into ``out_dir``."""
    bench = BENCHMARKS[benchmark]
    recipe = bench.recipes[role]
    recipe = TrainRecipe(**dict(asdict(recipe), epochs=epochs or recipe.epochs, seed=seed, **recipe_overrides))
    L.seed_everything(recipe.seed, workers=True)
    started = time.perf_counter()
    train_x, train_y = bench.load_split("train", data_dir)
    test_x, test_y = bench.load_split("test", data_dir)
    train_loader = _loader(train_x, train_y, recipe.batch_size, True, recipe.seed)
    test_loader = _loader(test_x, test_y, 1000, False, recipe.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / bench.weight_files[role]
    module = DemoClassifier(recipe, steps_per_epoch=len(train_loader), bench=bench,
                            checkpoint=weights.with_suffix(".partial.safetensors"))
    trainer = L.Trainer(
        max_epochs=recipe.epochs, accelerator="auto", devices=1, deterministic=True, precision=recipe.precision,
        logger=False, enable_checkpointing=False, num_sanity_val_steps=0, enable_progress_bar=False,
        check_val_every_n_epoch=1 if benchmark == "cifar10" else recipe.epochs,
    )
    trainer.fit(module, train_loader, test_loader)
    module.checkpoint = None
    state = {k: v.detach().cpu().contiguous() for k, v in module.model.state_dict().items()}
    save_file(state, str(weights), metadata={"model": recipe.model, "seed": str(recipe.seed)})
    weights.with_suffix(".partial.safetensors").unlink(missing_ok=True)
    # The reported accuracy is that of the saved weights in fp32, as the benchmark runs them.
    module.model.float()
    fp32 = L.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False)
    metrics = fp32.validate(module, test_loader, verbose=False)[0]
    summary = {"role": role, "benchmark": benchmark, "recipe": asdict(recipe),
               "test_accuracy": float(metrics["test_acc"]), "weights": weights.name,
               "num_parameters": sum(v.numel() for v in state.values()),
               "train_seconds": round(time.perf_counter() - started, 1),
               "threads": torch.get_num_threads()}
    return summary


def train_demo(out_dir: Path | None = None, roles: tuple[str, ...] = ("edge", "server"),
               data_dir: Path | None = None, epochs: int | None = None, seed: int = 0,
               export_data: bool = True, benchmark: str = "fmnist") -> list[dict]:
    """Train the demo models of ``benchmark`` (and export its test split) into ``out_dir`` (default: the package)."""
    bench = BENCHMARKS[benchmark]
    out_dir = Path(out_dir) if out_dir is not None else DEMO_DIR
    summaries = []
    if export_data:
        if benchmark == "fmnist":
            images, labels = fashion_mnist.load_split("test", data_dir)
            fashion_mnist.export_parquet(images, labels, out_dir / bench.test_file)
        elif data_dir is not None:  # the shipped CIFAR-10 file is the source parquet itself, bytes unchanged
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(data_dir) / "test.parquet", out_dir / bench.test_file)
    for role in roles:
        summaries.append(train_one(role, out_dir, data_dir=data_dir, epochs=epochs, seed=seed, benchmark=benchmark))
        prefix = "" if benchmark == "fmnist" else f"{benchmark}_"
        (out_dir / f"{prefix}{role}_training.json").write_text(json.dumps(summaries[-1], indent=2) + "\n")
    return summaries
