"""``verify --reproduce``: rerun each entry's strategies on images the verifier picks.

Every cell of a board is a deterministic function of (benchmark, strategy, image): the random
strategies seed each image from the run's seed and the sample id. So an entry can be spot-checked
cheaply: draw ``K`` of the board's offloaded images (and ``K // 4`` kept at the edge, which checks
the gate) with the *verifier's* seed, rebuild the entry's benchmark from its stored config (models
and data must be here: the embedded boards use shipped checkpoints, so this runs offline), run
the entry's strategies (registered name + options) on those images only, and require identical
predictions on every (strategy, budget) cell and identical labels, edge predictions, gate
decisions and server predictions. A forger does not know which images will be drawn, so an entry
whose records were edited on ``m`` of ``n`` offloaded images escapes with probability about
``(1 - m/n)^K``.

Outcomes per entry: ``reproduced`` (on K images), ``differs`` (on n of K: flagged, never ranked),
``cannot`` (reproduce here: the strategy is not registered, its package is not installed, its
source is not the code the entry ran, the models or data are not here). Which strategies are
oracles comes from the rebuilt strategies' declared requirements (:attr:`Strategy.oracle`), never
from the file's flag. ``--write`` stores the outcomes in ``<board>/reproduction.json`` (which the
rendered board shows); a stored file is only a claim: CI reruns the check and fails when it does
not hold.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sagebench.cells import Cell
from sagebench.errors import LeaderboardError
from sagebench.leaderboard import record as record_lib
from sagebench.leaderboard.store import Board, Entry, _canonical
from sagebench.runtime.files import atomic_write_bytes

REPRODUCTION_FILE = "reproduction.json"


DEFAULT_SAMPLE = 200


DEFAULT_SEED = 0


REPRODUCED, DIFFERS, CANNOT, REPORTED = "reproduced", "differs", "cannot", "reported"


@dataclass
class Outcome:
    """What reproducing one entry found."""

    entry: str
    status: str  # reproduced | differs | cannot | reported
    detail: str = ""
    images: int = 0  # images rerun
    differ: int = 0  # of those, images where some field or cell differs
    oracles: list[str] = field(default_factory=list)  # labels the rebuilt strategies declare oracle
    entry_sha256: str = ""  # of the entry as it was checked (a stored outcome is stale once it changes)
    seconds: float = 0.0

    @property
    def line(self) -> str:
        if self.status == REPRODUCED:
            text = f"reproduced on {self.images} images"
        elif self.status == DIFFERS:
            text = f"differs on {self.differ} of {self.images} images ({self.detail})"
        elif self.status == CANNOT:
            text = f"cannot reproduce here ({self.detail})"
        else:
            text = "reported: nothing to rerun"
        return text + (f"; oracle by its requirements: {', '.join(self.oracles)}" if self.oracles else "")


def entry_digest(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(dict(data))).hexdigest()


def draw(record: record_lib.BenchmarkRecord, sample: int, seed: int) -> np.ndarray:
    """``sample`` offloaded ids and ``sample // 4`` kept ones (fewer when there are fewer), sorted."""
    rng = np.random.default_rng(seed)
    off, kept = record.offloaded_ids, np.flatnonzero(~record.offloaded)
    ids = [rng.choice(off, size=min(sample, off.size), replace=False)] if off.size else []
    if kept.size:
        ids.append(rng.choice(kept, size=min(max(1, sample // 4), kept.size), replace=False))
    return np.sort(np.concatenate(ids)).astype(np.int64) if ids else np.zeros(0, dtype=np.int64)


class _Images:
    """The chosen images of an evaluation set, each keeping its own sample id (a map-style data set)."""

    def __init__(self, base: Any, ids: np.ndarray) -> None:
        self.base, self.ids = base, [int(i) for i in ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[Any, Any, int]:
        image, label, _ = self.base[self.ids[i]]
        return image, label, self.ids[i]


def _code_problem(spec: Mapping[str, Any]) -> str | None:
    """Why the strategy of ``spec`` (an entry's strategies[] item) cannot be rerun here, or None."""
    from sagebench.strategies import list_strategies
    from sagebench.strategies.registry import strategy_class

    name = spec.get("name")
    code = spec.get("code") or {}
    if name not in list_strategies():
        where = f" from package `{code['distribution']}`" if code.get("distribution") else ""
        return f"strategy `{name}`{where} is not installed here"
    here = strategy_class(name).code_identity()
    if code.get("distribution") and code["distribution"] != here.get("distribution"):
        return (f"strategy `{name}` comes from `{here.get('distribution')}` here, the entry ran it from "
                f"`{code['distribution']}`")
    if code.get("source_sha256") and code["source_sha256"] != here.get("source_sha256"):
        return (f"strategy `{name}`'s source here ({here.get('source_sha256')}) is not the code the entry ran "
                f"({code['source_sha256']}, {code.get('distribution')} {code.get('version')})")
    return None


def _resolve_data(cfg: Any, bench: Mapping[str, Any]) -> str | None:
    """A local copy of the entry's data file: its recorded path, else a shipped demo file of that name with
    the board's size (its content is then checked by the benchmark fingerprint of the rerun)."""
    path = cfg.data.get("path")
    if not path:
        return None
    if Path(path).is_file():
        return str(path)
    import sagebench.demo

    shipped = Path(sagebench.demo.__file__).parent / Path(path).name
    if shipped.is_file() and shipped.stat().st_size == bench.get("size_bytes"):
        return str(shipped)
    raise LeaderboardError(f"data file {path} is not here")


def _config(data: Mapping[str, Any], bench: Mapping[str, Any], out_dir: Path) -> Any:
    from omegaconf import OmegaConf

    if not isinstance(data.get("config"), dict):
        raise LeaderboardError("the entry stores no config")
    if "${" in json.dumps(data["config"]):  # a stored config is resolved: an interpolation is not what ran
        raise LeaderboardError("the entry's config holds ${...} interpolations")
    stored = dict(data["config"])
    # the trainer section is rebuilt, never taken whole: its callbacks/loggers name classes to import
    # (code from the entry), and none of them changes a record; precision does, so it is kept
    trainer = stored.pop("trainer", None) or {}
    precision = trainer.get("precision") if isinstance(trainer, dict) else None
    if precision is not None and not isinstance(precision, (str, int)):
        raise LeaderboardError(f"the entry's trainer.precision is {precision!r}")
    cfg = OmegaConf.create(stored)
    path = _resolve_data(cfg, bench)
    device = str((data.get("provenance") or {}).get("device") or "cpu")
    overrides = {"output_dir": str(out_dir), "resume": False, "logger": "none", "progress": False,
                 "strategies": [{"name": s["name"], **(s.get("options") or {})} for s in data["strategies"]],
                 "data": {"path": path, "num_workers": 0},
                 "cache": {"edge": False, "dir": None}, "profile": False,
                 "trainer": {"accelerator": "cpu" if device.startswith("cpu") else "gpu", "devices": 1,
                             **({"precision": precision} if precision is not None else {})}}
    return OmegaConf.merge(cfg, OmegaConf.create(overrides))


def _rerun(cfg: Any, ids: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any], list[Any]]:
    """The records of ``ids`` under ``cfg``: ``(columns by id order, results, the built strategies)``."""
    import lightning as L

    from sagebench.leaderboard.validate import read_samples
    from sagebench.sweep.build import build
    from sagebench.sweep.evaluate import evaluate

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    sweep = build(cfg)  # the data set as the run loaded it (labels in the model's label space)
    results = evaluate(cfg, dataset=_Images(sweep.dataset, ids))
    columns = read_samples(Path(cfg.output_dir) / "samples.parquet", max_rows=len(ids))
    order = np.argsort(columns["sample_id"], kind="stable")
    return {k: v[order] for k, v in columns.items()}, results, sweep.strategies


def reproduce_entry(board: Board, entry: Entry, record: record_lib.BenchmarkRecord | None, sample: int,
                    seed: int) -> Outcome:
    """Rerun ``entry``'s strategies on images drawn with ``seed`` (see the module doc)."""
    from sagebench.results.files import fingerprint

    started = time.perf_counter()
    out = Outcome(entry.name, CANNOT, entry_sha256=entry_digest(entry.data))

    def done(status: str, detail: str = "") -> Outcome:
        out.status, out.detail, out.seconds = status, detail, round(time.perf_counter() - started, 2)
        return out

    if entry.reported:
        return done(REPORTED)
    if entry.columns is None:
        return done(CANNOT, "no checked per-sample file")
    meta = board.meta()
    bench = meta.get("benchmark") or {}
    if record is None:
        record = record_lib.from_columns(entry.columns, int(bench.get("num_images") or 0), entry.name,
                                         record_lib.skipped_of(bench))
    for spec in entry.data["strategies"]:
        problem = _code_problem(spec)
        if problem:
            return done(CANNOT, problem)
    ids = draw(record, sample, seed)
    out.images = len(ids)
    with tempfile.TemporaryDirectory(prefix="sagebench-reproduce-") as tmp:
        try:
            cfg = _config(entry.data, bench, Path(tmp) / "run")
            got, results, strategies = _rerun(cfg, ids)
        except Exception as exc:  # noqa: BLE001 - any failure of the rerun is an outcome, never a crash of verify
            return done(CANNOT, f"the benchmark cannot be rebuilt here: {type(exc).__name__}: {exc}".splitlines()[0])
    fields = dict(results["benchmark"])
    fields.pop("name", None), fields.pop("fingerprint", None)
    fields["num_images"] = bench.get("num_images")
    if fingerprint(fields) != meta.get("fingerprint"):
        diff = sorted(k for k in set(fields) | set(bench) if fields.get(k) != bench.get(k))
        return done(CANNOT, f"the benchmark built here differs from the board's in {', '.join(diff) or 'its hash'}")
    out.oracles = sorted(s.label for s in strategies if s.oracle)
    claimed = {s["label"]: s.get("options") for s in entry.data["strategies"]}
    built = {s.label: s.options() for s in strategies}
    if set(claimed) != set(built):
        return done(DIFFERS, f"its strategies rebuild as {sorted(built)}, it lists {sorted(claimed)}")
    wrong = np.zeros(len(ids), dtype=bool)
    where: dict[str, int] = {}
    if not np.array_equal(got["sample_id"], ids):
        return done(CANNOT, f"the rerun evaluated {len(got['sample_id'])} of the {len(ids)} images drawn "
                            "(corrupt images skipped here?)")
    rows = record.rows_of(ids)
    for f in record_lib.RECORD_FIELDS:
        bad = np.asarray(got[f]).astype(np.int64) != record.field(f)[rows].astype(np.int64)
        if bad.any():
            where[f] = int(bad.sum())
        wrong |= bad
    order = record_lib.check_ids(entry.columns["sample_id"], record.num_images, entry.name, None)
    mine = np.searchsorted(entry.columns["sample_id"][order], ids)  # rows of the drawn ids in id order
    unit = entry.data["results"][0].get("budget_unit", "patches")
    for r in entry.data["results"]:
        key = Cell(r["strategy"], int(r["budget"]), unit).key("pred")
        if key not in got:
            return done(DIFFERS, f"the rerun has no cell {key}")
        bad = got[key] != entry.columns[key][order][mine]
        if bad.any():
            where[key] = int(bad.sum())
        wrong |= bad
    if wrong.any():
        out.differ = int(wrong.sum())
        shown = ", ".join(f"{k} on {n}" for k, n in list(where.items())[:4]) + (" ..." if len(where) > 4 else "")
        return done(DIFFERS, shown)
    return done(REPRODUCED)


def reproduce_board(board: Board, sample: int = DEFAULT_SAMPLE, seed: int = DEFAULT_SEED,
                    entries: Sequence[Entry] | None = None) -> list[Outcome]:
    """An :class:`Outcome` per entry of ``board`` (entries that fail the board's checks are left to ``verify``)."""
    if sample < 1:
        raise LeaderboardError(f"--sample must be at least 1, got {sample}.")
    entries = list(entries) if entries is not None else board.scan(records=True)[0]
    record = board.record()
    _verifier_code()  # before any rerun or write of this process
    return [reproduce_entry(board, e, record, sample, seed) for e in entries]


@functools.lru_cache(maxsize=1)
def _verifier_code() -> str | None:
    """The checkout that verified, read once per process: writing one board's file must not make the next
    board's read ``-dirty``."""
    from sagebench.results.files import git_sha

    return git_sha()


def write_outcomes(board: Board, outcomes: Sequence[Outcome], sample: int, seed: int) -> Path | None:
    """Store ``outcomes`` in ``<board>/reproduction.json`` (what the rendered board shows); None (nothing
    written) for a board of reported entries only, which has nothing to rerun."""
    if all(o.status == REPORTED for o in outcomes):
        return None
    data = {"sample": sample, "seed": seed, "utc_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_sha": _verifier_code(), "entries": {o.entry: {k: v for k, v in asdict(o).items() if k != "entry"}
                                              for o in outcomes}}
    path = board.path / REPRODUCTION_FILE
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())
    return path


def stored(board: Board) -> dict[str, dict[str, Any]]:
    """``entry -> stored outcome`` from ``reproduction.json`` (only those still about the entry as it is now:
    an outcome whose ``entry_sha256`` is not the entry's current digest is dropped)."""
    from sagebench.leaderboard.validate import load_json

    path = board.path / REPRODUCTION_FILE
    if path.is_symlink() or not path.is_file():
        return {}
    data = load_json(path)
    entries = data.get("entries") if isinstance(data.get("entries"), dict) else {}
    out = {}
    for name, outcome in entries.items():
        p = board.entries_dir / f"{name}.json"
        if not isinstance(outcome, dict) or not p.is_file() or p.is_symlink():
            continue
        try:
            current = entry_digest(load_json(p))
        except LeaderboardError:
            continue
        if outcome.get("entry_sha256") == current:
            out[name] = outcome
    return out


def status_label(outcome: Mapping[str, Any] | None) -> str:
    """A board cell: ``yes (200)``, ``DIFFERS (3/200)``, ``no (...)`` or ``-`` (not checked)."""
    if not outcome:
        return "-"
    status = outcome.get("status")
    if status == REPRODUCED:
        return f"yes ({outcome.get('images')})"
    if status == DIFFERS:
        return f"DIFFERS ({outcome.get('differ')}/{outcome.get('images')})"
    if status == CANNOT:
        return "not here"
    return "-"
