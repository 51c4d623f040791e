"""After a run: PNG plots in the output folder and, with ``logger: wandb``, a Weights & Biases run.

Why a post-run step rather than a Lightning logger inside the sweep: every figure the run is
judged by (exact metrics, curves, the table) exists only once the records of all processes are
gathered on rank 0, and the overlays need a single extra edge pass on a handful of images,
which costs nothing next to the sweep. :func:`report_run` is called by ``evaluate`` on global
rank 0 only (other ranks return before it), so nothing is logged twice.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from sagebench.data.labels import class_names
from sagebench.reporting import plots
from sagebench.reporting.guard import Guard
from sagebench.reporting.wandb import log_to_wandb

NUM_OVERLAY_IMAGES = 4


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
    # what the sweep kept of the first offloaded images it served (SageBenchModule.examples): drawn as they are
    examples: dict[int, dict] | None = None


def overlay_budget(budgets: Sequence[int]) -> int:
    """The budget the overlays show: the median of the sweep's budgets (the middle of the curve)."""
    ordered = sorted(int(b) for b in budgets)
    return ordered[(len(ordered) - 1) // 2]


def overlay_sample_ids(rows: np.ndarray, layout: Any, k: int = NUM_OVERLAY_IMAGES) -> list[int]:
    """The first ``k`` offloaded images by sample id: fixed for a data set, edge model and gate."""
    off = rows[:, layout.column("offloaded")] > 0.5
    return [int(i) for i in rows[off, layout.column("sample_id")][:k]]


def selection_examples(ctx: RunContext, k: int = NUM_OVERLAY_IMAGES) -> list[plots.Example]:
    """Image, edge attention and each strategy's chosen patches at :func:`overlay_budget`."""
    import torch

    if ctx.edge is None or ctx.dataset is None or ctx.rows is None or not hasattr(ctx.dataset, "__getitem__"):
        return []
    ids = overlay_sample_ids(ctx.rows, ctx.layout, k)
    if not ids:
        return []
    budget = overlay_budget(ctx.budgets)
    drawn = [s.label for s in ctx.strategies if not s.oracle]
    kept = ctx.examples or {}
    if all(i in kept and set(kept[i]["selections"]) == set(drawn) for i in ids):  # the sweep's own: nothing again
        return _examples(ctx, ids, budget, torch.stack([kept[i]["image"] for i in ids]),
                         torch.stack([kept[i]["attention"] for i in ids]), [kept[i]["edge_pred"] for i in ids],
                         [kept[i]["label"] for i in ids], {s: [kept[i]["selections"][s] for i in ids] for s in drawn})
    items = [ctx.dataset[i] for i in ids]
    device = next(ctx.edge.parameters()).device
    images = torch.stack([it[0] for it in items]).to(device)
    labels = [int(it[1]) for it in items]
    sample_ids = torch.tensor(ids, dtype=torch.int64, device=device)
    with torch.no_grad():
        evidence = ctx.edge(images, sample_ids, ctx.seed)
        # oracles read evidence only the sweep's server pass has: not drawn on the edge's own overlays
        selections = {s.label: s.choose(evidence, budget).indices.cpu().tolist() for s in ctx.strategies
                      if not s.oracle}
    return _examples(ctx, ids, budget, images, evidence.attention, evidence.logits.argmax(-1).tolist(), labels,
                     selections)


def _examples(ctx: RunContext, ids: list[int], budget: int, images: Any, attention: Any, preds: list[int],
              labels: list[int], selections: dict[str, list[list[int]]]) -> list[plots.Example]:
    """The overlay examples from the model input, attention, edge predictions and chosen patches of ``ids``."""
    mean = np.asarray(ctx.data_config.get("mean") or (0.0,), dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(ctx.data_config.get("std") or (1.0,), dtype=np.float32).reshape(-1, 1, 1)
    pixels = np.clip(images.float().cpu().numpy() * std + mean, 0.0, 1.0)
    grid = tuple(ctx.edge.grid)
    patch = (pixels.shape[2] // grid[0], pixels.shape[3] // grid[1])
    attention = attention.float().cpu().numpy().reshape(-1, *grid)
    names = class_names(ctx.dataset)
    out = []
    for j, sid in enumerate(ids):
        img = pixels[j]
        img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
        out.append(plots.Example(sample_id=sid, label=labels[j], edge_pred=int(preds[j]), image=img,
                                 attention=attention[j], patch_size=patch, budget=budget,
                                 selections={s: [int(x) for x in sel[j]] for s, sel in selections.items()},
                                 class_names=names))
    return out


def draw_all(jobs: list[tuple[str, str, Callable[..., Any], tuple]], guard: Guard) -> dict[str, Any]:
    """``{key: fn(*args)}`` of each figure job, drawn side by side in forked processes where that pays.

    Why: the figures are independent and drawing them is most of a run's report time (about a
    second each on a CPU core); on Linux with cores to spare each is drawn in a forked child
    (matplotlib is imported first, so the children share it), which writes its file atomically and
    returns the path through a pipe. Elsewhere, or with one core, they are drawn in turn. A
    failure is a warning either way (:class:`Guard`), never a failed run.
    """
    if len(jobs) < 2 or not hasattr(os, "fork") or sys.platform != "linux" or len(os.sched_getaffinity(0)) < 2:
        return {key: guard(what, fn, *args) for key, what, fn, args in jobs}
    plots.figure(1, 1)  # import matplotlib before forking
    children = []
    for key, what, fn, args in jobs[:-1]:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: draw, report, leave without running the parent's exit handlers
            os.close(read)
            try:
                out = fn(*args)
                message = {"ok": None if out is None else str(out)}
            except BaseException as exc:  # noqa: BLE001 - reported by the parent as a warning
                message = {"error": f"{type(exc).__name__}: {exc}"}
            with os.fdopen(write, "w") as fh:
                fh.write(json.dumps(message))
            os._exit(0)
        os.close(write)
        children.append((key, what, pid, read))
    key, what, fn, args = jobs[-1]
    out: dict[str, Any] = {key: guard(what, fn, *args)}
    for key, what, pid, read in children:
        with os.fdopen(read) as fh:
            text = fh.read()
        os.waitpid(pid, 0)
        message = json.loads(text) if text else {"error": "the drawing process died"}
        if "error" in message:
            out[key] = guard(what, _raise, message["error"])
        else:
            out[key] = None if message["ok"] is None else Path(message["ok"])
    return out


def _raise(message: str) -> None:
    raise RuntimeError(message)


def report_run(config: dict[str, Any], results: dict[str, Any], out_dir: str | os.PathLike,
               ctx: RunContext | None = None) -> dict[str, Any]:
    """Write ``curves.png`` and ``overlays.png`` into ``out_dir`` and log to W&B when configured.

    ``config`` is the resolved config as a plain dict (``logger``, ``wandb.*``). Never raises
    for a plotting or W&B problem: each prints one warning line. Returns what was produced:
    ``{"curves": path, "overlays": path, "wandb": {...}, "seconds": s}``.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    guard = Guard(out_dir)
    info: dict[str, Any] = {}
    examples = guard("drawing the selection overlays", selection_examples, ctx) if ctx is not None else None
    jobs = [("curves", "plotting the curves", plots.plot_results_curves, (results, out_dir / plots.CURVES_FILE)),
            ("latency", "plotting accuracy against latency", plots.plot_latency, (results, out_dir / plots.LATENCY_FILE))]
    if results.get("operating_curve"):  # a list of gate thresholds: the system view
        jobs.append(("operating_curve", "plotting the operating curve", plots.plot_operating_curve,
                     (results, out_dir / plots.OPERATING_CURVE_FILE)))
    if examples:
        jobs.append(("overlays", "plotting the overlays", plots.plot_overlays, (examples, out_dir / plots.OVERLAYS_FILE)))
    info.update(draw_all(jobs, guard))
    if str(config.get("logger", "wandb")) == "wandb":
        info["wandb"] = log_to_wandb(config, results, out_dir, examples or [], info, guard)
    info["seconds"] = round(time.perf_counter() - started, 3)
    return {k: str(v) if isinstance(v, Path) else v for k, v in info.items() if v is not None}
