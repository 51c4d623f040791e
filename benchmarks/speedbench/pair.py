"""One model pair: the whole sagebench sweep against the bare forwards it needs, on the same inputs."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .bare import bare_loop
from .common import PRESETS, STRATEGIES, log
from .flops import gpu_peak_tflops, sweep_flops_per_image
from .inputs import InMemoryImages, load_inputs, pair_checkpoints, pair_data_path, sweep_overrides
from .memory import memory_figures


@dataclass
class Pair:
    """A model pair ready to time: its settings, weights, data, models and the decoded images both sides use."""

    name: str
    preset: dict
    images: int
    batch_size: int
    folder: Path
    edge_ckpt: Path
    server_ckpt: Path
    data_path: Path
    in_memory: bool  # the sweep is served the decoded tensors (--data memory), else it decodes the data set
    edge: Any = None
    server: Any = None
    x: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    batches: list[torch.Tensor] = field(default_factory=list)
    runs: int = 0

    @property
    def strategies(self) -> list[str]:
        return list(self.preset.get("strategies", STRATEGIES))

    def sweep(self, args: argparse.Namespace, profile: bool = False, n: int | None = None,
              extra: tuple[str, ...] = ()) -> tuple[float, dict]:
        """Seconds of one ``evaluate`` over the first ``n`` images (default all), and its results."""
        from sagebench.config import load_config
        from sagebench.sweep.evaluate import evaluate

        n = self.images if n is None else n
        self.runs += 1
        o = sweep_overrides(args, self.name, self.preset, self.edge_ckpt, self.server_ckpt, self.data_path, n,
                            self.batch_size, self.folder / f"run{self.runs}", profile, extra)
        dataset = InMemoryImages(self.x[:n], self.labels[:n]) if self.in_memory else None
        t0 = time.perf_counter()
        res = evaluate(load_config(None, o), dataset=dataset)
        return time.perf_counter() - t0, res


def memory_sizes(args: argparse.Namespace, name: str, batch_size: int) -> tuple[int, int]:
    """Images and batch size of the 1x memory probe (0 images: no probe)."""
    mem_batch = args.mem_batch_size or batch_size
    mem_images = args.mem_images if args.mem_images is not None else 2 * mem_batch
    if 0 < mem_images < 2 * mem_batch:
        log(f"[{name}] note: the 1x memory probe ({mem_images} images) is under 2 batches of {mem_batch}; the "
            "heap reaches its working size over the first batches, so 1x/4x then measures warm-up, not growth")
    return mem_images, mem_batch


def prepare_pair(args: argparse.Namespace, name: str, folder: Path, preset: dict, mem_images: int) -> Pair:
    """Weights, data and the decoded images of the pair, the models on the device, the bare loop's batches."""
    images = args.images or preset["images"]
    edge_ckpt, server_ckpt = pair_checkpoints(args, name, preset, folder)
    pair = Pair(name=name, preset=preset, images=images, batch_size=args.batch_size or preset["batch_size"],
                folder=folder, edge_ckpt=edge_ckpt, server_ckpt=server_ckpt,
                data_path=pair_data_path(preset, folder, max(images, 4 * mem_images)), in_memory=args.data != "parquet")
    log(f"[{name}] decoding {images} images for the bare loop ...")
    pair.edge, pair.server, pair.x, pair.labels = load_inputs(preset, pair.data_path, images, edge_ckpt, server_ckpt)
    device = torch.device(args.device)
    pair.edge.to(device)
    pair.server.to(device)
    if getattr(args, "gate", "all") != "all" and getattr(args, "offload_share", None):
        args.threshold = offload_share_threshold(args, pair, device)
    pin = args.device == "cuda"
    pair.batches = [pair.x[i:i + pair.batch_size].pin_memory() if pin else pair.x[i:i + pair.batch_size].clone()
                    for i in range(0, len(pair.x), pair.batch_size)]
    return pair


def offload_share_threshold(args: argparse.Namespace, pair: Pair, device: torch.device) -> float:
    """The eta at which the edge offloads ``--offload-share`` of the images (random-init weights are unsure of all)."""
    bs = pair.batch_size
    with torch.inference_mode():
        logits = torch.cat([pair.edge(pair.x[i:i + bs].to(device)).float().cpu() for i in range(0, len(pair.x), bs)])
    entropy = -torch.log2(torch.softmax(logits, dim=-1).amax(dim=-1))
    threshold = float(torch.quantile(entropy, 1.0 - float(args.offload_share)))
    log(f"[{pair.name}] threshold eta = {threshold:.4f}: offloads {float((entropy > threshold).float().mean()):.1%}")
    return threshold


@dataclass
class Timings:
    """Seconds of the alternating (sweep, bare) repeats, one entry per repeat."""

    walls: list[float] = field(default_factory=list)
    sweeps: list[float] = field(default_factory=list)
    sweep_cpus: list[float] = field(default_factory=list)
    bares: list[float] = field(default_factory=list)
    bare_cpus: list[float] = field(default_factory=list)
    timm_ceilings: list[float] = field(default_factory=list)
    bare_ceilings: list[float | None] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)
    last: dict | None = None  # the last sweep's results


def time_pairs(args: argparse.Namespace, pair: Pair) -> Timings:
    """``--repeats`` (sweep, bare) pairs, alternating which goes first so that a change in machine load hits both.

    On CPU the phase timers cost nothing (no device to synchronise), so every timed sweep records
    them; on a GPU they synchronise, so each repeat adds a separate profiled sweep.
    """
    t = Timings()
    cpu_profile = args.device == "cpu"
    for r in range(args.repeats):
        for what in (("sweep", "bare") if r % 2 == 0 else ("bare", "sweep")):
            if what == "sweep":
                wall, t.last = pair.sweep(args, profile=cpu_profile)
                t.walls.append(wall)
                t.sweeps.append(t.last["timing"]["sweep_seconds"])
                t.sweep_cpus.append(t.last["timing"]["sweep_cpu_seconds"])
                if cpu_profile:
                    t.phases.append(t.last["timing"]["phases"])
            else:
                b = bare_loop(args, pair.edge, pair.server, pair.batches, pair.preset["budgets"], len(pair.strategies))
                t.bares.append(b["bare"])
                t.bare_cpus.append(b["bare_cpu"])
                t.timm_ceilings.append(b["timm_ceiling"])
                t.bare_ceilings.append(b["bare_ceiling"])
        log(f"[{pair.name}] repeat {r + 1}/{args.repeats}: sweep {t.sweeps[-1]:.2f} s (cpu {t.sweep_cpus[-1]:.2f} s, "
            f"evaluate wall {t.walls[-1]:.2f} s), bare {t.bares[-1]:.2f} s (cpu {t.bare_cpus[-1]:.2f} s), "
            f"load {os.getloadavg()[0]:.2f}")
        if not cpu_profile:
            t.phases.append(pair.sweep(args, profile=True)[1]["timing"]["phases"])
    return t


def selection_shares(phases: dict[str, float], budgets: list[int]) -> dict[str, float | None]:
    """Selection time over server time: SAGE's at the largest budget, SAGE's over all budgets, and everyone's."""
    bmax = max(budgets)
    select = {k: v for k, v in phases.items() if k.startswith("select/")}
    server_t = {k: v for k, v in phases.items() if k.startswith("server/")}
    sage = f"select/sage/B{bmax}" in phases  # (a preset's strategies may leave sage out)

    def server_of(budget: int) -> float:
        """SAGE's server time at ``budget``: its own forward (per-cell phases, before issue 26), else its
        share of the one forward all strategies share at that budget (``server/B<b>``, split evenly)."""
        if f"server/sage/B{budget}" in phases:
            return phases[f"server/sage/B{budget}"]
        cells = sum(1 for k in select if k.endswith(f"/B{budget}"))
        return phases[f"server/B{budget}"] / max(1, cells)

    sage_budgets = [int(k.rsplit("/B", 1)[1]) for k in select if k.startswith("select/sage/")]
    # all of SAGE's budgets: includes the per-batch attention sort and Gram matrix that its first
    # budget computes and the others reuse
    return {"sage_select_share_at_Bmax": phases[f"select/sage/B{bmax}"] / server_of(bmax) if sage else None,
            "sage_select_share_all_budgets": (sum(phases[f"select/sage/B{b}"] for b in sage_budgets)
                                              / sum(server_of(b) for b in sage_budgets)) if sage else None,
            "all_select_share": sum(select.values()) / (sum(server_t.values()) + phases["ceiling"])}


def pair_figures(args: argparse.Namespace, pair: Pair, t: Timings) -> dict[str, Any]:
    """The pair's row: medians, ratios (the headline: the median of adjacent pairs' ratios, which share the load)."""
    last, med = t.last, statistics.median
    phases = {k: med(p[k] for p in t.phases) for k in t.phases[0]}  # medians over repeats
    timm_ceiling = med(t.timm_ceilings)
    preset = pair.preset
    return {
        "models": f"{preset['edge']} -> {preset['server']}", "images": last["num_images"],
        "batch_size": pair.batch_size, "strategies": len(pair.strategies), "budgets": preset["budgets"],
        "server_passes_per_image": len(pair.strategies) * len(preset["budgets"]) + 1,
        "data": "in-memory tensors" if pair.in_memory else "decoded from parquet",
        "gate": getattr(args, "gate", "all"), "threshold": getattr(args, "threshold", None),
        "offloaded": last["num_offloaded"],
        "sweep_s": t.sweeps, "wall_s": t.walls, "bare_s": t.bares,
        "sweep_median_s": med(t.sweeps), "wall_median_s": med(t.walls), "bare_median_s": med(t.bares),
        "sweep_cpu_s": t.sweep_cpus, "bare_cpu_s": t.bare_cpus,
        "ratio_sweep": med([s / b for s, b in zip(t.sweeps, t.bares)]),
        "ratio_of_medians": med(t.sweeps) / med(t.bares),
        "ratio_sweep_per_repeat": [s / b for s, b in zip(t.sweeps, t.bares)],
        "ratio_cpu": med([s / b for s, b in zip(t.sweep_cpus, t.bare_cpus)]),
        "ratio_wall": med(t.walls) / med(t.bares),
        "images_per_s": last["num_images"] / med(t.sweeps),
        "bare_images_per_s": last["num_images"] / med(t.bares),
        "ceiling_phase_s": phases["ceiling"], "timm_ceiling_s": timm_ceiling,
        "ceiling_throughput_ratio": timm_ceiling / phases["ceiling"],
        "bare_loop_ceiling_s": None if t.bare_ceilings[0] is None else med(t.bare_ceilings),
        **selection_shares(phases, preset["budgets"]),
        "edge_phase_s": phases.get("edge"),
        "edge_forwards_per_image": last["timing"]["edge_forwards_per_image"],
        "server_passes": last["timing"]["server_passes"], "threads": last["timing"]["threads"],
    }


def flops_figures(args: argparse.Namespace, pair: Pair, images_per_s: float) -> dict[str, Any]:
    """Model FLOPs per image, the TFLOP/s the sweep reached, and on a GPU the fraction of its bf16 peak."""
    flops = sweep_flops_per_image(pair.edge, pair.server, pair.preset["budgets"], len(pair.strategies))
    out: dict[str, Any] = {"gflop_per_image": flops / 1e9, "achieved_tflops": flops * images_per_s / 1e12}
    if args.device == "cuda":
        gpu = torch.cuda.get_device_name()
        peak = args.peak_tflops or gpu_peak_tflops(gpu)
        out.update(gpu=gpu, bf16_peak_tflops=peak,
                   fraction_of_bf16_peak=None if not peak else out["achieved_tflops"] / peak)
    return out


def cache_figures(args: argparse.Namespace, pair: Pair) -> dict[str, Any]:
    """A first run with ``cache.edge=true`` fills the edge cache, a second reads it: edge forwards and results."""
    log(f"[{pair.name}] edge cache: a first run fills it, a second reads it ...")
    cache = ("cache.edge=true", f"cache.dir={pair.folder / 'edge-cache'}")
    _, first = pair.sweep(args, extra=cache)
    _, second = pair.sweep(args, extra=cache)
    same = first["results"] == second["results"] and first["ceiling"] == second["ceiling"]
    return {"first_edge_forwards_per_image": first["timing"]["edge_forwards_per_image"],
            "second_edge_forwards_per_image": second["timing"]["edge_forwards_per_image"],
            "second_sweep_s": second["timing"]["sweep_seconds"], "results_identical": same}


def bench_pair(args: argparse.Namespace, name: str, tmp: Path, preset: dict | None = None,
               label: str | None = None) -> dict:
    """One model pair (``PRESETS[name]``, or ``preset``), sweep vs bare; ``label`` names its folder."""
    preset = dict(preset or PRESETS[name])
    folder = tmp / (label or name)
    folder.mkdir()
    mem_images, mem_batch = memory_sizes(args, name, args.batch_size or preset["batch_size"])
    pair = prepare_pair(args, name, folder, preset, mem_images)
    log(f"[{name}] warm-up ...")
    pair.sweep(args, n=min(pair.images, pair.batch_size))
    bare_loop(args, pair.edge, pair.server, pair.batches[:1], preset["budgets"], len(pair.strategies))
    out = pair_figures(args, pair, time_pairs(args, pair))
    out.update(flops_figures(args, pair, out["images_per_s"]))
    if args.cache_check:
        out["cache"] = cache_figures(args, pair)
    if mem_images:
        out["memory"] = memory_figures(args, pair, mem_images, mem_batch)
    return out
