"""``evaluate(config)``: the benchmark job, as named stages.

Why a function and not only a CLI: notebooks and other tools call it, and the CLI stays a thin
shell around it. Under DDP every process runs it; only global rank 0 writes and returns results.

The stages, in order: :func:`open_run_folder` (never overwrite, resume or refuse) ->
:func:`~sagebench.sweep.build.build` (models, strategies, data, budgets) -> run key ->
:func:`run_sweep` (``Trainer.test``; finished records saved as it goes) ->
:func:`finalise_records` (merge with earlier attempts, check each image counted once) ->
:func:`assemble_results` -> :func:`write_run` -> :func:`report_run` (plots, W&B).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from sagebench.config import load_config
from sagebench.cost import add_e2e_latency
from sagebench.data.labels import class_names
from sagebench.errors import (
    ConfigError,
    DataError,
    SageBenchError,
    without_worker_traceback,
)
from sagebench.metrics import SweepLayout, per_class, summarize
from sagebench.results import (
    RESULTS_FILE,
    SCHEMA_VERSION,
    RunResults,
    fingerprint,
    provenance,
    write_results,
    write_samples,
)
from sagebench.runtime import speed
from sagebench.runtime.files import atomic_write_text, check_writable
from sagebench.runtime.host_memory import keep_freed_memory
from sagebench.runtime.log import warn
from sagebench.seeds import seed_summary
from sagebench.sweep import resume as resume_lib
from sagebench.sweep.build import Sweep, attach_data, build
from sagebench.sweep.plan import RunPlan, plan_of
from sagebench.sweep.serving import CacheSettings
from sagebench.sweep.trainer import build_trainer, lightning_objects, log_results
from sagebench.transmission.channels import add_latency

if TYPE_CHECKING:  # Lightning (and torchmetrics) load when a run starts, not when this module is imported
    from sagebench.sweep.module import SageBenchModule
    from sagebench.sweep.partial import PartialResults


def evaluate(cfg: DictConfig | None = None, overrides: list[str] | None = None, *,
             callbacks: list[Any] | None = None, logger: Any = None,
             dataset: torch.utils.data.Dataset | None = None,
             on_results: Callable[[RunResults], None] | None = None) -> RunResults | None:
    """Run the sweep described by ``cfg`` (default: the embedded benchmark) and write its results.

    ``callbacks`` and ``logger``: Lightning objects for the Trainer (as ``trainer.callbacks`` /
    ``trainer.logger`` entries with ``class_path``/``init_args`` do from a config); every logger
    receives, once, from rank 0 and after the results are assembled, the resolved config as
    hyperparameters and the exact float64 summary with its 95% interval ends
    (:func:`~sagebench.sweep.trainer.log_results`). The module logs nothing through ``self.log``, so
    the ``Trainer.test`` inside returns no metrics (``[{}]``): the figures are this function's return.

    ``dataset``: the evaluation images already in memory, served instead of loading ``cfg.data``: a
    map-style data set whose item ``i`` is ``(image, label, sample_id=i)`` as
    :class:`~sagebench.data.images.EvalImages` yields (model input, label as a model index). Why: a
    benchmark that decoded the images once (``benchmarks/speed.py``) measures the sweep without the
    decode. ``cfg.data`` still names them (run key, fingerprint), so they must be the images it describes.

    ``on_results``: called with the results once they are on disk, before the plots and W&B are made
    (seconds, and tens of seconds with W&B): the CLI prints the table then, so plots never delay the numbers.

    Returns the typed results (:class:`~sagebench.results.RunResults`, also readable as the dict it
    used to be: ``res["results"]``, ``res["output_dir"]``, ``res.get("report")``) in the global-zero
    process (``None`` elsewhere). Writes
    ``<output_dir>/results.json``, ``samples.parquet`` and ``config.yaml``; while it runs,
    finished per-sample records are saved in ``<output_dir>/partial/`` so that a killed run can
    be continued with ``resume=true`` (see :mod:`sagebench.sweep.resume`).
    """
    cfg = cfg if cfg is not None else load_config(None, overrides or [])
    import lightning as L  # here, not at module level: importing this module stays cheap

    from sagebench.sweep.partial import PartialResults

    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    out_dir, run_state = open_run_folder(cfg)
    configure_runtime(cfg)
    sweep = build(cfg, load_data=False)  # the data is loaded by the data module's hooks (run_sweep)
    trainer_kwargs = lightning_objects(dict(OmegaConf.to_container(cfg.trainer, resolve=True)), callbacks, logger)
    if run_state.finished:  # resume=true on a finished run: nothing to evaluate
        return stored_results(run_state, finished_plan(sweep, trainer_kwargs, dataset), out_dir)
    layout = SweepLayout(tuple((s.label, b) for s in sweep.strategies for b in sweep.budgets),
                         budget_unit=sweep.budget_unit, scored=sweep.gate.curve)
    partial = PartialResults(out_dir, resume=bool(cfg.resume), flush_seconds=cfg.flush_seconds,
                             num_columns=layout.num_columns)
    try:  # the output-folder lock is released when evaluate returns or fails
        attempt = run_sweep(sweep, trainer_kwargs, partial, out_dir, dataset)
        if not attempt.trainer.is_global_zero:
            return None
        records = finalise_records(attempt, partial, sweep.num_images)
        results = assemble_results(sweep, attempt, records, partial, started)
        write_run(out_dir, cfg, records, results, partial)
    finally:
        partial.release()
    log_results(attempt.trainer.loggers, results)
    typed = RunResults.from_json(results)
    typed.output_dir = str(out_dir)
    if on_results is not None:
        on_results(typed)
    typed.report = report(sweep, results, records, out_dir, attempt.module.examples)
    return typed


def open_run_folder(cfg: DictConfig) -> tuple[Path, resume_lib.RunState]:
    """The output folder, checked now (writable; never overwrite results or unfinished work)."""
    if cfg.output_dir:
        out_dir = Path(cfg.output_dir)
    else:  # same folder in every process of a DDP launch: rank 0 picks it, children inherit SAGEBENCH_RUN_ID
        out_dir = resume_lib.auto_output_dir(Path("runs"), cfg.benchmark, resume=bool(cfg.resume))
    check_writable(out_dir)
    return out_dir, resume_lib.precheck(out_dir, bool(cfg.resume))


def configure_runtime(cfg: DictConfig) -> None:
    """Process-wide speed settings (threads, glibc's allocator); none changes the results."""
    speed.apply_threads(cfg.get("threads"))
    if cfg.get("reuse_host_memory", True):
        keep_freed_memory()


def finished_plan(sweep: Sweep, trainer_kwargs: dict[str, Any], dataset: Any = None) -> RunPlan:
    """The plan of a run whose results are on disk: its data loaded here, the Trainer's settings resolved."""
    attach_data(sweep, dataset=dataset)
    return plan_of(sweep, build_trainer(**{**trainer_kwargs, "logger": False, "enable_progress_bar": False,
                                            "enable_checkpointing": False, "enable_model_summary": False}))


def stored_results(run_state: resume_lib.RunState, plan: RunPlan, out_dir: Path) -> RunResults | None:
    """``resume=true`` on a finished run: its stored results (checked to be this run's)."""
    from sagebench.results.check import checked_results

    stored = resume_lib.finished_results(checked_results(out_dir), run_state, plan.run_key())
    warn(f"{out_dir} already holds the finished results of this run; nothing was evaluated.")
    if run_state.partial.is_dir() and resume_lib.is_launching_process():
        # a crash after results.json was written and before partial/ was removed: the results are complete
        shutil.rmtree(run_state.partial, ignore_errors=True)
        warn(f"removed {run_state.partial}, left behind by a run that had finished writing its results.")
        redraw_plots(stored, out_dir)
    typed = RunResults.from_json(stored)
    typed.output_dir = str(out_dir)
    return typed if os.environ.get("RANK", "0") == "0" else None


def redraw_plots(results: dict[str, Any], out_dir: Path) -> None:
    """The figures that need only results.json (curves, latency), when a crash left them undrawn."""
    from sagebench.reporting import plots

    for name, draw in ((plots.CURVES_FILE, plots.plot_results_curves), (plots.LATENCY_FILE, plots.plot_latency),
                       (plots.OPERATING_CURVE_FILE, plots.plot_operating_curve)):
        if not (out_dir / name).is_file():
            try:
                draw(results, out_dir / name)
            except Exception as exc:  # a figure never fails a run whose results are on disk
                warn(f"could not redraw {name} ({type(exc).__name__}: {exc}).")


@dataclass
class Attempt:
    """What one ``Trainer.test`` left behind."""

    trainer: Any
    module: SageBenchModule
    clock: speed.Stopwatch
    plan: RunPlan  # what the run is (built by the data module once the data was loaded)


def build_module(sweep: Sweep, partial: PartialResults) -> SageBenchModule:
    """The LightningModule, with every setting given to its constructor."""
    from sagebench.sweep.module import SageBenchModule

    cfg = sweep.cfg
    if cfg.get("compile", False):
        speed.compile_server(sweep.server)
    examples: tuple[int, int | None] = (0, None)
    if sweep.budget_unit == "patches":  # the overlays' images are kept as the sweep serves them (report)
        from sagebench.reporting.report import NUM_OVERLAY_IMAGES, overlay_budget

        examples = (NUM_OVERLAY_IMAGES, overlay_budget(sweep.budgets))
    return SageBenchModule(sweep.edge, sweep.server, sweep.strategies, sweep.budgets, gate=sweep.gate,
                           seed=cfg.seed, budget_unit=sweep.budget_unit,
                           codec=sweep.codec, dedupe=bool(cfg.get("dedupe", True)),
                           timer=speed.PhaseTimer(bool(cfg.get("profile", False))), earlier=partial,
                           server_batch_size=int(cfg.get("server_batch_size") or cfg.batch_size),
                           examples=examples)


def run_sweep(sweep: Sweep, trainer_kwargs: dict[str, Any], partial: PartialResults, out_dir: Path,
              dataset: torch.utils.data.Dataset | None = None) -> Attempt:
    """``Trainer.test`` over the data set; an error keeps the finished images and says how to resume.

    The data module prepares the data (a download) in ``prepare_data`` on one process per node, loads it in
    ``setup`` in every process and there builds the run's plan and serving decision, which the partial-results
    callback and the module read in their own ``setup`` (Lightning runs them after the data module's).
    """
    from sagebench.sweep.datamodule import SweepData, check_processes

    trainer_kwargs = dict(trainer_kwargs)
    trainer_kwargs["callbacks"] = [*(trainer_kwargs.get("callbacks") or []), partial,
                                   *progress_display(sweep.cfg, trainer_kwargs)]
    if trainer_kwargs.get("use_distributed_sampler"):
        raise ConfigError("trainer.use_distributed_sampler=true is not supported: Lightning's distributed sampler "
                          "pads each process's share with repeated images, which would count some twice. sagebench "
                          "gives each process its own images exactly once; remove the setting.")
    trainer = build_trainer(**{**dict(logger=False, enable_checkpointing=False, enable_model_summary=False,
                                      enable_progress_bar=bool(sweep.cfg.progress), inference_mode=True),
                               **trainer_kwargs, "use_distributed_sampler": False})
    check_processes(sweep.data.limit, trainer.world_size)  # known before any process is started
    module = build_module(sweep, partial)
    datamodule = SweepData(sweep, sweep.cfg.batch_size, speed.num_workers(sweep.cfg.data.num_workers, trainer),
                           earlier=partial, cache=CacheSettings.from_config(sweep.cfg.get("cache")), dataset=dataset)
    clock = speed.Stopwatch()  # wall and CPU seconds of the sweep itself
    try:
        trainer.test(module, datamodule=datamodule, verbose=False)
    except SageBenchError as exc:
        partial.release()
        exc = without_worker_traceback(exc)  # a DataLoader worker's error: its message, not its traceback
        kept = resume_lib.inspect_run(out_dir)
        if kept.unfinished and trainer.is_global_zero and not isinstance(exc, ConfigError):
            exc.args = (f"{exc} (The images finished so far are kept in {kept.partial}: fix this and rerun "
                        "with resume=true to continue.)",)
        raise exc from None
    except BaseException as exc:
        partial.release()
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) and resume_lib.inspect_run(out_dir).unfinished:
            warn(f"interrupted: the images finished so far are kept in {out_dir / 'partial'}; rerun with "
                 "resume=true to continue.")
        if type(exc).__name__ == "SIGTERMException":  # Lightning's SystemExit(None) would read as success
            raise SystemExit(143) from exc
        raise
    return Attempt(trainer, module, clock.stop(), datamodule.plan)


def progress_display(cfg: DictConfig, trainer_kwargs: dict[str, Any]) -> list[Any]:
    """sagebench's progress display (:class:`~sagebench.sweep.progress.SweepProgress`), in place of Lightning's
    batch bar: none with ``progress=false``, ``trainer.enable_progress_bar=false`` or a progress bar of the
    user's own among the callbacks (theirs is shown)."""
    from lightning.pytorch.callbacks import ProgressBar

    from sagebench.sweep.progress import SweepProgress

    if not cfg.progress or not trainer_kwargs.get("enable_progress_bar", True):
        return []
    if any(isinstance(c, ProgressBar) for c in trainer_kwargs.get("callbacks") or []):
        return []
    return [SweepProgress(every=float(cfg.get("progress_every", 30.0)))]


@dataclass
class Records:
    """The run's per-image records (global rank 0), every image once, corrupt ones set apart."""

    rows: np.ndarray
    layout: SweepLayout
    skipped: list[int]
    warnings: list[str]
    nonfinite: dict[str, Any]


def finalise_records(attempt: Attempt, partial: PartialResults, num_images: int | None) -> Records:
    """Merge this attempt's records with earlier attempts', check each image is counted once."""
    layout = attempt.module.layout
    # (no records at all when an earlier attempt had finished every image: Lightning skips an empty loop)
    this_attempt, _ = resume_lib.drop_redone(attempt.module.records, partial.done_ids, layout.num_columns)
    all_rows = resume_lib.merge_rows([partial.previous_rows, this_attempt], layout.num_columns)
    if all_rows.shape[0] != partial.previous_rows.shape[0] + this_attempt.shape[0]:
        raise RuntimeError("images of an earlier attempt were evaluated again (resume bug)")
    if num_images is not None and all_rows.shape[0] != num_images:
        raise RuntimeError(f"{all_rows.shape[0]} images evaluated but the data set has {num_images}: "
                           "each image must be counted exactly once")
    return records_of(all_rows, layout)


def records_of(all_rows: np.ndarray, layout: SweepLayout) -> Records:
    """Every image's records, corrupt ones set apart and NaN/Inf predictions counted (warned once)."""
    from sagebench.sweep import records as records_lib  # (torchmetrics: loaded when a run has records)

    rows, skipped = records_lib.split_skipped(all_rows, layout)
    warnings: list[str] = []  # printed now and kept in results.json
    if skipped:
        shown = ", ".join(map(str, skipped[:20])) + (", ..." if len(skipped) > 20 else "")
        warnings.append(f"skipped {len(skipped)} corrupt image(s) (data.on_error=skip), sample ids: {shown}; "
                        "they are excluded from every metric and listed in results.skipped.")
    if rows.shape[0] == 0 and skipped:
        raise DataError(f"No image could be evaluated: all {len(skipped)} were corrupt and skipped. "
                        "Check data.path and data.image_column.")
    nonfinite = records_lib.nonfinite_counts(rows, layout)
    warnings += records_lib.nonfinite_warnings(nonfinite, rows.shape[0])
    for line in warnings:
        warn(line)
    return Records(rows, layout, skipped, warnings, nonfinite)


def assemble_results(sweep: Sweep, attempt: Attempt, records: Records, partial: PartialResults,
                     started: float) -> dict[str, Any]:
    """The results dict (results.json) of a ``Trainer.test`` attempt (:func:`results_json`)."""
    module = attempt.module
    num_images = records.rows.shape[0]
    previous_evaluated = int((partial.previous_rows[:, records.layout.column("label")] >= 0).sum())
    return results_json(
        sweep, attempt.plan, records, strategies=sweep.strategies, device=str(module.device),
        world_size=attempt.trainer.world_size, summary=module.summary_of(records.rows),
        # the edge's cost of choosing (a cached rerun decodes no image: counts only)
        edge_cost=edge_cost_of(sweep, records, from_cache=bool(module.serving is not None and module.serving.from_cache)),
        strategy_stats=resume_lib.merge_strategy_stats(module, partial.previous_stats),
        resume={"key": partial.key, "attempts": partial.attempt, "images_resumed": int(partial.previous_rows.shape[0])},
        timing={"wall_seconds": round(time.perf_counter() - started, 3),
                "edge_forwards_per_image": (module.edge_images_total() + previous_evaluated) / max(1, num_images),
                **speed.timing_report(module, attempt.clock)})


def results_json(sweep: Sweep, plan: RunPlan, records: Records, *, strategies: list[Any], device: str,
                 world_size: int, strategy_stats: list[dict], resume: dict[str, Any], timing: dict[str, Any],
                 summary: dict[str, Any] | None = None, config: DictConfig | None = None,
                 edge_cost: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results dict (results.json): what was measured, on what, with what, by which code.

    One owner for a CLI run (:func:`assemble_results`) and a live session (:mod:`sagebench.session`), which
    gives its own ``strategies`` and ``config`` (the sweep's config with the strategies and budgets it ran).
    ``summary``: :func:`~sagebench.metrics.summarize` of ``records.rows`` when already computed.
    ``edge_cost``: the ``edge_cost`` block (:func:`edge_cost_of`), when measured (a session does not time it).
    """
    cfg = config if config is not None else sweep.cfg
    num_images = records.rows.shape[0]
    summary = summary or summarize(records.rows, records.layout)  # computed once
    for entry, cell in zip(summary["results"], records.nonfinite["cells"]):
        entry["nonfinite"] = cell["count"]
    add_latency(summary["results"], sweep.channels)
    add_e2e_latency(summary["results"], edge_cost)  # the latency the edge's choosing adds
    bench = plan.benchmark_fields(num_images, len(records.skipped))
    names = class_names(sweep.dataset)
    return RunResults(
        schema_version=SCHEMA_VERSION,
        benchmark={"name": cfg.benchmark, **bench, "fingerprint": fingerprint(bench)},
        config=OmegaConf.to_container(cfg, resolve=True),
        strategies=[{"label": s.label, "name": s.name, "options": s.options(), "code": s.code_identity(),
                     **({"oracle": True, "requires": sorted(s.requires)} if s.oracle else {})}
                    for s in strategies],
        provenance=provenance(device=device, world_size=world_size, precision=plan.precision),
        num_images=summary["num_images"],
        num_offloaded=summary["num_offloaded"],
        edge_accuracy=summary["edge_accuracy"],
        ceiling=summary["ceiling"],
        extra={"edge_accuracy_ci": summary["edge_accuracy_ci"], "intervals": summary["intervals"],
               **({"class_names": names, "per_class": per_class(records.rows, records.layout, names)}
                  if names else {}),
               **({"operating_curve": curve_of(sweep, records)} if records.layout.scored else {}),
               **({"edge_cost": edge_cost} if edge_cost is not None else {}),
               **({"seeds": seed_summary(summary["results"], list(cfg.seeds), int(cfg.seed))} if cfg.get("seeds") else {})},
        results=summary["results"],
        # how requests were packed, and the uplinks their latency is reported for (sagebench.transmission.channels)
        transmission={"codec": sweep.codec.describe(), "budget_unit": sweep.budget_unit,
                      "channels": [c.describe() for c in sweep.channels]},
        # counters some strategies report per (strategy, budget), e.g. how often a rule was cut to B
        strategy_stats=strategy_stats,
        # images that got NaN/Inf logits: counted as wrong, reported here (see sagebench.sweep.records)
        nonfinite=records.nonfinite,
        # corrupt images skipped under data.on_error=skip: excluded from every metric
        skipped={"count": len(records.skipped), "sample_ids": records.skipped},
        resume=resume,
        warnings=records.warnings,
        timing=timing,
    ).to_json()


def curve_of(sweep: Sweep, records: Records) -> dict[str, Any]:
    """The ``operating_curve`` block of a run with a list of gate thresholds (:mod:`sagebench.operating_curve`)."""
    from sagebench.operating_curve import operating_curve

    full = None
    if sweep.codec.describe().get("name") == "raw":  # the server-only point sends every unit's 8-bit pixels
        rows, cols = sweep.server.grid
        ph, pw = sweep.server.patch_size
        full = float(rows * cols * ph * pw * int(sweep.view["input_size"][0]))
    return operating_curve(records.rows, records.layout, sweep.gate.thresholds, gate=sweep.gate.name,
                           full_image_bytes=full, rule=sweep.gate.offload_at)


def edge_cost_of(sweep: Sweep, records: Records, from_cache: bool = False) -> dict[str, Any] | None:
    """The ``edge_cost`` block (:mod:`sagebench.cost`): each strategy's selection timed on a few offloaded images
    with one CPU thread, and its operation count; None when ``edge_cost.images=0``. A problem (a streamed data
    set, nothing offloaded) is recorded in the block, never a failed run."""
    from sagebench.cost import (
        EdgeDims,
        edge_forward_macs,
        edge_forward_ms,
        measure_edge_cost,
        offloaded_evidence,
        safe_macs,
    )

    settings = sweep.cfg.get("edge_cost") or {}
    wanted = int(settings.get("images", 0) or 0)
    if wanted <= 0:
        return None
    col = records.layout.column
    served = records.rows[records.rows[:, col("offloaded")] > 0.5, col("sample_id")].astype(np.int64)[:wanted]
    repeats = max(1, int(settings.get("repeats", 5)))
    try:
        dims = EdgeDims.of(sweep.edge.vit)
    except Exception as exc:  # not a timm ViT with the usual attributes: nothing to count
        warn(f"the edge's cost was not measured ({type(exc).__name__}: {exc}).")
        return {"skipped": f"{type(exc).__name__}: {exc}", "cells": []}
    try:
        if not len(served) or sweep.dataset is None or sweep.data.streaming or from_cache:
            raise ValueError("no offloaded image to time" if not len(served) else "a streamed data set"
                             if sweep.data.streaming else "a cached rerun reads no image")
        evidence, images = offloaded_evidence(sweep.edge, sweep.dataset, served.tolist(), int(sweep.cfg.seed))
        block = measure_edge_cost(sweep.strategies, sweep.budgets, evidence, images, sweep.server.patch_size,
                                  sweep.codec, dims, repeats=repeats,
                                  max_seconds=float(settings.get("max_seconds", 20.0)), budget_unit=sweep.budget_unit)
        block["edge_model"]["forward_ms"] = edge_forward_ms(sweep.edge, images, int(sweep.cfg.seed), repeats)
        return block
    except Exception as exc:  # a measurement beside the results never fails the run (its records are done)
        warn(f"the edge's selection was not timed ({type(exc).__name__}: {exc}); edge_cost holds the counts only.")
        return {"skipped": f"{type(exc).__name__}: {exc}", "edge_model": {"macs": edge_forward_macs(dims)},
                "cells": [{"strategy": s.label, "budget": b, "budget_unit": sweep.budget_unit,
                           "selection_macs": safe_macs(s, b, dims) if sweep.budget_unit == "patches" else None,
                           "select_ms": None, "encode_ms": None} for s in sweep.strategies for b in sweep.budgets]}


def write_run(out_dir: Path, cfg: DictConfig, records: Records, results: dict[str, Any],
              partial: PartialResults) -> None:
    """samples.parquet, config.yaml, then results.json (last: its presence means the run is complete).

    Never over another run's files: the folder's lock must still be this run's and results.json absent.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _check_folder_still_ours(out_dir, partial)
        write_samples(out_dir, records.rows, records.layout, class_names=results.get("class_names"))
        atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg))
        _check_folder_still_ours(out_dir, partial)
        write_results(out_dir, results)
    except OSError as exc:
        raise SageBenchError(f"Cannot write results to {out_dir}: {exc}. Set output_dir=PATH to a writable folder. "
                             f"(The evaluated images are kept in {partial.partial}: rerun with resume=true.)") from exc
    partial.finish()


def _check_folder_still_ours(out_dir: Path, partial: PartialResults) -> None:
    """Refuse to write when another run wrote results.json meanwhile or took the folder's lock over."""
    if (out_dir / RESULTS_FILE).exists() or not partial.holds_lock():
        raise ConfigError(
            f"Not writing the results of this run to {out_dir}: "
            + (f"{RESULTS_FILE} appeared there while it ran" if (out_dir / RESULTS_FILE).exists()
               else "its lock (partial/.lock) is no longer this run's")
            + " (another sagebench run wrote to the same folder), and sagebench never replaces another run's "
            "results. Rerun with another output_dir.")


def _overlay_units(results: list[dict[str, Any]], byte_budgets: list[int]) -> int:
    middle = sorted(byte_budgets)[(len(byte_budgets) - 1) // 2]
    sent = [r["units_sent"] for r in results if r["budget"] == middle and r.get("units_sent")]
    return max(1, round(sum(sent) / len(sent))) if sent else 1


def report(sweep: Sweep, results: dict[str, Any], records: Records, out_dir: Path,
           examples: dict[int, dict] | None = None) -> dict[str, Any]:
    """Plots + W&B (rank 0 only, after the results are on disk; never raises for a plot/W&B problem)."""
    from sagebench.reporting.report import RunContext, report_run

    # overlays show patch sets: under byte budgets, at the mean unit count of the middle byte budget
    budgets = (sweep.budgets if sweep.budget_unit == "patches"
               else [_overlay_units(results["results"], sweep.budgets)])
    return report_run(
        results["config"], {k: v for k, v in results.items() if k != "output_dir"}, out_dir,
        RunContext(edge=sweep.edge, strategies=sweep.strategies, dataset=None if sweep.data.streaming else sweep.dataset,
                   data_config=sweep.view, rows=records.rows, layout=records.layout, seed=sweep.cfg.seed,
                   budgets=budgets, examples=examples))
