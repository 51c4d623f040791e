#!/usr/bin/env python
"""The first GPU session's check: the paper's sweep on synthetic ImageNet-size JPEGs, timed pass by pass.

Run by ``benchmarks/gpu_check.sh`` (which finds the Python and sets the limits); needs no network and
no trained weights. In one process:

1. **data**: ``--images`` synthetic photos of ImageNet's sizes and JPEG statistics
   (:mod:`sagebench.data.synthetic`), written as a parquet data set in a temporary folder;
   random-init DeiT-Tiny (edge) and DeiT-Base (server) checkpoints beside it.
2. **decode**: the data path alone (DataLoader, workers, and for ``data.decode=tensor`` on CUDA
   the nvJPEG decode in the move to the device), for ``pil`` and ``tensor``: images/s.
3. **agreement**: the first ``--agreement-images`` decoded both ways: pixel error after
   normalisation and the top-1 agreement of the two random-init models fed either.
4. **sweep**: ``sagebench.evaluate`` of ``--config`` (default ``paper_table3``: its six strategies,
   budgets 16..96, min-entropy gate, its precision and decode policy) on those images, with
   ``profile=true``; the gate's eta is set so that ``--offload-share`` of the images are offloaded
   (random-init weights are unsure of every image; 0.359 is DeiT-Tiny on ImageNet val at eta 1.0).
   Images/s of the edge, ceiling and server passes from the phase timers, the projected time of
   the 50,000-image sweep, and peak GPU memory.

Writes one JSON (``--json``). ``--device cpu`` is a dry run of the same steps (tiny sizes), so
that the script is known to work before a GPU is lent (``tests/test_gpu_check.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

#: ImageNet-1K val
FULL_IMAGES = 50_000
#: the share of ImageNet val DeiT-Tiny offloads at the paper's eta = 1.0 (the real-gate figures of docs/performance.md)
PAPER_OFFLOAD_SHARE = 0.359


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--images", type=int, default=4096, help="synthetic JPEGs to make and sweep over")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: chosen from the machine)")
    p.add_argument("--config", default="paper_table3", help="the experiment whose sweep is run")
    p.add_argument("--edge", default="deit_tiny_patch16_224")
    p.add_argument("--server", default="deit_base_patch16_224")
    p.add_argument("--offload-share", type=float, default=PAPER_OFFLOAD_SHARE)
    p.add_argument("--agreement-images", type=int, default=256)
    p.add_argument("--set", action="append", default=[], help="extra config override for the sweep (repeatable)")
    p.add_argument("--json", default="gpu_check.json")
    p.add_argument("--folder", default=None, help="where the data and checkpoints go (default: a temporary folder)")
    return p.parse_args(argv)


def checkpoints(folder: Path, edge: str, server: str) -> tuple[Path, Path]:
    """Random-init weights (seeds 0 and 1) as safetensors files."""
    import timm
    import torch
    from safetensors.torch import save_file

    paths = []
    for seed, (role, name) in enumerate((("edge", edge), ("server", server))):
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False)
        paths.append(folder / f"{role}.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(paths[-1]))
    return paths[0], paths[1]


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def decode_pass(spec_fields: dict, view: dict, device: str, decode: str, workers: int,
                batch_size: int) -> dict:
    """Images/s of the data path alone: the sweep's DataLoader (workers, collate) and the move to the device."""
    from torch.utils.data import DataLoader

    from sagebench import data as data_lib
    from sagebench.sweep.build import build_dataset

    spec = data_lib.DataSpec(**{**spec_fields, "decode": decode})
    dataset, n = build_dataset(spec, view, 1000, trained=False, device_type=device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=device == "cuda",
                        collate_fn=data_lib.collate_for(dataset), **({"prefetch_factor": 4} if workers else {}))
    started = time.perf_counter()
    first, count = None, 0
    for batch in loader:
        images = data_lib.decode_batch(batch, device)[0].to(device, non_blocking=True)
        sync(device)
        if first is None:  # the rate after the first batch: worker start-up is a fixed cost, not a rate
            first, count = time.perf_counter(), 0
            continue
        count += int(images.shape[0])
    end = time.perf_counter()
    return {"decoder": data_lib.decoder_of(dataset), "images": n, "seconds": round(end - started, 3),
            "images_per_s": round(count / (end - first), 1) if count else None}


def agreement(spec_fields: dict, view: dict, device: str, models: list, count: int) -> tuple[dict, Any]:
    """Pixel error (after normalisation) and top-1 agreement between ``pil`` and ``tensor`` decoding."""
    import torch

    from sagebench import data as data_lib
    from sagebench.sweep.build import build_dataset

    spec = data_lib.DataSpec(**{**spec_fields, "limit": count})
    pil, n = build_dataset(spec, view, 1000, trained=False)
    tensor, _ = build_dataset(data_lib.DataSpec(**{**spec_fields, "limit": count, "decode": "tensor"}), view, 1000,
                              trained=False, device_type=device)
    collate = data_lib.collate_for(tensor) or torch.utils.data.default_collate
    x = torch.stack([pil[i][0] for i in range(n)]).to(device)
    y = data_lib.decode_batch(collate([tensor[i] for i in range(n)]), device)[0].to(device)
    diff = (x - y).abs().float()
    out = {"images": n, "decoder": data_lib.decoder_of(tensor), "max_abs": round(float(diff.max()), 5),
           "mean_abs": round(float(diff.mean()), 7), "pixels_changed": round(float((diff > 0).float().mean()), 5),
           "one_level": round(1 / 255 / min(view["std"]), 5)}
    with torch.no_grad():
        for role, model in models:
            model = model.to(device).eval()
            a = torch.cat([model(x[i:i + 64]).argmax(1) for i in range(0, n, 64)])
            b = torch.cat([model(y[i:i + 64]).argmax(1) for i in range(0, n, 64)])
            out[f"top1_agreement_{role}"] = round(float((a == b).float().mean()), 4)
            model.cpu()
    return out, x


def threshold_for(edge, x, device: str, share: float) -> float:
    """The min-entropy eta at which ``edge`` offloads ``share`` of the images ``x``."""
    import torch

    with torch.no_grad():
        logits = torch.cat([edge.to(device)(x[i:i + 64]).float() for i in range(0, len(x), 64)])
    edge.cpu()
    entropy = -torch.log2(torch.softmax(logits, dim=-1).amax(dim=-1))
    return float(torch.quantile(entropy, 1.0 - share))


def phase_seconds(phases: dict) -> dict[str, float]:
    """The phase timers summed by pass: edge, ceiling, select, server (cell or budget names vary)."""
    out = {"edge": 0.0, "ceiling": 0.0, "select": 0.0, "server": 0.0}
    for name, value in (phases or {}).items():
        seconds = value.get("seconds", value.get("total", 0.0)) if isinstance(value, dict) else value
        kind = str(name).split("/")[0]
        if kind in out and isinstance(seconds, (int, float)):
            out[kind] += float(seconds)
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    started = time.perf_counter()
    import torch

    import sagebench  # noqa: F401  (threads policy, registries)
    from sagebench.config import load_config
    from sagebench.data.synthetic import jpeg_parquet
    from sagebench.runtime import speed
    from sagebench.sweep.evaluate import evaluate
    from sagebench.vit.loading import ModelSpec, create_model

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but torch sees no CUDA device (DEVICE=cpu for a dry run)")
    folder = Path(args.folder or tempfile.mkdtemp(prefix="gpu_check_"))
    folder.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = args.workers if args.workers is not None else (max(1, min(8, cores - 1)) if args.device == "cuda" else 0)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every step: a run cut short by its time limit still leaves what it measured
        report["wall_seconds"] = round(time.perf_counter() - started, 1)
        out.write_text(json.dumps(report, indent=2) + "\n")

    report: dict = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                    "torch": torch.__version__, "cuda": torch.version.cuda, "cores": cores, "workers": workers,
                    "images": args.images, "batch_size": args.batch_size, "config": args.config}

    t = time.perf_counter()
    data = jpeg_parquet(folder / "photos.parquet", args.images, processes=max(1, cores - 1))
    edge_ckpt, server_ckpt = checkpoints(folder, args.edge, args.server)
    report["data"] = {"seconds": round(time.perf_counter() - t, 1), "bytes": data.stat().st_size}
    log(f"{args.images} JPEGs ({data.stat().st_size / 2**20:.0f} MiB) and checkpoints in {time.perf_counter() - t:.0f} s")
    save()

    cfg = load_config(args.config, [f"data.path={data}", "data.name=null"])
    spec_fields = {"path": str(data), "limit": args.images, "crop_pct": cfg.data.crop_pct,
                   "interpolation": cfg.data.interpolation}
    edge = create_model(ModelSpec(args.edge, checkpoint=str(edge_ckpt)))
    server = create_model(ModelSpec(args.server, checkpoint=str(server_ckpt)))
    from sagebench import data as data_lib

    view = data_lib.resolve_data_config(server, data_lib.DataSpec(**spec_fields))

    report["decode"] = {}
    for decode in ("pil", "tensor"):
        report["decode"][decode] = decode_pass(spec_fields, view, args.device, decode, workers, args.batch_size)
        log(f"decode {decode}: {report['decode'][decode]}")
        save()
    report["agreement"], x = agreement(spec_fields, view, args.device, [("edge", edge), ("server", server)],
                                       min(args.agreement_images, args.images))
    log(f"agreement pil vs tensor: {report['agreement']}")
    save()
    eta = threshold_for(edge, x, args.device, args.offload_share)
    del x, edge, server

    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    overrides = [f"data.path={data}", "data.name=null", f"data.limit={args.images}", f"batch_size={args.batch_size}",
                 f"model.edge.name={args.edge}", "model.edge.pretrained=false", f"model.edge.checkpoint={edge_ckpt}",
                 f"model.server.name={args.server}", "model.server.pretrained=false",
                 f"model.server.checkpoint={server_ckpt}", f"gate.threshold={eta}", "profile=true", "logger=none",
                 "progress=false", f"output_dir={folder / 'run'}",
                 f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}", "trainer.devices=1",
                 f"data.num_workers={workers}", *args.set]
    sweep_cfg = load_config(args.config, overrides)
    t = time.perf_counter()
    results = evaluate(sweep_cfg)
    wall = time.perf_counter() - t
    timing = results.get("timing", {})
    sweep_s = float(timing.get("sweep_seconds", wall))
    phases = phase_seconds(timing.get("phases", {}))
    n = args.images
    offloaded = int(results["num_offloaded"])
    cells = len(sweep_cfg.strategies) * len(sweep_cfg.budgets)
    per_offloaded = (phases["ceiling"] + phases["server"] + phases["select"]) / max(1, offloaded)
    per_image = max(0.0, sweep_s - phases["ceiling"] - phases["server"] - phases["select"]) / n

    def rate(count: float, seconds: float) -> float | None:
        return round(count / seconds, 1) if seconds > 0 else None

    report["sweep"] = {
        "precision": (results.get("provenance") or {}).get("precision"),
        "decoder": (results.get("benchmark") or {}).get("decoder", "pil"),
        "fingerprint": (results.get("benchmark") or {}).get("fingerprint"),
        "strategies": list(sweep_cfg.strategies), "budgets": list(sweep_cfg.budgets), "cells": cells,
        "eta": round(eta, 5), "offloaded": offloaded, "offload_share": round(offloaded / n, 4),
        "sweep_seconds": round(sweep_s, 2), "evaluate_seconds": round(wall, 2),
        "phase_seconds": {k: round(v, 3) for k, v in phases.items()},
        "images_per_s": {"sweep": rate(n, sweep_s), "edge": rate(n, phases["edge"]),
                         "ceiling": rate(offloaded, phases["ceiling"]),
                         "server_all_cells": rate(offloaded, phases["server"]),
                         "server_per_cell": rate(offloaded * cells, phases["server"]),
                         "decode_pil": report["decode"]["pil"]["images_per_s"],
                         "decode_tensor": report["decode"]["tensor"]["images_per_s"]},
    }
    report["projected_full_sweep_s"] = {
        "images": FULL_IMAGES,
        "at_measured_share": round(sweep_s / n * FULL_IMAGES, 1),
        f"at_paper_share_{PAPER_OFFLOAD_SHARE}": round((per_image + per_offloaded * PAPER_OFFLOAD_SHARE) * FULL_IMAGES, 1),
        "fixed_seconds": round(wall - sweep_s, 1),
        "note": "sweep seconds per image x 50,000 (decoding overlapped as in the run); fixed: evaluate() less the sweep",
    }
    if args.device == "cuda":
        report["gpu_memory_mb"] = {"peak_allocated": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                                   "peak_reserved": round(torch.cuda.max_memory_reserved() / 2**20, 1),
                                   "total": round(torch.cuda.get_device_properties(0).total_memory / 2**20, 1)}
    else:
        report["gpu_memory_mb"] = None
    report["host_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["threads"] = speed.apply_threads(None)
    save()
    log(f"wrote {out}: sweep {report['sweep']['images_per_s']}, projected {report['projected_full_sweep_s']}")
    return report


if __name__ == "__main__":
    main()
