"""``evaluate(config)``: build everything from a config, run the sweep, write the results.

Why a function and not only a CLI: notebooks and other tools call it, and the CLI stays a thin
shell around it. Under DDP every process runs it; only global rank 0 writes and returns results.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from sagebench import data as data_lib
from sagebench.config import load_config, strategy_entries
from sagebench.errors import ConfigError, SageBenchError
from sagebench.metrics import summarize
from sagebench.models import EdgeModel, ModelSpec, ServerModel, create_model
from sagebench.module import SageBenchModule
from sagebench.results import (SCHEMA_VERSION, file_sha256, fingerprint, provenance, write_results,
                               write_samples)
from sagebench.strategies import get_strategy
from sagebench.strategies.base import check_budget

_log = logging.getLogger(__name__)
_PIXEL_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


class SweepData(L.LightningDataModule):
    """Serves the evaluation images; the sampler is built in the hook, once the process group exists.

    Each process gets a disjoint, unpadded share (Lightning's own distributed sampler pads with
    duplicates in test/validate loops, which would count some images twice).
    """

    def __init__(self, dataset: torch.utils.data.Dataset, batch_size: int, num_workers: int) -> None:
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers

    def _loader(self) -> DataLoader:
        kwargs: dict[str, Any] = dict(batch_size=self.batch_size, num_workers=self.num_workers,
                                      pin_memory=torch.cuda.is_available(),
                                      persistent_workers=False)
        if self.num_workers > 0:
            kwargs["prefetch_factor"] = 4
        if isinstance(self.dataset, torch.utils.data.IterableDataset):
            return DataLoader(self.dataset, **kwargs)
        return DataLoader(self.dataset, sampler=data_lib.UnrepeatedSampler(len(self.dataset)), **kwargs)

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()


def _model_spec(node: DictConfig) -> ModelSpec:
    return ModelSpec(name=node.name, pretrained=bool(node.pretrained), checkpoint=node.checkpoint,
                     kwargs=OmegaConf.to_container(node.kwargs, resolve=True) or {})


def _weights_id(spec: ModelSpec, model: torch.nn.Module) -> str:
    """What identifies the weights: the checkpoint's hash, the shipped file's hash, or the hub tag."""
    if spec.checkpoint:
        return "sha256:" + file_sha256(spec.checkpoint)[:16]
    if spec.pretrained:
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        if cfg.get("file") and Path(cfg["file"]).is_file():
            return "sha256:" + file_sha256(cfg["file"])[:16]
        return "hub:" + str(cfg.get("hf_hub_id") or cfg.get("tag") or spec.name)
    return "random-init"


def check_same_view(edge_cfg: dict, server_cfg: dict, edge: EdgeModel, server: ServerModel) -> None:
    """Edge and server must see the same pixels through the same patch grid."""
    diff = [k for k in _PIXEL_KEYS if str(edge_cfg.get(k)) != str(server_cfg.get(k))]
    if diff:
        details = "; ".join(f"{k}: edge {edge_cfg.get(k)} vs server {server_cfg.get(k)}" for k in diff)
        raise ConfigError(f"Edge and server models expect different preprocessing ({details}). They must see "
                          "the same crop: set the data.* overrides (e.g. data.crop_pct, data.mean) explicitly.")
    if tuple(edge.grid) != tuple(server.grid):
        raise ConfigError(f"Edge grid {edge.grid} and server grid {server.grid} differ: evidence units must be "
                          "the same patches for both (same image size and patch size).")
    if edge.vit.patch_embed.patch_size != server.vit.patch_embed.patch_size:
        raise ConfigError(f"Edge patch size {edge.vit.patch_embed.patch_size} and server patch size "
                          f"{server.vit.patch_embed.patch_size} differ.")


def _data_spec(cfg: DictConfig) -> "data_lib.DataSpec":
    d = OmegaConf.to_container(cfg.data, resolve=True)
    d.pop("num_workers")
    for key in ("mean", "std", "input_size"):
        if d.get(key) is not None:
            d[key] = tuple(d[key])
    return data_lib.DataSpec(**d)


def _output_dir(cfg: DictConfig) -> Path:
    if cfg.output_dir:
        return Path(cfg.output_dir)
    # Same folder in every process of a DDP launch: rank 0 picks it, children inherit the variable.
    run_id = os.environ.setdefault("SAGEBENCH_RUN_ID", datetime.now().strftime("%Y%m%d-%H%M%S"))
    return Path("runs") / f"{cfg.benchmark}-{run_id}"


def evaluate(cfg: DictConfig | None = None, overrides: list[str] | None = None) -> dict[str, Any] | None:
    """Run the sweep described by ``cfg`` (default: the embedded benchmark) and write its results.

    Returns the results dict in the global-zero process (``None`` elsewhere). Writes
    ``<output_dir>/results.json``, ``samples.parquet`` and ``config.yaml``.
    """
    cfg = cfg if cfg is not None else load_config(None, overrides or [])
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    out_dir = _output_dir(cfg)

    edge_spec, server_spec = _model_spec(cfg.model.edge), _model_spec(cfg.model.server)
    edge = EdgeModel(create_model(edge_spec), attention=cfg.model.edge.attention)
    server = ServerModel(create_model(server_spec))
    spec = _data_spec(cfg)
    edge_view = data_lib.resolve_data_config(edge.vit, spec)
    server_view = data_lib.resolve_data_config(server.vit, spec)
    check_same_view(edge_view, server_view, edge, server)
    num_patches = server.grid[0] * server.grid[1]
    budgets = [check_budget(b, num_patches) for b in cfg.budgets]
    strategies = [get_strategy(name, **opts) for name, opts in strategy_entries(cfg)]
    labels = [s.label for s in strategies]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"strategies lists the same strategy twice: {labels}.")

    source = data_lib.load_source(spec)
    transform = data_lib.build_transform(server_view)
    if spec.streaming:
        dataset: torch.utils.data.Dataset = data_lib.StreamingEvalImages(source, transform, spec, server_view)
        num_images = None
    else:
        dataset = data_lib.EvalImages(source, transform, spec, server_view)
        num_images = len(dataset)
        data_lib.check_labels(dataset, server.vit.num_classes)

    module = SageBenchModule(edge, server, strategies, budgets, gate=cfg.gate.name,
                             threshold=cfg.gate.threshold, seed=cfg.seed)
    trainer_kwargs = dict(OmegaConf.to_container(cfg.trainer, resolve=True))
    trainer = L.Trainer(
        **{**dict(logger=False, enable_checkpointing=False, enable_model_summary=False,
                  enable_progress_bar=bool(cfg.progress)), **trainer_kwargs},
        use_distributed_sampler=False, inference_mode=True,
    )
    datamodule = SweepData(dataset, cfg.batch_size, cfg.data.num_workers)
    trainer.test(module, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return None
    rows = module.records
    if num_images is not None and rows.shape[0] != num_images:
        raise RuntimeError(f"{rows.shape[0]} images evaluated but the data set has {num_images}: "
                           "each image must be counted exactly once")
    num_images = rows.shape[0]
    summary = summarize(rows, module.layout)
    edge_per_image = module.edge_images_total() / max(1, num_images)

    bench_fields = {
        "dataset": spec.name or (Path(spec.path).name if spec.path else None),
        **data_lib.dataset_fingerprint_fields(spec, num_images),
        "num_patches": num_patches,
        "grid": list(server.grid),
        "edge": {"name": edge_spec.name, "weights": _weights_id(edge_spec, edge.vit),
                 "attention": cfg.model.edge.attention},
        "server": {"name": server_spec.name, "weights": _weights_id(server_spec, server.vit)},
        "preprocessing": {k: server_view.get(k) for k in _PIXEL_KEYS},
        "gate": cfg.gate.name,
        "threshold": None if cfg.gate.name == "all" else float(cfg.gate.threshold),
    }
    bench_fields["dataset"] = bench_fields["dataset"] or "unknown"
    results = {
        "schema_version": SCHEMA_VERSION,
        "benchmark": {"name": cfg.benchmark, **bench_fields, "fingerprint": fingerprint(bench_fields)},
        "config": OmegaConf.to_container(cfg, resolve=True),
        "strategies": [{"label": s.label, "name": s.name, "options": s.options()} for s in strategies],
        "provenance": provenance(device=str(module.device), world_size=trainer.world_size),
        "num_images": summary["num_images"],
        "num_offloaded": summary["num_offloaded"],
        "edge_accuracy": summary["edge_accuracy"],
        "ceiling": summary["ceiling"],
        "results": summary["results"],
        "timing": {"wall_seconds": round(time.perf_counter() - started, 3),
                   "edge_forwards_per_image": edge_per_image},
    }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_samples(out_dir, rows, module.layout)
        write_results(out_dir, results)
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    except OSError as exc:
        raise SageBenchError(f"Cannot write results to {out_dir}: {exc}. Set output_dir=PATH to a writable folder.") from exc
    results["output_dir"] = str(out_dir)
    return results
