"""Samplers that serve each image to exactly one process, exactly once (no padding duplicates)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized

import numpy as np
import torch
import torch.utils.data


def rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: the arguments, else torch.distributed's when initialised, else (0, 1)."""
    dist = torch.distributed
    initialised = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return int(rank), int(world_size)


class UnrepeatedSampler(torch.utils.data.Sampler[int]):
    """Indices ``rank, rank + world, rank + 2*world, ...`` below ``len(data_source)``.

    Unlike ``DistributedSampler`` it neither pads nor shuffles, so every index is evaluated
    exactly once over all ranks; ranks may get one index fewer than others. ``rank`` and
    ``num_replicas`` default to torch.distributed's when initialised, else to 0 and 1. (With
    Lightning, pass ``use_distributed_sampler=False`` so it is not wrapped again.)
    """

    def __init__(self, data_source: Sized | int, num_replicas: int | None = None, rank: int | None = None) -> None:
        self.total = data_source if isinstance(data_source, int) else len(data_source)
        self.rank, self.num_replicas = rank_world(rank, num_replicas)
        self.num_samples = len(range(self.rank, self.total, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class RemainingSampler(torch.utils.data.Sampler[int]):
    """``indices[rank::world]``: the given indices split among processes, none repeated.

    Lightning refuses a process with nothing to do, so when fewer indices than processes are
    left, a process without one gets ``PadIndex(pad)`` (an index already done): with
    :class:`sagebench.data.images.PaddedView` it is served as a placeholder that no model sees, and its record is
    dropped after the sweep (see :func:`drop_redone`).
    """

    def __init__(self, indices: Sequence[int] | np.ndarray, num_replicas: int | None = None,
                 rank: int | None = None, pad: int | None = None) -> None:
        
        self.rank, self.num_replicas = rank_world(rank, num_replicas)
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
