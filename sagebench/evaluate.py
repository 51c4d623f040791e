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
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from sagebench import data as data_lib
from sagebench import guards
from sagebench import resume as resume_lib
from sagebench.channels import add_latency, load_channel
from sagebench.codecs import codec_from_config
from sagebench.config import load_config, strategy_entries
from sagebench import edge_cache, perf
from sagebench.errors import ConfigError, SageBenchError, without_worker_traceback
from sagebench.fsutil import atomic_write_text
from sagebench.metrics import summarize
from sagebench.models import EdgeModel, ModelSpec, ServerModel, create_model
from sagebench.module import SageBenchModule
from sagebench.results import (SCHEMA_VERSION, file_sha256, fingerprint, provenance, write_results,
                               write_samples)
from sagebench.strategies import get_strategy
from sagebench.strategies.base import check_budget, check_byte_budget

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
        self.done_ids = None  # ids finished by an earlier attempt (set by resume.PartialResults): not served

    def _loader(self) -> DataLoader:
        kwargs: dict[str, Any] = dict(batch_size=self.batch_size, num_workers=self.num_workers,
                                      pin_memory=torch.cuda.is_available(),
                                      persistent_workers=False)
        if self.num_workers > 0:
            kwargs["prefetch_factor"] = 4
        done = self.done_ids if self.done_ids is not None and len(self.done_ids) else None
        if isinstance(self.dataset, torch.utils.data.IterableDataset):
            if done is not None:
                self.dataset.exclude = frozenset(int(i) for i in done)
            return DataLoader(self.dataset, **kwargs)
        if done is not None:
            remaining = np.setdiff1d(np.arange(len(self.dataset), dtype=np.int64), done)
            sampler = resume_lib.RemainingSampler(remaining, pad=int(done[0]))
            return DataLoader(resume_lib.PaddedView(self.dataset), sampler=sampler, **kwargs)
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
    # Same folder in every process of a DDP launch: rank 0 picks it, children inherit SAGEBENCH_RUN_ID;
    # with resume=true, the newest unfinished run of this benchmark.
    return resume_lib.auto_output_dir(Path("runs"), cfg.benchmark, resume=bool(cfg.resume))


def _overlay_units(results: list[dict[str, Any]], byte_budgets: list[int]) -> int:
    middle = sorted(byte_budgets)[(len(byte_budgets) - 1) // 2]
    sent = [r["units_sent"] for r in results if r["budget"] == middle and r.get("units_sent")]
    return max(1, round(sum(sent) / len(sent))) if sent else 1


def evaluate(cfg: DictConfig | None = None, overrides: list[str] | None = None) -> dict[str, Any] | None:
    """Run the sweep described by ``cfg`` (default: the embedded benchmark) and write its results.

    Returns the results dict in the global-zero process (``None`` elsewhere). Writes
    ``<output_dir>/results.json``, ``samples.parquet`` and ``config.yaml``; while it runs,
    finished per-sample records are saved in ``<output_dir>/partial/`` so that a killed run can
    be continued with ``resume=true`` (see :mod:`sagebench.resume`).
    """
    held: list[resume_lib.PartialResults] = []
    try:
        return _evaluate(cfg, overrides, held)
    finally:
        for partial in held:
            partial.release()


def _evaluate(cfg: DictConfig | None, overrides: list[str] | None,
              _held: list[resume_lib.PartialResults]) -> dict[str, Any] | None:
    cfg = cfg if cfg is not None else load_config(None, overrides or [])
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    out_dir = _output_dir(cfg)
    guards.check_writable(out_dir)  # now, not after the sweep
    run_state = resume_lib.precheck(out_dir, bool(cfg.resume))  # never overwrite results or unfinished work

    edge_spec, server_spec = _model_spec(cfg.model.edge), _model_spec(cfg.model.server)
    strategies = [get_strategy(name, **opts) for name, opts in strategy_entries(cfg)]
    labels = [s.label for s in strategies]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"strategies lists the same strategy twice: {labels}.")
    # attention rollout is computed (in the same single edge forward) only if a strategy ranks by it
    with_rollout = any(getattr(s, "importance", None) == "rollout" for s in strategies)
    edge = EdgeModel(create_model(edge_spec), attention=cfg.model.edge.attention, with_rollout=with_rollout)
    server = ServerModel(create_model(server_spec))
    spec = _data_spec(cfg)
    edge_view = data_lib.resolve_data_config(edge.vit, spec)
    server_view = data_lib.resolve_data_config(server.vit, spec)
    check_same_view(edge_view, server_view, edge, server)
    num_patches = server.grid[0] * server.grid[1]
    budget_unit = "bytes" if cfg.budget_bytes is not None else "patches"
    budgets = ([check_budget(b, num_patches) for b in cfg.budgets] if budget_unit == "patches"
               else [check_byte_budget(b) for b in cfg.budget_bytes])
    codec = codec_from_config(cfg.codec, server_view)
    channels = [load_channel(c) for c in cfg.channels]

    source = data_lib.load_source(spec)
    transform = data_lib.build_transform(server_view)
    if spec.streaming:
        dataset: torch.utils.data.Dataset = data_lib.StreamingEvalImages(source, transform, spec, server_view)
        dataset.num_classes = server.vit.num_classes  # a stream's labels are checked as they come
        num_images = None
    else:
        dataset = data_lib.EvalImages(source, transform, spec, server_view)
        num_images = len(dataset)
        data_lib.check_labels(dataset, server.vit.num_classes)

    module = SageBenchModule(edge, server, strategies, budgets, gate=cfg.gate.name,
                             threshold=cfg.gate.threshold, seed=cfg.seed, budget_unit=budget_unit, codec=codec)
    perf.configure(module, cfg)  # threads, dedupe, profile, compile (docs/performance.md)
    trainer_kwargs = dict(OmegaConf.to_container(cfg.trainer, resolve=True))
    edge_weights, server_weights = _weights_id(edge_spec, edge.vit), _weights_id(server_spec, server.vit)
    # everything that decides the records: an unfinished run resumes only if all of it is unchanged
    run_key = resume_lib.run_key(
        data=data_lib.dataset_fingerprint_fields(spec, num_images if num_images is not None else spec.limit or 0),
        edge={"name": edge_spec.name, "weights": edge_weights, "attention": cfg.model.edge.attention,
              "kwargs": edge_spec.kwargs},
        server={"name": server_spec.name, "weights": server_weights, "kwargs": server_spec.kwargs},
        preprocessing={k: server_view.get(k) for k in _PIXEL_KEYS}, gate=cfg.gate.name,
        threshold=None if cfg.gate.name == "all" else float(cfg.gate.threshold), strategies=strategies,
        budgets=budgets, seed=cfg.seed, columns=module.layout.names(), precision=trainer_kwargs.get("precision"),
        codec=codec.describe())
    if run_state.finished:  # resume=true on a finished run: nothing to evaluate
        stored = resume_lib.finished_results(run_state, run_key)
        guards.warn(f"{out_dir} already holds the finished results of this run; nothing was evaluated.")
        stored["output_dir"] = str(out_dir)
        return stored if os.environ.get("RANK", "0") == "0" else None
    partial = resume_lib.PartialResults(out_dir, run_key, resume=bool(cfg.resume), flush_seconds=cfg.flush_seconds,
                                        num_columns=module.layout.num_columns)
    _held.append(partial)  # its output-folder lock is released when evaluate returns or fails
    trainer_kwargs["callbacks"] = [*(trainer_kwargs.get("callbacks") or []), partial]
    trainer = guards.build_trainer(
        **{**dict(logger=False, enable_checkpointing=False, enable_model_summary=False,
                  enable_progress_bar=bool(cfg.progress)), **trainer_kwargs},
        use_distributed_sampler=False, inference_mode=True,
    )
    if cfg.cache.edge:  # edge evidence read from / written to disk instead of recomputed
        edge_cache.attach(module, trainer, cfg, spec, {k: server_view.get(k) for k in _PIXEL_KEYS}, edge_spec,
                          with_rollout)
    datamodule = SweepData(dataset, cfg.batch_size, perf.num_workers(cfg.data.num_workers, trainer))
    sweep_clock = perf.Stopwatch()  # wall and CPU seconds of the sweep itself
    try:
        trainer.test(module, datamodule=datamodule, verbose=False)
    except SageBenchError as exc:
        partial.release()
        exc = without_worker_traceback(exc)  # a DataLoader worker's error: its message, not its traceback
        kept = resume_lib.inspect_run(out_dir)
        if kept.unfinished and trainer.is_global_zero and not isinstance(exc, ConfigError):
            exc.args = (f"{exc} (The images finished so far are kept in {kept.partial}: fix this and rerun "
                        "with resume=true to continue.)",)
        raise exc from None
    except BaseException as exc:
        partial.release()
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) and resume_lib.inspect_run(out_dir).unfinished:
            guards.warn(f"interrupted: the images finished so far are kept in {out_dir / 'partial'}; rerun with "
                        "resume=true to continue.")
        raise
    sweep_clock.stop()
    if not trainer.is_global_zero:
        return None
    # global rank 0: merge with what earlier attempts finished, check, summarise, write
    layout = module.layout
    # (no records at all when an earlier attempt had finished every image: Lightning skips an empty loop)
    this_attempt, _ = resume_lib.drop_redone(module.records, partial.done_ids, layout.num_columns)
    all_rows = resume_lib.merge_rows([partial.previous_rows, this_attempt], layout.num_columns)
    if all_rows.shape[0] != partial.previous_rows.shape[0] + this_attempt.shape[0]:
        raise RuntimeError("images of an earlier attempt were evaluated again (resume bug)")
    if num_images is not None and all_rows.shape[0] != num_images:
        raise RuntimeError(f"{all_rows.shape[0]} images evaluated but the data set has {num_images}: "
                           "each image must be counted exactly once")
    rows, skipped = guards.split_skipped(all_rows, layout)
    run_warnings: list[str] = []  # printed now and kept in results.json
    if skipped:
        shown = ", ".join(map(str, skipped[:20])) + (", ..." if len(skipped) > 20 else "")
        run_warnings.append(f"skipped {len(skipped)} corrupt image(s) (data.on_error=skip), sample ids: {shown}; "
                            "they are excluded from every metric and listed in results.skipped.")
    if rows.shape[0] == 0 and skipped:
        raise data_lib.DataError(f"No image could be evaluated: all {len(skipped)} were corrupt and skipped. "
                                 "Check data.path and data.image_column.")
    num_images = rows.shape[0]
    summary = summarize(rows, layout)
    nonfinite = guards.nonfinite_counts(rows, layout)
    run_warnings += guards.nonfinite_warnings(nonfinite, num_images)
    for line in run_warnings:
        guards.warn(line)
    for entry, cell in zip(summary["results"], nonfinite["cells"]):
        entry["nonfinite"] = cell["count"]
    add_latency(summary["results"], channels)
    previous_evaluated = int((partial.previous_rows[:, layout.column("label")] >= 0).sum())
    edge_per_image = (module.edge_images_total() + previous_evaluated) / max(1, num_images)
    strategy_stats = resume_lib.merge_strategy_stats(module, partial.previous_stats)

    bench_fields = {
        "dataset": spec.name or (Path(spec.path).name if spec.path else None),
        # the data set's "name" is already "dataset"; kept out so it cannot shadow the benchmark name
        **{k: v for k, v in data_lib.dataset_fingerprint_fields(spec, num_images).items() if k != "name"},
        "num_patches": num_patches,
        "grid": list(server.grid),
        "edge": {"name": edge_spec.name, "weights": edge_weights,
                 "attention": cfg.model.edge.attention},
        "server": {"name": server_spec.name, "weights": server_weights},
        "preprocessing": {k: server_view.get(k) for k in _PIXEL_KEYS},
        "gate": cfg.gate.name,
        "threshold": None if cfg.gate.name == "all" else float(cfg.gate.threshold),
    }
    bench_fields["dataset"] = bench_fields["dataset"] or "unknown"
    # what the server receives changes with the codec, and a byte budget is not a patch budget: such runs
    # are a benchmark of their own (absent for raw patch budgets, so older fingerprints stay valid)
    if not codec.is_raw:
        bench_fields["codec"] = codec.describe()
    if budget_unit == "bytes":
        bench_fields["budget_unit"] = "bytes"
    if skipped:  # not comparable with a run over every image
        bench_fields["num_skipped"] = len(skipped)
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
        # how requests were packed, and the uplinks their latency is reported for (sagebench.channels)
        "transmission": {"codec": codec.describe(), "budget_unit": budget_unit,
                         "channels": [c.describe() for c in channels]},
        # counters some strategies report per (strategy, budget), e.g. how often a rule was cut to B
        "strategy_stats": strategy_stats,
        # images that got NaN/Inf logits: counted as wrong, reported here (see sagebench.guards)
        "nonfinite": nonfinite,
        # corrupt images skipped under data.on_error=skip: excluded from every metric
        "skipped": {"count": len(skipped), "sample_ids": skipped},
        "resume": {"key": run_key, "attempts": partial.attempt, "images_resumed": int(partial.previous_rows.shape[0])},
        "warnings": run_warnings,
        "timing": {"wall_seconds": round(time.perf_counter() - started, 3),
                   "edge_forwards_per_image": edge_per_image,
                   **perf.timing_report(module, sweep_clock)},
    }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_samples(out_dir, rows, module.layout)
        atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg))
        write_results(out_dir, results)  # last: its presence means the run is complete
    except OSError as exc:
        raise SageBenchError(f"Cannot write results to {out_dir}: {exc}. Set output_dir=PATH to a writable folder. "
                             f"(The evaluated images are kept in {partial.partial}: rerun with resume=true.)") from exc
    partial.finish()
    results["output_dir"] = str(out_dir)
    # Plots + W&B (rank 0 only, after the results are on disk; never raises for a plot/W&B problem).
    from sagebench.tracking import RunContext, report_run

    results["report"] = report_run(
        results["config"], {k: v for k, v in results.items() if k != "output_dir"}, out_dir,
        RunContext(edge=edge, strategies=strategies, dataset=None if spec.streaming else dataset,
                   data_config=server_view, rows=rows, layout=module.layout, seed=cfg.seed,
                   # overlays show patch sets: under byte budgets, at the mean unit count of the middle byte budget
                   budgets=budgets if budget_unit == "patches" else [_overlay_units(summary["results"], budgets)]))
    return results
