"""What makes two runs' data the same: the fields hashed into the benchmark fingerprint."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sagebench.data.sources import _has_glob, _resolve_local
from sagebench.data.spec import DataSpec


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _listing(root: Path | None, files: Sequence[Path]) -> tuple[int, str]:
    """Total size and the sha256 of the sorted ``name size`` lines of ``files``."""
    entries = sorted(
        ((f.relative_to(root).as_posix() if root is not None else f.name), f.stat().st_size) for f in files
    )
    digest = hashlib.sha256("".join(f"{name}\t{size}\n" for name, size in entries).encode())
    return sum(size for _, size in entries), digest.hexdigest()


def dataset_fingerprint_fields(spec: DataSpec, num_images: int) -> dict[str, Any]:
    """What makes two runs' data comparable, as JSON-able fields.

    ``name`` (the hub name, or the local path's basename), ``split``, ``revision``,
    ``num_images``, and for local data ``size_bytes`` and ``content_hash``: the sha256 of the
    bytes of a single parquet file (``"sha256:..."``), or, for a directory or glob, the sha256
    of its sorted file names and sizes (``"listing-sha256:..."``; hidden files skipped).
    """
    fields: dict[str, Any] = {
        "name": spec.name,
        "split": spec.split,
        "revision": spec.revision,
        "num_images": int(num_images),
        "size_bytes": None,
        "content_hash": None,
    }
    # a subset or other data files are other data (set only when used, so older fingerprints stay valid)
    if spec.config_name:
        fields["config_name"] = spec.config_name
    if spec.data_files:
        from sagebench.data.sources import OmegaConfFree

        fields["data_files"] = OmegaConfFree.plain(spec.data_files)
    if not spec.path:
        return fields
    kind, target, files = _resolve_local(spec.path)
    fields["name"] = target.name
    if kind == "parquet" and len(files) == 1 and not _has_glob(spec.path):
        fields["size_bytes"] = files[0].stat().st_size
        fields["content_hash"] = "sha256:" + _sha256_file(files[0])
        return fields
    if kind == "parquet":
        size, digest = _listing(None, files)
    else:
        found = [
            p for p in target.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(target).parts)
        ]
        size, digest = _listing(target, found)
    fields["size_bytes"] = size
    fields["content_hash"] = "listing-sha256:" + digest
    return fields
