"""Resume: a run killed at any point (SIGKILL included) continues where it stopped.

How it works. While the sweep runs, every process appends its finished per-sample records
(the float64 rows of :class:`~sagebench.metrics.SweepRecords`, plus the strategy counters of
those rows) to ``<output_dir>/partial/rank<r>-<token>-<seq>.npz``, one atomically written
file per flush (every ``flush_seconds``, at the end of the epoch and when the run fails), so a
chunk on disk is always complete. ``partial/manifest.json`` holds the *run key*: everything that
decides the records (data and its fingerprint, models and their weights, preprocessing, gate,
strategies with their options, budgets, seed, precision). With ``resume: true``, global rank 0
checks the key (refusing, field by field, if anything differs), loads the finished records and
hands the ids still to do to every process (split among them without repetition, whatever the
number of processes now); at the end the old and new records are merged, checked for
duplicates and summarised exactly as an uninterrupted run, and ``partial/`` is removed once the
results are on disk. Each row depends only on its image (batch- and process-invariant), so the
resumed results are identical to an uninterrupted run's.

The output folder is locked (``partial/.lock``, :class:`~sagebench.runtime.files.FileLock`) by the
run writing it, so two runs can never write (or count) the same images.

The rules a researcher can rely on:

* ``resume: false`` (default) never overwrites: a folder holding finished ``results.json`` or an
  unfinished run with finished images is refused, saying what to do.
* ``resume: true`` continues an unfinished run (or starts one if there is none); on a finished
  run with the same key it returns the stored results without evaluating anything.
* Changing ``batch_size``, ``data.num_workers``, ``trainer.devices`` or ``data.on_error`` between
  attempts is allowed (they do not change any record).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sagebench.errors import ConfigError
from sagebench.results.files import RESULTS_FILE
from sagebench.runtime.files import held_by_another, is_temp_file
from sagebench.runtime.log import warn

PARTIAL_DIR = "partial"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
MANIFEST_VERSION = 1


# --------------------------------------------------------------------------------------------
# The run key


def _normalise(obj: Any) -> Any:
    """JSON round trip: tuples become lists, odd floats/objects strings, so keys compare as stored."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of nested dicts as ``a.b.c``; a list of dicts (the strategies) as ``a[0].b`` so that a changed
    option shows as its own short line instead of a whole list cut at 120 characters."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def key_differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``["budgets: [4, 8] before, [4, 16] now", ...]``, one entry per changed field."""
    a, b = _flatten(_normalise(before)), _flatten(_normalise(now))
    changed = [n for n in sorted(set(a) | set(b)) if a.get(n, "<absent>") != b.get(n, "<absent>")]
    if len(changed) > 1 and "columns" in changed:  # follows from the strategies / budgets listed
        changed.remove("columns")
    return [f"{n}: {_short(a.get(n, '<absent>'))} before, {_short(b.get(n, '<absent>'))} now" for n in changed]


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# What an output folder holds


@dataclass
class RunState:
    out_dir: Path
    finished: bool = False
    manifest: dict[str, Any] | None = None
    manifest_error: str | None = None
    chunks: list[Path] = field(default_factory=list)

    @property
    def partial(self) -> Path:
        return self.out_dir / PARTIAL_DIR

    @property
    def unfinished(self) -> bool:
        """An interrupted run with at least one chunk of finished records."""
        return not self.finished and bool(self.chunks)


def inspect_run(out_dir: str | os.PathLike) -> RunState:
    out_dir = Path(out_dir)
    state = RunState(out_dir, finished=(out_dir / RESULTS_FILE).is_file())
    partial = out_dir / PARTIAL_DIR
    if partial.is_dir():
        state.chunks = sorted(p for p in partial.glob("rank*.npz") if not is_temp_file(p))
        path = partial / MANIFEST_FILE
        if path.is_file():
            try:
                state.manifest = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                state.manifest_error = f"{type(exc).__name__}: {exc}"
    return state


def _count_done(state: RunState) -> str:
    return f"{len(state.chunks)} chunk(s) of finished images"


#: hidden temporaries of the run folder's own files, left by a crash in the middle of an atomic write
_RUN_FILE_TEMPS = (".results.json.*.tmp", ".samples.parquet.*.tmp", ".config.yaml.*.tmp")


def is_launching_process() -> bool:
    """Not a DDP child (its rank 0 holds the folder's lock while the children start)."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


def live_run(out_dir: Path) -> str | None:
    """A message when another live process holds ``out_dir``'s lock (``partial/.lock``), else None."""
    held, pid = held_by_another(Path(out_dir) / PARTIAL_DIR / LOCK_FILE)
    if not held:
        return None
    return (f"Another sagebench run{f' (pid {pid})' if pid else ''} is writing to {out_dir}: wait for it to "
            "finish, or choose another output_dir.")


def precheck(out_dir: Path, resume: bool, *, live: bool = True) -> RunState:
    """Refuse early (before any model is loaded) what the run would refuse anyway.

    ``live``: also refuse a folder another live run is writing (its lock is held), and tidy what a
    crash left behind (temporaries of results.json / samples.parquet / config.yaml); off when the
    caller holds the folder's lock itself.
    """
    out_dir = Path(out_dir)
    partial = out_dir / PARTIAL_DIR
    if partial.exists() and not partial.is_dir():
        raise ConfigError(f"{partial} is a file, but sagebench keeps the finished images of a run in a folder of "
                          "that name: move or delete that file, or choose another output_dir.")
    if live and is_launching_process():
        message = live_run(out_dir)
        if message:
            raise ConfigError(message)
        if out_dir.is_dir():
            for pattern in _RUN_FILE_TEMPS:
                for leftover in out_dir.glob(pattern):
                    leftover.unlink(missing_ok=True)
    state = inspect_run(out_dir)
    if state.finished and not resume:
        raise ConfigError(
            f"{out_dir} already holds finished results ({RESULTS_FILE}); sagebench does not overwrite them. "
            "Choose another output_dir (or delete that folder), or set resume=true to reuse them.")
    if state.unfinished and not resume:
        raise ConfigError(
            f"{out_dir} holds an unfinished run ({_count_done(state)} in {state.partial}). Set resume=true to "
            "continue it (only the images not yet done are evaluated), or choose another output_dir "
            f"(or delete {state.partial} to start over).")
    return state


def auto_output_dir(root: Path, benchmark: str, resume: bool) -> Path:
    """``runs/<benchmark>-<time>`` (the same in every DDP process); with ``resume`` the newest unfinished one.

    The id is kept in ``SAGEBENCH_RUN_ID`` so that DDP processes started later use the same folder.
    In the launching process, a folder that already holds finished results is never reused.
    """
    env_id = os.environ.get("SAGEBENCH_RUN_ID")
    child = os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("RANK", "0") != "0"
    if env_id and child:
        return root / f"{benchmark}-{env_id}"
    if env_id:
        state = inspect_run(root / f"{benchmark}-{env_id}")
        if not state.finished and (resume or not state.unfinished):
            return state.out_dir
    run_id = None
    if resume and root.is_dir():
        candidates = [inspect_run(p) for p in root.glob(f"{benchmark}-*") if p.is_dir()]
        unfinished = [s for s in candidates if s.unfinished]
        if unfinished:
            newest = max(unfinished, key=lambda s: max(p.stat().st_mtime for p in s.chunks))
            run_id = newest.out_dir.name[len(benchmark) + 1:]
    if run_id is None:
        base = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_id, n = base, 1
        while (root / f"{benchmark}-{run_id}").exists():
            n += 1
            run_id = f"{base}-{n}"
    os.environ["SAGEBENCH_RUN_ID"] = run_id
    return root / f"{benchmark}-{run_id}"


def finished_results(results: dict[str, Any], state: RunState, key: dict[str, Any]) -> dict[str, Any]:
    """The stored ``results`` of a finished run (already checked against its records,
    :func:`sagebench.results.check.checked_results`) when its key matches ``key`` (``resume: true``)."""
    stored = (results.get("resume") or {}).get("key")
    if stored is None:
        raise ConfigError(f"{state.out_dir} already holds results written without a run key (an older "
                          "sagebench?); they cannot be checked against this config. Choose another output_dir.")
    diff = key_differences(stored, key)
    if diff:
        raise ConfigError(f"{state.out_dir} already holds finished results of a different run ("
                          + "; ".join(diff) + "). Choose another output_dir for this one.")
    return results


# --------------------------------------------------------------------------------------------
# Chunks


def chunk_bytes(rows: np.ndarray, stats: np.ndarray | None) -> bytes:
    buf = io.BytesIO()
    arrays = {"rows": np.ascontiguousarray(rows, dtype=np.float64)}
    if stats is not None:
        arrays["stats"] = np.ascontiguousarray(stats, dtype=np.float64)
    np.savez(buf, **arrays)
    return buf.getvalue()


def merge_rows(blocks: Sequence[np.ndarray], num_columns: int, what: str = "records") -> np.ndarray:
    """Rows of all ``blocks`` sorted by sample id; an id twice is an error unless both rows are equal."""
    blocks = [b.reshape(-1, num_columns) for b in blocks if b is not None and b.size]
    if not blocks:
        return np.zeros((0, num_columns), dtype=np.float64)
    rows = np.concatenate(blocks).astype(np.float64, copy=False)
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    same_id = rows[1:, 0] == rows[:-1, 0]
    if same_id.any():
        a, b = rows[1:][same_id], rows[:-1][same_id]
        equal = (a == b) | (np.isnan(a) & np.isnan(b))
        if not equal.all():
            ids = np.unique(a[~equal.all(axis=1), 0])[:5].astype(np.int64).tolist()
            raise RuntimeError(f"{what}: sample ids {ids} were evaluated twice with different results")
        rows = rows[np.concatenate([[True], ~same_id])]
    return rows


def load_chunks(state: RunState, num_columns: int, num_stats: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(rows, summed strategy counters)`` of every readable chunk; unreadable ones are dropped (re-evaluated)."""
    blocks, stats = [], None
    for path in state.chunks:
        try:
            with np.load(path, allow_pickle=False) as npz:
                rows = np.asarray(npz["rows"], dtype=np.float64)
                chunk_stats = np.asarray(npz["stats"], dtype=np.float64) if "stats" in npz.files else None
            if rows.ndim != 2 or rows.shape[1] != num_columns:
                raise ValueError(f"rows of shape {rows.shape}, expected [n, {num_columns}]")
        except Exception as exc:  # a damaged file: its images are simply evaluated again
            warn(f"ignoring the unreadable partial results file {path.name} ({type(exc).__name__}: {exc}); "
                 "its images are evaluated again.")
            path.unlink(missing_ok=True)
            continue
        blocks.append(rows)
        if chunk_stats is not None and num_stats is not None and chunk_stats.shape == num_stats:
            stats = chunk_stats if stats is None else stats + chunk_stats
    return merge_rows(blocks, num_columns, "partial results"), stats


# --------------------------------------------------------------------------------------------
# Sampling what is left


def drop_redone(rows: np.ndarray | None, done_ids: np.ndarray, num_columns: int) -> tuple[np.ndarray, int]:
    """This attempt's rows without images an earlier attempt finished (padding), and how many were dropped."""
    if rows is None:
        return np.zeros((0, num_columns), dtype=np.float64), 0
    if not len(done_ids) or not rows.shape[0]:
        return rows, 0
    redone = np.isin(rows[:, 0].astype(np.int64), done_ids)
    return rows[~redone], int(redone.sum())


def merge_strategy_stats(module: Any, previous: np.ndarray | None) -> list[dict]:
    """``module.strategy_stats_totals`` plus the counters earlier attempts saved (same cells)."""
    totals = list(getattr(module, "strategy_stats_totals", None) or [])
    stats = getattr(module, "strategy_stats", None)
    if previous is None or stats is None:
        return totals
    try:
        by_cell = {(t["strategy"], int(t["budget"])): dict(t) for t in totals}
        merged = []
        for j, ((label, budget), names) in enumerate(zip(stats.cells, stats.cell_names)):
            if not names:
                continue
            entry = by_cell.get((label, int(budget)), {"strategy": label, "budget": int(budget)})
            for name in ("images", *names):
                value = float(entry.get(name, 0)) + float(previous[j, stats.keys.index(name)])
                entry[name] = int(value) if value.is_integer() else value
            merged.append(entry)
        return merged
    except Exception as exc:  # counters are secondary: never lose the run for them
        warn(f"the strategy counters of earlier attempts could not be merged ({exc}); they cover this attempt only.")
        return totals
