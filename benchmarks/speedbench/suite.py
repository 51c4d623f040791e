"""``--suite real-gate`` (issue 16): the default job (``sagebench eval`` with no arguments), one run, one table.

Row 1: its sweep at its own gate and at gate ``all`` against the bare forwards (:mod:`.pair`); row 2:
the whole process against ``bare_default_job.py`` (:mod:`.process`); row 3: a cached rerun of one new
strategy against a bare loop of its selections (:mod:`.rerun`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import PRESETS, log
from .job import default_job
from .pair import bench_pair
from .process import suite_process
from .rerun import suite_rerun


def suite_sweeps(args: argparse.Namespace, job: dict, tmp: Path) -> list[dict]:
    """Row 1: the default job's sweep at its own gate and at gate ``all``, each against the bare forwards."""
    preset = dict(PRESETS["cifar10"], strategies=job["strategies"], budgets=job["budgets"], images=job["images"],
                  batch_size=job["batch_size"])
    rows = []
    for gate in [job["gate"]] + (["all"] if job["gate"] != "all" else []):
        a = argparse.Namespace(**vars(args))
        a.gate, a.threshold, a.weights, a.offload_share = gate, job["threshold"], "shipped", None
        a.images, a.batch_size, a.server_batch_size = job["images"], job["batch_size"], job["server_batch_size"]
        a.mem_images, a.cache_check = 0, False
        log(f"[real-gate] 1: the default job's sweep at gate {gate} vs bare forwards, {job['images']} images ...")
        rows.append(bench_pair(a, "cifar10", tmp, preset=preset, label=f"gate-{gate}"))
    return rows


def bench_suite(args: argparse.Namespace, tmp: Path) -> dict:
    """The rows ``--rows`` asks for, with the default job they measure."""
    job = default_job(args)
    log(f"[real-gate] the default job: {job}")
    rows = {int(r) for r in str(args.rows).split(",") if r.strip()}
    out = {"suite": "real-gate", "job": job, "sweeps": suite_sweeps(args, job, tmp) if 1 in rows else []}
    if 2 in rows:
        out["process"] = suite_process(args, job, tmp)
    if 3 in rows:
        out["rerun"] = suite_rerun(args, job, tmp)
    return out
