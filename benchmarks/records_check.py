"""Per-sample records of fixed sweeps, hashed: the proof that a refactor changed no number.

Why: a refactor of the engine must leave every per-image record bit-identical. This script runs
a fixed set of small sweeps (the embedded benchmark with every built-in strategy at patch
budgets, byte budgets and a codec; DeiT-shaped random-init models on random 224x224 images)
and prints one sha256 per sweep of its ``samples.parquet`` table (every column's raw bytes, in
column order). Run it on two commits and compare the lines::

    python benchmarks/records_check.py --out /tmp/records-new.json
    git worktree add /tmp/old <commit> && PYTHONPATH=/tmp/old python benchmarks/records_check.py --out /tmp/records-old.json
    diff /tmp/records-old.json /tmp/records-new.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ALL_BUILTIN = ["random", "uniform", "attention_prefix", "sage", "attention_threshold", "attention_cumsum",
               "diversity_only", "tome", "bat"]
FMNIST = ["data.path=${asset:demo/fashion_mnist_test.parquet}", "model.edge.name=sagebench_fmnist_edge",
          "model.server.name=sagebench_fmnist_server", "benchmark=records-check"]
CASES = {
    "fmnist-patches": FMNIST + [f"strategies=[{','.join(ALL_BUILTIN)}]", "budgets=[4,8,12,16,24]",
                                "data.limit=1500"],
    "fmnist-gate-all": FMNIST + [f"strategies=[{','.join(ALL_BUILTIN)}]", "budgets=[1,12,49]", "gate.name=all",
                                 "data.limit=200", "batch_size=64"],
    "fmnist-bytes": FMNIST + ["strategies=[random,attention_prefix,sage]", "budget_bytes=[200,400,650]",
                              "gate.name=all", "data.limit=120", "batch_size=50"],
    "fmnist-png": FMNIST + ["strategies=[uniform,sage]", "budgets=[8,16]", "codec.name=png", "gate.name=all",
                            "data.limit=100"],
    "fmnist-jpeg-bytes": FMNIST + ["strategies=[attention_prefix,sage]", "budget_bytes=[500,800]",
                                   "codec.name=jpeg", "codec.quality=75", "gate.name=all", "data.limit=60"],
    "deit-shaped": ["benchmark=records-check-deit", "model.edge.name=deit_tiny_patch16_224",
                    "model.edge.pretrained=false", "model.server.name=deit_small_patch16_224",
                    "model.server.pretrained=false", f"strategies=[{','.join(ALL_BUILTIN)}]",
                    "budgets=[16,48,96]", "gate.name=all", "data.crop_pct=1.0", "data.limit=12", "batch_size=5"],
}


def table_digest(path: Path) -> dict:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    h = hashlib.sha256()
    for name in table.column_names:
        h.update(name.encode())
        h.update(np.ascontiguousarray(table.column(name).to_numpy()).tobytes())
    return {"rows": table.num_rows, "columns": table.num_columns, "sha256": h.hexdigest()}


def random_images(path: Path, n: int = 12) -> Path:
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (n, 56, 56, 3), dtype=np.uint8)
    images = [Image.fromarray(np.repeat(np.repeat(im, 4, axis=0), 4, axis=1)) for im in small]
    labels = [int(x) for x in rng.integers(0, 1000, n)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=feats).to_parquet(str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the digests as JSON here")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    args = p.parse_args(argv)
    import sagebench  # noqa: F401
    from sagebench import evaluate, load_config

    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = random_images(tmp_path / "random224.parquet")
        for name in args.cases.split(","):
            overrides = list(CASES[name]) + ["logger=none", "progress=false", f"output_dir={tmp_path / name}"]
            if name == "deit-shaped":
                overrides.append(f"data.path={data}")
            evaluate(load_config(None, overrides))
            out[name] = table_digest(tmp_path / name / "samples.parquet")
            print(name, json.dumps(out[name]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
