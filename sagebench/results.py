"""The results file of one run: what was measured, on what, with what, by which code.

One ``results.json`` per run (accuracies as fractions) plus a columnar per-sample file
``samples.parquet`` beside it. The ``benchmark.fingerprint`` hashes exactly what makes two
runs comparable (data, models and weights, preprocessing, gate), not what is being compared
(strategies, budgets), so that leaderboards can refuse apples-to-oranges entries.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from sagebench.metrics import SweepLayout
from sagebench.fsutil import atomic_write_bytes  # noqa: F401  (re-exported: it used to live here)

SCHEMA_VERSION = "1.0"
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.parquet"


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def git_sha() -> str | None:
    """Commit of the sagebench checkout, when it runs from one (with ``-dirty`` if modified)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device: str | None = None, world_size: int = 1) -> dict[str, Any]:
    return {
        "sagebench_version": _version("sagebench"),
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": _version("torch"),
        "timm": _version("timm"),
        "lightning": _version("lightning"),
        "torchmetrics": _version("torchmetrics"),
        "datasets": _version("datasets"),
        "device": device,
        "world_size": world_size,
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "utc_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def fingerprint(fields: dict[str, Any]) -> str:
    """Short stable hash of the comparable-benchmark fields (sorted-key JSON, sha256, 16 hex)."""
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_results(out_dir: Path, results: dict[str, Any]) -> Path:
    path = Path(out_dir) / RESULTS_FILE
    atomic_write_bytes(path, (json.dumps(results, indent=2, sort_keys=False) + "\n").encode())
    return path


def write_samples(out_dir: Path, rows: np.ndarray, layout: SweepLayout) -> Path:
    """Per-sample records as parquet: ints stay ints; server columns are -1 for images kept at the edge."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = layout.names()
    columns = {}
    for i, name in enumerate(names):
        col = rows[:, i]
        if name.startswith("coverage/"):
            columns[name] = pa.array(col.astype(np.float64))
        elif name == "offloaded":
            columns[name] = pa.array(col > 0.5)
        else:
            columns[name] = pa.array(col.astype(np.int64))
    table = pa.table(columns)
    path = Path(out_dir) / SAMPLES_FILE
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return path


def read_results(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir)
    path = path / RESULTS_FILE if path.is_dir() else path
    return json.loads(path.read_text())


def format_table(results: dict[str, Any]) -> str:
    """Terminal table: one row per strategy, one column per budget, offloaded accuracy (ceiling ratio)."""
    bench = results["benchmark"]
    ceiling = results["ceiling"]
    rows = results["results"]
    budgets = sorted({r["budget"] for r in rows})
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    by_key = {(r["strategy"], r["budget"]): r for r in rows}
    transmission = results.get("transmission") or {}
    by_patches = transmission.get("budget_unit", "patches") == "patches"  # True: patch budgets
    prefix = "B=" if by_patches else "bytes="

    def pct(x: float | None) -> str:
        return "  n/a" if x is None else f"{100 * x:5.1f}"

    lines = [
        f"benchmark {bench.get('name')}  ({bench['dataset']}, {bench['num_images']} images, "
        f"edge {bench['edge']['name']} -> server {bench['server']['name']}, gate {bench['gate']}"
        f"{'' if bench['gate'] == 'all' else ' > ' + str(bench['threshold'])})",
        f"offloaded {results['num_offloaded']}/{results['num_images']} "
        f"({pct(results['num_offloaded'] / max(1, results['num_images'])).strip()}%)   "
        f"edge accuracy {pct(results['edge_accuracy']).strip()}%   "
        f"ceiling (server, all {bench['num_patches']} patches): offloaded {pct(ceiling['offloaded_accuracy']).strip()}%"
        f" / overall {pct(ceiling['overall_accuracy']).strip()}%",
        "",
        "offloaded accuracy % (ceiling ratio) per budget "
        + ("B = patches sent" if by_patches else "= bytes per request (units sent are in results.json)"),
    ]
    width = max(len("strategy"), *(len(s) for s in strategies))
    header = f"{'strategy':<{width}} | " + " | ".join(f"{prefix + str(b):>13}" for b in budgets)
    lines += [header, "-" * len(header)]
    for s in strategies:
        cells = []
        for b in budgets:
            r = by_key.get((s, b))
            ratio = "" if r is None or r["ceiling_ratio"] is None else f"({r['ceiling_ratio']:.2f})"
            cells.append(f"{pct(r and r['offloaded_accuracy']) + ' ' + ratio:>13}")
        lines.append(f"{s:<{width}} | " + " | ".join(cells))
    overall = [f"{s}: " + " ".join(pct(by_key[(s, b)]["overall_accuracy"]).strip() for b in budgets)
               for s in strategies]
    lines += ["", "overall (system) accuracy % per budget: " + "; ".join(overall)]
    codec = transmission.get("codec") or {"name": "raw"}
    if not by_patches or codec.get("name") != "raw":
        sent = [f"{s}: " + " ".join(f"{by_key[(s, b)]['units_sent']:.1f}/{by_key[(s, b)]['bytes_sent']:.0f}"
                                    if by_key.get((s, b)) and by_key[(s, b)]["units_sent"] is not None else "n/a"
                                    for b in budgets) for s in strategies]
        quality = f" quality {codec['quality']}" if "quality" in codec else ""
        lines += [f"codec {codec.get('name')}{quality}: mean units/bytes sent per request: " + "; ".join(sent)]
    return "\n".join(lines)
