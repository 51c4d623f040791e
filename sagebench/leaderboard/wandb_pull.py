"""Leaderboard entries rebuilt from W&B runs (``sagebench leaderboard pull --wandb``)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from sagebench.cells import parse_key
from sagebench.errors import LeaderboardError, SageBenchError
from sagebench.leaderboard.store import submit


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
    """The sweep's config from a W&B run config.

    Run configs come as ``{key: value}`` or, in raw API JSON, ``{key: {"value": v, "desc": ...}}``;
    the ``sagebench/...`` keys W&B groups and filters on (benchmark, fingerprint, models) are not
    the sweep's config and are dropped; a user's own run that sagebench logged into holds the
    sweep's config under ``sagebench``.
    """
    config = {k: v for k, v in _plain(config).items() if not str(k).startswith("_")}
    if config and all(isinstance(v, dict) and "value" in v for v in config.values()):
        config = {k: v["value"] for k, v in config.items()}
    config = {k: v for k, v in config.items() if not str(k).startswith("sagebench/")}
    if set(config) == {"sagebench"} and isinstance(config["sagebench"], dict):
        config = config["sagebench"]
    return config


def _is_strategy_run(run: Any) -> bool:
    """One of the per-strategy runs a sweep logs beside its own (a view of the same sweep)."""
    if getattr(run, "job_type", None) == "strategy":
        return True
    try:
        config = _plain(getattr(run, "config", {}) or {})
    except Exception:
        return False
    return isinstance(config, dict) and "sagebench/strategy" in config


def entry_from_wandb(summary: Mapping[str, Any], config: Mapping[str, Any], name: str, run_id: str,
                     path: str | None = None, url: str | None = None) -> dict[str, Any]:
    """Rebuild a results entry from a run logged by sagebench (see ``tracking.summary_metrics``)."""
    from sagebench.reporting.wandb import META_KEY, METRIC_KEYS, ROW_FIELDS_KEY

    summary = _plain(summary)
    meta = summary.get(META_KEY)
    if not isinstance(meta, dict) or "benchmark" not in meta:
        raise LeaderboardError(f"W&B run {run_id} ({name}) was not logged by sagebench (no {META_KEY!r} summary).")
    prefix_to_field = {p: f for f, p in METRIC_KEYS.items()}
    prefix_to_field.update(meta.get(ROW_FIELDS_KEY) or {})
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for key, value in summary.items():
        if str(key).partition("/")[0] not in prefix_to_field:
            continue
        try:
            prefix, cell = parse_key(str(key))
        except SageBenchError:  # e.g. mean_ceiling_ratio/<strategy>: not a cell
            continue
        row = rows.setdefault((cell.strategy, cell.budget), {"strategy": cell.strategy, "budget": cell.budget})
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
    if "nonfinite" in fields:  # the logger leaves out all-zero NaN/Inf counters: absent means 0
        for row in entry["results"]:
            row.setdefault("nonfinite", 0)
    _derived_row_fields(entry)
    entry["wandb_run"] = {"id": run_id, "name": name, "path": path, "url": url}
    return entry


def _derived_row_fields(entry: dict[str, Any]) -> None:
    """Row fields W&B does not hold as numbers, rebuilt from the run's metadata: the budget unit and
    the latency per channel (a function of ``bytes_sent`` and the channels the run reported)."""
    from sagebench.transmission.channels import Channel, add_latency

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
    verified: bool = False  # submitted with the per-sample file of its W&B artifact


def entries_from_runs(runs: Iterable[Any]) -> list[tuple[Any, dict[str, Any] | None, str | None]]:
    """``(run, entry or None, why skipped)`` for W&B public-API run objects (or look-alikes).

    A run-like object has ``id``, ``name``, ``config`` and ``summary_metrics`` (or ``summary``);
    optionally ``state``, ``job_type``, ``path`` (list or str), ``url`` and ``logged_artifacts()``.
    Unfinished runs and the per-strategy runs of a sweep are skipped.
    """
    out = []
    for run in runs:
        run_id, name = str(getattr(run, "id", "?")), str(getattr(run, "name", "") or "")
        state = getattr(run, "state", "finished")
        if state not in (None, "finished"):
            out.append((run, None, f"run state is {state!r}, not finished"))
            continue
        if _is_strategy_run(run):
            out.append((run, None, "a per-strategy view of a sweep (job_type strategy): the entry comes from "
                                   "the sweep's own run"))
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

    The per-sample file comes from the run's ``sagebench-results`` artifact when it can be fetched
    (the entry is then verified against its records and ranked); otherwise the entry goes in
    without one: listed on the board, never ranked.

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
            with tempfile.TemporaryDirectory(prefix="sagebench-pull-") as tmp:
                samples = run_samples(run, Path(tmp))
                try:
                    # without its records (no artifact) the entry is listed but never ranked
                    saved = submit(entry, board=board, root=root, name=f"wandb-{outcome.run_id}",
                                   samples=samples, allow_unverified=samples is None)
                    outcome.entry, outcome.board = saved.name, saved.path.parent.parent.name
                    outcome.verified = saved.samples_path is not None
                except LeaderboardError as exc:
                    outcome.skipped = str(exc)
        outcomes.append(outcome)
    return outcomes


def run_samples(run: Any, folder: Path) -> Path | None:
    """The run's ``samples.parquet`` from its ``sagebench-results`` artifact, downloaded to ``folder``;
    None when the run has none or it cannot be fetched (the entry then goes in unverified)."""
    try:
        artifacts = [a for a in run.logged_artifacts() if getattr(a, "type", None) == "sagebench-results"]
    except Exception:  # no artifacts API on this object, no network
        return None
    for artifact in artifacts:
        try:
            got = Path(artifact.download(root=str(folder / str(getattr(artifact, "name", "a")).replace("/", "_"))))
        except Exception:
            continue
        candidate = got / "samples.parquet"
        if candidate.is_file() and not candidate.is_symlink():
            return candidate
    return None
