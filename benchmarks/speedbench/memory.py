"""Peak memory of a sweep, each measured in a fresh process (``speed.py --memprobe``) so imports do not count."""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import torch

from .common import log
from .inputs import sweep_overrides

#: the entry point the probe process runs
SPEED_SCRIPT = Path(__file__).resolve().parents[1] / "speed.py"


def proc_status_mb(*keys: str) -> dict[str, float] | None:
    """``/proc/self/status`` fields in MB (Linux), or None."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    got = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in lines if line.split(":")[0] in keys}
    return got if len(got) == len(keys) else None


class AnonSampler:
    """Samples the process's own memory (``RssAnon``) and the mapped files (``RssFile``) in a thread.

    /proc has no peak for RssAnon, so one is kept here: :attr:`peak` (MB) since start or since the
    caller last set it; :attr:`file_mb` the latest RssFile. Linux only (both stay as they are elsewhere).
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.peak = 0.0
        self.file_mb: float | None = None
        self._interval = interval_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            got = proc_status_mb("RssAnon", "RssFile")
            if got:
                self.peak = max(self.peak, got["RssAnon"])
                self.file_mb = got["RssFile"]
            if self._done.wait(self._interval):
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def memory_probe(args: argparse.Namespace) -> None:
    """In the probe process: one sweep (``--memprobe`` overrides), then its peaks printed as one ``MEMPROBE`` line."""
    from sagebench.config import load_config
    from sagebench.sweep.evaluate import evaluate

    spec = json.loads(args.memprobe)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):  # Linux: restart the peak here, so that imports do not count
        Path("/proc/self/clear_refs").write_text("5")
    # RSS counts the pages of files mapped into the process too: `datasets` memory-maps the data
    # set's Arrow file, so RSS grows by the bytes of every image read (reclaimable page cache, not
    # process memory). The process's own memory is RssAnon, sampled.
    anon = AnonSampler()
    res = evaluate(load_config(None, spec["overrides"]))
    anon.stop()
    hwm = proc_status_mb("VmHWM")  # honours the reset above; getrusage's maximum does not
    peak = hwm["VmHWM"] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"peak_rss_mb": peak, "images": res["num_images"]}
    if anon.peak:
        out["peak_anon_mb"], out["file_mapped_mb"] = anon.peak, anon.file_mb
    if args.device == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("MEMPROBE " + json.dumps(out), flush=True)


def memory_key(args: argparse.Namespace, probe: dict) -> str:
    """What "flat" is judged on: GPU memory on a GPU, else the process's own memory (RssAnon) where
    Linux reports it, else RSS."""
    if args.device == "cuda":
        return "cuda_peak_mb"
    return "peak_anon_mb" if "peak_anon_mb" in probe else "peak_rss_mb"


def run_memprobe(args: argparse.Namespace, overrides: list[str]) -> dict:
    """Peak memory of one sweep in a fresh process (images decoded by the DataLoader, none held)."""
    cmd = [sys.executable, str(SPEED_SCRIPT), "--device", args.device, "--memprobe",
           json.dumps({"overrides": overrides})]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("MEMPROBE "):
            return json.loads(line[len("MEMPROBE "):])
    raise RuntimeError(f"memory probe failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def memory_figures(args: argparse.Namespace, pair: Any, mem_images: int, mem_batch: int) -> dict[str, Any]:
    """Peak memory of a sweep of the pair over ``mem_images`` and 4x as many images, ``--mem-runs`` runs each.

    A run's peak depends a little on where the allocator happened to place its blocks (on CPU, +-3 %
    between identical runs of 2 batches), so the largest peak is kept: the memory a run of that size may need.
    """
    mem = {}
    for factor in (1, 4):
        probes = []
        for rep in range(args.mem_runs):
            log(f"[{pair.name}] peak memory of a sweep over {factor * mem_images} images "
                f"(separate process, {rep + 1}/{args.mem_runs}) ...")
            o = sweep_overrides(args, pair.name, pair.preset, pair.edge_ckpt, pair.server_ckpt, pair.data_path,
                                factor * mem_images, mem_batch, pair.folder / f"mem{factor}-{rep}")
            probes.append(run_memprobe(args, o))
        key = memory_key(args, probes[0])
        mem[f"{factor}x"] = dict(max(probes, key=lambda p: p[key]), runs=[p[key] for p in probes])
    return mem
