"""What an entry must be: a schema-valid results file whose per-sample file reproduces its figures.

A measured entry is *verified* when its per-sample file (the records) reproduces every summary
figure of the entry: the record matrix is rebuilt in :class:`sagebench.metrics.SweepLayout` order
from the parquet columns and :func:`sagebench.metrics.summarize` recomputes num_images,
num_offloaded, edge and ceiling accuracies and every cell's row metrics
(:data:`sagebench.metrics.ROW_METRICS`); :func:`check_records` names the first differences.

Untrusted input is bounded before it is parsed: entry JSON files are capped in bytes and in
nesting depth (a deeply nested file raises a :class:`LeaderboardError`, never a RecursionError),
and a per-sample file's row count is read from its parquet metadata and refused above the
entry's ``num_images`` before any column is read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sagebench.cells import Cell
from sagebench.errors import LeaderboardError
from sagebench.results.files import fingerprint

MAX_ENTRY_BYTES = 20 * 1024 * 1024


MAX_JSON_DEPTH = 64  # results files nest about 6 levels deep


MAX_SAMPLES_BYTES = 1024 ** 3


#: Most values (rows x columns read) a per-sample file may make us decode: 2**26 float64 = 512 MiB. Why a
#: constant beside the board's size: a new board's size is the first entry's own claim, so a file
#: that claims 2e7 rows must be refused from its footer, not decoded (ImageNet-val with every
#: strategy is ~1e7 values).
MAX_RECORD_VALUES = 2 ** 26


FLOAT_TOLERANCE = 1e-9  # |a - b| <= tol * max(1, |a|, |b|): float round-off, never a changed count


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
    except RecursionError:
        raise LeaderboardError(f"{path} nests JSON arrays/objects too deeply (more than the parser allows; "
                               f"a results file nests about 6 levels): not a results file.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise LeaderboardError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise LeaderboardError(f"{path} must hold a JSON object (a results file), not {type(data).__name__}.")
    if json_depth(data) > MAX_JSON_DEPTH:
        raise LeaderboardError(f"{path} nests JSON more than {MAX_JSON_DEPTH} levels deep: not a results file.")
    return data


def json_depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, computed without recursion (a scalar is depth 0)."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
            deepest = max(deepest, depth + 1)
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
            deepest = max(deepest, depth + 1)
        if deepest > MAX_JSON_DEPTH:
            break
    return deepest


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
    if json_depth(entry) > MAX_JSON_DEPTH:
        raise LeaderboardError(f"{where} nests JSON more than {MAX_JSON_DEPTH} levels deep: not a results file.")
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


def samples_num_rows(path: Path) -> int:
    """Rows of a parquet file, from its footer metadata (no column is read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(str(path)).metadata.num_rows)
    except (OSError, pa.ArrowException) as exc:
        raise LeaderboardError(f"{path} is not a readable parquet file: {exc}") from exc


def read_samples(source: Path | bytes, max_rows: int | None = None,
                 columns: Sequence[str] | None = None, where: str | None = None) -> dict[str, np.ndarray]:
    """A per-sample parquet file (a path or its bytes) as numpy columns (numeric/bool columns only).

    Bounded before anything is decoded: the row count comes from the footer metadata and is
    refused above ``max_rows`` (the board's number of images where there is a board); every
    column's type is checked from the schema; only ``columns`` (when given; those the file lacks
    are left out, for :func:`validate_samples` to name) are read, and rows x columns read may not
    exceed :data:`MAX_RECORD_VALUES`. Why from the footer: an RLE/dictionary-encoded column of a few
    hundred KB can claim tens of millions of rows, which decoding would materialise.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = where or (str(source) if not isinstance(source, (bytes, bytearray)) else "per-sample file")
    try:
        handle = pq.ParquetFile(pa.BufferReader(source) if isinstance(source, (bytes, bytearray)) else str(source))
        num_rows = int(handle.metadata.num_rows)
        schema = handle.schema_arrow
    except (OSError, pa.ArrowException) as exc:
        raise LeaderboardError(f"{where} is not a readable parquet file: {exc}") from exc
    if max_rows is not None and num_rows > max_rows:
        raise LeaderboardError(f"{where} has {num_rows} rows but the entry has {max_rows} images: refused "
                               "before reading it.")
    for name, t in zip(schema.names, schema.types):
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise LeaderboardError(f"{where}: column {name!r} has type {t}; per-sample files hold numbers only.")
    if len(set(schema.names)) != len(schema.names):
        raise LeaderboardError(f"{where} names some columns more than once.")
    wanted = list(schema.names) if columns is None else [c for c in dict.fromkeys(columns) if c in schema.names]
    width = len(schema.names) if columns is None else len(dict.fromkeys(columns))  # what the entry needs read
    if num_rows * max(1, width) > MAX_RECORD_VALUES:
        raise LeaderboardError(f"{where} claims {num_rows} rows x {width} columns, more than the "
                               f"{MAX_RECORD_VALUES} values a per-sample file may hold: refused before reading it.")
    try:
        table = handle.read(columns=wanted)
    except (OSError, pa.ArrowException) as exc:
        raise LeaderboardError(f"{where} is not a readable parquet file: {exc}") from exc
    return {name: col.to_numpy(zero_copy_only=False) for name, col in zip(table.column_names, table.columns)}


def entry_layout(entry: Mapping[str, Any], where: str = "entry"):
    """The :class:`~sagebench.metrics.SweepLayout` of an entry's results rows (their order, one budget unit)."""
    from sagebench.metrics import SweepLayout

    units = {r.get("budget_unit", "patches") for r in entry["results"]}
    if len(units) != 1:
        raise LeaderboardError(f"{where}: results rows mix budget units {sorted(units)}; one run has one unit.")
    return SweepLayout(tuple((str(r["strategy"]), int(r["budget"])) for r in entry["results"]), units.pop())


def sample_columns(entry: Mapping[str, Any], where: str = "entry") -> list[str]:
    """Every per-sample column behind an entry's figures, in record-matrix order."""
    return entry_layout(entry, where).names()


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    a, b = float(a), float(b)
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= FLOAT_TOLERANCE * max(1.0, abs(a), abs(b))


def recompute(entry: Mapping[str, Any], samples: Mapping[str, np.ndarray], where: str = "entry") -> dict[str, Any]:
    """:func:`sagebench.metrics.summarize` of the records, laid out as the entry's results rows."""
    from sagebench.metrics import summarize

    layout = entry_layout(entry, where)
    names = layout.names()
    missing = [c for c in names if c not in samples]
    if missing:
        raise LeaderboardError(f"{where} lacks the columns {missing[:4]}{' ...' if len(missing) > 4 else ''}.")
    n = len(samples["sample_id"])
    matrix = np.empty((n, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        matrix[:, j] = np.asarray(samples[name], dtype=np.float64)
    return summarize(matrix, layout)


def record_differences(entry: Mapping[str, Any], summary: Mapping[str, Any]) -> list[str]:
    """``field: entry X, records Y`` for every summary figure of ``entry`` the records do not reproduce."""
    from sagebench.metrics import ROW_METRICS

    out: list[str] = []

    def check(what: str, claimed: Any, actual: Any) -> None:
        if not _same(claimed, actual):
            out.append(f"{what}: entry {claimed!r}, records {actual!r}")

    for key in ("num_images", "num_offloaded", "edge_accuracy"):
        check(key, entry.get(key), summary[key])
    for key in ("offloaded_accuracy", "overall_accuracy"):
        check(f"ceiling.{key}", (entry.get("ceiling") or {}).get(key), summary["ceiling"][key])
    for row, got in zip(entry["results"], summary["results"]):
        for metric in ROW_METRICS:
            check(f"{Cell.from_row(row).title} {metric.name}", row.get(metric.name), got.get(metric.name))
    return out


def check_records(entry: Mapping[str, Any], samples: Mapping[str, np.ndarray], where: str = "per-sample file") -> None:
    """Refuse ``samples`` unless they reproduce every summary figure of ``entry`` (see the module doc)."""
    if "sample_id" not in samples:
        raise LeaderboardError(f"{where} lacks the column 'sample_id'.")
    n = len(samples["sample_id"])
    if n != entry["num_images"]:
        raise LeaderboardError(f"{where} has {n} rows but the entry has {entry['num_images']} images.")
    if len(np.unique(samples["sample_id"])) != n:
        raise LeaderboardError(f"{where} lists some sample ids more than once.")
    diffs = record_differences(entry, recompute(entry, samples, where))
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; ... ({len(diffs) - 4} more)" if len(diffs) > 4 else "")
        raise LeaderboardError(f"{where} does not reproduce the entry's figures ({shown}): the files do not belong "
                               "together, or the entry was edited by hand.")


def validate_samples(entry: dict[str, Any], samples: dict[str, np.ndarray], where: str = "per-sample file") -> None:
    """The per-sample file must be the records behind the entry's numbers (:func:`check_records`)."""
    check_records(entry, samples, where)


def load_samples(entry: Mapping[str, Any], source: Path | bytes, where: str | None = None,
                 max_rows: int | None = None) -> dict[str, np.ndarray]:
    """Read (bounded by the entry's ``num_images`` and ``max_rows``, the board's) and check an entry's
    per-sample file."""
    where = where or (str(source) if not isinstance(source, (bytes, bytearray)) else "per-sample file")
    bound = int(entry["num_images"]) if max_rows is None else min(int(entry["num_images"]), int(max_rows))
    columns = read_samples(source, max_rows=bound, columns=sample_columns(entry, where), where=where)
    check_records(entry, columns, where)
    return columns
