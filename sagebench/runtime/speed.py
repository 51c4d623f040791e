"""Speed switches of a sweep: CPU threads, DataLoader workers, compile, phase timers, stopwatches.

Why here and not in the module: each piece is small, testable alone, and the evaluation module
only calls it (:class:`PhaseTimer` around each phase). The server passes themselves (and their
``dedupe``) are :mod:`sagebench.server.passes`.

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
(:mod:`sagebench.runtime.host_memory`).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

import torch

from sagebench.runtime.host_memory import host_memory_state


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
