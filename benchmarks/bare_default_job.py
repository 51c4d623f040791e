#!/usr/bin/env python
"""The work of the default `sagebench eval`, as a bare script: the baseline of `speed.py --suite real-gate`.

Reads the shipped CIFAR-10 test split, decodes it with timm's eval transform, runs the edge on every
image, gates by min-entropy, and serves the offloaded images in full server batches: the ceiling and,
per (strategy, budget), one server forward on that many patch tokens (a contiguous slice: no selection).
Same shipped weights as the default job (``create_model`` with its ModelSpec). Prints one JSON line.
"""

import argparse
import io
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as `sagebench eval` runs (import sagebench)
for _key, _value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("WANDB_MODE", "disabled"),
                     ("TOKENIZERS_PARALLELISM", "false")):  # speed.py's environment (offline)
    os.environ.setdefault(_key, _value)
import pyarrow.parquet as pq  # noqa: E402
import timm.data  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speedbench.bare import bare_server_tokens, flat_patches, prefix_positions  # noqa: E402
from speedbench.common import autocast_ctx  # noqa: E402

from sagebench.demo import CIFAR10_FILE  # noqa: E402
from sagebench.runtime.host_memory import keep_freed_memory  # noqa: E402
from sagebench.vit.loading import ModelSpec, create_model  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--images", type=int, default=None, help="the first N images (default: all)")
p.add_argument("--batch-size", type=int, default=500)  # defaults: the default job's (speed.py passes them)
p.add_argument("--server-batch-size", type=int, default=None, help="default: --batch-size")
p.add_argument("--threshold", type=float, default=1.0, help="min-entropy eta, bits")
p.add_argument("--strategies", type=int, default=4, help="how many strategies (each one pass per budget)")
p.add_argument("--budgets", default="5,10,16,21,31")
p.add_argument("--threads", type=int, default=None)
p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
p.add_argument("--precision", default="32-true", help="32-true, bf16-mixed or 16-mixed (autocast)")
p.add_argument("--reuse-host-memory", action=argparse.BooleanOptionalAction, default=True,
               help="glibc keeps freed memory, as the default job does (reuse_host_memory=true): same allocator")
args = p.parse_args()
if args.reuse_host_memory:
    keep_freed_memory()
budgets = [int(b) for b in args.budgets.split(",")]
if args.threads:
    torch.set_num_threads(args.threads)
device = torch.device(args.device)
edge = create_model(ModelSpec("sagebench_cifar10_edge", pretrained=True)).to(device)
server = create_model(ModelSpec("sagebench_cifar10_server", pretrained=True)).to(device)
transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=server), is_training=False)
table = pq.read_table(CIFAR10_FILE, columns=["image", "label"])
n = len(table) if args.images is None else min(args.images, len(table))
images, labels = table.column("image").to_pylist()[:n], torch.tensor(table.column("label").to_pylist()[:n])
prefix, positions = prefix_positions(server)
ph, pw = server.patch_embed.patch_size
counts = {"edge_correct": 0, "offloaded": 0, "ceiling_correct": 0}


def serve(x: torch.Tensor, y: torch.Tensor) -> None:
    """The ceiling and every (strategy, budget) pass over one server batch of offloaded images."""
    counts["offloaded"] += len(x)
    counts["ceiling_correct"] += int((server(x).argmax(-1).cpu() == y).sum())
    flat = flat_patches(x, ph, pw)
    for _ in range(args.strategies):
        for budget in budgets:
            bare_server_tokens(server, flat, budget, prefix, positions)


waiting: list[tuple[torch.Tensor, torch.Tensor]] = []
with torch.inference_mode(), autocast_ctx(args):
    for i in range(0, n, args.batch_size):
        x = torch.stack([transform(Image.open(io.BytesIO(im["bytes"])).convert("RGB"))
                         for im in images[i:i + args.batch_size]]).to(device)
        y = labels[i:i + args.batch_size]
        logits = edge(x).float()
        counts["edge_correct"] += int((logits.argmax(-1).cpu() == y).sum())
        p_max = torch.softmax(logits, dim=-1).amax(dim=-1)
        sent = (-torch.log2(p_max) > args.threshold).cpu()
        waiting.append((x[sent.to(device)], y[sent]))
        if sum(len(w[1]) for w in waiting) >= (args.server_batch_size or args.batch_size):
            serve(torch.cat([w[0] for w in waiting]), torch.cat([w[1] for w in waiting]))
            waiting = []
    if waiting and sum(len(w[1]) for w in waiting):
        serve(torch.cat([w[0] for w in waiting]), torch.cat([w[1] for w in waiting]))
    if device.type == "cuda":
        torch.cuda.synchronize()
print("BARE " + json.dumps({"images": n, "offloaded": counts["offloaded"], "edge_accuracy": counts["edge_correct"] / n,
                            "ceiling_offloaded_accuracy": counts["ceiling_correct"] / max(1, counts["offloaded"])}))
