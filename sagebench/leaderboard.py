"""The shared leaderboard: boards of comparable results files, ranked, rendered and compared.

Layout (``leaderboards/`` at the repository root, or ``--root`` / ``$SAGEBENCH_LEADERBOARDS``)::

    leaderboards/<board>/board.json                  name, fingerprint and benchmark fields of the board
    leaderboards/<board>/entries/<entry>.json        a run's results.json (validated on the way in)
    leaderboards/<board>/entries/<entry>.samples.parquet   its per-sample file (optional)
    leaderboards/<board>/README.md, curves.png       written by ``render``

A board holds entries with one benchmark fingerprint (data, split, revision, number of images,
edge/server models and weights, preprocessing, gate and threshold): only those are comparable.
Rows are (entry, strategy); measured rows are ranked by their mean ceiling ratio over the
board's budgets; reported rows (numbers copied from a publication, ``"reported": true`` plus a
``"source"``) are shown apart and never ranked.

Safety: entries are JSON only (parsed without object hooks; NaN/Infinity refused), per-sample
files are parquet with numeric columns only, and every name that becomes a path is sanitised
to ``[a-z0-9._-]`` and checked to stay inside its folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from sagebench.errors import SageBenchError
from sagebench.results import atomic_write_bytes, fingerprint

ENTRIES_DIR = "entries"
BOARD_FILE = "board.json"
SAMPLES_SUFFIX = ".samples.parquet"
MAX_ENTRY_BYTES = 20 * 1024 * 1024
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
_NAME_OK = re.compile(r"^[a-z0-9][a-z0-9._-]{0,119}$")


class LeaderboardError(SageBenchError):
    """A leaderboard operation refused (invalid entry, wrong board, duplicate, different images...)."""


# --------------------------------------------------------------------------------------------
# Names and paths


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


# --------------------------------------------------------------------------------------------
# Reading and validating entries


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not valid JSON")


def load_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (strict JSON: no NaN/Infinity, <= 20 MB)."""
    path = Path(path)
    if not path.is_file():
        raise LeaderboardError(f"{path} does not exist.")
    if path.stat().st_size > MAX_ENTRY_BYTES:
        raise LeaderboardError(f"{path} is larger than {MAX_ENTRY_BYTES // 2**20} MB: not a results file.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LeaderboardError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise LeaderboardError(f"{path} must hold a JSON object (a results file), not {type(data).__name__}.")
    return data


def results_schema() -> dict[str, Any]:
    from sagebench.schema import RESULTS_SCHEMA

    return json.loads(RESULTS_SCHEMA.read_text())


def _schema_errors(entry: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(results_schema())
    errors = sorted(validator.iter_errors(entry), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}" for e in errors]


def benchmark_fields(benchmark: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprinted fields of a benchmark block (all but its display name and the fingerprint)."""
    return {k: v for k, v in benchmark.items() if k not in ("name", "fingerprint")}


def validate_entry(entry: dict[str, Any], where: str = "entry") -> None:
    """Check ``entry`` against the published JSON schema and for internal consistency."""
    errors = _schema_errors(entry)
    if errors:
        shown = "; ".join(errors[:5]) + (f"; ... ({len(errors) - 5} more)" if len(errors) > 5 else "")
        raise LeaderboardError(f"{where} does not match the results schema "
                               f"(sagebench/schema/results.schema.json): {shown}")
    bench = entry["benchmark"]
    expected = fingerprint(benchmark_fields(bench))
    if bench["fingerprint"] != expected:
        raise LeaderboardError(f"{where}: benchmark.fingerprint {bench['fingerprint']} does not match its benchmark "
                               f"fields (they hash to {expected}); the file was edited or is corrupt.")
    if bench["num_images"] != entry["num_images"]:
        raise LeaderboardError(f"{where}: num_images {entry['num_images']} differs from benchmark.num_images "
                               f"{bench['num_images']}.")
    keys = [(r["strategy"], r["budget"]) for r in entry["results"]]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise LeaderboardError(f"{where}: results list (strategy, budget) more than once: {dup[:3]}.")
    for r in entry["results"]:
        if r["budget"] > bench["num_patches"]:
            raise LeaderboardError(f"{where}: budget {r['budget']} exceeds the {bench['num_patches']} patches.")
    if not entry.get("reported"):
        if entry["num_offloaded"] > entry["num_images"]:
            raise LeaderboardError(f"{where}: num_offloaded exceeds num_images.")
        labels = {s["label"] for s in entry["strategies"]}
        missing = sorted({r["strategy"] for r in entry["results"]} - labels)
        if missing:
            raise LeaderboardError(f"{where}: results name strategies not listed in 'strategies': {missing}.")


def _base_columns() -> tuple[str, ...]:
    from sagebench.metrics import BASE_COLUMNS

    return BASE_COLUMNS


def read_samples(path: Path) -> dict[str, np.ndarray]:
    """A per-sample parquet file as numpy columns (numeric/bool columns only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise LeaderboardError(f"{path} is not a readable parquet file: {exc}") from exc
    out = {}
    for name, col in zip(table.column_names, table.columns):
        t = col.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise LeaderboardError(f"{path}: column {name!r} has type {t}; per-sample files hold numbers only.")
        out[name] = col.to_numpy(zero_copy_only=False)
    return out


def validate_samples(entry: dict[str, Any], samples: dict[str, np.ndarray], where: str = "per-sample file") -> None:
    """The per-sample file must be the records behind the entry's numbers."""
    need = list(_base_columns()) + [f"pred/{r['strategy']}/B{r['budget']}" for r in entry["results"]]
    missing = [c for c in need if c not in samples]
    if missing:
        raise LeaderboardError(f"{where} lacks the columns {missing[:4]}{' ...' if len(missing) > 4 else ''}.")
    n = len(samples["sample_id"])
    if n != entry["num_images"]:
        raise LeaderboardError(f"{where} has {n} rows but the entry has {entry['num_images']} images.")
    ids = samples["sample_id"]
    if len(np.unique(ids)) != n:
        raise LeaderboardError(f"{where} lists some sample ids more than once.")
    off = samples["offloaded"].astype(bool)
    if int(off.sum()) != entry["num_offloaded"]:
        raise LeaderboardError(f"{where}: {int(off.sum())} offloaded images, the entry says {entry['num_offloaded']}.")
    label = samples["label"]
    for r in entry["results"]:
        ok = int(((samples[f"pred/{r['strategy']}/B{r['budget']}"] == label) & off).sum())
        if ok != r["num_correct"]:
            raise LeaderboardError(f"{where}: {r['strategy']} at B={r['budget']} is right on {ok} images, the entry "
                                   f"says {r['num_correct']}: the files do not belong together.")


# --------------------------------------------------------------------------------------------
# Boards


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


# --------------------------------------------------------------------------------------------
# Submitting


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

    from sagebench.fsutil import FileLock

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


# --------------------------------------------------------------------------------------------
# Ranking


@dataclass
class Row:
    """One (entry, strategy) line of a board."""

    entry: str
    strategy: str
    cells: dict[int, tuple[float | None, float | None]]  # budget -> (offloaded accuracy, ceiling ratio)
    ceiling: float | None
    edge: str
    server: str
    version: str
    date: str
    reported: bool = False
    source: str | None = None
    rank: int | None = None
    score: float | None = None
    key: tuple = field(default=(), repr=False)

    def mean_ratio(self, budgets: Sequence[int]) -> float | None:
        values = [self.cells[b][1] for b in budgets if b in self.cells]
        if len(values) != len(budgets) or not values or any(v is None for v in values):
            return None
        return sum(values) / len(values)


def _version(prov: Mapping[str, Any]) -> str:
    """``0.1.0`` or ``0.1.0@2246bc6`` (``+dirty`` when the checkout had local changes)."""
    version = str(prov.get("sagebench_version") or "-")
    sha = str(prov.get("git_sha") or "")
    if sha:
        version += "@" + sha[:7] + ("+dirty" if sha.endswith("-dirty") else "")
    return version


def _rows(entries: Iterable[Entry]) -> list[Row]:
    rows: list[Row] = []
    for e in entries:
        d = e.data
        prov = d.get("provenance") or {}
        options = {s["label"]: s.get("options") for s in d.get("strategies") or []}
        for strategy in dict.fromkeys(r["strategy"] for r in d["results"]):
            mine = [r for r in d["results"] if r["strategy"] == strategy]
            ceiling = d["ceiling"].get("offloaded_accuracy")
            cells = {}
            for r in mine:
                ratio = r.get("ceiling_ratio")
                if ratio is None and r.get("offloaded_accuracy") is not None and ceiling:
                    ratio = r["offloaded_accuracy"] / ceiling
                cells[int(r["budget"])] = (r.get("offloaded_accuracy"), ratio)
            date = str(prov.get("utc_time") or (d.get("submission") or {}).get("utc_time") or "")[:10]
            rows.append(Row(
                entry=e.name, strategy=strategy, cells=cells, ceiling=ceiling,
                edge=d["benchmark"]["edge"]["name"], server=d["benchmark"]["server"]["name"],
                version=_version(prov), date=date, reported=e.reported,
                source=d.get("source"),
                key=(e.reported, strategy, json.dumps(options.get(strategy), sort_keys=True),
                     tuple(sorted((int(r["budget"]), r.get("num_correct"), r.get("offloaded_accuracy")) for r in mine)))))
    return rows


@dataclass
class Ranking:
    budgets: list[int]  # every budget on the board (columns)
    rank_budgets: list[int]  # budgets the mean ceiling ratio is taken over
    ranked: list[Row]
    reported: list[Row]


def rank(entries: Sequence[Entry]) -> Ranking:
    """Measured rows ranked by mean ceiling ratio over the budgets every measured row has; reported apart.

    Identical measured rows (same strategy, options and numbers: baselines resubmitted with a
    new method) are listed once, under their first entry.
    """
    seen: set[tuple] = set()
    rows = []
    for row in sorted(_rows(entries), key=lambda r: (r.date, r.entry)):
        if row.key in seen:
            continue
        seen.add(row.key)
        rows.append(row)
    measured = [r for r in rows if not r.reported]
    reported = [r for r in rows if r.reported]
    budgets = sorted({b for r in rows for b in r.cells})
    common = sorted(set.intersection(*(set(r.cells) for r in measured))) if measured else []
    for r in measured + reported:
        r.score = r.mean_ratio(common) if common else None
    measured.sort(key=lambda r: (r.score is None, -(r.score or 0.0), r.strategy, r.entry))
    for i, r in enumerate(measured):  # competition ranking: equal scores share a rank (1, 1, 3)
        tie = i > 0 and measured[i - 1].score is not None and math.isclose(measured[i - 1].score, r.score or -1.0,
                                                                               rel_tol=0, abs_tol=1e-12)
        r.rank = None if r.score is None else (measured[i - 1].rank if tie else i + 1)
    reported.sort(key=lambda r: (r.score is None, -(r.score or 0.0), r.strategy))
    return Ranking(budgets, common, measured, reported)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _cell(row: Row, b: int) -> str:
    acc, ratio = row.cells.get(b, (None, None))
    return "-" if acc is None and ratio is None else f"{_pct(acc)} ({_ratio(ratio)})"


def _table(ranking: Ranking, rows: Sequence[Row], reported: bool,
           budget_unit: str = "patches") -> tuple[list[str], list[list[str]]]:
    label = "B=" if budget_unit == "patches" else "bytes="
    header = ["rank", "strategy", *[f"{label}{b}" for b in ranking.budgets], "mean CR", "ceiling", "edge", "server",
              "sagebench", "date", "entry" if not reported else "source"]
    body = []
    for r in rows:
        first = ("reported" if reported else (str(r.rank) if r.rank else "-"))
        body.append([first, r.strategy, *[_cell(r, b) for b in ranking.budgets], _ratio(r.score), _pct(r.ceiling),
                     r.edge, r.server, r.version, r.date, (r.source or "") if reported else r.entry])
    return header, body


def format_board(board: Board) -> str:
    """The ranked table of a board, for the terminal."""
    ranking = rank(board.entries())
    meta = board.meta()
    lines = [f"board {board.name}  (fingerprint {meta.get('fingerprint')}; {_describe(meta.get('benchmark', {}))})",
             _rank_note(ranking), "cells: offloaded accuracy % (ceiling ratio)", ""]
    for title, rows, reported in (("", ranking.ranked, False),
                                  ("reported, not reproduced (not ranked):", ranking.reported, True)):
        if not rows:
            continue
        header, body = _table(ranking, rows, reported)
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
        if title:
            lines += ["", title]
        lines.append(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines.append("-+-".join("-" * w for w in widths))
        lines += [" | ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    if not ranking.ranked and not ranking.reported:
        lines.append("(no entries)")
    return "\n".join(lines)


def _describe(bench: Mapping[str, Any]) -> str:
    edge, server = bench.get("edge") or {}, bench.get("server") or {}
    gate = bench.get("gate")
    return (f"{bench.get('dataset')} {bench.get('split')}, {bench.get('num_images')} images, "
            f"{bench.get('num_patches')} patches; edge {edge.get('name')} ({edge.get('weights')}) -> server "
            f"{server.get('name')} ({server.get('weights')}); gate {gate}"
            + ("" if gate == "all" else f" > {bench.get('threshold')}"))


def _rank_note(ranking: Ranking) -> str:
    if not ranking.rank_budgets:
        return "ranked by mean ceiling ratio (no budget common to every measured row: unranked)"
    return ("ranked by mean ceiling ratio (offloaded accuracy / server on all patches) over B = "
            + ", ".join(str(b) for b in ranking.rank_budgets))


def render(board: Board) -> Path:
    """Rewrite the board's README.md (ranked table, reported rows apart) and curves.png."""
    from sagebench import plots

    ranking = rank(board.entries())
    meta = board.meta()

    def md(header: list[str], body: list[list[str]]) -> list[str]:
        esc = [[c.replace("|", "\\|") for c in row] for row in [header, *body]]
        return ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|",
                *("| " + " | ".join(r) + " |" for r in esc[1:])]

    lines = [f"# Leaderboard `{board.name}`", "",
             "<!-- Generated by `sagebench leaderboard render`; edits are overwritten. -->", "",
             f"Benchmark fingerprint `{meta.get('fingerprint')}`: {_describe(meta.get('benchmark', {}))}.", "",
             _rank_note(ranking) + ". Cells: offloaded accuracy % (ceiling ratio); ceiling = server accuracy "
             "on the offloaded images with all patches.", ""]
    unit = meta.get("benchmark", {}).get("budget_unit", "patches")  # only byte-budget boards set it
    if ranking.ranked:
        lines += md(*_table(ranking, ranking.ranked, False, unit))
    else:
        lines.append("No measured entries yet.")
    if ranking.reported:
        lines += ["", "## Reported, not reproduced", "",
                  "Numbers copied from the cited source, not measured with sagebench: never ranked.", ""]
        lines += md(*_table(ranking, ranking.reported, True, unit))
    series = [plots.Series(f"{r.strategy} ({r.entry})" if _ambiguous(ranking, r) else r.strategy,
                           sorted(r.cells), [r.cells[b][0] for b in sorted(r.cells)],
                           [r.cells[b][1] for b in sorted(r.cells)], dashed=r.reported)
              for r in ranking.ranked + ranking.reported]
    if series:
        ceilings = {r.ceiling for r in ranking.ranked if r.ceiling is not None}
        plots.plot_curves(series, board.path / plots.CURVES_FILE, title=f"{board.name} (dashed: reported)",
                          ceiling=ceilings.pop() if len(ceilings) == 1 else None,
                          num_patches=meta.get("benchmark", {}).get("num_patches"), budget_unit=unit)
        lines += ["", f"![curves]({plots.CURVES_FILE})"]
    lines += ["", "## Submitting", "",
              "```bash", "sagebench eval ...                       # writes runs/<name>/results.json + samples.parquet",
              f"sagebench leaderboard submit runs/<name> --board {board.name}",
              "sagebench leaderboard render", "```", "",
              "Entries are validated against `sagebench/schema/results.schema.json` and must have this board's "
              "fingerprint; see the README section \"Comparing methods\".", ""]
    out = board.path / "README.md"
    atomic_write_bytes(out, "\n".join(lines).encode())
    return out


def _ambiguous(ranking: Ranking, row: Row) -> bool:
    return sum(r.strategy == row.strategy for r in ranking.ranked + ranking.reported) > 1


# --------------------------------------------------------------------------------------------
# Paired comparison


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of ``b`` vs ``c`` discordant pairs at p = 1/2."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1))  # exact integers
    return min(1.0, 2 * tail / 2 ** n)


def paired_bootstrap_ci(a_ok: np.ndarray, b_ok: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(a_ok) - mean(b_ok) under resampling the paired images.

    The per-image difference takes only the values -1, 0, 1, so a resample of ``n`` pairs is
    a multinomial draw of those three counts: exactly the index bootstrap, in O(resamples).
    """
    a_ok, b_ok = np.asarray(a_ok, bool), np.asarray(b_ok, bool)
    n = len(a_ok)
    if n == 0:
        return (float("nan"), float("nan"))
    only_a = int((a_ok & ~b_ok).sum())
    only_b = int((~a_ok & b_ok).sum())
    p = np.array([only_a, only_b, n - only_a - only_b], dtype=float) / n
    counts = np.random.default_rng(seed).multinomial(n, p, size=resamples)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    alpha = (1 - level) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha])
    return float(lo), float(hi)


def resolve_ref(ref: str, root: Path | None = None, board: str | None = None) -> tuple[dict[str, Any], Path | None, str]:
    """An entry by path (run folder, results JSON, entry file) or by entry name on a board."""
    path = Path(ref)
    if path.exists():
        return load_run(path)
    root = Path(root or default_root())
    boards = [safe_name(board, "board name")] if board else list_boards(root)
    name = safe_name(ref, "entry name")
    hits = [Board(root, b) for b in boards if (Board(root, b).entries_dir / f"{name}.json").is_file()]
    if not hits:
        raise LeaderboardError(f"{ref!r} is neither a path nor an entry of {'board ' + board if board else 'any board'} "
                               f"under {root}.")
    if len(hits) > 1:
        raise LeaderboardError(f"entry {ref!r} exists on several boards ({', '.join(h.name for h in hits)}): use --board.")
    return load_run(hits[0].entries_dir / f"{name}.json")


def _pick_strategy(entry: dict[str, Any], wanted: str | None, where: str) -> str:
    labels = list(dict.fromkeys(r["strategy"] for r in entry["results"]))
    if wanted is None:
        if len(labels) == 1:
            return labels[0]
        raise LeaderboardError(f"{where} has several strategies ({', '.join(labels)}): choose with --strategy.")
    if wanted not in labels:
        raise LeaderboardError(f"{where} has no strategy {wanted!r}; it has {', '.join(labels)}.")
    return wanted


def compare(ref_a: str, ref_b: str, strategies: Sequence[str] = (), root: Path | None = None,
            board: str | None = None, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
            ) -> dict[str, Any]:
    """Paired comparison of two entries (or two strategies of one entry) on the same images.

    For every budget both have: offloaded accuracy of A and B over the images both offloaded,
    the difference A - B with a 95% paired bootstrap percentile interval, the discordant counts
    and the exact McNemar p-value. ``strategies``: none (each entry has one strategy), one (the
    same label in both), or two (A's, B's). Refused when the benchmarks or the images differ or
    a per-sample file is missing.
    """
    if len(strategies) > 2:
        raise LeaderboardError("give at most two strategies: A's and B's.")
    a, a_samples, a_where = resolve_ref(ref_a, root, board)
    b, b_samples, b_where = resolve_ref(ref_b, root, board)
    for entry, samples, where in ((a, a_samples, a_where), (b, b_samples, b_where)):
        validate_entry({k: v for k, v in entry.items() if k not in ("output_dir", "report")}, where)
        if samples is None:
            raise LeaderboardError(f"{where} has no per-sample file: a paired comparison needs one "
                                   "(samples.parquet beside results.json, or <entry>.samples.parquet).")
    sa = _pick_strategy(a, strategies[0] if strategies else None, a_where)
    sb = _pick_strategy(b, strategies[-1] if strategies else None, b_where)
    if a["benchmark"]["fingerprint"] != b["benchmark"]["fingerprint"]:
        diff = _diff_fields(benchmark_fields(a["benchmark"]), benchmark_fields(b["benchmark"]))
        raise LeaderboardError(f"{a_where} and {b_where} are different benchmarks (fingerprints "
                               f"{a['benchmark']['fingerprint']} vs {b['benchmark']['fingerprint']}; differ in "
                               f"{', '.join(diff)}): not a paired comparison.")
    ca, cb = read_samples(a_samples), read_samples(b_samples)
    validate_samples(a, ca, str(a_samples))
    validate_samples(b, cb, str(b_samples))
    order_a, order_b = np.argsort(ca["sample_id"], kind="stable"), np.argsort(cb["sample_id"], kind="stable")
    ids_a, ids_b = ca["sample_id"][order_a], cb["sample_id"][order_b]
    if len(ids_a) != len(ids_b) or not np.array_equal(ids_a, ids_b):
        only = np.setdiff1d(ids_a, ids_b).size + np.setdiff1d(ids_b, ids_a).size
        raise LeaderboardError(f"the two entries were measured on different images ({len(ids_a)} vs {len(ids_b)} "
                               f"images, {only} sample ids in only one): not a paired comparison.")
    label = ca["label"][order_a]
    if not np.array_equal(label, cb["label"][order_b]):
        raise LeaderboardError("the two entries give the same sample ids different labels: different images.")
    off = ca["offloaded"][order_a].astype(bool) & cb["offloaded"][order_b].astype(bool)
    budgets = sorted({r["budget"] for r in a["results"] if r["strategy"] == sa}
                     & {r["budget"] for r in b["results"] if r["strategy"] == sb})
    if not budgets:
        raise LeaderboardError(f"{sa!r} of A and {sb!r} of B share no budget.")
    rows = []
    for budget in budgets:
        a_ok = (ca[f"pred/{sa}/B{budget}"][order_a] == label)[off]
        b_ok = (cb[f"pred/{sb}/B{budget}"][order_b] == label)[off]
        n = int(off.sum())
        only_a, only_b = int((a_ok & ~b_ok).sum()), int((~a_ok & b_ok).sum())
        lo, hi = paired_bootstrap_ci(a_ok, b_ok, resamples, seed)
        rows.append({"budget": budget, "n": n, "acc_a": float(a_ok.mean()) if n else None,
                     "acc_b": float(b_ok.mean()) if n else None,
                     "diff": float(a_ok.mean() - b_ok.mean()) if n else None, "ci_low": lo, "ci_high": hi,
                     "only_a": only_a, "only_b": only_b, "p_mcnemar": mcnemar_exact(only_a, only_b)})
    return {"a": {"ref": ref_a, "strategy": sa}, "b": {"ref": ref_b, "strategy": sb},
            "fingerprint": a["benchmark"]["fingerprint"], "num_images": int(len(ids_a)),
            "num_offloaded_both": int(off.sum()),
            "offloaded_differ": int((ca["offloaded"][order_a].astype(bool) != cb["offloaded"][order_b].astype(bool)).sum()),
            "resamples": resamples, "seed": seed, "rows": rows}


def format_comparison(cmp: dict[str, Any]) -> str:
    lines = [f"A = {cmp['a']['strategy']} ({cmp['a']['ref']})",
             f"B = {cmp['b']['strategy']} ({cmp['b']['ref']})",
             f"paired on the {cmp['num_offloaded_both']} images both offloaded, of {cmp['num_images']} "
             f"(benchmark {cmp['fingerprint']})"
             + (f"; {cmp['offloaded_differ']} images offloaded by only one were left out" if cmp["offloaded_differ"] else ""),
             f"diff = offloaded accuracy A - B (percentage points); 95% paired bootstrap interval "
             f"({cmp['resamples']} resamples, seed {cmp['seed']}); exact McNemar test on the discordant images",
             ""]
    header = ["budget", "acc A %", "acc B %", "diff pp", "95% CI pp", "A only", "B only", "McNemar p"]
    body = [[str(r["budget"]), _pct(r["acc_a"]), _pct(r["acc_b"]),
             "-" if r["diff"] is None else f"{100 * r['diff']:+.2f}",
             f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]", str(r["only_a"]), str(r["only_b"]),
             f"{r['p_mcnemar']:.3g}"] for r in cmp["rows"]]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Pulling from W&B (the conversion is pure; only `pull_wandb` touches the network)


def _plain(obj: Any) -> Any:
    """A W&B public-API value as plain JSON data (summary/config objects are dict-like)."""
    if isinstance(obj, Mapping) or hasattr(obj, "items") and not isinstance(obj, (str, bytes)):
        try:
            return {str(k): _plain(v) for k, v in obj.items()}
        except TypeError:
            pass
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _unwrap_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Run configs come as ``{key: value}`` or, in raw API JSON, ``{key: {"value": v, "desc": ...}}``."""
    config = {k: v for k, v in _plain(config).items() if not str(k).startswith("_")}
    if config and all(isinstance(v, dict) and "value" in v for v in config.values()):
        return {k: v["value"] for k, v in config.items()}
    return config


def entry_from_wandb(summary: Mapping[str, Any], config: Mapping[str, Any], name: str, run_id: str,
                     path: str | None = None, url: str | None = None) -> dict[str, Any]:
    """Rebuild a results entry from a run logged by sagebench (see ``tracking.summary_metrics``)."""
    from sagebench.tracking import META_KEY, METRIC_KEYS, ROW_FIELDS_KEY

    summary = _plain(summary)
    meta = summary.get(META_KEY)
    if not isinstance(meta, dict) or "benchmark" not in meta:
        raise LeaderboardError(f"W&B run {run_id} ({name}) was not logged by sagebench (no {META_KEY!r} summary).")
    prefix_to_field = {p: f for f, p in METRIC_KEYS.items()}
    prefix_to_field.update(meta.get(ROW_FIELDS_KEY) or {})
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for key, value in summary.items():
        prefix, sep, rest = str(key).partition("/")
        if prefix not in prefix_to_field or not sep:
            continue
        strategy, sep, budget = rest.rpartition("/bytes")  # a byte budget
        if not sep or not budget.isdigit():
            strategy, sep, budget = rest.rpartition("/B")
        if not sep or not budget.isdigit() or not strategy:
            continue
        row = rows.setdefault((strategy, int(budget)), {"strategy": strategy, "budget": int(budget)})
        if prefix in ("num_correct", "nonfinite") and isinstance(value, float) and value.is_integer():
            value = int(value)
        row[prefix_to_field[prefix]] = value
    if not rows:
        raise LeaderboardError(f"W&B run {run_id} ({name}) has no per-budget results in its summary.")
    order = [s["label"] for s in meta.get("strategies") or []]
    results = sorted(rows.values(), key=lambda r: (order.index(r["strategy"]) if r["strategy"] in order else len(order),
                                                   r["strategy"], r["budget"]))
    entry = {k: v for k, v in meta.items() if k != ROW_FIELDS_KEY}
    entry["config"] = _unwrap_config(config)
    fields = list(dict.fromkeys(prefix_to_field.values()))
    entry["results"] = [{"strategy": r["strategy"], "budget": r["budget"],
                         **{f: r.get(f) for f in fields if f in r or f in METRIC_KEYS}} for r in results]
    _derived_row_fields(entry)
    entry["wandb_run"] = {"id": run_id, "name": name, "path": path, "url": url}
    return entry


def _derived_row_fields(entry: dict[str, Any]) -> None:
    """Row fields W&B does not hold as numbers, rebuilt from the run's metadata: the budget unit and
    the latency per channel (a function of ``bytes_sent`` and the channels the run reported)."""
    from sagebench.channels import Channel, add_latency

    transmission = entry.get("transmission")
    if not isinstance(transmission, dict):
        return
    for row in entry["results"]:
        row["budget_unit"] = transmission.get("budget_unit", "patches")
    channels = [Channel(c["name"], c.get("display_name", c["name"]), float(c["uplink_kbps"]), float(c["rtt_ms"]),
                        c.get("source", "")) for c in transmission.get("channels") or []]
    add_latency(entry["results"], channels)


@dataclass
class PullOutcome:
    run_id: str
    name: str
    entry: str | None = None
    board: str | None = None
    skipped: str | None = None


def entries_from_runs(runs: Iterable[Any]) -> list[tuple[Any, dict[str, Any] | None, str | None]]:
    """``(run, entry or None, why skipped)`` for W&B public-API run objects (or look-alikes).

    A run-like object has ``id``, ``name``, ``config`` and ``summary_metrics`` (or ``summary``);
    optionally ``state``, ``path`` (list or str) and ``url``. Unfinished runs are skipped.
    """
    out = []
    for run in runs:
        run_id, name = str(getattr(run, "id", "?")), str(getattr(run, "name", "") or "")
        state = getattr(run, "state", "finished")
        if state not in (None, "finished"):
            out.append((run, None, f"run state is {state!r}, not finished"))
            continue
        summary = getattr(run, "summary_metrics", None)
        if summary is None:
            summary = getattr(run, "summary", {}) or {}
        path = getattr(run, "path", None)
        path = "/".join(path) if isinstance(path, (list, tuple)) else path
        try:
            entry = entry_from_wandb(summary, getattr(run, "config", {}) or {}, name, run_id, path,
                                     getattr(run, "url", None))
        except LeaderboardError as exc:
            out.append((run, None, str(exc)))
            continue
        out.append((run, entry, None))
    return out


def pull_wandb(project_path: str, board: str | None = None, root: Path | None = None, api: Any = None,
               filters: dict[str, Any] | None = None) -> list[PullOutcome]:
    """Submit every finished sagebench run of ``ENTITY/PROJECT`` (same validation as ``submit``).

    ``api`` defaults to ``wandb.Api()`` (needs network and a key); tests pass a fake with a
    ``runs(path, filters=...)`` method. Refused entries are reported per run, not fatal.
    """
    if project_path.count("/") != 1 or not all(project_path.split("/")):
        raise LeaderboardError(f"--wandb takes ENTITY/PROJECT, got {project_path!r}.")
    if api is None:
        try:
            import wandb

            api = wandb.Api(timeout=30)
        except Exception as exc:  # no key, no network
            raise LeaderboardError(f"Cannot reach the W&B API ({type(exc).__name__}: {exc}). Log in with "
                                   "`wandb login` or set WANDB_API_KEY.") from exc
    try:
        runs = list(api.runs(project_path, filters=filters or {"state": "finished"}))
    except Exception as exc:
        raise LeaderboardError(f"Cannot list the runs of {project_path} ({type(exc).__name__}: {exc}).") from exc
    outcomes = []
    for run, entry, why in entries_from_runs(runs):
        outcome = PullOutcome(str(getattr(run, "id", "?")), str(getattr(run, "name", "") or ""))
        if entry is None:
            outcome.skipped = why
        else:
            try:
                saved = submit(entry, board=board, root=root,
                               name=f"wandb-{outcome.run_id}")
                outcome.entry, outcome.board = saved.name, saved.path.parent.parent.name
            except LeaderboardError as exc:
                outcome.skipped = str(exc)
        outcomes.append(outcome)
    return outcomes
