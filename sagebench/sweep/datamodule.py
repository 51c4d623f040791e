"""The data module of a sweep: each image served to exactly one process, once, in index order."""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from sagebench import data as data_lib

Dataset = torch.utils.data.Dataset


class SweepData(L.LightningDataModule):
    """Serves the evaluation images; the sampler is built in the hook, once the process group exists.

    Each process gets a disjoint, unpadded share (Lightning's own distributed sampler pads with
    duplicates in test/validate loops, which would count some images twice). ``done_ids`` is
    asked for when the loader is built: the ids an earlier attempt finished (read by the
    partial-results callback in its ``setup``, which Lightning runs after the data module's).

    ``dataset`` may be a function that loads it: it is then called in :meth:`setup` (every
    process), after ``prepare`` ran in :meth:`prepare_data` (one process per node: downloads and
    cache preparation), as Lightning intends the two hooks.
    """

    def __init__(self, dataset: Dataset | Callable[[], Dataset], batch_size: int, num_workers: int,
                 done_ids: Callable[[], np.ndarray | None] | None = None, *,
                 prepare: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._load = dataset if callable(dataset) and not isinstance(dataset, Dataset) else None
        self.dataset: Dataset | None = None if self._load is not None else dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._done_ids = done_ids or (lambda: None)
        self._prepare = prepare
        # the ids to evaluate when not all (a cached rerun reads only the offloaded images); None: every image
        self.only_ids: np.ndarray | None = None

    def prepare_data(self) -> None:
        if self._prepare is not None:
            self._prepare()

    def setup(self, stage: str) -> None:
        if self.dataset is None and self._load is not None:
            self.dataset = self._load()

    def _loader(self) -> DataLoader:
        if self.dataset is None:
            raise RuntimeError("SweepData.setup() has not run: no data set is loaded")
        kwargs: dict[str, Any] = dict(batch_size=self.batch_size, num_workers=self.num_workers,
                                      pin_memory=torch.cuda.is_available(),
                                      persistent_workers=False)
        if self.num_workers > 0:
            kwargs["prefetch_factor"] = 4
        done = self._done_ids()
        done = done if done is not None and len(done) else None
        if isinstance(self.dataset, torch.utils.data.IterableDataset):
            if done is not None:
                self.dataset.exclude = frozenset(int(i) for i in done)
            return DataLoader(self.dataset, **kwargs)
        if done is not None or self.only_ids is not None:
            wanted = self.only_ids if self.only_ids is not None else np.arange(len(self.dataset), dtype=np.int64)
            remaining = np.setdiff1d(wanted, done) if done is not None else np.asarray(wanted, dtype=np.int64)
            sampler = data_lib.RemainingSampler(remaining, pad=None if done is None else int(done[0]))
            return DataLoader(data_lib.PaddedView(self.dataset), sampler=sampler, **kwargs)
        return DataLoader(self.dataset, sampler=data_lib.UnrepeatedSampler(len(self.dataset)), **kwargs)

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()
