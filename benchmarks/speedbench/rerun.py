"""Row 3 of the real-gate suite: fill an edge cache with the default job, rerun it with one new strategy, against
a bare loop of that strategy's selections and server passes over the offloaded images (pixels and evidence in memory).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Callable

from .bare import bare_selections, offloaded_groups
from .common import PRESETS, log
from .inputs import load_inputs
from .job import job_overrides, pair_stats


def rerun_strategy(args: argparse.Namespace, job: dict) -> str:
    """``--rerun-strategy``, or kdpp, or (kdpp being a default) the first built-in the default job does not run."""
    from sagebench.strategies import get_strategy, list_strategies

    if args.rerun_strategy:
        if args.rerun_strategy in job["strategies"]:
            log(f"[real-gate] note: {args.rerun_strategy} is one of the default strategies {job['strategies']}")
        return args.rerun_strategy
    if "kdpp" not in job["strategies"]:
        return "kdpp"
    return next(n for n in list_strategies() if n not in job["strategies"] and not get_strategy(n).oracle)


def folder_size(folder: Path) -> tuple[int, int]:
    """Files and bytes under ``folder``."""
    files = [f for f in folder.rglob("*") if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files)


def bare_groups(args: argparse.Namespace, job: dict, strategy: Any) -> tuple[Any, list]:
    """The bare side's inputs: the server, and the offloaded images' pixels and edge evidence by server batch."""
    from sagebench import demo
    from sagebench.edge.model import EdgeModel, rollout_options

    edge_vit, server, x, _ = load_inputs(PRESETS["cifar10"], demo.CIFAR10_FILE, job["images"],
                                         demo.CIFAR10_EDGE_WEIGHTS, demo.CIFAR10_SERVER_WEIGHTS)
    edge = EdgeModel(edge_vit, attention=job["attention"], **rollout_options(strategy.requires)).to(args.device)
    server.to(args.device)
    return server, offloaded_groups(args, edge, x, job)


def alternate(args: argparse.Namespace, rerun: Callable[[], tuple[float, dict]],
              bare: Callable[[], tuple[float, float]]) -> tuple[dict, list[float], dict]:
    """``--repeats`` (rerun, bare) pairs, alternating which goes first: their pair medians, the reruns' whole
    ``evaluate`` seconds, and the last rerun's results."""
    reruns, rerun_cpus, walls, bares, bare_cpus, last = [], [], [], [], [], None
    for r in range(args.repeats):
        for what in (("rerun", "bare") if r % 2 == 0 else ("bare", "rerun")):
            if what == "rerun":
                wall, last = rerun()
                walls.append(wall)
                reruns.append(last["timing"]["sweep_seconds"])
                rerun_cpus.append(last["timing"]["sweep_cpu_seconds"])
            else:
                b, c = bare()
                bares.append(b)
                bare_cpus.append(c)
        log(f"[real-gate] 3: repeat {r + 1}/{args.repeats}: rerun {reruns[-1]:.2f} s (cpu {rerun_cpus[-1]:.2f}), "
            f"bare {bares[-1]:.2f} s (cpu {bare_cpus[-1]:.2f}), load {os.getloadavg()[0]:.2f}")
    return pair_stats(reruns, bares, rerun_cpus, bare_cpus), walls, last


def suite_rerun(args: argparse.Namespace, job: dict, tmp: Path) -> dict:
    """Row 3: the cached rerun of one new strategy against the bare loop of its selections and server passes."""
    from sagebench.config import load_config
    from sagebench.strategies import get_strategy
    from sagebench.sweep.evaluate import evaluate

    name = rerun_strategy(args, job)
    strategy = get_strategy(name)
    if strategy.oracle:
        raise SystemExit(f"--rerun-strategy {name}: an oracle needs the server's attention; the bare loop has none")
    folder = tmp / "rerun"  # the rerun reads the data set as a real run does (no in-memory images)
    folder.mkdir()
    base = ["logger=none", "progress=false", "cache.edge=true", f"cache.dir={folder / 'cache'}",
            # phase times: free on a CPU (nothing to synchronise), so on and shown; on a GPU they would sync
            *(["profile=true"] if args.device == "cpu" else []), *job_overrides(args, job)]
    log(f"[real-gate] 3: filling the edge cache (the default job, cache.edge=true, {job['images']} images) ...")
    t0 = time.perf_counter()
    fill = evaluate(load_config(None, [*base, f"output_dir={folder / 'fill'}"]))
    fill_wall = time.perf_counter() - t0
    files_after_fill = folder_size(folder / "cache")[0]
    runs = [0]

    def rerun() -> tuple[float, dict]:
        runs[0] += 1
        t0 = time.perf_counter()
        res = evaluate(load_config(None, [*base, f"strategies=[{name}]", f"output_dir={folder / f'rerun{runs[0]}'}"]))
        return time.perf_counter() - t0, res

    log("[real-gate] 3: the bare side's inputs (decoded pixels, edge evidence of the offloaded images) ...")
    server, groups = bare_groups(args, job, strategy)
    bare_selections(args, strategy, server, groups[:1], job["budgets"])  # warm-up
    stats, walls, last = alternate(args, rerun, lambda: bare_selections(args, strategy, server, groups,
                                                                        job["budgets"]))
    timing = last["timing"]
    files, size = folder_size(folder / "cache")
    return {"strategy": name, "images": last["num_images"], "offloaded": last["num_offloaded"],
            "bare_offloaded": sum(len(g[0]) for g in groups), "server_batches": len(groups),
            **stats, "evaluate_wall_s": walls,
            "fill_sweep_s": fill["timing"]["sweep_seconds"], "fill_evaluate_wall_s": fill_wall,
            "fill_edge_forwards_per_image": fill["timing"]["edge_forwards_per_image"],
            "edge_forwards_per_image": timing["edge_forwards_per_image"],
            # whatever the results say about the cache (edge_cache today; more keys as the engine grows)
            "cache_timing": {k: v for k, v in timing.items() if "cache" in k},
            "cache_results": {k: v for k, v in last.items() if "cache" in k and k != "timing"},
            "cache_files": files, "cache_bytes": size, "cache_files_after_fill": files_after_fill,
            "server_passes": timing.get("server_passes"), "phases": timing.get("phases")}
