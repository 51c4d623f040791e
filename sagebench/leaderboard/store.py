"""Boards on disk: where they are, what they hold, and how a run becomes an entry (``submit``).

Layout (``leaderboards/`` at the repository root, or ``--root`` / ``$SAGEBENCH_LEADERBOARDS``)::

    leaderboards/<board>/board.json                  name, fingerprint and benchmark fields of the board
    leaderboards/<board>/entries/<entry>.json        a run's results.json (validated on the way in)
    leaderboards/<board>/entries/<entry>.samples.parquet   its per-sample file (optional)
    leaderboards/<board>/README.md, curves.png       written by ``render``

A board holds entries with one benchmark fingerprint (data, split, revision, number of images,
edge/server models and weights, preprocessing, gate and threshold): only those are comparable.

Safety: entries are JSON only (parsed without object hooks; NaN/Infinity refused), per-sample
files are parquet with numeric columns only, and every name that becomes a path is sanitised
to ``[a-z0-9._-]`` and checked to stay inside its folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from sagebench.errors import LeaderboardError
from sagebench.leaderboard.validate import (
    benchmark_fields,
    load_json,
    read_samples,
    validate_entry,
    validate_samples,
)
from sagebench.results.files import atomic_write_bytes

ENTRIES_DIR = "entries"


BOARD_FILE = "board.json"


SAMPLES_SUFFIX = ".samples.parquet"


_NAME_OK = re.compile(r"^[a-z0-9][a-z0-9._-]{0,119}$")


def default_root() -> Path:
    return Path(os.environ.get("SAGEBENCH_LEADERBOARDS") or "leaderboards")


def safe_name(text: str, what: str = "name") -> str:
    """``text`` as a file-system-safe name: lower case ``[a-z0-9._-]``, no leading dot, <= 120 chars."""
    name = re.sub(r"[^a-z0-9._-]+", "-", str(text).strip().lower())
    name = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", "-", name)).strip("-.")[:120].rstrip("-.")
    if not name or not _NAME_OK.match(name):
        raise LeaderboardError(f"{what} {text!r} has no usable characters (allowed: a-z, 0-9, '.', '_', '-').")
    return name


def _inside(parent: Path, name: str) -> Path:
    path = (parent / name).resolve()
    if path.parent != parent.resolve():
        raise LeaderboardError(f"refusing the path {name!r}: it leaves {parent}")
    return path


@dataclass
class Entry:
    name: str
    data: dict[str, Any]
    path: Path
    samples_path: Path | None

    @property
    def reported(self) -> bool:
        return bool(self.data.get("reported"))


@dataclass
class Board:
    root: Path
    name: str

    @property
    def path(self) -> Path:
        return _inside(self.root, self.name)

    @property
    def entries_dir(self) -> Path:
        return self.path / ENTRIES_DIR

    def exists(self) -> bool:
        return (self.path / BOARD_FILE).is_file()

    def meta(self) -> dict[str, Any]:
        return load_json(self.path / BOARD_FILE)

    def entries(self) -> list[Entry]:
        out = []
        for path in sorted(self.entries_dir.glob("*.json")):
            if not _NAME_OK.match(path.stem):
                continue
            samples = path.with_name(path.stem + SAMPLES_SUFFIX)
            out.append(Entry(path.stem, load_json(path), path, samples if samples.is_file() else None))
        return out


def list_boards(root: Path | None = None) -> list[str]:
    root = Path(root or default_root())
    return sorted(q.parent.name for q in root.glob(f"*/{BOARD_FILE}") if _NAME_OK.match(q.parent.name))


def get_board(name: str | None, root: Path | None = None) -> Board:
    """The board ``name`` (sanitised), or the only board when ``name`` is None."""
    root = Path(root or default_root())
    if name is None:
        boards = list_boards(root)
        if not boards:
            raise LeaderboardError(f"No boards under {root} yet: add a run with `sagebench leaderboard submit RUN_DIR` "
                                   "(or point --root at the leaderboards folder).")
        if len(boards) != 1:
            raise LeaderboardError(f"{len(boards)} boards under {root} ({', '.join(boards) or 'none'}): name one.")
        name = boards[0]
    board = Board(root, safe_name(name, "board name"))
    if not board.exists():
        known = list_boards(root)
        raise LeaderboardError(f"No board {board.name!r} under {root}. Boards: {', '.join(known) or 'none'}.")
    return board


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in entry.items() if k != "submission"}, sort_keys=True,
                      separators=(",", ":")).encode()


def _result_signature(entry: dict[str, Any]) -> tuple:
    """What makes two entries the same measurement: strategies (with options) and every number."""
    strategies = tuple(sorted(json.dumps(s, sort_keys=True) for s in entry.get("strategies") or []))
    rows = tuple(sorted((r["strategy"], r["budget"], r.get("num_correct"), r.get("offloaded_accuracy"))
                        for r in entry["results"]))
    return (bool(entry.get("reported")), entry.get("source"), strategies, rows)


def load_run(run: str | os.PathLike) -> tuple[dict[str, Any], Path | None, str]:
    """``(results, samples_path, where)`` from a run folder, a results.json or an entry file."""
    path = Path(run)
    if path.is_dir():
        results_path = path / "results.json"
        samples = path / "samples.parquet"
    else:
        results_path = path
        samples = (path.with_name("samples.parquet") if path.name == "results.json"
                   else path.with_name(path.name[:-len(".json")] + SAMPLES_SUFFIX if path.name.endswith(".json")
                                       else path.name + SAMPLES_SUFFIX))
    if not results_path.is_file():
        raise LeaderboardError(f"{run} is neither a run folder with results.json nor a results JSON file.")
    return load_json(results_path), (samples if samples.is_file() else None), str(results_path)


def _entry_name(entry: dict[str, Any], digest: str, name: str | None) -> str:
    if name:
        return safe_name(name, "entry name")
    if entry.get("reported"):
        stamp = "reported"
    else:
        stamp = re.sub(r"[^0-9]", "", str(entry["provenance"].get("utc_time", "")))[:14] or "undated"
    strategies = "-".join(dict.fromkeys(r["strategy"] for r in entry["results"]))
    return safe_name(f"{stamp}_{strategies[:60]}_{digest[:8]}", "entry name")


def _diff_fields(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if json.dumps(a.get(k), sort_keys=True) != json.dumps(b.get(k), sort_keys=True))


def submit(run: str | os.PathLike | dict[str, Any], board: str | None = None, root: Path | None = None,
           name: str | None = None, samples: Path | None = None, extra: dict[str, Any] | None = None) -> Entry:
    """Like :func:`_submit_unlocked`, holding an inter-process lock on the leaderboard root.

    Why: the duplicate/fingerprint checks read the board before writing to it; two concurrent
    submitters must not both pass the checks and then overwrite or duplicate each other.
    """
    import hashlib
    import tempfile

    from sagebench.runtime.files import FileLock

    root = Path(root or default_root())
    # The lock lives outside the board so that a refused entry leaves no file behind.
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"sagebench-leaderboard-{key}.lock"
    with FileLock(lock, what=f"leaderboard {root}"):
        return _submit_unlocked(run, board=board, root=root, name=name, samples=samples, extra=extra)


def _submit_unlocked(run: str | os.PathLike | dict[str, Any], board: str | None = None, root: Path | None = None,
                     name: str | None = None, samples: Path | None = None,
                     extra: dict[str, Any] | None = None) -> Entry:
    """Validate a run's results and copy them (and their per-sample file) into a board.

    ``run`` is a run folder, a results JSON file, or an already loaded results dict. The board
    defaults to the sanitised ``benchmark.name`` and is created by its first entry. Refused:
    schema errors, a fingerprint that differs from the board's, a duplicate of an existing
    entry, a per-sample file that does not match the results, a reported entry with one.
    """
    root = Path(root or default_root())
    if isinstance(run, dict):
        entry, where = json.loads(json.dumps(run)), "entry"
    else:
        entry, found, where = load_run(run)
        samples = samples or found
    for key in ("output_dir", "report"):
        entry.pop(key, None)
    if extra:
        entry.update(extra)
    validate_entry(entry, where)
    if entry.get("reported") and samples is not None:
        raise LeaderboardError(f"{where} is a reported (not reproduced) entry: it cannot come with a per-sample file.")
    sample_cols = read_samples(samples) if samples is not None else None
    if sample_cols is not None:
        validate_samples(entry, sample_cols, str(samples))
    bench = entry["benchmark"]
    target = Board(root, safe_name(board or bench["name"], "board name"))
    if target.exists():
        meta = target.meta()
        if meta.get("fingerprint") != bench["fingerprint"]:
            diff = _diff_fields(meta.get("benchmark", {}), benchmark_fields(bench))
            raise LeaderboardError(
                f"{where} has benchmark fingerprint {bench['fingerprint']}, board {target.name!r} has "
                f"{meta.get('fingerprint')}: not comparable (differs in: {', '.join(diff) or 'unknown fields'}). "
                "Submit it to its own board (--board NAME).")
    digest = hashlib.sha256(_canonical(entry)).hexdigest()
    signature = _result_signature(entry)
    existing = target.entries() if target.exists() else []
    for other in existing:
        if hashlib.sha256(_canonical(other.data)).hexdigest() == digest or _result_signature(other.data) == signature:
            raise LeaderboardError(f"{where} duplicates entry {other.name!r} of board {target.name!r} "
                                   "(same strategies and the same results).")
    entry_name = _entry_name(entry, digest, name)
    if any(e.name == entry_name for e in existing):
        raise LeaderboardError(f"Board {target.name!r} already has an entry named {entry_name!r}; choose another --name.")
    entry["submission"] = {"utc_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "sha256": digest, **(entry.get("submission") or {})}
    target.entries_dir.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        atomic_write_bytes(target.path / BOARD_FILE, (json.dumps(
            {"name": target.name, "fingerprint": bench["fingerprint"], "benchmark": benchmark_fields(bench),
             "created_utc": entry["submission"]["utc_time"]}, indent=2) + "\n").encode())
    out_samples = None
    if samples is not None:
        out_samples = _inside(target.entries_dir, entry_name + SAMPLES_SUFFIX)
        entry["submission"]["samples_sha256"] = hashlib.sha256(Path(samples).read_bytes()).hexdigest()
        tmp = out_samples.with_name(f".{out_samples.name}.tmp")
        shutil.copyfile(samples, tmp)
        os.replace(tmp, out_samples)
    out = _inside(target.entries_dir, entry_name + ".json")
    atomic_write_bytes(out, (json.dumps(entry, indent=2) + "\n").encode())
    return Entry(entry_name, entry, out, out_samples)
