"""The W&B run of a sweep: mode chosen without prompting, keys from :mod:`sagebench.cells`.

W&B never decides the fate of a run: the mode is chosen without prompting (online when an API
key is found, offline into the output folder otherwise, one line saying which), and any W&B
failure prints one warning line and is otherwise ignored; results are already on disk.
"""

from __future__ import annotations

import configparser
import netrc
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlparse

from sagebench.cells import Cell
from sagebench.metrics import ROW_METRICS
from sagebench.reporting import plots
from sagebench.results.model import RunResults
from sagebench.runtime.log import info

METRIC_KEYS = {m.name: m.wandb_key for m in ROW_METRICS}  # results row field -> W&B key prefix
TABLE_COLUMNS = ["strategy", "budget", *METRIC_KEYS]  # then any further numeric row fields, in row order


ROW_FIELDS_KEY = "row_fields"  # in the "sagebench" summary entry: the row field behind each key prefix


META_KEY = "sagebench"  # nested summary entry holding what the leaderboard needs besides the metrics


_NOT_META = ("config", "results", "output_dir", "report")  # config is the run's W&B config; results are the keys


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


def summary_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """The run summary: one key per (metric, strategy, budget), the ceiling, edge accuracy, fingerprint.

    Keys: ``offloaded_acc/<strategy>/B<budget>``, ``ceiling_ratio/...``, ``overall_acc/...``,
    ``coverage/...``, ``units_sent/...``, ``bytes_sent/...``, ``num_correct/...``,
    ``mean_ceiling_ratio/<strategy>``, ``ceiling/offloaded_acc``, ``ceiling/overall_acc``,
    ``edge_acc``, ``num_images``, ``num_offloaded``, ``offload_rate``, ``benchmark/name``,
    ``benchmark/fingerprint``; plus ``sagebench``: the results' metadata (benchmark fields,
    strategies, provenance), from which :func:`sagebench.leaderboard.wandb_pull.entry_from_wandb` rebuilds
    a leaderboard entry.
    """
    run = RunResults.from_json(results)
    out: dict[str, Any] = {
        "benchmark/name": run.benchmark.get("name"),
        "benchmark/fingerprint": run.fingerprint,
        "num_images": run.num_images,
        "num_offloaded": run.num_offloaded,
        "offload_rate": run.offload_rate,
        "edge_acc": run.edge_accuracy,
        "ceiling/offloaded_acc": run.ceiling.get("offloaded_accuracy"),
        "ceiling/overall_acc": run.ceiling.get("overall_accuracy"),
    }
    ratios: dict[str, list[float]] = {}
    fields = row_fields(results)
    for row in results["results"]:
        for field_name in fields:
            out[Cell.from_row(row).key(METRIC_KEYS.get(field_name, field_name))] = row.get(field_name)
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
                 guard: Any = None) -> dict[str, Any]:
    """One W&B run: config, summary, results table, curves, overlays and a results artifact."""
    from sagebench.reporting.report import Guard  # here: report imports this module

    guard = guard or Guard(out_dir)
    files = files or {}
    mode, why = wandb_mode()
    if mode == "disabled":
        info(f"W&B disabled ({why}); plots are in {out_dir}")
        return {"mode": mode}
    wandb = guard("importing wandb", __import__, "wandb")
    if wandb is None:
        return {"mode": "failed"}
    run = guard(f"starting the W&B run ({mode})", _init, wandb, mode, config, results, out_dir)
    if run is None and mode == "online":
        info("W&B unreachable: logging offline instead")
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
        info(f"W&B offline ({why}): run saved in {run_dir}; upload it later with `wandb sync {run_dir}`")
    else:
        info(f"W&B run: {url}")
    return {"mode": mode, "run_dir": str(run_dir), "url": url}


