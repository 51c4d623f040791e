"""The research-loop cache (``cache.edge=true``): a rerun with a new strategy reads only the offloaded images.

Why: in the loop researchers run (add a strategy, rerun), everything but the new strategy's
server passes is the same as last time: the decode, the edge forward, the gate and the ceiling.
With the edge evidence already cached (:mod:`sagebench.edge.cache`), this cache keeps the rest:
for every image its label, edge prediction and gate decision, and for the offloaded ones the
preprocessed pixels and the ceiling prediction. When it covers every image of a run, the run
serves the kept images' records straight from it and evaluates only the offloaded images, read
from it: no decode, no edge forward, no ceiling pass.

Exact by construction:

* pixels are stored as the 8-bit crop before normalisation when that is exact (the stored bytes,
  normalised as timm's ``ToTensor`` + ``Normalize`` do, give back the very tensor the model saw:
  checked bit for bit on every write), else as the float tensor itself;
* it lives in a subfolder of the edge cache folder (whose key holds the data, preprocessing, edge
  model and weights, precision, device and torch) named by the hash of its own key: the gate and
  threshold, the server (name, kwargs, a hash of its weights), the label map and ``compile``. A
  change of any of them is another folder, never a stale answer;
* each file is written atomically and read with safetensors (no pickle).

Its size is bounded: ``cache.max_gb`` caps the whole cache root (every key's folder); a write that
would pass it is skipped with one warning (the run is unaffected, only not cached).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sagebench.edge.cache import ShardFolder, SizeBudget, key_digest

OFFLOAD_CACHE_VERSION = 1


def pixel_stats(view: dict[str, Any], channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std the model's transform normalised with, as float32 ``(C, 1, 1)`` tensors."""
    mean = torch.as_tensor(view.get("mean") or (0.0,) * channels, dtype=torch.float32).reshape(-1, 1, 1)
    std = torch.as_tensor(view.get("std") or (1.0,) * channels, dtype=torch.float32).reshape(-1, 1, 1)
    return mean, std


def normalise(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """8-bit pixels ``(..., C, H, W)`` as timm's eval transform makes them: ``(x / 255 - mean) / std`` in float32."""
    return pixels.to(torch.float32).div(255).sub(mean).div(std)


def to_uint8(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor | None:
    """The 8-bit crop behind normalised ``images``, or None when it does not give them back bit for bit."""
    if images.dtype != torch.float32:
        return None
    u8 = images.mul(std).add(mean).mul(255).round().clamp(0, 255).to(torch.uint8)
    return u8 if torch.equal(normalise(u8, mean, std), images) else None


def offload_key(edge_key_digest: str, *, gate: dict[str, Any], server_name: str,
                server_kwargs: dict[str, Any], server_weights_sha256: str, label_map: Any, compiled: bool
                ) -> dict[str, Any]:
    """What decides the gate's decision, the pixels kept and the ceiling, beyond the edge cache's key.

    ``gate``: :meth:`sagebench.gates.Gate.identity` (``{"gate": name, "threshold": ..., <options>}``).
    """
    return {"version": OFFLOAD_CACHE_VERSION, "edge_cache": edge_key_digest, **gate, "server": {"name": server_name, "kwargs": server_kwargs,
                                               "weights_sha256": server_weights_sha256},
            "label_map": label_map, "compile": bool(compiled)}


class OffloadCache(ShardFolder):
    """One key's folder: ``index-*`` shards (every image's label, edge prediction, gate decision) and
    ``served-*`` shards (the offloaded images' pixels and ceiling prediction)."""

    what = "offload cache"

    def __init__(self, edge_folder: Path, key: dict[str, Any], view: dict[str, Any], channels: int,
                 budget: SizeBudget, rank: int = 0) -> None:
        self._open(Path(edge_folder) / f"offload-{key_digest(key)}", key, budget)
        self.mean, self.std = pixel_stats(view, channels)
        self.rank = rank
        self._base: dict[int, tuple[int, float, bool]] = {}  # id -> (label, edge_pred, offloaded)
        self._served: dict[int, tuple[str, int]] = {}  # id -> (shard, row)
        for path in sorted(self.folder.glob("index-*.safetensors")):
            t = self._read(path)
            for sid, label, pred, off in zip(t["sample_id"].tolist(), t["label"].tolist(), t["edge_pred"].tolist(),
                                             t["offloaded"].tolist()):
                self._base.setdefault(int(sid), (int(label), float(pred), bool(off)))
        for path in sorted(self.folder.glob("served-*.safetensors")):
            for row, sid in enumerate(self._read(path, ["sample_id"])["sample_id"].tolist()):
                self._served.setdefault(int(sid), (path.name, row))
        self.serving = False  # this run reads its offloaded images from here
        self.images_served = 0  # offloaded images whose pixels and ceiling came from here

    # -- reading

    def covers(self, num_images: int) -> bool:
        """Every image ``0 .. num_images-1`` is indexed and every offloaded one has its pixels and ceiling."""
        return all(i in self._base and (not self._base[i][2] or i in self._served) for i in range(num_images))

    def offloaded_ids(self, num_images: int) -> np.ndarray:
        return np.asarray([i for i in range(num_images) if self._base[i][2]], dtype=np.int64)

    def kept_rows(self, num_images: int, layout: Any, exclude: np.ndarray | None = None) -> np.ndarray:
        """The complete records of the images the gate kept at the edge (as the module writes them)."""
        from sagebench.sweep.records import edge_rows

        skip = set() if exclude is None else {int(i) for i in exclude}
        ids = [i for i in range(num_images) if not self._base[i][2] and i not in skip]
        labels, preds = zip(*[self._base[i][:2] for i in ids]) if ids else ((), ())
        return edge_rows(layout, torch.tensor(ids, dtype=torch.int64), torch.tensor(labels, dtype=torch.int64),
                         torch.tensor(preds, dtype=torch.float64), torch.zeros(len(ids), dtype=torch.bool)).numpy()

    def item(self, sample_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(pixels, label, sample_id)`` of an offloaded image, as the data set yielded them."""
        name, row = self._served[int(sample_id)]
        shard = self._shard(name)
        pixels = shard["pixels_u8"][row] if "pixels_u8" in shard else shard["pixels"][row]
        if pixels.dtype == torch.uint8:
            pixels = normalise(pixels, self.mean, self.std)
        return pixels, torch.tensor(self._base[int(sample_id)][0], dtype=torch.int64), \
            torch.tensor(int(sample_id), dtype=torch.int64)

    def ceiling(self, sample_ids: torch.Tensor) -> torch.Tensor | None:
        """The stored ceiling predictions of ``sample_ids`` (float64), or None unless all are stored."""
        ids = sample_ids.tolist()
        if not all(int(i) in self._served for i in ids):
            return None
        out = torch.empty(len(ids), dtype=torch.float64)
        for k, i in enumerate(ids):
            name, row = self._served[int(i)]
            out[k] = self._shard(name)["ceiling_pred"][row]
        self.images_served += len(ids)
        return out

    # -- writing

    def record_gate(self, sample_ids: torch.Tensor, labels: torch.Tensor, edge_pred: torch.Tensor,
                    offloaded: torch.Tensor) -> None:
        """Every image of a batch: label, edge prediction, gate decision (images already indexed are skipped)."""
        ids = sample_ids.detach().cpu().to(torch.int64)
        new = torch.tensor([int(i) not in self._base for i in ids.tolist()], dtype=torch.bool)
        if not bool(new.any()):
            return
        t = {"sample_id": ids[new].contiguous(), "label": labels.detach().cpu().to(torch.int64)[new].contiguous(),
             "edge_pred": edge_pred.detach().cpu().to(torch.float64)[new].contiguous(),
             "offloaded": offloaded.detach().cpu().to(torch.bool)[new].contiguous()}
        if self._write_shard("index", t, self.rank) is None:
            return
        for sid, label, pred, off in zip(t["sample_id"].tolist(), t["label"].tolist(), t["edge_pred"].tolist(),
                                         t["offloaded"].tolist()):
            self._base[int(sid)] = (int(label), float(pred), bool(off))

    def record_served(self, sample_ids: torch.Tensor, images: torch.Tensor, ceiling_pred: torch.Tensor) -> None:
        """The offloaded images of a server batch: their pixels (8-bit when exact) and ceiling predictions."""
        ids = sample_ids.detach().cpu().to(torch.int64)
        new = torch.tensor([int(i) not in self._served for i in ids.tolist()], dtype=torch.bool)
        if not bool(new.any()):
            return
        pixels = images.detach().cpu()[new].contiguous()
        u8 = to_uint8(pixels, self.mean, self.std)
        t = {"sample_id": ids[new].contiguous(), "ceiling_pred": ceiling_pred.detach().cpu().to(torch.float64)[new]
             .contiguous(), **({"pixels_u8": u8.contiguous()} if u8 is not None else {"pixels": pixels})}
        name = self._write_shard("served", t, self.rank)
        if name is None:
            return
        for row, sid in enumerate(t["sample_id"].tolist()):
            self._served[int(sid)] = (name, row)

    def report(self) -> dict[str, Any]:
        return {"dir": str(self.folder), "images_indexed": len(self._base), "offloaded_stored": len(self._served),
                "served_from_cache": bool(self.serving), "offloaded_images_read": int(self.images_served),
                **self.budget.report()}


class CachedOffloaded(torch.utils.data.Dataset):
    """The run's data set as the offload cache holds it: index = sample id; only offloaded ids are readable.

    The data module's sampler visits only the offloaded ids; the kept images' records come from
    :meth:`OffloadCache.kept_rows` instead.
    """

    def __init__(self, cache: OffloadCache, num_images: int, like: Any) -> None:
        self.cache = cache
        self.num_images = num_images
        self.channels = getattr(like, "channels", 3)
        self.label_map = getattr(like, "label_map", None)
        first = cache.item(int(cache.offloaded_ids(num_images)[0]))[0]
        self._blank = torch.zeros_like(first)  # what a padding index yields (sagebench.data.images.skipped_item)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.cache.item(int(index))
