"""After a run: PNG plots in the output folder and, with ``logger: wandb``, a Weights & Biases run.

Why a post-run step rather than a Lightning logger inside the sweep: every figure the run is
judged by (exact metrics, curves, the table) exists only once the records of all processes are
gathered on rank 0, and the overlays need a single extra edge pass on a handful of images,
which costs nothing next to the sweep. :func:`report_run` is called by ``evaluate`` on global
rank 0 only (other ranks return before it), so nothing is logged twice.

W&B never decides the fate of a run: the mode is chosen without prompting (online when an API
key is found, offline into the output folder otherwise, one line saying which), and any W&B
failure prints one warning line and is otherwise ignored; results are already on disk.
"""

from __future__ import annotations

import configparser
import json
import netrc
import os
import re
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlparse

import numpy as np

from sagebench import plots

NUM_OVERLAY_IMAGES = 4
METRIC_KEYS = {  # results row field -> W&B summary key prefix
    "offloaded_accuracy": "offloaded_acc",
    "ceiling_ratio": "ceiling_ratio",
    "overall_accuracy": "overall_acc",
    "coverage": "coverage",
    "units_sent": "units_sent",
    "bytes_sent": "bytes_sent",
    "num_correct": "num_correct",
}
TABLE_COLUMNS = ["strategy", "budget", *METRIC_KEYS]  # then any further numeric row fields, in row order
ROW_FIELDS_KEY = "row_fields"  # in the "sagebench" summary entry: the row field behind each key prefix
META_KEY = "sagebench"  # nested summary entry holding what the leaderboard needs besides the metrics
_NOT_META = ("config", "results", "output_dir", "report")  # config is the run's W&B config; results are the keys


def _say(msg: str) -> None:
    print(f"sagebench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Online or offline, decided without prompting


def _wandb_host(environ: Mapping[str, str]) -> str:
    base = environ.get("WANDB_BASE_URL")
    if not base:
        cfg_dir = Path(environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb")
        parser = configparser.ConfigParser()
        try:
            parser.read(cfg_dir / "settings")
            base = parser.get("default", "base_url", fallback=None)
        except (configparser.Error, OSError):
            base = None
    return urlparse(base or "https://api.wandb.ai").hostname or "api.wandb.ai"


def api_key_source(environ: Mapping[str, str] | None = None) -> str | None:
    """Where a W&B credential would come from (``"WANDB_API_KEY"``, a netrc path), or ``None``.

    Reads the environment and the netrc file that ``wandb login`` writes; never the network,
    never a prompt. The key itself is not returned.
    """
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY", "").strip():
        return "WANDB_API_KEY"
    token_file = environ.get("WANDB_IDENTITY_TOKEN_FILE")
    if token_file and Path(token_file).is_file():
        return "WANDB_IDENTITY_TOKEN_FILE"
    host = _wandb_host(environ)
    candidates = [environ["NETRC"]] if environ.get("NETRC") else [str(Path.home() / ".netrc"),
                                                                    str(Path.home() / "_netrc")]
    for path in candidates:
        try:
            auth = netrc.netrc(path).authenticators(host) if Path(path).is_file() else None
        except (OSError, netrc.NetrcParseError):
            auth = None
        if auth and auth[2]:
            return path
    return None


def wandb_mode(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(mode, why)`` with mode ``online``, ``offline`` or ``disabled``.

    ``WANDB_MODE=offline|dryrun|disabled`` is honoured; otherwise the run is online only when a
    credential is found (:func:`api_key_source`), offline otherwise (``wandb.init`` would prompt
    or fail).
    """
    environ = os.environ if environ is None else environ
    env_mode = environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in ("disabled", "off"):
        return "disabled", "WANDB_MODE=disabled"
    if env_mode in ("offline", "dryrun"):
        return "offline", f"WANDB_MODE={env_mode}"
    source = api_key_source(environ)
    if source is None:
        return "offline", "no API key found: set WANDB_API_KEY or run `wandb login` to log online"
    return "online", f"API key from {source}"


# --------------------------------------------------------------------------------------------
# What is logged (pure functions of the results, tested without W&B)


def _key(prefix: str, strategy: str, budget: int, unit: str = "patches") -> str:
    """``<metric>/<strategy>/B<patches>``, or ``.../bytes<bytes>`` for a byte budget."""
    return f"{prefix}/{strategy}/{'B' if unit == 'patches' else 'bytes'}{int(budget)}"


def summary_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """The run summary: one key per (metric, strategy, budget), the ceiling, edge accuracy, fingerprint.

    Keys: ``offloaded_acc/<strategy>/B<budget>``, ``ceiling_ratio/...``, ``overall_acc/...``,
    ``coverage/...``, ``units_sent/...``, ``bytes_sent/...``, ``num_correct/...``,
    ``mean_ceiling_ratio/<strategy>``, ``ceiling/offloaded_acc``, ``ceiling/overall_acc``,
    ``edge_acc``, ``num_images``, ``num_offloaded``, ``offload_rate``, ``benchmark/name``,
    ``benchmark/fingerprint``; plus ``sagebench``: the results' metadata (benchmark fields,
    strategies, provenance), from which :func:`sagebench.leaderboard.entry_from_wandb` rebuilds
    a leaderboard entry.
    """
    bench = results["benchmark"]
    out: dict[str, Any] = {
        "benchmark/name": bench.get("name"),
        "benchmark/fingerprint": bench.get("fingerprint"),
        "num_images": results.get("num_images"),
        "num_offloaded": results.get("num_offloaded"),
        "offload_rate": (results["num_offloaded"] / results["num_images"]) if results.get("num_images") else None,
        "edge_acc": results.get("edge_accuracy"),
        "ceiling/offloaded_acc": results["ceiling"].get("offloaded_accuracy"),
        "ceiling/overall_acc": results["ceiling"].get("overall_accuracy"),
    }
    ratios: dict[str, list[float]] = {}
    fields = row_fields(results)
    for row in results["results"]:
        for field_name in fields:
            out[_key(METRIC_KEYS.get(field_name, field_name), row["strategy"], row["budget"],
                     row.get("budget_unit", "patches"))] = row.get(field_name)
        if row.get("ceiling_ratio") is not None:
            ratios.setdefault(row["strategy"], []).append(float(row["ceiling_ratio"]))
    for strategy, values in ratios.items():
        out[f"mean_ceiling_ratio/{strategy}"] = sum(values) / len(values)
    meta = {k: v for k, v in results.items() if k not in _NOT_META}
    meta[ROW_FIELDS_KEY] = {METRIC_KEYS.get(f, f): f for f in fields}
    out[META_KEY] = meta
    return out


def row_fields(results: dict[str, Any]) -> list[str]:
    """The numeric fields of the result rows: :data:`METRIC_KEYS` first, then any newer ones."""
    extra = [k for r in results["results"] for k, v in r.items()
             if k not in ("strategy", "budget") and k not in METRIC_KEYS
             and (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))]
    return [*METRIC_KEYS, *dict.fromkeys(extra)]


def table_columns(results: dict[str, Any]) -> list[str]:
    return ["strategy", "budget", *row_fields(results)]


def table_rows(results: dict[str, Any]) -> list[list[Any]]:
    """Rows of the results table, columns :func:`table_columns`."""
    fields = row_fields(results)
    return [[r["strategy"], int(r["budget"]), *(r.get(f) for f in fields)] for r in results["results"]]


def curve_lines(results: dict[str, Any], metric: str) -> tuple[list[list[int]], list[list[float]], list[str]]:
    """``(xs, ys, keys)`` for ``wandb.plot.line_series``: one line per strategy, budgets ascending."""
    xs, ys, keys = [], [], []
    for s in plots.series_from_results(results):
        pts = [(b, v) for b, v in zip(s.budgets, getattr(s, metric)) if v is not None]
        if pts:
            xs.append([p[0] for p in pts])
            ys.append([float(p[1]) for p in pts])
            keys.append(s.label)
    return xs, ys, keys


def _safe_artifact_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:100] or "run"


# --------------------------------------------------------------------------------------------
# Overlays: one extra edge pass on a few fixed images


@dataclass
class RunContext:
    """What the post-run step may reuse from the sweep (all optional: missing parts skip the overlays)."""

    edge: Any = None  # EdgeModel
    strategies: Sequence[Any] = ()
    dataset: Any = None  # map-style EvalImages (index == sample id)
    data_config: dict[str, Any] = field(default_factory=dict)
    rows: np.ndarray | None = None
    layout: Any = None  # SweepLayout
    budgets: Sequence[int] = ()
    seed: int = 0


def overlay_budget(budgets: Sequence[int]) -> int:
    """The budget the overlays show: the median of the sweep's budgets (the middle of the curve)."""
    ordered = sorted(int(b) for b in budgets)
    return ordered[(len(ordered) - 1) // 2]


def overlay_sample_ids(rows: np.ndarray, layout: Any, k: int = NUM_OVERLAY_IMAGES) -> list[int]:
    """The first ``k`` offloaded images by sample id: fixed for a data set, edge model and gate."""
    off = rows[:, layout.column("offloaded")] > 0.5
    return [int(i) for i in rows[off, layout.column("sample_id")][:k]]


def _class_names(dataset: Any) -> list[str] | None:
    try:
        feature = dataset.dataset.features[dataset.label_column]
        return list(feature.names)
    except Exception:
        return None


def selection_examples(ctx: RunContext, k: int = NUM_OVERLAY_IMAGES) -> list[plots.Example]:
    """Image, edge attention and each strategy's chosen patches at :func:`overlay_budget`."""
    import torch

    if ctx.edge is None or ctx.dataset is None or ctx.rows is None or not hasattr(ctx.dataset, "__getitem__"):
        return []
    ids = overlay_sample_ids(ctx.rows, ctx.layout, k)
    if not ids:
        return []
    items = [ctx.dataset[i] for i in ids]
    device = next(ctx.edge.parameters()).device
    images = torch.stack([it[0] for it in items]).to(device)
    labels = [int(it[1]) for it in items]
    sample_ids = torch.tensor(ids, dtype=torch.int64, device=device)
    budget = overlay_budget(ctx.budgets)
    with torch.no_grad():
        evidence = ctx.edge(images, sample_ids, ctx.seed)
        selections = {s.label: s.select(evidence, budget).cpu().numpy() for s in ctx.strategies}
    mean = np.asarray(ctx.data_config.get("mean") or (0.0,), dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(ctx.data_config.get("std") or (1.0,), dtype=np.float32).reshape(-1, 1, 1)
    pixels = np.clip(images.float().cpu().numpy() * std + mean, 0.0, 1.0)
    grid = tuple(evidence.grid)
    patch = (pixels.shape[2] // grid[0], pixels.shape[3] // grid[1])
    attention = evidence.attention.float().cpu().numpy().reshape(-1, *grid)
    preds = evidence.logits.argmax(-1).cpu().numpy()
    names = _class_names(ctx.dataset)
    out = []
    for j, sid in enumerate(ids):
        img = pixels[j]
        img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
        out.append(plots.Example(sample_id=sid, label=labels[j], edge_pred=int(preds[j]), image=img,
                                 attention=attention[j], patch_size=patch, budget=budget,
                                 selections={s: [int(x) for x in sel[j]] for s, sel in selections.items()},
                                 class_names=names))
    return out


# --------------------------------------------------------------------------------------------
# The post-run step


class _Warn:
    """Runs steps that must not fail the run: the first failure of each kind prints one line."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.failures: list[str] = []

    def __call__(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - by design: reporting never loses a run
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.failures.append(what)
            _say(f"warning: {what} failed ({type(exc).__name__}: {first[:200]}); "
                 f"the results are saved in {self.out_dir}")
            return None


def report_run(config: dict[str, Any], results: dict[str, Any], out_dir: str | os.PathLike,
               ctx: RunContext | None = None) -> dict[str, Any]:
    """Write ``curves.png`` and ``overlays.png`` into ``out_dir`` and log to W&B when configured.

    ``config`` is the resolved config as a plain dict (``logger``, ``wandb.*``). Never raises
    for a plotting or W&B problem: each prints one warning line. Returns what was produced:
    ``{"curves": path, "overlays": path, "wandb": {...}, "seconds": s}``.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    guard = _Warn(out_dir)
    info: dict[str, Any] = {}
    examples = guard("drawing the selection overlays", selection_examples, ctx) if ctx is not None else None
    info["curves"] = guard("plotting the curves", plots.plot_results_curves, results, out_dir / plots.CURVES_FILE)
    info["latency"] = guard("plotting accuracy against latency", plots.plot_latency, results,
                            out_dir / plots.LATENCY_FILE)
    if examples:
        info["overlays"] = guard("plotting the overlays", plots.plot_overlays, examples, out_dir / plots.OVERLAYS_FILE)
    if str(config.get("logger", "wandb")) == "wandb":
        info["wandb"] = log_to_wandb(config, results, out_dir, examples or [], info, guard)
    info["seconds"] = round(time.perf_counter() - started, 3)
    return {k: str(v) if isinstance(v, Path) else v for k, v in info.items() if v is not None}


def _settings(wandb: Any, **wanted: Any) -> Any:
    """``wandb.Settings`` with the options this wandb version knows (names change between versions)."""
    known = getattr(wandb.Settings, "model_fields", None)
    if known is not None:
        wanted = {k: v for k, v in wanted.items() if k in known}
    try:
        return wandb.Settings(**wanted)
    except Exception:
        return wandb.Settings(**{k: v for k, v in wanted.items() if not k.startswith("x_")})


def _init(wandb: Any, mode: str, config: dict[str, Any], results: dict[str, Any], out_dir: Path) -> Any:
    wb = config.get("wandb") or {}
    settings = _settings(wandb, silent=True, console="off", x_disable_stats=True, save_code=False,
                         x_save_requirements=False, disable_job_creation=True, init_timeout=30.0)
    bench = results["benchmark"]
    tags = list(wb.get("tags") or [])
    return wandb.init(project=wb.get("project") or "sagebench", entity=wb.get("entity") or None,
                      name=wb.get("name") or None, tags=tags or None, config=config, dir=str(out_dir),
                      mode=mode, job_type="eval", group=bench.get("name"), settings=settings)


def log_to_wandb(config: dict[str, Any], results: dict[str, Any], out_dir: Path,
                 examples: Sequence[plots.Example] = (), files: dict[str, Any] | None = None,
                 guard: _Warn | None = None) -> dict[str, Any]:
    """One W&B run: config, summary, results table, curves, overlays and a results artifact."""
    guard = guard or _Warn(out_dir)
    files = files or {}
    mode, why = wandb_mode()
    if mode == "disabled":
        _say(f"W&B disabled ({why}); plots are in {out_dir}")
        return {"mode": mode}
    wandb = guard("importing wandb", __import__, "wandb")
    if wandb is None:
        return {"mode": "failed"}
    run = guard(f"starting the W&B run ({mode})", _init, wandb, mode, config, results, out_dir)
    if run is None and mode == "online":
        _say("W&B unreachable: logging offline instead")
        mode, why = "offline", "W&B unreachable"
        run = guard("starting the W&B run (offline)", _init, wandb, mode, config, results, out_dir)
    if run is None:
        return {"mode": "failed"}
    payload: dict[str, Any] = {}
    payload["results"] = guard("building the W&B table", lambda: wandb.Table(columns=table_columns(results),
                                                                                 data=table_rows(results)))
    for metric, key, title in (("offloaded_accuracy", "curves/offloaded_acc", "Offloaded accuracy vs budget"),
                               ("ceiling_ratio", "curves/ceiling_ratio", "Ceiling ratio vs budget")):
        xs, ys, keys = curve_lines(results, metric)
        if keys:
            payload[key] = guard(f"building the {metric} chart", wandb.plot.line_series, xs=xs, ys=ys, keys=keys,
                                 title=title, xname="budget (patches sent)")
    if files.get("curves"):
        payload["plots/curves"] = guard("attaching curves.png", wandb.Image, str(files["curves"]))
    if examples:
        payload["overlays"] = guard("building the overlay images", lambda: [
            wandb.Image(plots.overlay_array(ex),
                        caption=f"sample {ex.sample_id} (label {ex.name_of(ex.label)}, edge "
                                f"{ex.name_of(ex.edge_pred)}): patches sent at B={ex.budget}")
            for ex in examples])
    payload = {k: v for k, v in payload.items() if v is not None}
    guard("logging to W&B", run.log, payload)
    guard("writing the W&B summary", run.summary.update, summary_metrics(results))

    def artifact() -> None:
        bench = results["benchmark"]
        art = wandb.Artifact(_safe_artifact_name(f"sagebench-{bench.get('name')}-{run.id}"), type="sagebench-results",
                             metadata={"benchmark": bench.get("name"), "fingerprint": bench.get("fingerprint")})
        for name in ("results.json", "samples.parquet", "config.yaml"):
            if (out_dir / name).is_file():
                art.add_file(str(out_dir / name), name=name)
        run.log_artifact(art)

    guard("logging the results artifact", artifact)
    run_dir = Path(getattr(run, "dir", "") or out_dir).parent  # .../wandb/<offline-run-...>/files -> run folder
    url = getattr(run, "url", None) if mode == "online" else None
    guard("finishing the W&B run", run.finish)
    if mode == "offline":
        _say(f"W&B offline ({why}): run saved in {run_dir}; upload it later with `wandb sync {run_dir}`")
    else:
        _say(f"W&B run: {url}")
    return {"mode": mode, "run_dir": str(run_dir), "url": url}


# --------------------------------------------------------------------------------------------
# Reading an offline run back (no network, no wandb internals: the .wandb file is a
# LevelDB-style log of protobuf records)

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


def read_offline_run(run_dir: str | os.PathLike) -> OfflineRun:
    """Parse ``run-<id>.wandb`` of an offline run folder into config, summary and history."""
    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    artifacts: list[dict[str, Any]] = []
    run_id = name = project = ""
    tags: list[str] = []
    for record in _records(files[0]):
        kind = record.WhichOneof("record_type")
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
    config.pop("_wandb", None)
    return OfflineRun(run_dir, run_id, name, project, tags, config, summary, history, artifacts)
