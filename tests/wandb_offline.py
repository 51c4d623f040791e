"""Reading an offline W&B run back, for tests (no network, no wandb internals).

The ``.wandb`` file is a LevelDB-style log of protobuf records; this reader is only used by the
test suite to check what a run logged, so it lives with the tests.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK = 32768


_HEADER = 7  # checksum (4), length (2), type (1)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, chunks, out = 7, [], []
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        pos += _HEADER
        if kind == 0 and length == 0:
            break
        chunks.append(data[pos:pos + length])
        pos += length
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            out.append(record)
            chunks = []
    return out


def _apply(target: dict[str, Any], item: Any, remove: bool = False) -> None:
    keys = list(item.nested_key) or [item.key]
    node = target
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if remove:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = json.loads(item.value_json)


@dataclass
class OfflineRun:
    """What an offline W&B run folder holds: run id, name, tags, config, summary, logged steps."""

    path: Path
    run_id: str
    name: str
    project: str
    tags: list[str]
    config: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # {"name", "type", "files"}

    @property
    def files_dir(self) -> Path:
        return self.path / "files"

    def table(self, key: str) -> dict[str, Any]:
        """A logged ``wandb.Table`` as ``{"columns": [...], "data": [[...], ...]}``."""
        ref = self.summary.get(key)
        if not isinstance(ref, dict) or "path" not in ref:
            raise KeyError(f"no table {key!r} in the summary of {self.path}")
        return json.loads((self.files_dir / ref["path"]).read_text())


def offline_runs(out_dir: str | os.PathLike) -> list[Path]:
    """The offline W&B run folders under a sagebench output folder, oldest first."""
    return sorted(Path(out_dir).glob("wandb/offline-run-*"))


def read_offline_run(run_dir: str | os.PathLike, timeout: float = 20.0) -> OfflineRun:
    """Parse ``run-<id>.wandb`` of an offline run folder into config, summary and history.

    W&B's service process may still be writing the file when ``run.finish()`` has returned: the file
    is read again until it holds its run record and its closing ``exit`` record (or ``timeout``)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            run = _read_offline_run(Path(run_dir))
        except (ValueError, OSError, struct.error):  # a half-written file (header or a record cut short)
            if time.monotonic() > deadline:
                raise
            run = None
        if run is not None or time.monotonic() > deadline:
            return run if run is not None else _read_offline_run(Path(run_dir), complete=False)
        time.sleep(0.2)


def _read_offline_run(run_dir: Path, complete: bool = True) -> OfflineRun | None:
    files = sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    seen: set[str] = set()
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    artifacts: list[dict[str, Any]] = []
    run_id = name = project = ""
    tags: list[str] = []
    for record in _records(files[0]):
        kind = record.WhichOneof("record_type")
        seen.add(kind)
        if kind == "run":
            run_id, name, project = record.run.run_id, record.run.display_name, record.run.project
            tags = list(record.run.tags)
            for item in record.run.config.update:
                _apply(config, item)
        elif kind == "config":
            for item in record.config.update:
                _apply(config, item)
            for item in record.config.remove:
                _apply(config, item, remove=True)
        elif kind == "summary":
            for item in record.summary.update:
                _apply(summary, item)
            for item in record.summary.remove:
                _apply(summary, item, remove=True)
        elif kind == "history":
            step: dict[str, Any] = {}
            for item in record.history.item:
                _apply(step, item)
            history.append(step)
        elif kind == "artifact":
            artifacts.append({"name": record.artifact.name, "type": record.artifact.type,
                              "files": [c.path for c in record.artifact.manifest.contents]})
    if complete and not {"run", "exit"} <= seen:  # still being written
        return None
    config.pop("_wandb", None)
    return OfflineRun(run_dir, run_id, name, project, tags, config, summary, history, artifacts)


def sweep_run(out_dir: str | os.PathLike) -> OfflineRun:
    """The sweep's own run (the one without a ``sagebench/strategy`` config key)."""
    runs = [read_offline_run(p) for p in offline_runs(out_dir)]
    sweep = [r for r in runs if "sagebench/strategy" not in r.config]
    assert len(sweep) == 1, f"expected one sweep run under {out_dir}, found {len(sweep)}"
    return sweep[0]


def strategy_runs(out_dir: str | os.PathLike) -> dict[str, OfflineRun]:
    """The per-strategy runs, by strategy label."""
    runs = [read_offline_run(p) for p in offline_runs(out_dir)]
    return {r.config["sagebench/strategy"]: r for r in runs if "sagebench/strategy" in r.config}
