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
from sagebench.metrics import ROW_METRICS, interval_keys
from sagebench.reporting import plots
from sagebench.reporting.guard import Guard
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
            if field_name == "nonfinite" and not row.get(field_name):
                continue  # all-zero NaN/Inf counters are noise in the runs table; a non-zero one is logged
            out[Cell.from_row(row).key(METRIC_KEYS.get(field_name, field_name))] = row.get(field_name)
        if row.get("ceiling_ratio") is not None:
            ratios.setdefault(row["strategy"], []).append(float(row["ceiling_ratio"]))
    for strategy, values in ratios.items():
        out[f"mean_ceiling_ratio/{strategy}"] = sum(values) / len(values)
    out.update(edge_cost_metrics(results))
    meta = {k: v for k, v in results.items() if k not in _NOT_META}
    meta[ROW_FIELDS_KEY] = {METRIC_KEYS.get(f, f): f for f in fields}
    out[META_KEY] = meta
    return out


def edge_cost_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The edge's cost of choosing per cell (:mod:`sagebench.cost`): ``edge_selection_macs/<strategy>/B<b>``,
    ``edge_select_ms/...`` and ``edge_encode_ms/...`` (single-thread CPU, machine-dependent), and
    ``e2e_latency_ms_<channel>/...``; none of them is a results-row field, so ``leaderboard pull`` ignores them."""
    out: dict[str, float] = {}
    for c in (results.get("edge_cost") or {}).get("cells") or []:
        cell = Cell(str(c["strategy"]), int(c["budget"]), c.get("budget_unit", "patches"))
        for name in ("selection_macs", "select_ms", "encode_ms"):
            if c.get(name) is not None:
                out[cell.key(f"edge_{name}")] = c[name]
        for channel, ms in (c.get("e2e_latency_ms") or {}).items():
            if ms is not None:
                out[cell.key(f"e2e_latency_ms_{channel}")] = ms
    return out


def row_fields(results: dict[str, Any]) -> list[str]:
    """The numeric fields of the result rows: :data:`METRIC_KEYS` first, then any newer ones."""
    extra = [k for r in results["results"] for k, v in r.items()
             if k not in ("strategy", "budget") and k not in METRIC_KEYS
             and (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))]
    return [*METRIC_KEYS, *dict.fromkeys(extra)]


CI_FIELDS = ("offloaded_accuracy_ci", "overall_accuracy_ci", "ceiling_ratio_ci")  # [low, high] in each row


def _ci_columns(results: dict[str, Any]) -> list[str]:
    present = [f for f in CI_FIELDS if any(r.get(f) for r in results["results"])]
    return [f"{f[:-3]}_{side}" for f in present for side in ("low", "high")]


def table_columns(results: dict[str, Any]) -> list[str]:
    return ["strategy", "budget", *row_fields(results), *_ci_columns(results)]


def _ci_values(row: dict[str, Any], columns: list[str]) -> list[float | None]:
    out = []
    for c in columns:
        base, side = c.rsplit("_", 1)
        ci = row.get(f"{base}_ci")
        out.append(None if not ci else float(ci[0 if side == "low" else 1]))
    return out


def table_rows(results: dict[str, Any]) -> list[list[Any]]:
    """Rows of the results table, columns :func:`table_columns` (intervals as ``*_low``/``*_high``)."""
    fields, cis = row_fields(results), _ci_columns(results)
    return [[r["strategy"], int(r["budget"]), *(r.get(f) for f in fields), *_ci_values(r, cis)]
            for r in results["results"]]


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


def run_tags(results: dict[str, Any], extra: Sequence[str] = ()) -> list[str]:
    """Tags W&B filters on: the benchmark, edge and server names (plus the config's own)."""
    bench = results["benchmark"]
    tags = [*extra, f"benchmark:{bench.get('name')}", f"edge:{bench['edge']['name']}",
            f"server:{bench['server']['name']}"]
    return [t[:64] for t in dict.fromkeys(tags)]  # W&B caps a tag at 64 characters


def benchmark_config(results: dict[str, Any]) -> dict[str, Any]:
    """The config keys a shared W&B project groups and filters on (``sagebench/...``)."""
    bench = results["benchmark"]
    return {"sagebench/benchmark": bench.get("name"), "sagebench/fingerprint": bench.get("fingerprint"),
            "sagebench/edge": bench["edge"]["name"], "sagebench/edge_weights": bench["edge"].get("weights"),
            "sagebench/server": bench["server"]["name"], "sagebench/server_weights": bench["server"].get("weights"),
            "sagebench/dataset": bench.get("dataset"), "sagebench/num_images": bench.get("num_images")}


def _init(wandb: Any, mode: str, config: dict[str, Any], results: dict[str, Any], out_dir: Path, *,
          job_type: str = "eval", name: str | None = None, run_config: dict[str, Any] | None = None,
          group: str | None = None, new: bool = False) -> Any:
    wb = config.get("wandb") or {}
    settings = _settings(wandb, silent=True, console="off", x_disable_stats=True, save_code=False,
                         x_save_requirements=False, disable_job_creation=True, init_timeout=30.0)
    bench = results["benchmark"]
    kwargs: dict[str, Any] = {"reinit": "create_new"} if new else {}
    return wandb.init(project=wb.get("project") or "sagebench", entity=wb.get("entity") or None,
                      name=name or wb.get("name") or f"sweep @ {bench.get('name')}",
                      tags=run_tags(results, wb.get("tags") or []),
                      config=run_config if run_config is not None else {**config, **benchmark_config(results)},
                      dir=str(out_dir), mode=mode, job_type=job_type, group=group or bench.get("fingerprint"),
                      settings=settings, **kwargs)


def strategy_summary(results: dict[str, Any], label: str) -> dict[str, Any]:
    """One strategy's W&B summary: mean ceiling ratio, and every budget's figures and intervals."""
    rows = [r for r in results["results"] if r["strategy"] == label]
    ratios = [float(r["ceiling_ratio"]) for r in rows if r.get("ceiling_ratio") is not None]
    out: dict[str, Any] = {
        "mean_ceiling_ratio": sum(ratios) / len(ratios) if len(ratios) == len(rows) and rows else None,
        "benchmark/fingerprint": results["benchmark"].get("fingerprint"),
        "benchmark/name": results["benchmark"].get("name"),
        "num_images": results.get("num_images"), "num_offloaded": results.get("num_offloaded"),
        "edge_acc": results.get("edge_accuracy"),
        "ceiling/offloaded_acc": (results.get("ceiling") or {}).get("offloaded_accuracy"),
    }
    for r in rows:
        cell = Cell.from_row(r)
        for f in row_fields(results):
            out[cell.key(METRIC_KEYS.get(f, f))] = r.get(f)
        out.update(interval_keys(r))
    out[META_KEY] = {**{k: v for k, v in results.items() if k not in _NOT_META},
                     "strategies": [s for s in results.get("strategies") or [] if s.get("label") == label],
                     ROW_FIELDS_KEY: {METRIC_KEYS.get(f, f): f for f in row_fields(results)}}
    return out


def per_budget_keys() -> list[str]:
    """The keys a strategy's run logs once per budget (its curves), with their interval bounds."""
    keys = list(METRIC_KEYS.values())
    return keys + [f"{METRIC_KEYS[f[:-3]]}_{side}" for f in CI_FIELDS for side in ("low", "high")]


def offline_hint(why: str, run_dir: Path, num_strategy_runs: int) -> str:
    """The line that says where the offline runs are and how to upload *all* of them.

    Why all: a sweep logs one run for the sweep and one per strategy (the rows of a W&B board), each its
    own ``offline-run-*`` folder; syncing only the sweep's leaves the board empty.
    """
    runs = f"the sweep's run and its {num_strategy_runs} per-strategy run(s)" if num_strategy_runs else "the run"
    return (f"W&B offline ({why}): {runs} saved in {run_dir.parent}; upload them all later with "
            f"`wandb sync {run_dir.parent}/offline-run-*`")


def log_strategy_runs(wandb: Any, mode: str, config: dict[str, Any], results: dict[str, Any], out_dir: Path,
                      guard: Guard) -> list[str]:
    """One W&B run per strategy (job_type ``strategy``, grouped by the benchmark fingerprint).

    Why: a shared project's runs table, filtered by ``sagebench/fingerprint`` and sorted by
    ``mean_ceiling_ratio``, is then a ranked leaderboard; ``budget`` is each run's step metric, so
    W&B draws accuracy against budget across runs. Each run is started with
    ``reinit="create_new"`` and finished here; no other run is touched.
    """
    bench = results["benchmark"]
    ids = []
    for entry in results.get("strategies") or []:
        label = entry["label"]
        run_config = {**config, **benchmark_config(results), "sagebench/strategy": label,
                      "sagebench/strategy_name": entry.get("name"), "sagebench/options": entry.get("options"),
                      "sagebench/budget_unit": (results.get("transmission") or {}).get("budget_unit", "patches")}
        run = guard(f"starting the W&B run of {label}", _init, wandb, mode, config, results, out_dir,
                    job_type="strategy", name=f"{label} @ {bench.get('name')}", run_config=run_config, new=True)
        if run is None:
            continue
        guard("declaring budget as the step metric", lambda: (run.define_metric("budget"),
                                                              run.define_metric("*", step_metric="budget")))
        # a per-budget curve has no single value: W&B would otherwise summarise each one by its last budget
        guard("keeping per-budget curves out of the summary", lambda: [
            run.define_metric(key, step_metric="budget", summary="none") for key in per_budget_keys()])
        for r in sorted((r for r in results["results"] if r["strategy"] == label), key=lambda r: r["budget"]):
            point = {"budget": int(r["budget"]), **{METRIC_KEYS[f]: r.get(f) for f in METRIC_KEYS if r.get(f) is not None}}
            for f in CI_FIELDS:
                if r.get(f):
                    point[f"{METRIC_KEYS[f[:-3]]}_low"], point[f"{METRIC_KEYS[f[:-3]]}_high"] = map(float, r[f])
            guard(f"logging {label} at budget {r['budget']}", run.log, point)
        guard(f"writing the W&B summary of {label}", run.summary.update, strategy_summary(results, label))
        ids.append(getattr(run, "id", None))
        guard(f"finishing the W&B run of {label}", run.finish)
    return ids


def log_to_wandb(config: dict[str, Any], results: dict[str, Any], out_dir: Path,
                 examples: Sequence[plots.Example] = (), files: dict[str, Any] | None = None,
                 guard: Guard | None = None) -> dict[str, Any]:
    """One W&B run: config, summary, results table, curves, overlays and a results artifact."""
    guard = guard or Guard(out_dir)
    files = files or {}
    mode, why = wandb_mode()
    if mode == "disabled":
        info(f"W&B disabled ({why}); plots are in {out_dir}")
        return {"mode": mode}
    wandb = guard("importing wandb", __import__, "wandb")
    if wandb is None:
        return {"mode": "failed"}
    own = getattr(wandb, "run", None) is None  # a run the user opened is reused, logged into, never finished
    if own:
        run = guard(f"starting the W&B run ({mode})", _init, wandb, mode, config, results, out_dir)
        if run is None and mode == "online":
            info("W&B unreachable: logging offline instead")
            mode, why = "offline", "W&B unreachable"
            run = guard("starting the W&B run (offline)", _init, wandb, mode, config, results, out_dir)
    else:
        run = wandb.run
        mode = str(getattr(getattr(run, "settings", None), "mode", None) or mode)
        guard("logging the config to your W&B run", run.config.update,
              {"sagebench": config, **benchmark_config(results)}, allow_val_change=True)
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
    strategy_runs = log_strategy_runs(wandb, mode, config, results, out_dir, guard)
    if own:
        guard("finishing the W&B run", run.finish)
    if mode == "offline":
        info(offline_hint(why, run_dir, len(strategy_runs or [])))
    else:
        info(f"W&B run: {url}")
    return {"mode": mode, "run_dir": str(run_dir), "url": url, "reused_run": not own, "strategy_runs": strategy_runs}


