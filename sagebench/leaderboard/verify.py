"""``sagebench leaderboard verify``: re-check every board on disk, as CI does after the tests.

Per board: ``board.json`` (a plain file, its name, its fingerprint = the hash of its benchmark
fields, its declared budgets if any), no symbolic links anywhere in the board, no stray or orphan files in ``entries/``, and
every entry as a read of the board checks it (schema, the entry's own fingerprint, the board's
fingerprint) plus its records: the per-sample file's sha256 is the one recorded at submission
and its records reproduce every summary figure. A hand-edited entry, a swapped per-sample file
or a planted link is a problem; a measured entry that never had a per-sample file (a W&B pull
whose records could not be fetched) is only a note: it is listed, never ranked. Every per-sample
file must agree with the board's record of its benchmark (``benchmark.parquet``, its sha256 in
``board.json``), and a measured entry must carry its submission block.

All of this checks that the files agree with one another: a forger who edits an entry, its
records and their hashes together passes it. ``--reproduce`` checks them against what the
strategies produce (:mod:`sagebench.leaderboard.reproduce`); see docs/comparing.md.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from sagebench.errors import LeaderboardError
from sagebench.leaderboard.record import RECORD_FILE
from sagebench.leaderboard.reproduce import (
    CANNOT,
    DEFAULT_SAMPLE,
    DEFAULT_SEED,
    DIFFERS,
    REPRODUCTION_FILE,
    Outcome,
    reproduce_board,
    write_outcomes,
)
from sagebench.leaderboard.store import (
    _NAME_OK,
    BOARD_FILE,
    ENTRIES_DIR,
    SAMPLES_SUFFIX,
    Board,
    default_root,
    list_boards,
    safe_name,
)
from sagebench.leaderboard.validate import benchmark_fields
from sagebench.results.files import file_sha256, fingerprint
from sagebench.runtime.files import is_temp_file

_BOARD_FILES = {BOARD_FILE, "README.md", "curves.png", ENTRIES_DIR, RECORD_FILE, REPRODUCTION_FILE}


@dataclass
class BoardReport:
    board: str
    entries: int = 0  # entries that passed every check
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)  # verify --reproduce: one per entry
    reproduction_file: Path | None = None  # written by --write

    @property
    def ok(self) -> bool:
        return not self.problems


def _links(folder: Path) -> list[Path]:
    out = []
    for here, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = Path(here) / name
            if path.is_symlink():
                out.append(path)
    return sorted(out)


def verify_board(board: Board, reproduce: bool = False, sample: int = DEFAULT_SAMPLE, seed: int = DEFAULT_SEED,
                 write: bool = False, strict: bool = False) -> BoardReport:
    """The checks of the module doc; ``reproduce``: also rerun every entry that passed them on ``sample``
    images drawn with ``seed`` (:mod:`sagebench.leaderboard.reproduce`; ``write``: store the outcomes;
    ``strict``: an entry that cannot be rerun here is a problem, not a note: for boards whose strategies
    are all built in, where "cannot" can only mean a broken entry)."""
    report = BoardReport(board.name)
    try:
        folder = board.path
        meta = board.meta()
    except LeaderboardError as exc:
        report.problems.append(str(exc))
        return report
    for link in _links(folder):
        report.problems.append(f"{link} is a symbolic link: a board holds plain files only.")
    if meta.get("name") != board.name:
        report.problems.append(f"{board.name}/{BOARD_FILE}: name {meta.get('name')!r} is not the folder's name.")
    bench = meta.get("benchmark")
    if not isinstance(bench, dict) or fingerprint(benchmark_fields(bench)) != meta.get("fingerprint"):
        report.problems.append(f"{board.name}/{BOARD_FILE}: fingerprint {meta.get('fingerprint')} is not the hash "
                               "of its benchmark fields: the file was edited.")
    budgets = meta.get("budgets")
    if budgets is not None and (not isinstance(budgets, list) or not budgets or len(set(map(str, budgets))) != len(budgets)
                                or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in budgets)):
        report.problems.append(f"{board.name}/{BOARD_FILE}: budgets must be a non-empty list of distinct positive "
                               f"integers (the budgets the board's score is taken over), got {budgets!r}.")
    for path in sorted(folder.iterdir()):
        if path.name not in _BOARD_FILES and not path.is_symlink():
            report.notes.append(f"{path}: not a board file (ignored).")
    try:
        board_record = board.record()
        entries, problems = board.scan(records=True)
    except LeaderboardError as exc:
        report.problems.append(str(exc))
        return report
    report.problems += problems
    if board_record is None and any(e.samples_path is not None for e in entries):
        report.problems.append(f"{board.name}/{BOARD_FILE} names no record of its benchmark ({RECORD_FILE}): entries "
                               "cannot be checked against one another; rebuild the board (submit its first entry anew).")
    names = {e.name for e in entries}
    if board.entries_dir.is_dir() and not board.entries_dir.is_symlink():
        for path in sorted(board.entries_dir.iterdir()):
            if path.is_symlink():
                continue  # reported above
            if path.name.endswith(SAMPLES_SUFFIX):
                stem = path.name[:-len(SAMPLES_SUFFIX)]
                if not (board.entries_dir / f"{stem}.json").is_file():
                    report.problems.append(f"{path}: a per-sample file without its entry {stem}.json.")
            elif is_temp_file(path):
                report.problems.append(f"{path}: a leftover temporary file of an interrupted write; remove it.")
            elif not (path.name.endswith(".json") and _NAME_OK.match(path.name[:-len(".json")])):
                report.problems.append(f"{path}: not an entry (entries are <name>.json with a-z, 0-9, '.', '_', '-').")
    for entry in entries:
        where = f"{board.name}/{ENTRIES_DIR}/{entry.path.name}"
        recorded = (entry.data.get("submission") or {}).get("samples_sha256")
        if entry.samples_path is not None:
            if recorded and file_sha256(entry.samples_path) != recorded:
                report.problems.append(f"{where}: its per-sample file's sha256 is not the one recorded at submission "
                                       "(the file was replaced).")
                names.discard(entry.name)
        elif not entry.reported:
            if recorded:
                report.problems.append(f"{where}: its per-sample file ({entry.name}{SAMPLES_SUFFIX}) is missing.")
                names.discard(entry.name)
            else:
                report.notes.append(f"{where}: measured, without a per-sample file: listed, never ranked.")
        submission = entry.data.get("submission")
        if not isinstance(submission, dict) or not submission.get("sha256") or (
                entry.samples_path is not None and not submission.get("samples_sha256")):
            # (a hash anyone can recompute is no signature: it catches accidents; forgeries are caught by
            # --reproduce and by review of the board's history, docs/comparing.md)
            report.problems.append(f"{where}: its submission block (content hash and per-sample file hash) is "
                                   "missing: the entry was not added by `submit`, or was edited afterwards.")
            names.discard(entry.name)
        elif hashlib.sha256(_canonical(entry.data)).hexdigest() != submission["sha256"]:
            report.problems.append(f"{where}: its content hash is not the one recorded at submission "
                                   "(the entry was edited after it was submitted).")
            names.discard(entry.name)
    report.entries = len(names)
    if reproduce:
        report.outcomes = reproduce_board(board, sample, seed, [e for e in entries if e.name in names])
        for o in report.outcomes:
            where = f"{board.name}/{ENTRIES_DIR}/{o.entry}.json"
            if o.status == DIFFERS:
                report.problems.append(f"{where}: {o.line}: its records are not what its strategies produce.")
            elif o.status == CANNOT:
                (report.problems if strict else report.notes).append(f"{where}: {o.line}.")
        if write:
            report.reproduction_file = write_outcomes(board, report.outcomes, sample, seed)
    return report


def _canonical(entry: dict) -> bytes:
    from sagebench.leaderboard.store import _canonical as canonical

    return canonical(entry)


def verify(root: Path | None = None, board: str | None = None, reproduce: bool = False,
           sample: int = DEFAULT_SAMPLE, seed: int = DEFAULT_SEED, write: bool = False,
           strict: bool = False) -> list[BoardReport]:
    """A :class:`BoardReport` per board under ``root`` (or for ``board``); symlinked boards are problems.
    ``reproduce``/``sample``/``seed``/``write``/``strict``: see :func:`verify_board`."""
    root = Path(root or default_root())
    opts = dict(reproduce=reproduce, sample=sample, seed=seed, write=write, strict=strict)
    if board is not None:
        return [verify_board(Board(root, safe_name(board, "board name")), **opts)]
    reports = []
    for q in sorted(root.glob(f"*/{BOARD_FILE}")):
        if q.parent.is_symlink():
            reports.append(BoardReport(q.parent.name, problems=[f"{q.parent} is a symbolic link: a board is a folder."]))
    reports += [verify_board(Board(root, name), **opts) for name in list_boards(root)]
    if not reports:
        raise LeaderboardError(f"No boards under {root}: nothing to verify (point --root at the leaderboards folder).")
    return reports
