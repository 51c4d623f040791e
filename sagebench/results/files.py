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
from sagebench.runtime.files import atomic_write_bytes

SCHEMA_VERSION = "1.0"
RESULTS_SCHEMA = Path(__file__).resolve().parent / "results.schema.json"  # a results file, i.e. a leaderboard entry
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


def provenance(device: str | None = None, world_size: int = 1, precision: str | None = None) -> dict[str, Any]:
    """What ran, where and by which code; ``precision`` is what Lightning ran (``16-mixed`` asked on CPU runs
    ``bf16-mixed``), not what the config asked."""
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
        **({"precision": precision} if precision is not None else {}),
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


def write_samples(out_dir: Path, rows: np.ndarray, layout: SweepLayout,
                  class_names: list[str] | None = None) -> Path:
    """Per-sample records as parquet, each column in its declared dtype (:mod:`sagebench.metrics`);
    server columns are -1 for images kept at the edge."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {}
    for i, (name, field) in enumerate(layout.fields()):
        col = rows[:, i]
        if field.dtype == "bool":
            columns[name] = pa.array(col > 0.5)
        elif field.dtype == "float64":
            columns[name] = pa.array(col.astype(np.float64))
        elif field.dtype == "int64":
            columns[name] = pa.array(col.astype(np.int64))
        else:  # a new declaration with a dtype this writer does not know must not be truncated silently
            raise TypeError(f"field {field.name!r} declares dtype {field.dtype!r}: add it to write_samples")
    table = pa.table(columns)
    if class_names:  # the data set's ClassLabel names, in label order (what label k means)
        table = table.replace_schema_metadata({b"sagebench.class_names": json.dumps(list(class_names)).encode()})
    path = Path(out_dir) / SAMPLES_FILE
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return path


def read_results(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir)
    path = path / RESULTS_FILE if path.is_dir() else path
    return json.loads(path.read_text())
