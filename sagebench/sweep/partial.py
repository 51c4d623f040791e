"""The callback that saves finished per-image records as the sweep goes, and restores them on resume.

Why a callback of its own (as Lightning's ``BasePredictionWriter`` is one): saving is one job
that the module need not know about; the module only returns each batch's stored rows from
``test_step``. Formats, keys and the decision to resume are :mod:`sagebench.sweep.resume`.
"""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from sagebench.errors import ConfigError, SageBenchError
from sagebench.results.files import RESULTS_FILE
from sagebench.runtime.files import (
    FileLock,
    LockTimeout,
    atomic_write_bytes,
    atomic_write_json,
)
from sagebench.runtime.log import warn
from sagebench.sweep.resume import (
    LOCK_FILE,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    PARTIAL_DIR,
    chunk_bytes,
    key_differences,
    load_chunks,
    precheck,
)

# --------------------------------------------------------------------------------------------
# The callback


class PartialResults(L.Callback):
    """Saves finished records as the sweep goes and, with ``resume``, restores the finished ones.

    ``key``: the run key (:meth:`sagebench.sweep.plan.RunPlan.run_key`); None: taken in :meth:`setup` from the
    data module's plan. After ``trainer.test``: :attr:`previous_rows` / :attr:`previous_stats` hold what earlier
    attempts finished (global rank 0), to be merged with this attempt's records; call
    :meth:`finish` once the results are written (removes ``partial/``) and :meth:`release` in
    any case (drops the folder lock).
    """

    def __init__(self, out_dir: Path, key: dict[str, Any] | None = None, *, resume: bool, flush_seconds: float,
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
        if self.key is None:  # the run key: a projection of the plan the data module built in its setup (before this)
            plan = getattr(trainer.datamodule, "plan", None)
            self.key = plan.run_key() if plan is not None else {}
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
        self.done_ids = np.asarray(decision[1], dtype=np.int64)  # the data module asks for them (SweepData)
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
        state = precheck(self.out_dir, self.resume, live=False)  # again, now under the lock (ours)
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
        drain = getattr(pl_module, "drain_queue", None)  # offloaded images still waiting for the server
        if drain is not None:
            tail = drain()
            if isinstance(tail, torch.Tensor) and tail.ndim == 2 and tail.shape[0]:
                self._pending.append(tail.detach().to("cpu", torch.float64).numpy())
        self.flush()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_test_epoch_end(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        try:  # keep what is finished: a rerun with resume=true starts from there
            self.flush()
        except Exception as exc:  # never hide the original error (nor repeat it: a full disk is said once)
            if not isinstance(exception, SageBenchError) or str(exc) != str(exception):
                warn(f"could not save the last finished images ({exc}).")

    @property
    def chunks_written(self) -> int:
        """Chunks this attempt has saved so far (one per flush that had rows)."""
        return self._seq

    def flush(self) -> None:
        """Write the pending rows (and the strategy counters they added) as one chunk, atomically.

        A failed write (a full disk) keeps the rows pending and raises a :class:`SageBenchError` that says how
        to continue; the chunks written before are complete, so ``resume=true`` starts from them.
        """
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
        name = f"rank{self._rank}-{self._token}-{self._seq:06d}.npz"
        try:
            atomic_write_bytes(self.partial / name, chunk_bytes(rows, stats_delta))
        except OSError as exc:  # a full disk, a lost mount
            raise SageBenchError(
                f"Cannot save finished records to {self.partial}: {exc.strerror or exc}. Free space there (or fix "
                "its permissions) and rerun with resume=true: the images saved before are kept.") from None
        if current is not None:
            self._stats_flushed = current.clone()
        self._seq += 1
        self._pending = []

    # -- the end

    def finish(self) -> None:
        """The results are on disk: drop the partial records (global rank 0)."""
        shutil.rmtree(self.partial, ignore_errors=True)
        self.release()

    def holds_lock(self) -> bool:
        """This run still holds the output folder's lock (on the lock file that is there now)."""
        return self._lock is not None and self._lock.still_held()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
