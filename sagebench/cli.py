"""``sagebench`` command line: a thin shell over the library.

User errors (:class:`SageBenchError`) print one clear message and exit with status 2, without
a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

from sagebench.errors import SageBenchError


def _quiet_libraries() -> None:
    """Keep the terminal for sagebench's own output (Lightning tips, dataloader worker hints)."""
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cmd_eval(args: argparse.Namespace) -> int:
    from sagebench.config import load_config
    from sagebench.evaluate import evaluate
    from sagebench.results import format_table

    cfg = load_config(args.config, args.overrides)
    results = evaluate(cfg)
    if results is not None:
        print()
        print(format_table(results))
        print(f"\nresults: {Path(results['output_dir']) / 'results.json'}  "
              f"(wall {results['timing']['wall_seconds']:.1f} s)")
    return 0


def _cmd_strategies(args: argparse.Namespace) -> int:
    from sagebench.strategies import describe, list_strategies

    names = list_strategies(args.pattern)
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:<{width}}  {describe(name)}")
    return 0


def _cmd_train_demo(args: argparse.Namespace) -> int:
    from sagebench.demo.train import train_demo

    summaries = train_demo(Path(args.out) if args.out else None, roles=tuple(args.roles),
                           data_dir=Path(args.data_dir) if args.data_dir else None,
                           epochs=args.epochs, seed=args.seed, export_data=not args.no_export)
    for s in summaries:
        print(f"{s['role']}: test accuracy {100 * s['test_accuracy']:.2f}% -> {s['weights']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sagebench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="run a sweep (default: the embedded benchmark) and write results.json")
    p.add_argument("--config", "-c", help="YAML file, or the name of a shipped experiment (e.g. imagenet_deit)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotlist overrides, e.g. budgets=[8,16]")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("strategies", help="list registered composition strategies")
    p.add_argument("pattern", nargs="?", default="*", help="shell wildcard, e.g. 'att*'")
    p.set_defaults(func=_cmd_strategies)

    p = sub.add_parser("train-demo", help="train the embedded benchmark's edge and server ViTs")
    p.add_argument("--out", help="output folder (default: the package's demo folder)")
    p.add_argument("--roles", nargs="+", default=["edge", "server"], choices=["edge", "server"])
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files "
                                      "(default /usr/share/datasets/fashion-mnist, else the hub)")
    p.add_argument("--no-export", action="store_true", help="do not (re)write the test-split parquet")
    p.set_defaults(func=_cmd_train_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except SageBenchError as exc:
        print(f"sagebench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sagebench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
