"""The progress of a sweep in the units of its real work: edge images, ceiling images, server image-cells.

Why not Lightning's bar: it counts data batches, and a batch's offloaded images wait in a queue until a
full server batch can go (``server_batch_size``), so the bar reached ``1/1`` and then showed nothing for
13.5 minutes while the queued server passes ran. The work of a sweep is, per image, one edge forward (and
the gate); per offloaded image, one ceiling pass and one server pass per (strategy, budget) cell. This
module counts exactly that, fed by the evaluation module through three calls (:meth:`Progress.gated`,
:meth:`Progress.advance` with ``"ceiling"`` or ``"server"``), and shows it:

* on a terminal, one line redrawn at most every ``refresh`` seconds (tqdm, which Lightning already needs);
* elsewhere (CI, SLURM logs), one plain line every ``every`` seconds (``progress_every``), plus a first and
  a last line.

A heartbeat thread redraws (or writes the periodic line) even while one long server forward runs, so the
display is never silent for more than ``refresh`` seconds on a terminal, or ``every`` seconds in a log.

Totals: the edge total is the number of images this attempt evaluates. How many images the gate offloads
is known only as it decides, so the ceiling and server totals are *estimated* from the share offloaded so
far (shown with ``~`` and the share) until every image went through the edge, when they are exact.
ETA: each unit kind's seconds per unit are measured by attributing the wall time between two calls to the
kind of the later call (the edge's share includes data loading); the remaining units of each kind times
its seconds per unit, summed. Until a kind with work left has been timed once, the ETA is unknown (``?``).

Several processes (DDP): global rank 0 displays the totals of every process. The others publish their
counts through the process group's key-value store (``torch.distributed``'s default store, the one the
processes met through) at most every ``publish`` seconds, and rank 0 reads them as it counts. No collective
runs during the loop: processes may run different numbers of batches, and a collective there could hang.
Where no store is reachable, rank 0 shows its own counts times the number of processes (each process
evaluates an equal share of the images, +-1) and says so. Rates are per process; the ETA divides rank 0's
time per unit by the number of processes, which run in parallel.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from dataclasses import astuple, dataclass, fields
from typing import Any, Callable, TextIO

KINDS = ("edge", "ceiling", "server")
_generation = itertools.count()  # one key space per Progress of this process (same sequence on every rank)


@dataclass
class Counts:
    """Work done (one process, or every process summed)."""

    edge: int = 0       # images through the edge and the gate
    labelled: int = 0   # of them, with a label (the running edge accuracy's denominator)
    correct: int = 0    # of them, predicted right by the edge
    offloaded: int = 0  # images the gate sent to the server
    ceiling: int = 0    # offloaded images whose full-image (ceiling) pass ran
    server: int = 0     # (image, strategy x budget cell) pairs served; dedupe-reused pairs count as done

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(*(a + b for a, b in zip(astuple(self), astuple(other))))

    def scaled(self, factor: int) -> "Counts":
        return Counts(*(a * factor for a in astuple(self)))

    def encode(self) -> str:
        return ",".join(str(v) for v in astuple(self))

    @classmethod
    def decode(cls, text: str | bytes) -> "Counts":
        text = text.decode() if isinstance(text, bytes) else text
        values = [int(v) for v in text.split(",")]
        if len(values) != len(fields(cls)):
            raise ValueError(f"bad progress counts {text!r}")
        return cls(*values)


@dataclass
class Totals:
    """What the whole job amounts to, as far as it is known now."""

    edge: int | None       # None: the data set's size is unknown (a stream without data.limit)
    ceiling: float | None  # estimated until every image went through the edge
    server: float | None
    exact: bool            # the offloaded count is final
    share: float | None    # offloaded share so far


def totals(counts: Counts, images: int | None, cells: int) -> Totals:
    """The job's totals from the counts so far: the offloaded share seen so far applied to the images left."""
    share = counts.offloaded / counts.edge if counts.edge else None
    if images is not None and counts.edge >= images:
        return Totals(counts.edge, counts.offloaded, counts.offloaded * cells, True, share)
    if images is None or share is None:
        return Totals(images, None, None, False, share)
    offloaded = counts.offloaded + share * (images - counts.edge)
    return Totals(images, offloaded, offloaded * cells, False, share)


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _columns() -> int:
    """The terminal's width (120 where it reports none: a pseudo-terminal without a size, where tqdm, left to
    itself, hides the bar)."""
    import shutil

    return shutil.get_terminal_size(fallback=(120, 24)).columns


def _count_text(done: int, total: float | None, exact: bool) -> str:
    if total is None:
        return f"{done}/?"
    return f"{done}/{'' if exact else '~'}{int(round(total))}"


class Progress:
    """Counts a sweep's work and shows it (global rank 0), or publishes it (other ranks).

    ``images``: images this attempt evaluates, every process together (None: unknown); ``cells``:
    strategies x budgets. ``clock``: seconds (monotonic); tests pass a fake one and ``heartbeat=False``.
    ``store``: a ``torch.distributed.Store`` shared by the processes (None: none reachable); ``key``: the
    prefix of this run's keys there (default: one per Progress made in this process).
    """

    def __init__(self, images: int | None, cells: int, *, every: float = 30.0, refresh: float = 0.5,
                 stream: TextIO | None = None, interactive: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, heartbeat: bool = True, rank: int = 0,
                 world_size: int = 1, store: Any = None, publish: float = 1.0, key: str | None = None) -> None:
        if every <= 0:
            raise ValueError(f"every must be > 0 seconds, got {every}")
        self.images = images
        self.cells = int(cells)
        self.every = float(every)
        self.refresh = float(refresh)
        self._stream = stream
        self.interactive = bool(interactive if interactive is not None else getattr(self.stream, "isatty",
                                                                                     lambda: False)())
        self.clock = clock
        self.rank, self.world_size = int(rank), int(world_size)
        self.store, self.publish = store, float(publish)
        # the store's keys of this run: the n-th Progress of every process shares one key space
        self._key = key if key is not None else f"sagebench-progress/{next(_generation)}/"
        self.counts = Counts()  # this process
        self._others = Counts()  # the other processes, as last read from the store
        self.seconds = dict.fromkeys(KINDS, 0.0)  # wall seconds attributed to each kind (this process)
        self.timed = dict.fromkeys(KINDS, 0)      # units of each kind those seconds cover
        self._latest: dict[str, float | None] = dict.fromkeys(KINDS)  # when each kind last advanced
        self._lock = threading.RLock()
        self._bar: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._heartbeat = heartbeat
        self._started = self._last = self._shown = self._published = self._read = 0.0
        self.lines = 0  # plain lines written
        self.closed = False

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def displays(self) -> bool:
        return self.rank == 0

    # -- fed by the evaluation module

    def start(self) -> None:
        """Start the clocks (and, on rank 0, the display and its heartbeat)."""
        now = self.clock()
        self._started = self._last = self._shown = now
        self._published = self._read = -float("inf")  # the first count is exchanged at once
        if not self.displays:
            return
        if self.interactive:
            from tqdm import tqdm

            self._bar = tqdm(total=1000, file=self.stream, ncols=_columns(), nrows=24, leave=True, mininterval=0,
                             bar_format="sagebench {percentage:3.0f}%|{bar:16}| {desc}", desc="")
            self._draw(now)
        else:
            cells = f"{self.cells} strategy x budget cell{'s' if self.cells != 1 else ''}"
            self._write(f"sagebench: progress: {self.images if self.images is not None else 'an unknown number of'}"
                        f" images through the edge; each offloaded one: 1 ceiling pass + {cells}; a line every "
                        f"{self.every:g} s")
        if self._heartbeat:
            self._thread = threading.Thread(target=self._beat_loop, name="sagebench-progress", daemon=True)
            self._thread.start()

    def gated(self, labels: Any, edge_pred: Any, offload: Any) -> None:
        """A batch went through the edge and the gate: its labels, the edge's predictions, the gate's decision
        (tensors of one length). One host sync for the three counts."""
        import torch

        n = int(offload.numel())
        known = labels >= 0
        sums = torch.stack([known.sum(), ((edge_pred == labels) & known).sum(), offload.sum()]).tolist()
        with self._lock:
            self.counts.edge += n
            self.counts.labelled += int(sums[0])
            self.counts.correct += int(sums[1])
            self.counts.offloaded += int(sums[2])
            self._tick("edge", n)

    def advance(self, kind: str, n: int) -> None:
        """``n`` units of ``kind`` (``"ceiling"``: offloaded images; ``"server"``: image-cells) are done."""
        if kind not in ("ceiling", "server"):
            raise ValueError(f"kind must be ceiling or server (edge images come through gated), got {kind!r}")
        with self._lock:
            setattr(self.counts, kind, getattr(self.counts, kind) + int(n))
            self._tick(kind, int(n))

    def _tick(self, kind: str, n: int) -> None:
        now = self.clock()
        self.seconds[kind] += now - self._last
        self.timed[kind] += n
        self._last = self._latest[kind] = now
        if self.store is not None and self.world_size > 1:
            self._exchange(now)
        if self.displays:
            self._show(now)

    # -- several processes

    def _exchange(self, now: float) -> None:
        """Publish this process's counts (ranks > 0), or read the others' (rank 0), at most every ``publish`` s."""
        try:
            if self.rank:
                if now - self._published >= self.publish:
                    self.store.set(f"{self._key}{self.rank}", self.counts.encode())
                    self._published = now
            elif now - self._read >= self.publish:
                self._read = now
                others = Counts()
                for r in range(1, self.world_size):
                    key = f"{self._key}{r}"
                    if self.store.check([key]):
                        others = others + Counts.decode(self.store.get(key))
                self._others = others
        except Exception:  # a progress display never fails a run: fall back to scaling rank 0's counts
            self.store = None

    def total_counts(self) -> Counts:
        """Every process's counts as rank 0 knows them now."""
        if self.world_size <= 1:
            return self.counts
        if self.store is None:
            return self.counts.scaled(self.world_size)
        return self.counts + self._others

    # -- the display

    def eta(self, counts: Counts, tot: Totals) -> float | None:
        """Seconds left: each kind's remaining units times its measured seconds per unit (per process)."""
        left = 0.0
        for kind, total in (("edge", tot.edge), ("ceiling", tot.ceiling), ("server", tot.server)):
            if total is None:
                return None
            remaining = max(0.0, total - getattr(counts, kind))
            if remaining > 0:
                if not self.timed[kind]:
                    return None
                left += remaining * self.seconds[kind] / self.timed[kind]
        return left / max(1, self.world_size)

    def describe(self, now: float | None = None, *, final: bool = False, compact: bool = False) -> str:
        """The progress as one line of text (without the ``sagebench: progress`` prefix); ``final``: no ETA;
        ``compact``: shorter words (the terminal line, cut at the window's width)."""
        with self._lock:
            now = self.clock() if now is None else now
            counts = self.total_counts()
            tot = totals(counts, self.images, self.cells)
            img, cells, acc_word = ("", "cells", "acc") if compact else (" img", "img-cells", "edge acc")
            acc = f", {acc_word} {100 * counts.correct / counts.labelled:.1f}%" if counts.labelled else ""
            parts = [f"edge {_count_text(counts.edge, tot.edge, True)}{img} ({self._rate('edge', counts)}{acc})",
                     f"ceiling {_count_text(counts.ceiling, tot.ceiling, tot.exact)}",
                     f"server {_count_text(counts.server, tot.server, tot.exact)} {cells} "
                     f"({self._rate('server', counts)})"]
            if tot.share is not None:
                share = f"{100 * tot.share:.0f}%"
                parts.append((f"offloaded {share}" if tot.exact else f"offloaded ~{share} so far") if compact else
                             f"offloaded {share}" + ("" if tot.exact else " so far (~: estimated)"))
            if self.world_size > 1 and self.store is None:
                parts.append(f"rank 0 x {self.world_size}")
            if not final:
                parts.append(f"ETA {_clock_text(self.eta(counts, tot))}")
            return " | ".join(parts)

    def _rate(self, kind: str, counts: Counts) -> str:
        """Units per second from the start to this kind's latest advance (so that the edge's rate stays what it
        was once every image went through, and the server's is the job's throughput of image-cells)."""
        latest = self._latest[kind]
        span = latest - self._started if latest is not None else 0.0
        return f"{getattr(counts, kind) / span:.2f}/s" if span > 0 else "-/s"

    def fraction(self, now: float) -> float:
        """Share of the job done: by time when an ETA is known, else by units."""
        counts = self.total_counts()
        tot = totals(counts, self.images, self.cells)
        eta = self.eta(counts, tot)
        if eta is not None:
            spent = now - self._started
            return spent / (spent + eta) if spent + eta > 0 else 1.0
        known = [(getattr(counts, k), t) for k, t in (("edge", tot.edge), ("ceiling", tot.ceiling),
                                                      ("server", tot.server)) if t]
        return sum(d for d, _ in known) / sum(t for _, t in known) if known else 0.0

    def _show(self, now: float) -> None:
        if self.closed:
            return
        if self._bar is not None:
            if now - self._shown >= self.refresh:
                self._draw(now)
        elif now - self._shown >= self.every:
            self._write(f"sagebench: progress [{_clock_text(now - self._started)}] {self.describe(now)}")
            self._shown = now

    def _draw(self, now: float) -> None:
        """The terminal line; the ETA first, as a narrow terminal cuts the end of the line."""
        self._bar.n = int(1000 * min(1.0, max(0.0, self.fraction(now))))
        self._bar.ncols = _columns()  # follows a resized window
        with self._lock:
            counts = self.total_counts()
            eta = _clock_text(self.eta(counts, totals(counts, self.images, self.cells)))
        self._bar.set_description_str(f"ETA {eta} [{_clock_text(now - self._started)}] "
                                      f"{self.describe(now, final=True, compact=True)}", refresh=False)
        self._bar.refresh()
        self._shown = now

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
        self.lines += 1

    def beat(self) -> None:
        """What the heartbeat does: redraw, or write the periodic line, when it is due (also mid-forward)."""
        with self._lock:
            if self.displays:
                self._show(self.clock())

    def _beat_loop(self) -> None:
        wait = self.refresh if self.interactive else min(1.0, self.every / 4)
        while not self._stop.wait(wait):
            try:
                self.beat()
            except Exception:  # never let the display thread print a traceback into the run's output
                return

    def close(self, exact: Counts | None = None, *, stopped: bool = False) -> None:
        """Stop the heartbeat and write the last line. ``exact``: every process's final counts (rank 0);
        ``stopped``: the run failed or was interrupted (the line says so)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._lock:
            if self.closed:
                return
            if exact is not None:
                self.counts, self._others, self.world_size = exact, Counts(), 1
            if self.displays:
                now = self.clock()
                line = (f"[{_clock_text(now - self._started)}] "
                        f"{self.describe(now, final=True, compact=self._bar is not None)}")
                if self._bar is not None:
                    self._bar.n = 1000 if self.images is not None and self.counts.edge >= self.images else self._bar.n
                    self._bar.set_description_str(f"done {line}", refresh=False)
                    self._bar.close()
                    self._bar = None
                else:
                    self._write(f"sagebench: progress {'stopped' if stopped else 'done'} {line}")
            self.closed = True


class NoProgress:
    """The evaluation module's progress when none is shown (``progress=false``, or outside ``evaluate``)."""

    def gated(self, labels: Any, edge_pred: Any, offload: Any) -> None:
        pass

    def advance(self, kind: str, n: int) -> None:
        pass


NO_PROGRESS = NoProgress()
