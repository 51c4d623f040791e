"""Row 2 of the real-gate suite: ``sagebench eval`` against ``bare_default_job.py``, each a whole process."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from .common import log
from .job import job_overrides, pair_stats

BARE_SCRIPT = Path(__file__).resolve().parents[1] / "bare_default_job.py"


def sagebench_command() -> list[str]:
    """The ``sagebench`` console script beside this Python, else the CLI run through ``-c``."""
    exe = Path(sys.executable).parent / "sagebench"
    if exe.is_file():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from sagebench.cli import main; sys.exit(main())"]


def child_env() -> dict[str, str]:
    """The environment of both subprocesses of row 2: the OpenMP wait policy ``import sagebench`` gives itself
    (PASSIVE unless set; this process has it too) for the bare script as well, which imports torch first."""
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def run_child(cmd: list[str], log_path: Path, cwd: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds (``getrusage(RUSAGE_CHILDREN)`` delta) of one subprocess, and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=child_env())
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = log_path.read_text(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{out[-4000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out


def bare_command(args: argparse.Namespace, job: dict) -> list[str]:
    """``bare_default_job.py`` doing the default job's work at this benchmark's settings."""
    return [sys.executable, str(BARE_SCRIPT), "--images", str(job["images"]),
            "--batch-size", str(job["batch_size"]), "--server-batch-size", str(job["server_batch_size"]),
            "--threshold", str(job["threshold"]), "--strategies", str(len(job["strategies"])),
            "--budgets", ",".join(map(str, job["budgets"])), "--device", args.device, "--precision", args.precision,
            *(["--threads", str(args.threads)] if args.threads else [])]


def eval_command(args: argparse.Namespace, job: dict, out_dir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """``sagebench eval logger=none`` of the default job, writing to ``out_dir``."""
    return [*sagebench_command(), "eval", "logger=none", f"output_dir={out_dir}", *job_overrides(args, job), *extra]


def same_work(last: dict, bare_out: dict, n: int) -> dict:
    """What each side computed (images, offloaded, accuracies), and whether it is the same work."""
    work = {"eval": {"images": last["num_images"], "offloaded": last["num_offloaded"],
                     "edge_accuracy": last["edge_accuracy"],
                     "ceiling_offloaded_accuracy": last["ceiling"]["offloaded_accuracy"]}, "bare": bare_out}
    work["same"] = (work["eval"]["offloaded"] == bare_out["offloaded"] and work["eval"]["images"] == bare_out["images"]
                    and abs(work["eval"]["edge_accuracy"] - bare_out["edge_accuracy"]) < 0.5 / n)
    return work


def suite_process(args: argparse.Namespace, job: dict, tmp: Path) -> dict:
    """Row 2: ``sagebench eval logger=none`` against ``bare_default_job.py``, each a whole process."""
    folder = tmp / "process"
    folder.mkdir()
    n = job["images"]
    bare = bare_command(args, job)
    log("[real-gate] 2: warm-up (each process once, so that neither pays for a cold file cache) ...")
    warm = min(n, job["batch_size"])
    run_child(eval_command(args, job, folder / "warm", (f"data.limit={warm}",)), folder / "warm-eval.log", folder)
    run_child([*bare, "--images", str(warm)], folder / "warm-bare.log", folder)
    evals, eval_cpus, bares, bare_cpus, runs, bare_out = [], [], [], [], [], None
    for r in range(args.repeats):
        for what in (("eval", "bare") if r % 2 == 0 else ("bare", "eval")):
            if what == "eval":
                wall, cpu, _ = run_child(eval_command(args, job, folder / f"eval{r}"), folder / f"eval{r}.log", folder)
                runs.append(json.loads((folder / f"eval{r}" / "results.json").read_text()))
                evals.append(wall)
                eval_cpus.append(cpu)
            else:
                wall, cpu, out = run_child(bare, folder / f"bare{r}.log", folder)
                bare_out = json.loads(next(line for line in out.splitlines() if line.startswith("BARE "))[5:])
                bares.append(wall)
                bare_cpus.append(cpu)
        log(f"[real-gate] 2: repeat {r + 1}/{args.repeats}: sagebench eval {evals[-1]:.2f} s (cpu {eval_cpus[-1]:.2f}),"
            f" bare script {bares[-1]:.2f} s (cpu {bare_cpus[-1]:.2f}), load {os.getloadavg()[0]:.2f}")
    shown = eval_command(args, job, folder / "<tmp>")[len(sagebench_command()):]
    return {"images": n, "offloaded": runs[-1]["num_offloaded"], **pair_stats(evals, bares, eval_cpus, bare_cpus),
            "evaluate_wall_s": [x["timing"]["wall_seconds"] for x in runs],
            "evaluate_sweep_s": [x["timing"]["sweep_seconds"] for x in runs],
            "command": " ".join(["sagebench", *shown]).replace(f"{folder}/", ""),
            "omp_wait_policy": child_env()["OMP_WAIT_POLICY"],
            "bare_command": " ".join(["benchmarks/bare_default_job.py", *bare[2:]]),
            "work": same_work(runs[-1], bare_out, n)}
