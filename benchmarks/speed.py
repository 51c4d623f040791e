#!/usr/bin/env python
"""Speed benchmark: a whole sagebench sweep vs. the bare model forwards it needs, side by side.

One command, no network, no trained weights (random-init models saved to a temporary folder):

    python benchmarks/speed.py --models embedded --repeats 3
    python benchmarks/speed.py --models deit-tiny,deit --images 128 --repeats 3
    python benchmarks/speed.py --models deit --device cuda --precision bf16-mixed --batch-size 256 --images 4096

For each model pair it prints, measured in one process on the same inputs:

* sweep / bare: ``sagebench.sweep.evaluate`` (config, Trainer, DataLoader, edge with its evidence, gate,
  every strategy's selection, gathers, records, results files) against a plain loop that runs one
  edge forward per image, one ceiling forward, and for each (strategy, budget) one server forward
  on that many tokens (a contiguous slice of the patches: no selection, no gather), on the same
  image tensors, same weights, same batch size, same precision and threads. Target <= 1.10.
  ``sweep`` is ``Trainer.test`` (every per-image cost); ``wall`` adds the fixed costs of a run
  (building models and data set, hashing the data, writing results and plots).
* ceiling throughput: the sweep's ceiling pass (``profile=true`` phase times) against a plain timm
  forward loop over the same batches. Target >= 0.95.
* selection share: SAGE's selection time at the largest budget over the server time of that
  (strategy, budget) cell, and all selections over all server passes. Target < 2 %.
* edge forwards per image (must be 1; 0 on a rerun with ``cache.edge=true``) and the peak memory
  of a sweep over 1x and 4x the images (separate processes; must stay flat).

Medians over ``--repeats`` runs, sweep and bare alternating so that a change in machine load
hits both. Models: ``embedded`` (the Fashion-MNIST benchmark's two ViTs on its own shipped test
images), ``deit-tiny`` (DeiT-Tiny edge and server) and ``deit`` (DeiT-Tiny edge -> DeiT-Base
server, the paper's pair) on random 224x224 images. ``--data memory`` (the default) serves the
sweep the same decoded image tensors the bare loop uses (``evaluate(cfg, dataset=...)``), so that
loading and decoding the data set, which a real run pays but which is no model forward (and which
the bare loop does not do), stay out of the comparison; ``--data parquet`` makes the sweep load
and decode them as a normal run does.

``--suite real-gate`` (issue 16) measures the default job (``sagebench eval`` with no arguments: its
strategies, budgets, batch size, gate and shipped weights, read from its config) in one run and one
table: (1) the sweep at its own gate and at gate ``all`` against the bare forwards, (2) the whole
``sagebench eval`` process against ``benchmarks/bare_default_job.py`` (the same work as a bare
script), both as subprocesses, and (3) a rerun of one new strategy (``--rerun-strategy``, default
``kdpp``) from a filled edge cache against a bare loop of that strategy's selections and server
passes over the offloaded images:

    python benchmarks/speed.py --suite real-gate --repeats 3            # all 10,000 images
    python benchmarks/speed.py --suite real-gate --images 1000 --repeats 1   # a smoke test

The parts live in ``benchmarks/speedbench/`` (inputs, bare loops, one pair, the suite, memory, report).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "--suite" in sys.argv:  # the suite measures the default job, which runs with the OpenMP wait policy that
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # `import sagebench` sets before torch loads; so do we

import torch  # noqa: E402
from speedbench.common import PRESETS, log  # noqa: E402
from speedbench.memory import memory_probe  # noqa: E402
from speedbench.pair import bench_pair  # noqa: E402
from speedbench.report import fmt_suite, fmt_table  # noqa: E402
from speedbench.suite import bench_suite  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="embedded", help="comma list of: " + ", ".join(PRESETS))
    p.add_argument("--suite", default=None, choices=["real-gate"],
                   help="real-gate: the default job (`sagebench eval`, its own config) at its gate and at gate all, "
                        "as a whole process, and as a cached rerun of one new strategy, in one table (--models, "
                        "--gate, --threshold and --weights do not apply)")
    p.add_argument("--rows", default="1,2,3", help="--suite real-gate: which rows to run (comma list of 1, 2, 3)")
    p.add_argument("--rerun-strategy", default=None, metavar="NAME",
                   help="--suite real-gate: the strategy of the cached rerun (default kdpp, or the first built-in "
                        "the default job does not run)")
    p.add_argument("--gate", default="all", choices=["all", "min_entropy"],
                   help="all: every image offloaded (the worst case); min_entropy: the gate users run, whose bare "
                        "loop serves the offloaded images in full batches")
    p.add_argument("--threshold", type=float, default=1.0, help="min-entropy threshold eta (--gate min_entropy)")
    p.add_argument("--weights", default="random", choices=["random", "shipped"],
                   help="random-init checkpoints (default), or the embedded presets' trained weights (their real gate)")
    p.add_argument("--offload-share", type=float, default=None,
                   help="with --gate min_entropy: choose eta so that this share of the images is offloaded "
                        "(e.g. 0.36, ImageNet's at eta 1.0; for random-init weights)")
    p.add_argument("--images", type=int, default=None,
                   help="images per sweep (default: the preset's; --suite real-gate: all of the default job's)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--server-batch-size", type=int, default=None,
                   help="server_batch_size for the sweep and the bare loop (default: the config's, i.e. batch size)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="32-true", help="trainer.precision: 32-true, bf16-mixed, 16-mixed")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--num-workers", type=int, default=None, help="data.num_workers (default: sagebench's)")
    p.add_argument("--data", default="memory", choices=["memory", "parquet"],
                   help="memory: the sweep reads the decoded tensors the bare loop uses; parquet: it decodes them")
    p.add_argument("--compile", action="store_true", help="compile=true for the sweep")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra config override for every sweep (repeatable), e.g. reuse_host_memory=false")
    p.add_argument("--cache-check", action=argparse.BooleanOptionalAction, default=None,
                   help="also run the sweep twice with cache.edge=true (default: on for embedded only)")
    p.add_argument("--mem-images", type=int, default=None, help="images of the 1x memory probe (0: skip; default 2 batches)")
    p.add_argument("--mem-batch-size", type=int, default=None)
    p.add_argument("--mem-runs", type=int, default=2, help="runs per memory probe size; the largest peak counts")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's bf16 peak, if not in the built-in list")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--memprobe", default=None, help=argparse.SUPPRESS)
    return p


def quiet_libraries() -> None:
    """As the CLI: Lightning's banners and rank-zero notes off."""
    import logging

    from sagebench.cli import _quiet_libraries

    _quiet_libraries()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)


def write_json(path: str | None, table: str, results: dict) -> None:
    """``--json``: the command, the printed table and every figure."""
    if path:
        Path(path).write_text(json.dumps({"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                                          "table": table, "results": results}, indent=1, default=str))


def run_suite(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sagebench-speed-") as tmp:
        suite = bench_suite(args, Path(tmp))
    table = fmt_suite(args, suite)
    print(table)
    log(f"[real-gate] done in {time.perf_counter() - started:.0f} s")
    write_json(args.json, table, suite)


def run_pairs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        parser.error(f"unknown --models {unknown[0]!r}; choose from {', '.join(PRESETS)}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="sagebench-speed-") as tmp:
        for name in names:
            a = argparse.Namespace(**vars(args))
            if a.cache_check is None:
                a.cache_check = name == "embedded"
            results[name] = bench_pair(a, name, Path(tmp))
    table = fmt_table(args, results)
    print(table)
    write_json(args.json, table, results)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_libraries()
    if args.memprobe:
        memory_probe(args)
    elif args.suite == "real-gate":
        run_suite(args)
    else:
        run_pairs(args, parser)
    return 0


if __name__ == "__main__":
    sys.exit(main())
