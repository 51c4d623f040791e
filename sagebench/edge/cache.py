"""On-disk cache of edge evidence (``cache.edge=true``): a rerun with a new strategy skips the edge.

Why: the edge forward is the one part of a sweep that does not depend on the strategies or the
budgets, so once the evidence of every image is on disk, adding a strategy to a finished study
costs only its server passes.

What is stored: every tensor field of :class:`~sagebench.edge.evidence.EdgeEvidence` (logits,
attention, embeddings, each rollout when computed), exactly as the edge produced it (dtype included),
per sample id, in safetensors shards (one per evaluated batch, written atomically; never pickle).
Where: ``cache.dir`` (default ``~/.cache/sagebench/edge``), in a folder named by the hash of
everything that decides the evidence (:meth:`sagebench.sweep.plan.RunPlan.edge_cache_key`): the data (content hash, split,
revision), the preprocessing, the edge model (name, kwargs, a hash of its weight tensors,
attention kind, which rollouts it computes), the trainer precision, the device type and the torch version. Anything
else (strategies, budgets, gate, server, seed, ``data.limit``) can change and the cache still
applies. A batch is read from the cache when every one of its images is there; otherwise the edge
runs on it and its shard is written. Results are the same with and without the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.errors import SageBenchError
from sagebench.runtime.files import atomic_write_bytes, atomic_write_text
from sagebench.runtime.log import warn

KEY_FILE = "key.json"
_NOT_STORED = ("grid", "sample_ids", "seed")  # given by the run, not by the edge


def folder_bytes(root: Path) -> int:
    """Bytes of the files under ``root`` (0 when it does not exist)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name), follow_symlinks=False).st_size
            except OSError:
                pass
    return total


class SizeBudget:
    """What may still be written under the cache root (``cache.max_gb``), shared by the edge and offload caches."""

    def __init__(self, root: Path, max_bytes: int | None) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.used = folder_bytes(root)
        self.written = 0
        self.refused = 0  # writes skipped because they would pass the bound
        self._warned = False

    def allow(self, nbytes: int) -> bool:
        if self.max_bytes is None or self.used + nbytes <= self.max_bytes:
            self.used += nbytes
            self.written += nbytes
            return True
        self.refused += 1
        if not self._warned:
            self._warned = True
            warn(f"the cache in {self.root} holds {self.used / 1e9:.2f} GB, at its bound cache.max_gb="
                 f"{self.max_bytes / 1e9:g}: this run's evidence is not cached further (results are unaffected). "
                 "Raise cache.max_gb or delete old folders there.")
        return False

    def report(self) -> dict[str, Any]:
        return {"bytes": int(self.used), "bytes_written": int(self.written), "max_bytes": self.max_bytes,
                "writes_refused": int(self.refused)}


def default_root() -> Path:
    return Path(os.environ.get("SAGEBENCH_CACHE", Path.home() / ".cache" / "sagebench")) / "edge"


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 of the model's state dict (names, dtypes, shapes, bytes): random-init weights differ by seed."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _tensor_fields(evidence: EdgeEvidence) -> dict[str, torch.Tensor]:
    out = {}
    for f in dataclasses.fields(evidence):
        value = getattr(evidence, f.name)
        if f.name not in _NOT_STORED and isinstance(value, torch.Tensor):
            out[f.name] = value
    return out


class ShardFolder:
    """A cache folder of safetensors shards under its ``key.json``: opened (key checked), read, written.

    Shared by the edge evidence (:class:`EdgeCache`) and the research-loop cache beside it
    (:class:`sagebench.sweep.offload_cache.OffloadCache`): each shard is written atomically (never
    pickle), counted against the cache root's :class:`SizeBudget`, and read back with safetensors.
    """

    what = "cache"  # how messages name the folder
    mismatch = "holds another key.json than its name says; delete the folder."

    def _open(self, folder: str | os.PathLike, key: dict[str, Any], budget: SizeBudget | None) -> None:
        self.folder = Path(folder).expanduser()
        self.key = key
        self.budget = budget  # cache.max_gb over the whole cache root
        self._loaded: tuple[str, dict[str, torch.Tensor]] | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            key_path = self.folder / KEY_FILE
            if key_path.is_file():
                if json.loads(json.dumps(key, sort_keys=True, default=str)) != json.loads(key_path.read_text()):
                    raise SageBenchError(f"The {self.what} {self.folder} {self.mismatch}")
            else:
                atomic_write_text(key_path, json.dumps(key, sort_keys=True, indent=1, default=str) + "\n")
        except OSError as exc:
            raise SageBenchError(f"Cannot use the {self.what} folder {self.folder}: {exc}. "
                                 "Set cache.dir to a writable folder, or cache.edge=false.") from exc

    def _read(self, path: Path, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                return {n: fh.get_tensor(n) for n in (names or list(fh.keys()))}
        except Exception as exc:
            raise SageBenchError(f"The {self.what} shard {path} cannot be read ({type(exc).__name__}: {exc}); "
                                 f"delete the folder {self.folder} (or set cache.dir elsewhere) and rerun.") from exc

    def _shard(self, name: str) -> dict[str, torch.Tensor]:
        if self._loaded is None or self._loaded[0] != name:
            self._loaded = (name, self._read(self.folder / name))
        return self._loaded[1]

    def _write_shard(self, prefix: str, tensors: dict[str, torch.Tensor], rank: int) -> str | None:
        """Write one shard; its file name, or None when the size bound refused it."""
        from safetensors.torch import save

        blob = save(tensors)
        if self.budget is not None and not self.budget.allow(len(blob)):
            return None
        name = f"{prefix}-r{rank}-{uuid.uuid4().hex[:12]}.safetensors"
        try:
            atomic_write_bytes(self.folder / name, blob)
        except OSError as exc:
            raise SageBenchError(f"Cannot write the {self.what} shard {self.folder / name}: {exc}. Free disk space, "
                                 "set cache.dir elsewhere, or cache.edge=false.") from exc
        return name


class EdgeCache(ShardFolder):
    """The shards of one cache folder: which sample ids are there, read a batch, write a batch."""

    what = "edge cache"
    mismatch = ("was made for other data or another edge model (its key.json differs). Point cache.dir elsewhere "
                "or delete it.")

    def __init__(self, folder: str | os.PathLike, key: dict[str, Any], budget: SizeBudget | None = None) -> None:
        self._open(folder, key, budget)
        self._shard_of: dict[int, tuple[str, int]] = {}
        for path in sorted(self.folder.glob("shard-*.safetensors")):
            ids = self._read(path, ["sample_ids"])["sample_ids"]
            for row, sid in enumerate(ids.tolist()):
                self._shard_of.setdefault(int(sid), (path.name, row))
        self.hits = 0     # images whose evidence came from the cache
        self.misses = 0   # images whose evidence the edge computed (and that were stored)

    def __len__(self) -> int:
        return len(self._shard_of)

    def covers(self, sample_ids: torch.Tensor) -> bool:
        return all(int(i) in self._shard_of for i in sample_ids.tolist())

    def load(self, sample_ids: torch.Tensor, grid: tuple[int, int], seed: int, device: torch.device) -> EdgeEvidence:
        """The stored evidence of ``sample_ids`` (all present: check :meth:`covers`), on ``device``."""
        ids = sample_ids.tolist()
        where = [self._shard_of[int(i)] for i in ids]
        order = np.argsort([w[0] for w in where], kind="stable")  # read each shard once
        parts: dict[str, list[torch.Tensor]] = {}
        positions: list[int] = []
        k = 0
        while k < len(order):
            name = where[order[k]][0]
            group = []
            while k < len(order) and where[order[k]][0] == name:
                group.append(int(order[k]))
                k += 1
            shard = self._shard(name)
            rows = torch.tensor([where[g][1] for g in group], dtype=torch.int64)
            for field, tensor in shard.items():
                if field != "sample_ids":
                    parts.setdefault(field, []).append(tensor.index_select(0, rows))
            positions += group
        back = torch.empty(len(ids), dtype=torch.int64)
        back[torch.tensor(positions, dtype=torch.int64)] = torch.arange(len(ids))
        fields = {f: torch.cat(p).index_select(0, back).to(device, non_blocking=True) for f, p in parts.items()}
        self.hits += len(ids)
        return EdgeEvidence(**fields, grid=grid, sample_ids=sample_ids, seed=seed)

    def store(self, evidence: EdgeEvidence, rank: int = 0) -> None:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in _tensor_fields(evidence).items()}
        tensors["sample_ids"] = evidence.sample_ids.detach().to("cpu", torch.int64).contiguous()
        self.misses += len(tensors["sample_ids"])
        name = self._write_shard("shard", tensors, rank)
        if name is None:
            return
        for row, sid in enumerate(tensors["sample_ids"].tolist()):
            self._shard_of.setdefault(int(sid), (name, row))


class EdgeSource:
    """What the evaluation module calls for a batch's evidence: ``(evidence, images through the edge)``.

    Without a cache it runs the edge; with one it reads the batch from the cache when every
    image is there, else runs the edge and stores the batch.
    """

    def __init__(self, edge: torch.nn.Module, cache: EdgeCache | None = None, rank: int = 0, *,
                 offload: Any = None) -> None:
        self.edge = edge
        self.cache = cache
        self.rank = rank
        self.offload = offload  # the research-loop cache beside it (sagebench.sweep.offload_cache), reported with it

    def __call__(self, images: torch.Tensor, sample_ids: torch.Tensor, seed: int) -> tuple[EdgeEvidence, int]:
        if self.cache is not None and self.cache.covers(sample_ids):
            return self.cache.load(sample_ids, tuple(self.edge.grid), seed, images.device), 0
        evidence = self.edge(images, sample_ids, seed)
        if self.cache is not None:
            self.cache.store(evidence, self.rank)
        return evidence, int(images.shape[0])

    def report(self) -> dict[str, Any]:
        if self.cache is None:
            return {"used": False}
        out = {"used": True, "dir": str(self.cache.folder), "hits": self.cache.hits, "misses": self.cache.misses}
        if self.cache.budget is not None:
            out.update(self.cache.budget.report())
        if self.offload is not None:
            out["offload"] = self.offload.report()
        return out
