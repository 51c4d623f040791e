"""The default job (``sagebench eval`` with no arguments) as the suite measures it, its overrides, pair medians."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from .common import PRESETS

SUITE_TARGETS = {"sweep": 1.05, "process": 1.15, "rerun": 1.20}  # issue 16 (2 CPU cores)


def default_job(args: argparse.Namespace) -> dict:
    """What ``sagebench eval`` with no arguments runs (``load_config(None, [])``), with ``--images`` etc. applied."""
    import pyarrow.parquet as pq

    from sagebench.config import load_config, strategy_entries
    from sagebench.demo import CIFAR10_FILE

    cfg = load_config(None, [])
    entries = strategy_entries(cfg)
    if any(opts for _, opts in entries):
        raise SystemExit("--suite real-gate: the default strategies carry options; only plain names are supported")
    preset = PRESETS["cifar10"]
    if ((cfg.model.edge.name, cfg.model.server.name) != (preset["edge"], preset["server"])
            or Path(cfg.data.path).resolve() != Path(CIFAR10_FILE).resolve()):
        raise SystemExit("--suite real-gate measures the shipped CIFAR-10 default job, but the default config now "
                         f"names {cfg.model.edge.name} -> {cfg.model.server.name} on {cfg.data.path}")
    limit = cfg.data.limit or pq.ParquetFile(cfg.data.path).metadata.num_rows
    batch_size = args.batch_size or int(cfg.batch_size)
    return {"strategies": [name for name, _ in entries], "budgets": [int(b) for b in cfg.budgets],
            "batch_size": batch_size,
            "server_batch_size": args.server_batch_size or int(cfg.server_batch_size or batch_size),
            "gate": str(cfg.gate.name), "threshold": float(cfg.gate.threshold),
            "images": min(args.images, limit) if args.images else int(limit),
            "attention": str(cfg.model.edge.attention), "seed": int(cfg.seed)}


def job_overrides(args: argparse.Namespace, job: dict) -> list[str]:
    """The overrides that make a run the default job at this benchmark's settings (none by default)."""
    o = [f"data.limit={job['images']}"] if args.images else []
    if args.batch_size:
        o.append(f"batch_size={args.batch_size}")
    if args.server_batch_size:
        o.append(f"server_batch_size={args.server_batch_size}")
    if args.threads:
        o.append(f"threads={args.threads}")
    if args.precision != "32-true":
        o.append(f"trainer.precision={args.precision}")
    if args.device == "cpu" and torch.cuda.is_available():
        o.append("trainer.accelerator=cpu")
    return o + list(args.set or [])


def pair_stats(sweep_s: list[float], bare_s: list[float], sweep_cpu: list[float], bare_cpu: list[float]) -> dict:
    """Medians over adjacent (sweep, bare) pairs, wall and CPU seconds."""
    return {"sweep_s": sweep_s, "bare_s": bare_s, "sweep_cpu_s": sweep_cpu, "bare_cpu_s": bare_cpu,
            "sweep_median_s": statistics.median(sweep_s), "bare_median_s": statistics.median(bare_s),
            "ratio_per_pair": [s / b for s, b in zip(sweep_s, bare_s)],
            "ratio_wall": statistics.median([s / b for s, b in zip(sweep_s, bare_s)]),
            "ratio_cpu": statistics.median([s / b for s, b in zip(sweep_cpu, bare_cpu)])}
