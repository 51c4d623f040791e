"""The board's one record of its benchmark: what every entry on a fingerprint must agree on.

Per sample id, everything that does not depend on the strategy: the label, the edge's
prediction, the gate's decision (``offloaded``) and the server's full-image prediction
(``ceiling_pred``, -1 for an image kept at the edge). Every entry of a board measured the same
benchmark, so these columns are the same in every honest entry; the board keeps them once, in
``<board>/benchmark.parquet``, with its sha256 and size in ``board.json`` (``"record"``). The
record is taken from the board's first measured entry (or rebuilt by rerunning the benchmark:
``verify --reproduce`` compares it on the images it reruns). Every later entry must match it on
every id (ids in range, each once), or is refused naming how many ids differ and in
which field. Why: pairing and ranking then rest on one record that a later submitter cannot
replace (before, the earliest-dated entry was the reference, and a date is whatever a file says).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sagebench.errors import LeaderboardError
from sagebench.leaderboard.validate import read_samples
from sagebench.runtime.files import atomic_write_bytes

RECORD_FILE = "benchmark.parquet"


RECORD_KEY = "record"  # board.json: {"file", "sha256", "num_images", "num_offloaded"}


#: The strategy-independent per-sample fields, in file order (after ``sample_id``).
RECORD_FIELDS = ("label", "edge_pred", "offloaded", "ceiling_pred")


@dataclass(frozen=True)
class BenchmarkRecord:
    """The record's columns, one row per image in increasing sample id (``ids``)."""

    ids: np.ndarray  # int64, sorted, distinct
    label: np.ndarray
    edge_pred: np.ndarray
    offloaded: np.ndarray  # bool
    ceiling_pred: np.ndarray

    @property
    def num_images(self) -> int:
        return int(self.ids.shape[0])

    @property
    def offloaded_ids(self) -> np.ndarray:
        return self.ids[self.offloaded]

    def field(self, name: str) -> np.ndarray:
        return getattr(self, name)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of ``ids`` (which must be the record's)."""
        return np.searchsorted(self.ids, np.asarray(ids, dtype=np.int64))


def check_ids(ids: np.ndarray, num_images: int, where: str, num_skipped: int | None = 0) -> np.ndarray:
    """The order that sorts ``ids``: ``num_images`` distinct integers in ``0..num_images + num_skipped - 1``
    (the images of the data set; corrupt images skipped under ``data.on_error=skip`` leave gaps).
    ``num_skipped`` None: no range (a single run's records, not a board's)."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise LeaderboardError(f"{where}: sample ids must be integers, not {ids.dtype}.")
    if ids.shape[0] != num_images:
        raise LeaderboardError(f"{where} has {ids.shape[0]} sample ids; the board has {num_images} images.")
    if num_skipped is not None:
        top = num_images + num_skipped
        outside = int(((ids < 0) | (ids >= top)).sum())
        if outside:
            raise LeaderboardError(f"{where}: {outside} sample ids lie outside 0..{top - 1} (the board's images): "
                                   "not this benchmark's images.")
    order = np.argsort(ids, kind="stable")
    if ids.shape[0] > 1 and (np.diff(ids[order]) == 0).any():
        raise LeaderboardError(f"{where} lists some sample ids more than once.")
    return order


def from_columns(columns: Mapping[str, np.ndarray], num_images: int, where: str,
                 num_skipped: int | None = 0) -> BenchmarkRecord:
    """The record of an entry's per-sample columns (ids checked by :func:`check_ids`, rows in id order)."""
    missing = [c for c in ("sample_id", *RECORD_FIELDS) if c not in columns]
    if missing:
        raise LeaderboardError(f"{where} lacks the columns {missing}.")
    order = check_ids(columns["sample_id"], num_images, where, num_skipped)
    return BenchmarkRecord(np.asarray(columns["sample_id"])[order].astype(np.int64),
                           *(np.asarray(columns[f])[order].astype(bool if f == "offloaded" else np.int64)
                             for f in RECORD_FIELDS))


def differences(record: BenchmarkRecord, other: BenchmarkRecord) -> dict[str, int]:
    """``field -> number of images on which other differs from record`` (only fields that differ;
    ``sample_id``: ids of one that the other lacks)."""
    if record.num_images != other.num_images or not np.array_equal(record.ids, other.ids):
        return {"sample_id": int(np.setdiff1d(other.ids, record.ids).size + np.setdiff1d(record.ids, other.ids).size)}
    return {f: n for f in RECORD_FIELDS if (n := int((record.field(f) != other.field(f)).sum()))}


def match(record: BenchmarkRecord, columns: Mapping[str, np.ndarray], where: str,
          num_skipped: int | None = 0) -> None:
    """Refuse ``columns`` (an entry's records) unless they agree with the board's record on every id."""
    mine = from_columns(columns, record.num_images, where, num_skipped)
    diff = differences(record, mine)
    if "sample_id" in diff:
        raise LeaderboardError(f"{where}: {diff['sample_id']} sample ids are not the board's images "
                               f"({RECORD_FILE}): not this benchmark's images.")
    if diff:
        ids = np.zeros(record.num_images, dtype=bool)
        for f in diff:
            ids |= record.field(f) != mine.field(f)
        shown = ", ".join(f"{f} on {n}" for f, n in diff.items())
        raise LeaderboardError(f"{where} disagrees with the board's record of its benchmark ({RECORD_FILE}) on "
                               f"{int(ids.sum())} of {record.num_images} ids ({shown}): every entry of a board must "
                               "have the same labels, edge predictions, gate decisions and server predictions.")


def skipped_of(benchmark: Mapping[str, Any]) -> int:
    """Images of the data set skipped as corrupt (``num_skipped`` of the benchmark fields, 0 when absent)."""
    n = benchmark.get("num_skipped") or 0
    return int(n) if isinstance(n, int) and not isinstance(n, bool) else 0


def to_bytes(record: BenchmarkRecord) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"sample_id": pa.array(record.ids),
                      **{f: pa.array(record.field(f)) for f in RECORD_FIELDS}})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write(board_path: Path, record: BenchmarkRecord) -> dict[str, Any]:
    """Write ``benchmark.parquet`` into the board folder; returns the ``board.json`` block naming it."""
    data = to_bytes(record)
    atomic_write_bytes(Path(board_path) / RECORD_FILE, data)
    return {"file": RECORD_FILE, "sha256": hashlib.sha256(data).hexdigest(), "num_images": record.num_images,
            "num_offloaded": int(record.offloaded.sum())}


def read(board_path: Path, meta: Mapping[str, Any]) -> BenchmarkRecord | None:
    """The board's record (None when board.json names none), checked: a plain file whose sha256 is the
    one board.json records, ``num_images`` rows (from the footer, before reading), ids 0..n-1."""
    block = meta.get(RECORD_KEY)
    if block is None:
        return None
    where = f"{meta.get('name')}/{RECORD_FILE}"
    if not isinstance(block, dict) or block.get("file") != RECORD_FILE or not isinstance(block.get("sha256"), str):
        raise LeaderboardError(f"{meta.get('name')}/board.json: 'record' must name {RECORD_FILE} and its sha256.")
    bench = meta.get("benchmark") or {}
    num_images = int(bench.get("num_images") or 0)
    path = Path(board_path) / RECORD_FILE
    if path.is_symlink() or not path.is_file():
        raise LeaderboardError(f"{where} is missing (board.json names it) or is not a plain file.")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != block["sha256"]:
        raise LeaderboardError(f"{where}: its sha256 is not the one board.json records: the record was replaced.")
    columns = read_samples(data, max_rows=num_images, columns=("sample_id", *RECORD_FIELDS), where=where)
    return from_columns(columns, num_images, where, skipped_of(bench))
