"""Boards on disk: where they are, what they hold, and how a run becomes an entry (``submit``).

Layout (``leaderboards/`` at the repository root, or ``--root`` / ``$SAGEBENCH_LEADERBOARDS``)::

    leaderboards/<board>/board.json                  name, fingerprint, benchmark fields and budgets of the board
    leaderboards/<board>/benchmark.parquet           the board's record of its benchmark (:mod:`.record`)
    leaderboards/<board>/reproduction.json           what ``verify --reproduce --write`` found (:mod:`.reproduce`)
    leaderboards/<board>/entries/<entry>.json        a run's results.json (validated on the way in)
    leaderboards/<board>/entries/<entry>.samples.parquet   its per-sample file (optional)
    leaderboards/<board>/README.md, curves.png       written by ``render``

A board holds entries with one benchmark fingerprint (data, split, revision, number of images,
edge/server models and weights, preprocessing, gate and threshold): only those are comparable.

Safety: entries are JSON only (parsed without object hooks; NaN/Infinity refused; bounded in
size and depth), per-sample files are parquet with numeric columns only (row count bounded from
the metadata before reading), and every name that becomes a path is sanitised to ``[a-z0-9._-]``
and checked to stay inside its folder. A board holds plain files, never symbolic links: a link
is skipped on read (it could point at another benchmark's results) and never followed on write
(every write is a new temporary file of an unpredictable name, created exclusively, then renamed).
Every read checks each entry against the board's fingerprint; measured entries are *verified*
(their per-sample file reproduces every figure, :func:`sagebench.leaderboard.validate.check_records`,
and agrees with the board's record of its benchmark on every id, :mod:`sagebench.leaderboard.record`).
Verified means the files agree with one another, not that they are what the strategy produced: that
is ``verify --reproduce`` (:mod:`sagebench.leaderboard.reproduce`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sagebench.errors import LeaderboardError
from sagebench.leaderboard import record as record_lib
from sagebench.leaderboard.validate import (
    MAX_JSON_DEPTH,
    MAX_SAMPLES_BYTES,
    benchmark_fields,
    json_depth,
    load_json,
    load_samples,
    validate_entry,
)
from sagebench.results.model import RunResults
from sagebench.runtime.files import atomic_write_bytes
from sagebench.runtime.log import warn

ENTRIES_DIR = "entries"


BOARD_FILE = "board.json"


SAMPLES_SUFFIX = ".samples.parquet"


_NAME_OK = re.compile(r"^[a-z0-9][a-z0-9._-]{0,119}$")


SHIPPED_ROOT = Path(__file__).resolve().parents[2] / "leaderboards"  # the boards of a sagebench checkout


def default_root(for_writing: bool = False) -> Path:
    """Where boards are looked up when ``--root`` is not given, in this order:

    ``$SAGEBENCH_LEADERBOARDS``; the ``leaderboards/`` folder of the enclosing repository (the
    nearest folder above the working directory holding ``leaderboards/`` and ``.git`` or
    ``pyproject.toml``); the boards shipped with sagebench's own checkout (read-only: writing there
    needs ``--root``). Why: ``show`` from anywhere finds the boards, and ``submit`` never quietly
    creates a new board in whatever folder it was run from.
    """
    env = os.environ.get("SAGEBENCH_LEADERBOARDS")
    if env:
        return Path(env)
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "leaderboards").is_dir() and ((folder / ".git").exists() or (folder / "pyproject.toml").is_file()):
            return folder / "leaderboards"
    if SHIPPED_ROOT.is_dir():
        if for_writing:
            raise LeaderboardError(f"No leaderboards folder here, and the boards shipped with sagebench ({SHIPPED_ROOT}) "
                                   "are read-only: pass --root DIR (or set SAGEBENCH_LEADERBOARDS) to write to a board.")
        return SHIPPED_ROOT
    return Path("leaderboards")


def safe_name(text: str, what: str = "name") -> str:
    """``text`` as a file-system-safe name: lower case ``[a-z0-9._-]``, no leading dot, <= 120 chars."""
    name = re.sub(r"[^a-z0-9._-]+", "-", str(text).strip().lower())
    name = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", "-", name)).strip("-.")[:120].rstrip("-.")
    if not name or not _NAME_OK.match(name):
        raise LeaderboardError(f"{what} {text!r} has no usable characters (allowed: a-z, 0-9, '.', '_', '-').")
    return name


def _inside(parent: Path, name: str) -> Path:
    if (Path(parent) / name).is_symlink():
        raise LeaderboardError(f"refusing {Path(parent) / name}: it is a symbolic link (a board holds plain files "
                               "and folders only).")
    path = (parent / name).resolve()
    if path.parent != parent.resolve():
        raise LeaderboardError(f"refusing the path {name!r}: it leaves {parent}")
    return path


_LINK = "is a symbolic link: a board holds plain files, never links (a link can point at another benchmark's results)"


@dataclass
class Entry:
    name: str
    data: dict[str, Any]
    path: Path
    samples_path: Path | None
    columns: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)  # checked records

    @property
    def reported(self) -> bool:
        return bool(self.data.get("reported"))

    @property
    def verified(self) -> bool:
        """A measured entry whose per-sample file is on the board (checked when it is read)."""
        return not self.reported and self.samples_path is not None


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
        path = self.path / BOARD_FILE
        if path.is_symlink():
            raise LeaderboardError(f"{path} {_LINK}.")
        return load_json(path)

    def num_images(self) -> int | None:
        """The board's number of images (what bounds every per-sample file read for it)."""
        n = (self.meta().get("benchmark") or {}).get("num_images")
        return int(n) if isinstance(n, int) and not isinstance(n, bool) else None

    def record(self) -> record_lib.BenchmarkRecord | None:
        """The board's record of its benchmark (checked against board.json's sha256), None if it has none."""
        return record_lib.read(self.path, self.meta())

    def _entries_dir_checked(self) -> Path | None:
        folder = self.entries_dir
        if folder.is_symlink():
            raise LeaderboardError(f"{folder} {_LINK}.")
        return folder if folder.is_dir() else None

    def load_entry(self, path: Path, fingerprint: str | None = None, records: bool = False,
                   record: record_lib.BenchmarkRecord | None = None) -> Entry:
        """One entry file of this board, checked: a plain file, schema-valid, this board's fingerprint,
        and (``records``) its per-sample file (read bounded by the board's size) reproducing its figures
        and agreeing with the board's ``record`` on every id (the records are kept on the entry)."""
        path = Path(path)
        where = f"{self.name}/{ENTRIES_DIR}/{path.name}"
        if path.is_symlink():
            raise LeaderboardError(f"{where} {_LINK}.")
        data = load_json(path)
        validate_entry(data, where)
        fingerprint = self.meta().get("fingerprint") if fingerprint is None else fingerprint
        if data["benchmark"]["fingerprint"] != fingerprint:
            raise LeaderboardError(f"{where} has benchmark fingerprint {data['benchmark']['fingerprint']}, the board "
                                   f"has {fingerprint}: it belongs to another benchmark.")
        samples = path.with_name(path.name[:-len(".json")] + SAMPLES_SUFFIX)
        if samples.is_symlink():
            raise LeaderboardError(f"{self.name}/{ENTRIES_DIR}/{samples.name} {_LINK}.")
        if not samples.exists():
            samples = None
        elif not samples.is_file():
            raise LeaderboardError(f"{self.name}/{ENTRIES_DIR}/{samples.name} is not a file.")
        if samples is not None and data.get("reported"):
            raise LeaderboardError(f"{where} is a reported (not reproduced) entry with a per-sample file.")
        columns = None
        if records and samples is not None:
            if samples.stat().st_size > MAX_SAMPLES_BYTES:
                raise LeaderboardError(f"{samples} is larger than {MAX_SAMPLES_BYTES // 2**20} MB.")
            where = f"{self.name}/{ENTRIES_DIR}/{samples.name} (of {path.name})"
            columns = load_samples(data, samples, where, max_rows=self.num_images())
            if record is not None:
                record_lib.match(record, columns, where, record_lib.skipped_of(data["benchmark"]))
        return Entry(path.name[:-len(".json")], data, path, samples, columns)

    def scan(self, records: bool = False) -> tuple[list[Entry], list[str]]:
        """``(entries that pass the checks of :meth:`load_entry`, one problem line per entry that does not)``."""
        folder = self._entries_dir_checked()
        if folder is None:
            return [], []
        fp = self.meta().get("fingerprint")
        board_record = self.record() if records else None
        out, problems = [], []
        for path in sorted(folder.iterdir()):
            if not path.name.endswith(".json") or not _NAME_OK.match(path.name[:-len(".json")]):
                continue
            try:
                out.append(self.load_entry(path, fp, records, board_record))
            except LeaderboardError as exc:
                problems.append(str(exc))
        return out, problems

    def entries(self, strict: bool = True, records: bool = False) -> list[Entry]:
        """The board's entries. ``strict``: any entry that fails its checks is an error; otherwise it is
        skipped with a warning (``show`` and ``render`` keep the rest of the board readable)."""
        out, problems = self.scan(records)
        if problems and strict:
            raise LeaderboardError(f"board {self.name!r}: " + "; ".join(problems))
        for problem in problems:
            warn(f"skipped: {problem}")
        return out

    def entry(self, name: str, records: bool = False) -> Entry:
        path = _inside(self.entries_dir, safe_name(name, "entry name") + ".json")
        if not path.is_file():
            raise LeaderboardError(f"board {self.name!r} has no entry {name!r}.")
        return self.load_entry(path, records=records, record=self.record() if records else None)


def list_boards(root: Path | None = None) -> list[str]:
    root = Path(root or default_root())
    return sorted(q.parent.name for q in root.glob(f"*/{BOARD_FILE}")
                  if _NAME_OK.match(q.parent.name) and not q.parent.is_symlink())


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


def _lock_dir() -> Path:
    """A per-user folder for the submit locks, private (0700) and owned by this user, never a link.

    Why not a fixed name in the shared temporary folder: another user could plant a link there."""
    base = Path(tempfile.gettempdir())
    uid = os.getuid() if hasattr(os, "getuid") else None
    folder = base / f"sagebench-{uid if uid is not None else 'user'}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(folder)
    if uid is not None and (stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != uid
                            or info.st_mode & 0o077):
        raise LeaderboardError(f"{folder} (the leaderboard lock folder) is not a private folder of this user; "
                               "remove it, or set TMPDIR to a private folder.")
    return folder


def submit(run: str | os.PathLike | dict[str, Any], board: str | None = None, root: Path | None = None,
           name: str | None = None, samples: Path | None = None, extra: dict[str, Any] | None = None,
           allow_unverified: bool = False, create: bool = True) -> Entry:
    """Like :func:`_submit_unlocked`, holding an inter-process lock on the leaderboard root.

    Why: the duplicate/fingerprint checks read the board before writing to it; two concurrent
    submitters must not both pass the checks and then overwrite or duplicate each other.
    """
    from sagebench.runtime.files import FileLock

    root = Path(root or default_root(for_writing=True))
    # The lock lives outside the board so that a refused entry leaves no file behind.
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    lock = _lock_dir() / f"leaderboard-{key}.lock"
    with FileLock(lock, what=f"leaderboard {root}"):
        return _submit_unlocked(run, board=board, root=root, name=name, samples=samples, extra=extra,
                                allow_unverified=allow_unverified, create=create)


def _read_samples_bytes(path: Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise LeaderboardError(f"{path} is not a file.")
    if path.stat().st_size > MAX_SAMPLES_BYTES:
        raise LeaderboardError(f"{path} is larger than {MAX_SAMPLES_BYTES // 2**20} MB: not a per-sample file.")
    with open(path, "rb") as fh:
        data = fh.read(MAX_SAMPLES_BYTES + 1)
    if len(data) > MAX_SAMPLES_BYTES:
        raise LeaderboardError(f"{path} is larger than {MAX_SAMPLES_BYTES // 2**20} MB: not a per-sample file.")
    return data


def _refuse_extra_seeds(entry: dict[str, Any], where: str) -> None:
    """A run with ``seeds=[...]`` holds rows ``<label>@seed<k>`` beside each seeded strategy's own: they measure
    the spread over draws, are not methods of their own (a board would rank the same strategy several times),
    and ``verify --reproduce`` reruns an entry at its run seed, so those rows could never reproduce."""
    from sagebench.seeds import SEP

    extra = sorted({str(s.get("label")) for s in entry.get("strategies") or [] if SEP in str(s.get("label"))})
    if entry.get("seeds") or extra:
        raise LeaderboardError(
            f"{where} comes from a run with seeds=[...] (rows {', '.join(extra[:4]) or '@seed<k>'}): its extra seeds "
            "measure the spread of a seeded strategy and are not entries of a board. Submit a run without `seeds` "
            "(its `seed` is the draw a board ranks); quote the spread from this run's `seeds` block beside it.")


def _submit_unlocked(run: str | os.PathLike | dict[str, Any], board: str | None = None, root: Path | None = None,
                     name: str | None = None, samples: Path | None = None,
                     extra: dict[str, Any] | None = None, allow_unverified: bool = False,
                     create: bool = True) -> Entry:
    """Validate a run's results and copy them (and their per-sample file) into a board.

    ``run`` is a run folder, a results JSON file, an already loaded results dict, or what ``evaluate``
    returned (its run folder's per-sample file is taken unless ``samples`` is given). The board
    defaults to the sanitised ``benchmark.name`` and is created by its first entry. Refused:
    schema errors, a fingerprint that differs from the board's, a measured entry without its
    per-sample file (unless ``allow_unverified``: ``pull`` of a W&B run whose records could not
    be fetched; such an entry is listed but never ranked), a per-sample file whose records do not
    reproduce every summary figure, a reported entry with one, a duplicate of an existing entry.
    """
    root = Path(root or default_root())
    if isinstance(run, RunResults):  # what evaluate() returns: its run folder holds the per-sample records
        folder = run.output_dir
        if samples is None and folder and (Path(folder) / "samples.parquet").is_file():
            samples = Path(folder) / "samples.parquet"
        run = dict(run)
    if isinstance(run, dict):
        if json_depth(run) > MAX_JSON_DEPTH:
            raise LeaderboardError(f"the entry nests JSON more than {MAX_JSON_DEPTH} levels deep: not a results file.")
        entry, where = json.loads(json.dumps(run)), "entry"
    else:
        entry, found, where = load_run(run)
        samples = samples or found
    for key in ("output_dir", "report"):
        entry.pop(key, None)
    if extra:
        entry.update(extra)
    validate_entry(entry, where)
    _refuse_extra_seeds(entry, where)
    if entry.get("reported") and samples is not None:
        raise LeaderboardError(f"{where} is a reported (not reproduced) entry: it cannot come with a per-sample file.")
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
    samples_bytes = columns = None
    if samples is not None:
        samples_bytes = _read_samples_bytes(Path(samples))  # read once: what is checked is what is copied
        columns = load_samples(entry, samples_bytes, str(samples),
                               max_rows=target.num_images() if target.exists() else None)
    elif not entry.get("reported") and not allow_unverified:
        raise LeaderboardError(
            f"{where} has no per-sample file: a measured entry is verified from its records (samples.parquet "
            "beside results.json), which must reproduce every figure, so submit needs it. Numbers copied from a "
            "paper go in as a reported entry (\"reported\": true, with a \"source\").")
    if not target.exists() and not create:  # (the CLI asks for --create: a typo must not start a new board)
        known = list_boards(root) if root.is_dir() else []
        raise LeaderboardError(f"There is no board {target.name!r} under {root} (boards: {', '.join(known) or 'none'}). "
                               "Pass --create to start it, or --board NAME / --root DIR to submit elsewhere.")
    digest = hashlib.sha256(_canonical(entry)).hexdigest()
    signature = _result_signature(entry)
    existing = target.entries(strict=False) if target.exists() else []
    new_record = None
    if columns is not None:
        board_record = target.record() if target.exists() else None
        if board_record is None:  # the board's first measured entry (or a board from before records)
            board_record = _record_of_existing(target, existing) if target.exists() else None
            new_record = board_record if board_record is not None else record_lib.from_columns(
                columns, int(bench["num_images"]), str(samples), record_lib.skipped_of(bench))
        if board_record is not None:
            record_lib.match(board_record, columns, str(samples), record_lib.skipped_of(bench))
    for other in existing:
        if hashlib.sha256(_canonical(other.data)).hexdigest() == digest or _result_signature(other.data) == signature:
            raise LeaderboardError(f"{where} duplicates entry {other.name!r} of board {target.name!r} "
                                   "(same strategies and the same results).")
    entry_name = _entry_name(entry, digest, name)
    target_dir = target.entries_dir
    if target_dir.is_symlink():
        raise LeaderboardError(f"{target_dir} {_LINK}.")
    out = _inside(target_dir, entry_name + ".json") if target_dir.is_dir() else target_dir / (entry_name + ".json")
    if out.exists() or out.is_symlink() or any(e.name == entry_name for e in existing):
        raise LeaderboardError(f"Board {target.name!r} already has an entry named {entry_name!r}; choose another --name.")
    given = {k: v for k, v in (entry.get("submission") or {}).items() if k not in ("sha256", "samples_sha256")}
    entry["submission"] = {"utc_time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **given,
                           "sha256": digest}  # the hashes are always this submission's own
    target_dir.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        # the budgets the board's score is taken over: the first entry's, declared once so that a later
        # entry lacking one of them is listed without changing what the others are ranked on
        budgets = sorted({int(r["budget"]) for r in entry["results"]})
        atomic_write_bytes(target.path / BOARD_FILE, (json.dumps(
            {"name": target.name, "fingerprint": bench["fingerprint"], "benchmark": benchmark_fields(bench),
             "budgets": budgets, "created_utc": entry["submission"]["utc_time"]}, indent=2) + "\n").encode())
    if new_record is not None:  # written before the entry: an entry on the board always has a record to match
        meta = target.meta()
        meta[record_lib.RECORD_KEY] = record_lib.write(target.path, new_record)
        atomic_write_bytes(target.path / BOARD_FILE, (json.dumps(meta, indent=2) + "\n").encode())
    out_samples = None
    if samples_bytes is not None:
        out_samples = _inside(target_dir, entry_name + SAMPLES_SUFFIX)
        entry["submission"]["samples_sha256"] = hashlib.sha256(samples_bytes).hexdigest()
        # a new, exclusively created temporary file, renamed over the target: a link planted at any
        # name in the folder is never followed
        atomic_write_bytes(out_samples, samples_bytes)
    out = _inside(target_dir, entry_name + ".json")
    atomic_write_bytes(out, (json.dumps(entry, indent=2) + "\n").encode())
    return Entry(entry_name, entry, out, out_samples)


def _record_of_existing(board: Board, existing: list[Entry]) -> record_lib.BenchmarkRecord | None:
    """A board from before records: its record from its measured entries when they all agree (refused
    otherwise: which one is right is for a rerun of the benchmark to say, not for a file's date)."""
    n = board.num_images()
    found = None
    for e in existing:
        if e.reported or e.samples_path is None or n is None:
            continue
        where = f"{board.name}/{ENTRIES_DIR}/{e.samples_path.name}"
        cols = load_samples(e.data, e.samples_path, where, max_rows=n)
        mine = record_lib.from_columns(cols, n, where, record_lib.skipped_of(e.data["benchmark"]))
        if found is not None and record_lib.differences(found, mine):
            raise LeaderboardError(f"board {board.name!r} has no record of its benchmark and its entries disagree on "
                                   f"it ({e.name} differs in {', '.join(record_lib.differences(found, mine))}): "
                                   "rebuild the board from a rerun of the benchmark.")
        found = found or mine
    return found
