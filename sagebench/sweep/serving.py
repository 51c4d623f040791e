"""How a sweep is served, decided once: live (decode, edge, ceiling) or, for a rerun the research-loop
cache covers, only the offloaded images from that cache.

Why one decision: the data module (which ids to read, from where), the evaluation module (where the
evidence and the ceiling come from, which records are known before any image is read) and the
records writer all depend on it. :func:`decide` makes it once, in the data module's ``setup`` (the
data is loaded there, as Lightning intends); the module reads the resulting :class:`Serving` in its
own ``setup``, which Lightning runs afterwards. Nobody sets it on another object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sagebench.edge.cache import EdgeCache, EdgeSource, SizeBudget, default_root
from sagebench.sweep.offload_cache import CachedOffloaded, OffloadCache
from sagebench.sweep.plan import RunPlan, digest


@dataclass(frozen=True)
class CacheSettings:
    """The ``cache`` config section: ``edge`` (on/off), ``dir`` and ``max_gb``."""

    enabled: bool = False
    dir: str | None = None
    max_gb: float | None = None

    @classmethod
    def from_config(cls, node: Any) -> CacheSettings:
        node = node or {}
        max_gb = node.get("max_gb")
        return cls(bool(node.get("edge", False)), node.get("dir") or None, None if max_gb is None else float(max_gb))

    def root(self) -> Path:
        return Path(self.dir).expanduser() if self.dir else default_root()


@dataclass(frozen=True)
class Serving:
    """What a run reads, and from where.

    ``edge``: runs the edge or reads its evidence from the cache; ``offload``: the research-loop cache
    (None without ``cache.edge``); ``only_ids``: when not None, the run reads only these (offloaded)
    images, from ``dataset``, and the kept images' records come from the cache.
    """

    edge: EdgeSource
    offload: OffloadCache | None = None
    only_ids: np.ndarray | None = None
    dataset: Any = None
    num_images: int | None = None

    @property
    def from_cache(self) -> bool:
        return self.only_ids is not None

    def known_rows(self, layout: Any, exclude: np.ndarray | None) -> np.ndarray:
        """Records known before any image is read: the kept images' of a cached rerun (else none)."""
        if not self.from_cache or self.offload is None:
            return np.zeros((0, layout.num_columns))
        return self.offload.kept_rows(self.num_images, layout, exclude=exclude)


def decide(plan: RunPlan, edge: torch.nn.Module, dataset: Any, num_images: int | None, settings: CacheSettings, *,
           view: dict[str, Any], rank: int, world_size: int) -> Serving:
    """Live, or from the research-loop cache when it covers every image of this plan.

    A stream (``num_images`` None) or a cached rerun with fewer offloaded images than processes is
    served live (every process needs an image).
    """
    if not settings.enabled:
        return Serving(EdgeSource(edge))
    root = settings.root()
    budget = SizeBudget(root, None if settings.max_gb is None else int(settings.max_gb * 1e9))
    edge_key = plan.edge_cache_key()
    edge_cache = EdgeCache(root / digest(edge_key), edge_key, budget)
    if num_images is None:
        return Serving(EdgeSource(edge, edge_cache, rank=rank))
    offload = OffloadCache(edge_cache.folder, plan.offload_cache_key(), view, int(view["input_size"][0]), budget,
                           rank=rank)
    source = EdgeSource(edge, edge_cache, rank=rank, offload=offload)
    # an operating curve records every image's gate score, which the research-loop cache does not keep: it is
    # filled as usual (the primary threshold decides, as in a run at that threshold) but never serves this run
    if not offload.covers(num_images) or plan.gate_thresholds:
        return Serving(source, offload)
    offloaded = offload.offloaded_ids(num_images)
    if len(offloaded) < world_size:  # a process without an image: evaluate the normal way
        return Serving(source, offload)
    offload.serving = True
    return Serving(source, offload, only_ids=offloaded, dataset=CachedOffloaded(offload, num_images, dataset),
                   num_images=num_images)
