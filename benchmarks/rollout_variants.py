"""How differently the two attention rollouts rank patches, on the embedded CIFAR-10 benchmark's trained edge.

Why: ``importance=rollout`` (Abnar & Zuidema: heads averaged in every block) and
``importance=rollout_per_head`` (Im et al.'s code: a rollout per head, heads averaged at the end)
are both called "attention rollout"; this measures how often they send different patches. The
shipped edge (``sagebench_cifar10_edge``, 4 blocks, 3 heads, an 8x8 grid) runs once over the first
``--images`` test images, seen through sagebench's own data path, with both rollouts computed in its
one forward; for each image the top-``--top`` sets (ties to the lower patch index, as every
strategy ranks) are compared, also against the last block's attention::

    PYTHONPATH=$PWD python benchmarks/rollout_variants.py --images 2000 --top 16
"""

from __future__ import annotations

import argparse
import json
import sys

import torch


def top_sets(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``[b, N]`` bool: each image's ``k`` highest-scored patches (ties to the lower index)."""
    from sagebench.strategies.importance import attention_order

    picks = attention_order(scores)[:, :k]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, picks, True)


def compare(a: torch.Tensor, b: torch.Tensor, k: int) -> dict:
    """How many images' top-``k`` sets differ, and the mean number of patches they share."""
    sa, sb = top_sets(a, k), top_sets(b, k)
    shared = (sa & sb).sum(dim=1)
    return {"images_differ": int((shared < k).sum()), "mean_shared": round(float(shared.float().mean()), 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000, help="the first N images of the shipped CIFAR-10 test split")
    p.add_argument("--top", type=int, default=16, help="the budget: size of the top sets compared")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)

    import sagebench.demo.models  # noqa: F401  (registers the embedded models)
    from sagebench import data as data_lib
    from sagebench import demo
    from sagebench.edge.model import EdgeModel
    from sagebench.vit.loading import ModelSpec, create_model

    vit = create_model(ModelSpec("sagebench_cifar10_edge", checkpoint=str(demo.CIFAR10_EDGE_WEIGHTS)))
    edge = EdgeModel(vit, with_rollout=True, with_rollout_per_head=True)
    spec = data_lib.DataSpec(path=str(demo.CIFAR10_FILE), split="test", limit=args.images)
    view = data_lib.resolve_data_config(vit, spec)
    images = data_lib.EvalImages(data_lib.load_source(spec), data_lib.build_transform(view), spec, view)
    last, rollout, per_head = [], [], []
    for start in range(0, len(images), args.batch_size):
        rows = [images[i] for i in range(start, min(start + args.batch_size, len(images)))]
        x = torch.stack([r[0] for r in rows])
        with torch.inference_mode():
            ev = edge(x, torch.arange(start, start + len(rows)))
        last.append(ev.attention)
        rollout.append(ev.rollout)
        per_head.append(ev.rollout_per_head)
    last, rollout, per_head = torch.cat(last), torch.cat(rollout), torch.cat(per_head)
    k = args.top
    out = {
        "edge": "sagebench_cifar10_edge (shipped weights)", "images": int(last.shape[0]),
        "num_patches": int(last.shape[1]), "top": k,
        "rollout_vs_rollout_per_head": compare(rollout, per_head, k),
        "last_layer_vs_rollout": compare(last, rollout, k),
        "last_layer_vs_rollout_per_head": compare(last, per_head, k),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        from sagebench.runtime.files import atomic_write_json

        atomic_write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
