"""What both sides of the comparison run on: checkpoints, the data, the sweep's overrides, decoded images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import SHIPPED_DATA, STRATEGIES


def make_checkpoints(folder: Path, edge_name: str, server_name: str) -> tuple[Path, Path]:
    """Random-init weights of the edge and the server (seeds 0 and 1), as safetensors files in ``folder``."""
    import timm
    from safetensors.torch import save_file

    import sagebench.demo.models  # noqa: F401  (registers the embedded models)

    paths = []
    for seed, (role, name) in enumerate((("edge", edge_name), ("server", server_name))):
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False)
        path = folder / f"{role}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        paths.append(path)
    return paths[0], paths[1]


def make_random_parquet(path: Path, n: int, size: int = 224, classes: int = 1000, mode: str = "RGB") -> Path:
    """``n`` random images (``mode`` "RGB" or "L", ``size`` square) with random labels, as a parquet data set."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    # random (size/4)^2 noise blown up 4x: random content, but PNGs that encode and decode quickly
    shape = (n, size // 4, size // 4) + ((3,) if mode == "RGB" else ())
    small = rng.integers(0, 256, shape, dtype=np.uint8)
    images = [Image.fromarray(np.repeat(np.repeat(im, 4, axis=0), 4, axis=1)) for im in small]  # L or RGB by shape
    labels = [int(x) for x in rng.integers(0, classes, n)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=feats).to_parquet(str(path))
    return path


def pair_checkpoints(args: argparse.Namespace, name: str, preset: dict, folder: Path) -> tuple[Path, Path]:
    """``--weights shipped``: the embedded presets' trained weights (the offload share users see); else random."""
    if getattr(args, "weights", "random") != "shipped":
        return make_checkpoints(folder, preset["edge"], preset["server"])
    if preset["data"] not in SHIPPED_DATA:
        raise SystemExit(f"--weights shipped: only the embedded presets ship weights, not {name!r}")
    from sagebench import demo

    return ((demo.EDGE_WEIGHTS, demo.SERVER_WEIGHTS) if preset["data"] == "embedded"
            else (demo.CIFAR10_EDGE_WEIGHTS, demo.CIFAR10_SERVER_WEIGHTS))


def pair_data_path(preset: dict, folder: Path, images: int) -> Path:
    """The shipped test split of an embedded preset, else ``images`` random 224x224 images written to ``folder``."""
    if preset["data"] in SHIPPED_DATA:
        from sagebench.demo import CIFAR10_FILE, DATA_FILE

        return Path(DATA_FILE if preset["data"] == "embedded" else CIFAR10_FILE)
    return make_random_parquet(folder / "random.parquet", images)


def sweep_overrides(args: argparse.Namespace, name: str, preset: dict, edge_ckpt: Path, server_ckpt: Path,
                    data_path: Path | None, images: int, batch_size: int, out_dir: Path, profile: bool = False,
                    extra: tuple[str, ...] = ()) -> list[str]:
    """The config overrides of one benchmark sweep of the pair ``name``."""
    o = [
        f"benchmark=speed-{name}", f"data.limit={images}", f"batch_size={batch_size}",
        f"model.edge.name={preset['edge']}", "model.edge.pretrained=false", f"model.edge.checkpoint={edge_ckpt}",
        f"model.server.name={preset['server']}", "model.server.pretrained=false",
        f"model.server.checkpoint={server_ckpt}",
        f"strategies=[{','.join(preset.get('strategies', STRATEGIES))}]",
        f"budgets=[{','.join(map(str, preset['budgets']))}]",
        f"gate.name={getattr(args, 'gate', 'all')}", f"gate.threshold={getattr(args, 'threshold', 1.0)}",
        # all: every image offloaded, S*K+1 server passes per image; min_entropy: the gate users run
        "progress=false", "logger=none", f"output_dir={out_dir}",
        f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}", "trainer.devices=1",
        f"trainer.precision={args.precision}", f"profile={'true' if profile else 'false'}",
        f"compile={'true' if args.compile else 'false'}",
    ]
    if data_path is not None:
        o += [f"data.path={data_path}", "data.crop_pct=1.0"]  # 224 images, model size: no resize
    if args.threads:
        o.append(f"threads={args.threads}")
    if getattr(args, "server_batch_size", None):
        o.append(f"server_batch_size={args.server_batch_size}")
    if args.num_workers is not None:
        o.append(f"data.num_workers={args.num_workers}")
    return o + list(args.set or []) + list(extra)


class InMemoryImages(torch.utils.data.Dataset):
    """Decoded images for ``evaluate(cfg, dataset=...)``: item ``i`` is ``(images[i], labels[i], i)``.

    The tensors are the ones the bare loop uses, made by sagebench's own transform from the same data
    (:func:`load_inputs`), so both sides see identical inputs; everything else in ``evaluate``
    (fingerprint, DataLoader, collation, transfer) is unchanged, only the data set's load and decode are left out.
    """

    label_map = None  # the labels are the data's own (load_inputs maps none)

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels
        self.channels = int(images.shape[1])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i = int(index)
        return self.images[i], self.labels[i], torch.tensor(i, dtype=torch.int64)


def load_inputs(preset: dict, data_path: Path, images: int, edge_ckpt: Path,
                server_ckpt: Path) -> tuple[Any, Any, torch.Tensor, torch.Tensor]:
    """The exact tensors and models the sweep sees: images by sagebench's own transform, the checkpoints."""
    from sagebench import data as data_lib
    from sagebench.vit.loading import ModelSpec, create_model

    edge = create_model(ModelSpec(preset["edge"], checkpoint=str(edge_ckpt)))
    server = create_model(ModelSpec(preset["server"], checkpoint=str(server_ckpt)))
    shipped = preset["data"] in SHIPPED_DATA
    spec = data_lib.DataSpec(path=str(data_path), split="test" if shipped else "validation",
                             limit=images, crop_pct=None if shipped else 1.0)
    view = data_lib.resolve_data_config(server, spec)
    ds = data_lib.EvalImages(data_lib.load_source(spec), data_lib.build_transform(view), spec, view)
    items = [ds[i] for i in range(len(ds))]
    return edge, server, torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items])
