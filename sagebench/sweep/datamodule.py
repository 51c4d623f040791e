"""The data module of a sweep: each image served to exactly one process, once, in index order."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from sagebench import data as data_lib
from sagebench.errors import ConfigError
from sagebench.sweep.plan import RunPlan, device_type, plan_of
from sagebench.sweep.serving import CacheSettings, Serving, decide

Dataset = torch.utils.data.Dataset


class SweepData(L.LightningDataModule):
    """Serves the evaluation images; the sampler is built in the hook, once the process group exists.

    Each process gets a disjoint, unpadded share (Lightning's own distributed sampler pads with
    duplicates in test/validate loops, which would count some images twice).

    Given a built sweep (:class:`sagebench.sweep.build.Sweep`), the data module owns what loading the
    data decides: :meth:`prepare_data` (one process per node) prepares the source (downloads, the
    Arrow conversion), :meth:`setup` (every process) loads the images into the sweep, then builds the
    run's :class:`~sagebench.sweep.plan.RunPlan` and makes the one serving decision
    (:func:`sagebench.sweep.serving.decide`). The evaluation module and the records writer read
    :attr:`plan` and :attr:`serving` in their own ``setup``, which Lightning runs after this one.

    ``earlier``: the records writer (:class:`~sagebench.sweep.partial.PartialResults`), asked for the ids
    an earlier attempt finished when the loader is built. ``dataset``: an in-memory evaluation set to
    use instead of loading the configured one (items as :class:`~sagebench.data.EvalImages` yields them).
    """

    def __init__(self, sweep: Any, batch_size: int, num_workers: int, *, earlier: Any = None,
                 cache: CacheSettings | None = None, dataset: Dataset | None = None) -> None:
        super().__init__()
        self.sweep = sweep
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.earlier = earlier
        self.cache = cache or CacheSettings()
        self.given = dataset
        self._prepared: Any = None  # the source prepare_data loaded, when it ran in this process
        self.dataset: Dataset | None = None
        self.plan: RunPlan | None = None
        self.serving: Serving | None = None

    def prepare_data(self) -> None:
        if self.given is None:
            self._prepared = data_lib.prepare_source(self.sweep.data)

    def setup(self, stage: str) -> None:
        if self.plan is not None:  # one decision per run
            return
        from sagebench.sweep.build import attach_data

        trainer = self.trainer
        source, self._prepared = self._prepared, None
        dataset = attach_data(self.sweep, source, dataset=self.given, device_type=device_type(trainer))
        check_processes(self.sweep.num_images, trainer.world_size)
        self.plan = plan_of(self.sweep, trainer)
        self.serving = decide(self.plan, self.sweep.edge, dataset, self.sweep.num_images, self.cache,
                              view=self.sweep.view, rank=int(trainer.global_rank), world_size=trainer.world_size)
        self.dataset = self.serving.dataset if self.serving.from_cache else dataset

    @property
    def done_ids(self) -> np.ndarray | None:
        done = getattr(self.earlier, "done_ids", None)
        return done if done is not None and len(done) else None

    def _loader(self) -> DataLoader:
        if self.dataset is None:
            raise RuntimeError("SweepData.setup() has not run: no data set is loaded")
        kwargs: dict[str, Any] = dict(batch_size=self.batch_size, num_workers=self.num_workers,
                                      pin_memory=torch.cuda.is_available(),
                                      persistent_workers=False, collate_fn=data_lib.collate_for(self.dataset))
        if self.num_workers > 0:
            kwargs["prefetch_factor"] = 4
        done = self.done_ids
        only = self.serving.only_ids if self.serving is not None else None
        if isinstance(self.dataset, torch.utils.data.IterableDataset):
            if done is not None:
                self.dataset.exclude = frozenset(int(i) for i in done)
            return DataLoader(self.dataset, **kwargs)
        if done is not None or only is not None:
            wanted = only if only is not None else np.arange(len(self.dataset), dtype=np.int64)
            remaining = np.setdiff1d(wanted, done) if done is not None else np.asarray(wanted, dtype=np.int64)
            sampler = data_lib.RemainingSampler(remaining, pad=None if done is None else int(done[0]))
            return DataLoader(data_lib.PaddedView(self.dataset), sampler=sampler, **kwargs)
        return DataLoader(self.dataset, sampler=data_lib.UnrepeatedSampler(len(self.dataset)), **kwargs)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Lightning's move to ``device``; a batch the workers left encoded (``data.decode=tensor`` on CUDA)
        is decoded there instead (:func:`sagebench.data.decode.decode_batch`: nvJPEG, resize, crop)."""
        decoded = data_lib.decode_batch(batch, device)
        if decoded is not batch:
            return decoded
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()


def check_processes(num_images: int | None, world_size: int) -> None:
    """Every process needs at least one image (Lightning refuses an empty loop)."""
    if num_images is not None and world_size > num_images:
        raise ConfigError(f"{num_images} image(s) to evaluate but {world_size} processes "
                          "(trainer.devices x trainer.num_nodes): every process needs at least one image. Set "
                          f"trainer.devices to at most {num_images} (e.g. trainer.devices=1), or evaluate "
                          "more images (data.limit).")
