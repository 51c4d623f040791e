"""Speed switches of a sweep: CPU threads, one server pass per distinct selection, compile, phase timers.

Why here and not in the module: each piece is small, testable alone, and the evaluation module
only calls it (:class:`ServerPasses` per batch, :class:`PhaseTimer` around each phase).

CPU threads. PyTorch's CPU kernels run on OpenMP threads that, by default, *spin* at the end of
every parallel region waiting for each other. When another process holds a core (a test run, a
training job), a spinning thread waits a whole scheduler time slice for a descheduled partner:
on a loaded 2-core machine the embedded sweep ran 3-5x slower with 2 threads than with 1.
``import sagebench`` therefore sets ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of spin)
unless the variable is already set or torch was imported first; with it, 2 threads were as fast
as 1 on the loaded machine (docs/performance.md). ``OMP_WAIT_POLICY=ACTIVE`` restores spinning;
``threads=N`` fixes the number of intra-op threads.

Host memory: ``reuse_host_memory`` (on by default) tunes glibc's allocator so that freed
activation buffers are reused by the next forward instead of being page-faulted in again
(:mod:`sagebench.host_memory`).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Callable

import torch

from sagebench.host_memory import host_memory_state, keep_freed_memory


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op CPU threads when ``threads`` is given; return the number in use."""
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def num_workers(requested: int | None, trainer=None) -> int:
    """DataLoader workers: ``requested``, or where they pay when ``None``.

    GPU: decoding must keep up with the device, so one worker per spare core of this process's
    share of the machine, up to 8. CPU: decoding competes with the model for the same cores, so
    workers only help with cores to spare (8 or more: a quarter of them, up to 4); below that, 0.
    """
    if requested is not None:
        return int(requested)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    accelerator = type(getattr(trainer, "accelerator", None)).__name__.lower()
    per_process = max(1, cores // max(1, int(getattr(trainer, "num_devices", 1) or 1)))
    if "cpu" not in accelerator and accelerator != "nonetype":  # CUDA, MPS, XLA
        return max(1, min(8, per_process - 1))
    return 0 if per_process < 8 else min(4, per_process // 4)


def compile_server(server: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile`` the server's transformer blocks (>95% of its compute), in place.

    Both server paths run them: the ceiling pass (``server.vit(images)``) and every budgeted pass
    (``server(transmission)``). ``dynamic=True`` because batch (offloaded images) and sequence
    (budget) lengths change from pass to pass; one graph then serves them all.
    """
    vit = server.vit
    if not isinstance(vit.blocks, torch._dynamo.eval_frame.OptimizedModule):
        vit.blocks = torch.compile(vit.blocks, dynamic=True)
    return server


class PhaseTimer:
    """Wall seconds per named phase (edge, ceiling, select/<cell>, server/<cell>); off by default.

    Enabled (``profile=true``) it synchronises the GPU before each reading so that the times are
    those of the phase and not of its kernel launches; disabled, it costs one attribute check.
    """

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = bool(enabled)
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def start(self) -> float | None:
        if not self.enabled:
            return None
        self._sync()
        return time.perf_counter()

    def stop(self, name: str, started: float | None) -> None:
        if started is None:
            return
        self._sync()
        self.seconds[name] += time.perf_counter() - started
        self.calls[name] += 1

    def report(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in sorted(self.seconds.items())}

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


class ServerPasses:
    """The budgeted server passes of one batch of offloaded images, one per distinct selection.

    Every selection is sent to the server in raster order (indices sorted): a ViT with positional
    embeddings gives the same output for any order of the same (position, patch) tokens, so the
    order only changes float rounding, and a canonical order makes equal sets give bit-equal
    inputs. With ``dedupe`` an image whose patch *set* at a budget equals the set an earlier
    (strategy, budget) cell chose for it reuses that cell's prediction instead of running the
    server again; only the images with a new set go through the server, as one batch per cell.
    Results are the same as without ``dedupe`` (the rows of a batched forward do not depend on
    which other rows are in the batch, up to the BLAS kernel chosen for very small batches).
    """

    def __init__(self, server: torch.nn.Module, patches: torch.Tensor, *, dedupe: bool = True,
                 predict: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 timer: PhaseTimer | None = None, codec=None) -> None:
        from sagebench.codecs import Codec
        from sagebench.transmission import transmit

        self._transmit = transmit
        self.server = server
        self.patches = patches  # [n, N, C, ph, pw]
        self.num_patches = int(patches.shape[1])
        self.codec = codec if codec is not None else Codec("raw")
        self.dedupe = bool(dedupe)
        self.predict_fn = predict or (lambda logits: logits.argmax(-1).double())
        self.timer = timer or PhaseTimer(False)
        # per budget: earlier cells' (member images, canonical sets [n, B] (-1 rows for non-members), preds, bytes)
        self._seen: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        self.forwards = 0        # server forwards run
        self.images_run = 0      # (image, cell) pairs the server computed
        self.images_reused = 0   # (image, cell) pairs answered by an earlier identical selection

    def units(self, indices: torch.Tensor) -> int:
        return int(indices.shape[1])

    def payload(self, rows: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Bytes of the requests of images ``rows`` sending ``indices`` (encoded, not decoded)."""
        canon = torch.sort(indices, dim=1).values
        grid = getattr(self.server, "grid")
        return self.codec.payload_bytes(self._transmit(self.patches[rows], canon, grid).patches, self.num_patches)

    def predict(self, indices: torch.Tensor, name: str = "server") -> torch.Tensor:
        """float64 ``[n]`` server predictions for the selections ``indices [n, B]``."""
        return self.send(indices, name)[0]

    def send(self, indices: torch.Tensor, name: str = "server",
             rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Server predictions (float64) and request bytes (int64) for images ``rows`` (default: all)
        sending ``indices [len(rows), B]``."""
        started = self.timer.start()
        n_all = self.patches.shape[0]
        device = indices.device
        every_row = rows is None
        rows = torch.arange(n_all, device=device) if rows is None else rows
        canon = torch.sort(indices, dim=1).values
        n, budget = canon.shape
        preds = torch.empty(n, dtype=torch.float64, device=device)
        sizes = torch.empty(n, dtype=torch.int64, device=device)
        need = torch.ones(n, dtype=torch.bool, device=device)
        earlier = self._seen.setdefault(budget, [])
        if self.dedupe:
            for seen_member, seen_canon, seen_preds, seen_bytes in earlier:  # over earlier cells, never over images
                same = need & seen_member[rows] & (seen_canon[rows] == canon).all(dim=1)
                preds = torch.where(same, seen_preds[rows], preds)
                sizes = torch.where(same, seen_bytes[rows], sizes)
                need &= ~same
        todo = need.nonzero().squeeze(1)
        m = todo.numel()
        if m:
            p, s = self._run(canon, None) if (every_row and m == n_all) else self._run(canon[todo], rows[todo])
            preds[todo], sizes[todo] = p, s.to(device)
        self.images_run += m
        self.images_reused += n - m
        if self.dedupe:
            full = torch.full((n_all, budget), -1, dtype=canon.dtype, device=device)
            full[rows] = canon
            full_preds = torch.zeros(n_all, dtype=torch.float64, device=device)
            full_bytes = torch.zeros(n_all, dtype=torch.int64, device=device)
            full_preds[rows], full_bytes[rows] = preds, sizes
            member = torch.zeros(n_all, dtype=torch.bool, device=device)  # images this cell sent (an empty
            member[rows] = True                                            # set must not match a non-member)
            earlier.append((member, full, full_preds, full_bytes))
        self.timer.stop(name, started)
        return preds, sizes

    def _run(self, canon: torch.Tensor, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        grid = getattr(self.server, "grid")
        tx = self._transmit(self.patches if rows is None else self.patches[rows], canon, grid)
        tx.patches, sizes = self.codec.transmit(tx.patches, self.num_patches)
        self.forwards += 1
        return self.predict_fn(self.server(tx)), sizes


def configure(module: torch.nn.Module, cfg) -> None:
    """Apply the config's speed switches to an evaluation module (threads, host memory, dedupe,
    profile, compile)."""
    apply_threads(cfg.get("threads"))
    if cfg.get("reuse_host_memory", True):
        keep_freed_memory()
    module.dedupe = bool(cfg.get("dedupe", True))
    module.timer = PhaseTimer(bool(cfg.get("profile", False)))
    if cfg.get("compile", False):
        compile_server(module.server)


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its finished children (DataLoader workers)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class Stopwatch:
    """Wall and CPU seconds from creation to :meth:`stop`. CPU seconds count the work done, not the
    waiting: on a machine shared with other jobs they are the steadier measure of a cost."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()
        self.wall = self.cpu = None

    def stop(self) -> "Stopwatch":
        self.wall, self.cpu = time.perf_counter() - self._wall, cpu_seconds() - self._cpu
        return self


def timing_report(module: torch.nn.Module, sweep: Stopwatch | None) -> dict:
    """The speed figures of a finished sweep for results.json's ``timing`` (this process's counts)."""
    out: dict = {}
    if sweep is not None and sweep.wall is not None:
        out["sweep_seconds"] = round(sweep.wall, 3)
        out["sweep_cpu_seconds"] = round(sweep.cpu, 3)
    out["threads"] = torch.get_num_threads()
    out["host_memory"] = host_memory_state()
    out["server_passes"] = dict(getattr(module, "server_passes", {}), dedupe=bool(getattr(module, "dedupe", True)))
    source = getattr(module, "edge_source", None)
    if source is not None and hasattr(source, "report"):
        out["edge_cache"] = source.report()
    timer = getattr(module, "timer", None)
    if timer is not None and timer.enabled:
        out["phases"] = timer.report()
    return out
