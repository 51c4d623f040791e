"""Strategy accuracy on offloaded images with a focused versus a diffuse edge attention map.

Why: a strategy that trusts the edge's attention (``attention_prefix``) should do well when the
attention is concentrated on a few patches and badly when it is spread out, where spatial
diversity (``sage``, ``uniform``) ought to help. Splitting the offloaded images at the median
Shannon entropy of the edge's attention row tests that directly, from the run's own predictions:
only the edge is recomputed (one pass per offloaded image) to get the entropy.

The split: images sorted by entropy (ties by sample id); the lower ``n // 2`` form the
low-entropy half, the remaining ``n - n // 2`` the high-entropy half, so the halves partition
the offloaded images exactly and their correct counts add up to the run's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sagebench.analysis._figures import figure, save, title_of
from sagebench.analysis._run import (
    AnalysisError,
    build_models,
    load_run,
    offloaded_batches,
    provenance,
    write_outputs,
)
from sagebench.analysis.base import Analysis, register_analysis

NAME = "entropy-split"
HALVES = ("low", "high")


def attention_entropy(attention: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each attention row ``[b, N]`` (rows sum to 1); 0 * log 0 = 0."""
    return torch.special.entr(attention.double().clamp_min(0.0)).sum(dim=-1)


def split_by_entropy(entropy: np.ndarray, sample_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (low, high): the ``n // 2`` lowest entropies, and the rest (ties by sample id)."""
    order = np.lexsort((sample_ids, entropy))
    low = np.zeros(entropy.size, dtype=bool)
    low[order[: entropy.size // 2]] = True
    return low, ~low


def _half(ok: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    n, correct = int(mask.sum()), int((ok & mask).sum())
    return {"accuracy": correct / n if n else None, "correct": correct, "count": n}


def entropy_split(run_dir: str | Path, limit: int | None = None, *, batch_size: int | None = None,
                  device: str | None = None, out_dir: str | Path | None = None,
                  command: str | None = None) -> dict[str, Any]:
    """Offloaded accuracy per strategy and budget on the low- and high-attention-entropy halves.

    ``limit`` analyses only the first ``limit`` offloaded images (by sample id). The server's
    ceiling (all N patches) and the edge's own accuracy are split the same way, as references.
    Writes ``analysis/entropy-split.json`` and ``.png`` (or into ``out_dir``) and returns the
    JSON's content.
    """
    run = load_run(run_dir)
    ids = run.offloaded_ids(limit)
    # the entropy is of evidence.attention, which does not depend on the strategies (no rollout needed)
    models = build_models(run, with_server=False, device=device, batch_size=batch_size)
    entropy = np.zeros(ids.size, dtype=np.float64)
    edge_pred = np.zeros(ids.size, dtype=np.int64)
    start = 0
    for batch in offloaded_batches(models, ids):
        at = slice(start, start + batch.sample_ids.size)
        if not np.array_equal(batch.sample_ids, ids[at]):
            raise RuntimeError("images came back out of order")
        entropy[at] = attention_entropy(batch.evidence.attention).cpu().numpy()
        edge_pred[at] = batch.evidence.logits.argmax(-1).cpu().numpy()
        start = at.stop
    low, high = split_by_entropy(entropy, ids)
    masks = {"low": low, "high": high}

    def split(column: str) -> dict[str, Any]:
        ok = run.correct(column, ids)
        return {h: _half(ok, m) for h, m in masks.items()} | {"all": _half(ok, np.ones_like(ok))}

    cells = []
    for label in run.labels:
        for b in run.budgets:
            column = run.cell_column("pred", label, b)
            if column in run.samples:
                cells.append({"strategy": label, "budget": b, **split(column)})
    if not cells:
        raise AnalysisError(f"{run.path / 'samples.parquet'} has no prediction column of the run's strategies.")
    pos = np.searchsorted(run.column("sample_id"), ids)
    n = run.num_patches
    payload: dict[str, Any] = {
        "analysis": NAME,
        "provenance": provenance(run, command),
        "limit": limit,
        "num_offloaded": int(run.column("offloaded").astype(bool).sum()),
        "num_analysed": int(ids.size),
        "budget_unit": run.budget_unit,
        "edge_attention_kind": str(models.cfg.model.edge.attention),
        "entropy": {
            "unit": "nats",
            "max": math.log(n),  # a uniform attention map over the N patches
            "median": float(np.median(entropy)),
            "low_max": float(entropy[low].max()) if low.any() else None,
            "high_min": float(entropy[high].min()) if high.any() else None,
            "low_mean": float(entropy[low].mean()) if low.any() else None,
            "high_mean": float(entropy[high].mean()) if high.any() else None,
        },
        "reproduction_mismatches": {"edge_pred": int((run.column("edge_pred")[pos] != edge_pred).sum())},
        "ceiling": split("ceiling_pred"),
        "edge": split("edge_pred"),
        "cells": cells,
        "images": {"sample_ids": ids, "entropy": entropy, "half": np.where(low, "low", "high")},
    }
    return write_outputs(run, NAME, payload, plot_entropy_split, out_dir)


def plot_entropy_split(payload: dict[str, Any], path: Path) -> Path:
    """Offloaded accuracy vs budget, one line per strategy; left: low-entropy half, right: high."""
    fig = figure(10.4, 4.0)
    strategies = list(dict.fromkeys(c["strategy"] for c in payload["cells"]))
    budgets = sorted({c["budget"] for c in payload["cells"]})
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    for ax, half in zip(axes, HALVES):
        for s in strategies:
            pts = [(c["budget"], 100.0 * c[half]["accuracy"]) for c in payload["cells"]
                   if c["strategy"] == s and c[half]["accuracy"] is not None]
            if pts:
                xs, ys = zip(*sorted(pts))
                ax.plot(xs, ys, marker="o", markersize=4, linewidth=1.6, label=s)
        ceiling = payload["ceiling"][half]["accuracy"]
        if ceiling is not None:
            ax.axhline(100.0 * ceiling, color="0.3", linestyle=":", linewidth=1.2, label="ceiling (all patches)")
        e = payload["entropy"]
        bound = f"H <= {e['low_max']:.2f}" if half == "low" else f"H >= {e['high_min']:.2f}"
        ax.set_title(f"{half} attention entropy ({bound} nats, {payload['ceiling'][half]['count']} images)",
                     fontsize=9)
        ax.set_xlabel("budget B (patches sent)" if payload.get("budget_unit", "patches") == "patches"
                      else "byte budget per request")
        ax.set_ylabel("offloaded accuracy (%)")
        if budgets:
            ax.set_xticks(budgets)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title_of(payload)}: accuracy by edge attention entropy (median {payload['entropy']['median']:.3f}, "
                 f"max log N = {payload['entropy']['max']:.3f})", fontsize=10)
    return save(fig, path)


def format_entropy_split(payload: dict[str, Any]) -> str:
    """Terminal table: per strategy, per budget, accuracy % low-entropy half / high-entropy half."""
    e = payload["entropy"]
    budgets = sorted({c["budget"] for c in payload["cells"]})
    strategies = list(dict.fromkeys(c["strategy"] for c in payload["cells"]))
    by_key = {(c["strategy"], c["budget"]): c for c in payload["cells"]}
    low_n, high_n = payload["ceiling"]["low"]["count"], payload["ceiling"]["high"]["count"]
    limited = f" (--limit {payload['limit']})" if payload.get("limit") else ""

    def pct(x: float | None) -> str:
        return " n/a" if x is None else f"{100 * x:.1f}"

    def pair(d: dict[str, Any]) -> str:
        return f"{pct(d['low']['accuracy'])} / {pct(d['high']['accuracy'])}"

    lines = [f"entropy split of {payload['num_analysed']} of {payload['num_offloaded']} offloaded images{limited}: "
             f"median edge attention entropy {e['median']:.3f} nats (uniform: {e['max']:.3f})",
             f"low half: {low_n} images (mean H {e['low_mean']:.3f}); high half: {high_n} images "
             f"(mean H {e['high_mean']:.3f})" if low_n and high_n else f"low half: {low_n}, high half: {high_n} images",
             "", "offloaded accuracy % low-entropy / high-entropy half"]
    width = max(len("strategy"), *(len(s) for s in strategies))
    unit = "B=" if payload.get("budget_unit", "patches") == "patches" else "bytes="
    header = f"{'strategy':<{width}} | " + " | ".join(f"{unit + str(b):>13}" for b in budgets)
    lines += [header, "-" * len(header)]
    for s in strategies:
        lines.append(f"{s:<{width}} | " + " | ".join(
            f"{pair(by_key[(s, b)]) if (s, b) in by_key else 'n/a':>13}" for b in budgets))
    lines += ["", f"references (any budget): server on all patches {pair(payload['ceiling'])}; "
                  f"edge model {pair(payload['edge'])}"]
    if payload["reproduction_mismatches"]["edge_pred"]:
        lines += ["", f"warning: {payload['reproduction_mismatches']['edge_pred']} recomputed edge predictions differ "
                      "from the run's records (different device or precision than the run?)"]
    return "\n".join(lines)


@register_analysis(NAME)
class EntropySplitAnalysis(Analysis):
    """Offloaded accuracy on the low and high halves of the edge's attention entropy."""

    run = staticmethod(entropy_split)
    format = staticmethod(format_entropy_split)
