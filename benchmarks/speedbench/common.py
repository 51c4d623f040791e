"""What every part of the speed benchmark shares: the model-pair presets, logging, device helpers."""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch

PRESETS = {
    "embedded": dict(edge="sagebench_fmnist_edge", server="sagebench_fmnist_server", budgets=[4, 8, 12, 16, 24],
                     data="embedded", images=2000, batch_size=500),
    "cifar10": dict(edge="sagebench_cifar10_edge", server="sagebench_cifar10_server", budgets=[5, 10, 16, 21, 31],
                    data="cifar10", images=2000, batch_size=500),
    "deit-tiny": dict(edge="deit_tiny_patch16_224", server="deit_tiny_patch16_224", budgets=[16, 32, 48, 64, 96],
                      data="random", images=256, batch_size=64),
    "deit": dict(edge="deit_tiny_patch16_224", server="deit_base_patch16_224", budgets=[16, 32, 48, 64, 96],
                 data="random", images=256, batch_size=64),
}
STRATEGIES = ["random", "uniform", "attention_prefix", "sage"]
#: presets whose data (and trained weights) ship inside sagebench
SHIPPED_DATA = ("embedded", "cifar10")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def autocast_ctx(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The autocast a sweep at ``--precision`` runs its forwards under (none at full precision)."""
    if args.precision in ("bf16-mixed", "16-mixed"):
        dtype = torch.bfloat16 if args.precision.startswith("bf16") else torch.float16
        return torch.autocast(args.device, dtype=dtype)
    return contextlib.nullcontext()


def sync(args: argparse.Namespace) -> None:
    """Wait for the device, so that a clock read after it counts the work queued before it."""
    if args.device == "cuda":
        torch.cuda.synchronize()
