"""sagebench's progress display as Lightning's progress bar (the one ``progress=true`` shows).

Why a ``ProgressBar`` subclass: Lightning then uses it instead of its own batch bar (which counts data
batches, not the sweep's work), and ``enable_progress_bar`` keeps its meaning. The counting and the display
are :mod:`sagebench.runtime.progress`; this callback only wires them to a run: it hands the evaluation
module its :class:`~sagebench.runtime.progress.Progress` (``pl_module.progress``), finds how many images
this attempt evaluates (one collective at the start, which every process reaches once), and at the end
gathers every process's exact counts for the last line (one collective, reached once by every process).
"""

from __future__ import annotations

from typing import Any, TextIO

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar

from sagebench.runtime.progress import NO_PROGRESS, Counts, Progress


def _local_images(trainer: L.Trainer) -> int | None:
    """Images this process's loader yields (None: unknown, e.g. a stream)."""
    loaders = trainer.test_dataloaders if trainer.testing else trainer.val_dataloaders
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    if loader is None:
        return None
    if isinstance(loader.dataset, torch.utils.data.IterableDataset):
        try:
            return len(loader.dataset)
        except TypeError:
            return None
    try:
        return len(loader.sampler) if loader.sampler is not None else len(loader.dataset)
    except TypeError:
        return None


def _default_store() -> Any:
    """The process group's key-value store, or None (one process, or not reachable)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:
        return None


class SweepProgress(ProgressBar):
    """The sweep's progress: edge images, ceiling images, server image-cells, with rate and ETA.

    ``every``: seconds between two lines when the output is not a terminal (``progress_every``);
    ``stream``: where to write (default: the current ``sys.stderr``); ``interactive``: force the terminal
    (True) or log (False) form; ``clock``/``heartbeat``: for tests.
    """

    def __init__(self, every: float = 30.0, *, stream: TextIO | None = None, interactive: bool | None = None,
                 **progress_options: Any) -> None:
        super().__init__()
        self.every = float(every)
        self.stream = stream
        self.interactive = interactive
        self.options = progress_options
        self.progress: Progress | None = None
        self._module: Any = None

    def disable(self) -> None:  # Lightning disables the bar on ranks > 0: they still count and publish
        pass

    def enable(self) -> None:
        pass

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        local = _local_images(trainer)
        images: int | None = local
        if trainer.world_size > 1:  # reached once by every process
            sizes = trainer.strategy.all_gather(torch.tensor(-1 if local is None else local, device=pl_module.device))
            sizes = [int(s) for s in sizes.reshape(-1).tolist()]
            images = None if min(sizes) < 0 else sum(sizes)
        cells = len(getattr(pl_module, "layout").cells)
        self.progress = Progress(images, cells, every=self.every, stream=self.stream, interactive=self.interactive,
                                 rank=trainer.global_rank, world_size=trainer.world_size,
                                 store=_default_store() if trainer.world_size > 1 else None, **self.options)
        self._module = pl_module
        pl_module.progress = self.progress
        self.progress.start()

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.progress is None:
            return
        exact = None
        if trainer.world_size > 1:  # reached once by every process: the last line is exact
            mine = torch.tensor(list(vars(self.progress.counts).values()), dtype=torch.long, device=pl_module.device)
            exact = Counts(*trainer.strategy.all_gather(mine).reshape(trainer.world_size, -1).sum(0).tolist())
        self.progress.close(exact)
        self._detach()

    def _detach(self) -> None:
        if self._module is not None:
            self._module.progress = NO_PROGRESS
            self._module = None

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._start(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._finish(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._stop()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stop()  # whatever ended the run: no heartbeat outlives it (a notebook would print on forever)

    def _stop(self) -> None:
        if self.progress is not None and not self.progress.closed:
            self.progress.close(stopped=True)  # the last line as far as this process knows; no collective here
        self._detach()
