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

The output folder is locked (``partial/.lock``, :class:`~sagebench.fsutil.FileLock`) by the
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
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Sequence

import lightning as L
import numpy as np
import torch

from sagebench.errors import ConfigError, SageBenchError
from sagebench.fsutil import FileLock, LockTimeout, atomic_write_bytes, atomic_write_json, is_temp_file
from sagebench.guards import warn

PARTIAL_DIR = "partial"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
RESULTS_FILE = "results.json"
MANIFEST_VERSION = 1


# --------------------------------------------------------------------------------------------
# The run key


def _normalise(obj: Any) -> Any:
    """JSON round trip: tuples become lists, odd floats/objects strings, so keys compare as stored."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def run_key(*, data: dict[str, Any], edge: dict[str, Any], server: dict[str, Any], preprocessing: dict[str, Any],
            gate: str, threshold: float | None, strategies: Sequence[Any], budgets: Sequence[int], seed: int,
            columns: Sequence[str], precision: Any = None, codec: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything that decides the per-sample records of a run, as a JSON-able dict."""
    return _normalise({
        **({} if codec is None or codec.get("name") == "raw" else {"codec": codec}),
        "data": data,
        "edge": edge,
        "server": server,
        "preprocessing": preprocessing,
        "gate": gate,
        "threshold": threshold,
        "strategies": [{"label": s.label, "options": s.options()} for s in strategies],
        "budgets": [int(b) for b in budgets],
        "seed": int(seed),
        "precision": None if precision is None else str(precision),
        "columns": list(columns),
    })


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
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


def precheck(out_dir: Path, resume: bool) -> RunState:
    """Refuse early (before any model is loaded) what the run would refuse anyway."""
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


def finished_results(state: RunState, key: dict[str, Any]) -> dict[str, Any]:
    """The stored results of a finished run when its key matches ``key`` (``resume: true``)."""
    path = state.out_dir / RESULTS_FILE
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}); choose another output_dir or delete it.") from exc
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


def _chunk_bytes(rows: np.ndarray, stats: np.ndarray | None) -> bytes:
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


class RemainingSampler(torch.utils.data.Sampler[int]):
    """``indices[rank::world]``: the given indices split among processes, none repeated.

    Lightning refuses a process with nothing to do, so when fewer indices than processes are
    left, a process without one gets ``PadIndex(pad)`` (an index already done): with
    :class:`PaddedView` it is served as a placeholder that no model sees, and its record is
    dropped after the sweep (see :func:`drop_redone`).
    """

    def __init__(self, indices: Sequence[int] | np.ndarray, num_replicas: int | None = None,
                 rank: int | None = None, pad: int | None = None) -> None:
        from sagebench.data import _rank_world

        self.rank, self.num_replicas = _rank_world(rank, num_replicas)
        indices = np.asarray(indices, dtype=np.int64)
        self.indices = [int(i) for i in indices[self.rank::self.num_replicas]]
        if not self.indices and len(indices) and pad is not None:
            self.indices = [PadIndex(pad)]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class PadIndex(int):
    """An index served only so that a process has a batch; never evaluated."""


class PaddedView(torch.utils.data.Dataset):
    """``dataset`` that serves a :class:`PadIndex` as a placeholder (as a skipped image: no model sees it)."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if isinstance(index, PadIndex):
            from sagebench.data import _skipped_item

            return _skipped_item(self.dataset, int(index))
        return self.dataset[index]


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


# --------------------------------------------------------------------------------------------
# The callback


class PartialResults(L.Callback):
    """Saves finished records as the sweep goes and, with ``resume``, restores the finished ones.

    After ``trainer.test``: :attr:`previous_rows` / :attr:`previous_stats` hold what earlier
    attempts finished (global rank 0), to be merged with this attempt's records; call
    :meth:`finish` once the results are written (removes ``partial/``) and :meth:`release` in
    any case (drops the folder lock).
    """

    def __init__(self, out_dir: Path, key: dict[str, Any], *, resume: bool, flush_seconds: float,
                 num_columns: int) -> None:
        self.out_dir = Path(out_dir)
        self.partial = self.out_dir / PARTIAL_DIR
        self.key = key
        self.resume = resume
        self.flush_seconds = float(flush_seconds)
        self.num_columns = num_columns
        self.previous_rows = np.zeros((0, num_columns), dtype=np.float64)
        self.previous_stats: np.ndarray | None = None
        self.attempt = 1
        self.done_ids = np.zeros(0, dtype=np.int64)
        self._lock: FileLock | None = None
        self._token = uuid.uuid4().hex[:12]
        self._seq = 0
        self._rank = 0
        self._pending: list[np.ndarray] = []
        self._stats_flushed: torch.Tensor | None = None
        self._last_flush = time.monotonic()
        self._module: Any = None

    # -- setup: rank 0 decides, everybody follows

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._rank = trainer.global_rank
        self._module = pl_module
        decision: tuple = ("ok", None)
        own_error: BaseException | None = None
        if trainer.is_global_zero:
            try:
                decision = ("ok", self._prepare(pl_module))
            except BaseException as exc:  # every process must hear about it, or the others would hang
                own_error = exc
                kind = type(exc).__name__ if isinstance(exc, SageBenchError) else "RuntimeError"
                decision = ("error", kind, str(exc))
        decision = trainer.strategy.broadcast(decision, src=0)
        if decision[0] == "error":
            self.release()
            if own_error is not None:
                raise own_error
            raise {"ConfigError": ConfigError}.get(decision[1], SageBenchError)(decision[2])
        self.done_ids = np.asarray(decision[1], dtype=np.int64)
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "done_ids"):
            datamodule.done_ids = self.done_ids
        stats = self._stats_tensor(pl_module)
        self._stats_flushed = None if stats is None else stats.detach().clone()
        self._last_flush = time.monotonic()

    def _prepare(self, pl_module: L.LightningModule) -> np.ndarray:
        self.partial.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(self.partial / LOCK_FILE, timeout=0, what=f"the output folder {self.out_dir}")
        try:
            self._lock.acquire()
        except LockTimeout:
            holder = self._lock.holder()
            self._lock = None
            raise ConfigError(f"Another sagebench run{f' (pid {holder})' if holder else ''} is writing to "
                              f"{self.out_dir}: wait for it to finish, or choose another output_dir.") from None
        state = precheck(self.out_dir, self.resume)  # again, now under the lock
        if state.finished:
            raise ConfigError(f"{self.out_dir} already holds finished results ({RESULTS_FILE}); choose another "
                              "output_dir.")
        for leftover in self.partial.glob(".*.tmp"):  # a write interrupted by the crash
            leftover.unlink(missing_ok=True)
        if state.unfinished:
            if state.manifest is None:
                raise ConfigError(
                    f"{state.partial} holds finished images but no readable {MANIFEST_FILE} "
                    f"({state.manifest_error or 'missing'}), so they cannot be checked against this config. "
                    f"Delete {state.partial} to start over.")
            diff = key_differences(state.manifest.get("key", {}), self.key)
            if diff:
                raise ConfigError(
                    f"Cannot resume the run in {self.out_dir}: its configuration differs from this one ("
                    + "; ".join(diff) + "). Resume with the same settings, or choose another output_dir "
                    f"(or delete {state.partial} to discard the images already done).")
            stats = self._stats_tensor(pl_module)
            shape = None if stats is None else tuple(stats.shape)
            self.previous_rows, self.previous_stats = load_chunks(state, self.num_columns, shape)
            self.attempt = int(state.manifest.get("attempt", 1)) + 1
        else:  # nothing finished yet: (re)start cleanly
            for stale in self.partial.glob("rank*.npz"):
                stale.unlink(missing_ok=True)
        atomic_write_json(self.partial / MANIFEST_FILE, {
            "version": MANIFEST_VERSION,
            "attempt": self.attempt,
            "updated": datetime.now().isoformat(timespec="seconds"),
            "images_done": int(self.previous_rows.shape[0]),
            "key": self.key,
        })
        return self.previous_rows[:, 0].astype(np.int64)

    # -- saving as the sweep goes

    @staticmethod
    def _stats_tensor(pl_module: Any) -> torch.Tensor | None:
        stats = getattr(pl_module, "strategy_stats", None)
        sums = getattr(stats, "sums", None)
        if isinstance(sums, torch.Tensor) and getattr(stats, "active", False):
            return sums
        return None

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if isinstance(outputs, torch.Tensor) and outputs.ndim == 2 and outputs.shape[0]:
            self._pending.append(outputs.detach().to("cpu", torch.float64).numpy())
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.on_test_batch_end(*args, **kwargs)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        try:  # keep what is finished: a rerun with resume=true starts from there
            self.flush()
        except Exception as exc:  # never hide the original error
            warn(f"could not save the last finished images ({exc}).")

    @property
    def chunks_written(self) -> int:
        """Chunks this attempt has saved so far (one per flush that had rows)."""
        return self._seq

    def flush(self) -> None:
        """Write the pending rows (and the strategy counters they added) as one chunk, atomically."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        rows = np.concatenate(self._pending)
        stats_delta = None
        current = self._stats_tensor(self._module) if self._module is not None else None
        if current is not None:
            current = current.detach().cpu().double()
            before = self._stats_flushed.cpu().double() if self._stats_flushed is not None else torch.zeros_like(current)
            stats_delta = (current - before).numpy()
            self._stats_flushed = current.clone()
        name = f"rank{self._rank}-{self._token}-{self._seq:06d}.npz"
        atomic_write_bytes(self.partial / name, _chunk_bytes(rows, stats_delta))
        self._seq += 1
        self._pending = []

    # -- the end

    def finish(self) -> None:
        """The results are on disk: drop the partial records (global rank 0)."""
        shutil.rmtree(self.partial, ignore_errors=True)
        self.release()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
