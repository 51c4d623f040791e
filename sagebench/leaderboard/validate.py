"""What an entry must be: a schema-valid results file whose per-sample file matches it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sagebench.cells import Cell
from sagebench.errors import LeaderboardError
from sagebench.results.files import fingerprint

MAX_ENTRY_BYTES = 20 * 1024 * 1024


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not valid JSON")


def load_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (strict JSON: no NaN/Infinity, <= 20 MB)."""
    path = Path(path)
    if not path.is_file():
        raise LeaderboardError(f"{path} does not exist.")
    if path.stat().st_size > MAX_ENTRY_BYTES:
        raise LeaderboardError(f"{path} is larger than {MAX_ENTRY_BYTES // 2**20} MB: not a results file.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LeaderboardError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise LeaderboardError(f"{path} must hold a JSON object (a results file), not {type(data).__name__}.")
    return data


def results_schema() -> dict[str, Any]:
    from sagebench.results.files import RESULTS_SCHEMA

    return json.loads(RESULTS_SCHEMA.read_text())


def _schema_errors(entry: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(results_schema())
    errors = sorted(validator.iter_errors(entry), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}" for e in errors]


def benchmark_fields(benchmark: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprinted fields of a benchmark block (all but its display name and the fingerprint)."""
    return {k: v for k, v in benchmark.items() if k not in ("name", "fingerprint")}


def validate_entry(entry: dict[str, Any], where: str = "entry") -> None:
    """Check ``entry`` against the published JSON schema and for internal consistency."""
    errors = _schema_errors(entry)
    if errors:
        shown = "; ".join(errors[:5]) + (f"; ... ({len(errors) - 5} more)" if len(errors) > 5 else "")
        raise LeaderboardError(f"{where} does not match the results schema "
                               f"(sagebench/results/results.schema.json): {shown}")
    bench = entry["benchmark"]
    expected = fingerprint(benchmark_fields(bench))
    if bench["fingerprint"] != expected:
        raise LeaderboardError(f"{where}: benchmark.fingerprint {bench['fingerprint']} does not match its benchmark "
                               f"fields (they hash to {expected}); the file was edited or is corrupt.")
    if bench["num_images"] != entry["num_images"]:
        raise LeaderboardError(f"{where}: num_images {entry['num_images']} differs from benchmark.num_images "
                               f"{bench['num_images']}.")
    keys = [(r["strategy"], r["budget"]) for r in entry["results"]]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise LeaderboardError(f"{where}: results list (strategy, budget) more than once: {dup[:3]}.")
    for r in entry["results"]:
        if r.get("budget_unit", "patches") == "patches" and r["budget"] > bench["num_patches"]:
            raise LeaderboardError(f"{where}: budget {r['budget']} exceeds the {bench['num_patches']} patches.")
    if not entry.get("reported"):
        if entry["num_offloaded"] > entry["num_images"]:
            raise LeaderboardError(f"{where}: num_offloaded exceeds num_images.")
        labels = {s["label"] for s in entry["strategies"]}
        missing = sorted({r["strategy"] for r in entry["results"]} - labels)
        if missing:
            raise LeaderboardError(f"{where}: results name strategies not listed in 'strategies': {missing}.")


def _base_columns() -> tuple[str, ...]:
    from sagebench.metrics import BASE_COLUMNS

    return BASE_COLUMNS


def read_samples(path: Path) -> dict[str, np.ndarray]:
    """A per-sample parquet file as numpy columns (numeric/bool columns only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise LeaderboardError(f"{path} is not a readable parquet file: {exc}") from exc
    out = {}
    for name, col in zip(table.column_names, table.columns):
        t = col.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise LeaderboardError(f"{path}: column {name!r} has type {t}; per-sample files hold numbers only.")
        out[name] = col.to_numpy(zero_copy_only=False)
    return out


def validate_samples(entry: dict[str, Any], samples: dict[str, np.ndarray], where: str = "per-sample file") -> None:
    """The per-sample file must be the records behind the entry's numbers."""
    need = list(_base_columns()) + [Cell.from_row(r).key("pred") for r in entry["results"]]
    missing = [c for c in need if c not in samples]
    if missing:
        raise LeaderboardError(f"{where} lacks the columns {missing[:4]}{' ...' if len(missing) > 4 else ''}.")
    n = len(samples["sample_id"])
    if n != entry["num_images"]:
        raise LeaderboardError(f"{where} has {n} rows but the entry has {entry['num_images']} images.")
    ids = samples["sample_id"]
    if len(np.unique(ids)) != n:
        raise LeaderboardError(f"{where} lists some sample ids more than once.")
    off = samples["offloaded"].astype(bool)
    if int(off.sum()) != entry["num_offloaded"]:
        raise LeaderboardError(f"{where}: {int(off.sum())} offloaded images, the entry says {entry['num_offloaded']}.")
    label = samples["label"]
    for r in entry["results"]:
        ok = int(((samples[Cell.from_row(r).key("pred")] == label) & off).sum())
        if ok != r["num_correct"]:
            raise LeaderboardError(f"{where}: {Cell.from_row(r).title} is right on {ok} images, the entry "
                                   f"says {r['num_correct']}: the files do not belong together.")
