#!/usr/bin/env python
"""Memory over one long sweep, sampled at every batch: does anything grow besides the records?

``benchmarks/speed.py`` compares the peak of 1x and 4x a few hundred images; this follows one run
over as many images as ImageNet val (50,000) to bound what a full evaluation holds:

    python benchmarks/memory_trace.py --models embedded --images 50000      # ~3 min on 2 cores
    python benchmarks/memory_trace.py --models deit-tiny --images 2048      # ~5 min

The images are random (the preset's size and channels), the weights random-init (memory does not
depend on them); every image is offloaded (gate ``all``) to the 4 strategies x 5 budgets of
``speed.py``'s presets. The sweep runs in a fresh process that records, after every batch, the
process's own memory (Linux ``RssAnon``: the mapped data-set file is not process memory, see
docs/performance.md "Memory") and its peak during that batch (sampled every 10 ms).

What it prints: the trace at a few points, the level reached after warm-up (the first
``--warmup`` batches, default 10 % of them, at least 4 and up to the first partial-results flush:
the allocator's heap grows to its working size, and the first flush's buffers, freed but kept
for reuse, raise it once), the peak of the
whole run, and how much of the growth between them the records explain: one float64 row per
image is the sweep's output, kept until the end (sagebench.metrics.SweepRecords). "flat" means
the growth beyond the records' own bytes is under 5 % of the warm level (speed.py's 1x/4x bar):
the allocator still steps up once in a while by 10-25 MB (measured, docs/performance.md), while a
leak of 1 kB per image would add 50 MB over 50,000 images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402, F401  (sets the offline environment, as the CLI does)
from speedbench.common import PRESETS, log  # noqa: E402
from speedbench.inputs import make_checkpoints, make_random_parquet, sweep_overrides  # noqa: E402
from speedbench.memory import AnonSampler, proc_status_mb  # noqa: E402


def _anon_mb() -> float:
    got = proc_status_mb("RssAnon")
    if got is None:
        raise SystemExit("memory_trace.py needs Linux (/proc/self/status RssAnon)")
    return got["RssAnon"]


def child(spec: dict) -> None:
    """Run the sweep in this (fresh) process, recording memory after every batch."""
    from sagebench.config import load_config
    from sagebench.sweep import module
    from sagebench.sweep.evaluate import evaluate
    from sagebench.sweep.partial import PartialResults

    sampler = AnonSampler(interval_s=0.01)
    trace: list[dict] = []
    step = module.SageBenchModule.test_step

    def traced_step(self, batch, batch_idx: int):
        sampler.peak = _anon_mb()  # the peak during this batch
        out = step(self, batch, batch_idx)
        now = _anon_mb()
        flushes = sum(cb.chunks_written for cb in self.trainer.callbacks if isinstance(cb, PartialResults))
        trace.append({"batch": batch_idx, "images": int(self.sweep.num_images), "end_mb": now, "flushes": flushes,
                      "peak_mb": max(sampler.peak, now), "records_mb": int(self.sweep.num_images) * 8 *
                      self.layout.num_columns / 2**20})
        return out

    module.SageBenchModule.test_step = traced_step
    evaluate(load_config(None, spec["overrides"]))
    sampler.stop()
    print("TRACE " + json.dumps({"trace": trace, "after_run_mb": _anon_mb()}), flush=True)


def summarize(trace: list[dict], warmup: int) -> dict:
    """Warm level, run peak, growth and the records' share of it (all MB)."""
    if len(trace) <= warmup:
        raise SystemExit(f"the run has {len(trace)} batches; a trace needs more than --warmup ({warmup})")
    warm = trace[:warmup]
    level = max(t["peak_mb"] for t in warm)
    peak = max(t["peak_mb"] for t in trace)
    records = trace[-1]["records_mb"] - warm[-1]["records_mb"]
    excess = peak - level - records
    return {"warm_level_mb": level, "run_peak_mb": peak, "growth_mb": peak - level,
            "records_growth_mb": records, "excess_mb": excess, "excess_fraction": excess / level,
            "flat": excess / level < 0.05}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="embedded", choices=list(PRESETS))
    p.add_argument("--images", type=int, default=50000)
    p.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    p.add_argument("--warmup", type=int, default=None,
                   help="batches in which the heap may grow to its working size (default: 10 %% of them, at least 4)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument("--json", default=None, help="also write the trace and summary here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    preset = PRESETS[args.models]
    batch_size = args.batch_size or preset["batch_size"]
    embedded = preset["data"] == "embedded"
    with tempfile.TemporaryDirectory(prefix="sagebench-memtrace-") as tmp:
        folder = Path(tmp)
        log(f"making {args.images} random images and random-init checkpoints ...")
        edge_ckpt, server_ckpt = make_checkpoints(folder, preset["edge"], preset["server"])
        data = make_random_parquet(folder / "random.parquet", args.images, size=28 if embedded else 224,
                                   classes=10 if embedded else 1000, mode="L" if embedded else "RGB")
        sweep_args = argparse.Namespace(device="cpu", precision="32-true", compile=False,
                                        threads=None, num_workers=None, set=args.set)
        overrides = sweep_overrides(sweep_args, args.models, preset, edge_ckpt, server_ckpt, data, args.images,
                                    batch_size, folder / "out")
        log(f"sweep over {args.images} images, batch {batch_size}, in a fresh process ...")
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps({"overrides": overrides})],
                              capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    line = next((x for x in proc.stdout.splitlines() if x.startswith("TRACE ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"the sweep failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    got = json.loads(line[len("TRACE "):])
    trace = got["trace"]
    if args.warmup is None:  # 10 % of the batches, at least 4, and the first partial-results flush
        first_flush = next((i + 1 for i, t in enumerate(trace) if t["flushes"]), 0)
        args.warmup = max(4, len(trace) // 10, first_flush)
    s = summarize(trace, args.warmup)
    print(f"{args.models}: {args.images} images, batch {batch_size}, {len(trace)} batches; "
          f"process memory (RssAnon, MB) after batch / peak during it:")
    shown = sorted({0, 1, args.warmup - 1, *range(0, len(trace), max(1, len(trace) // 10)), len(trace) - 1})
    for i in shown:
        t = trace[i]
        print(f"  batch {t['batch'] + 1:>5} ({t['images']:>6} images)  {t['end_mb']:8.0f} / {t['peak_mb']:<8.0f}"
              f"  records {t['records_mb']:6.1f}  partial-results flushes {t['flushes']}")
    print(f"warm level (peak over the first {args.warmup} batches) {s['warm_level_mb']:.0f} MB; run peak "
          f"{s['run_peak_mb']:.0f} MB; growth {s['growth_mb']:.1f} MB, of which the records "
          f"{s['records_growth_mb']:.1f} MB; beyond them {s['excess_mb']:+.1f} MB "
          f"({100 * s['excess_fraction']:+.1f} % of the warm level): {'flat' if s['flat'] else 'NOT flat'}")
    print(f"after the run (results written): {got['after_run_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(["memory_trace.py", *(argv or sys.argv[1:])]),
                                               "summary": s, **got}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
