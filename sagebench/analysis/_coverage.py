"""Spatial coverage against accuracy, per strategy and budget: the paper's coverage table.

Why: the argument for diverse selection is that covering more of the image gives the server
more to go on. If that holds, strategies with higher coverage at a budget should reach higher
offloaded accuracy at that budget; the Pearson correlation across strategies, per budget,
says how far that is true in this run. Everything comes from ``results.json`` (no models).

Coverage is the run's own metric (:func:`sagebench.metrics.coverage`): the fraction of the
coarse 2x2-pooled grid cells holding at least one sent patch, averaged over offloaded images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sagebench.analysis._figures import figure, save, title_of
from sagebench.analysis._run import load_run, provenance, write_outputs
from sagebench.analysis.base import Analysis, register_analysis

NAME = "coverage"
MIN_POINTS = 3  # a correlation of two points is always +-1: not reported


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r of paired values; ``None`` below :data:`MIN_POINTS` points or when either is constant."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.size < MIN_POINTS or a.size != b.size:
        return None
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if den <= 1e-15 * max(1.0, float(np.abs(a).max() * np.abs(b).max())):
        return None
    return float(np.clip((a * b).sum() / den, -1.0, 1.0))


def coverage(run_dir: str | Path, *, out_dir: str | Path | None = None, command: str | None = None) -> dict[str, Any]:
    """Coverage and offloaded accuracy per strategy and budget, with their correlation per budget.

    Reads only ``results.json``. Writes ``analysis/coverage.json`` and ``.png`` (or into
    ``out_dir``) and returns the JSON's content. A budget's correlation is ``None`` when fewer
    than three strategies have a value there or when coverage (or accuracy) is the same for all.
    """
    run = load_run(run_dir)
    rows = [r for r in run.results["results"] if r.get("coverage") is not None]
    table = [{"strategy": r["strategy"], "budget": int(r["budget"]), "coverage": r["coverage"],
              "offloaded_accuracy": r["offloaded_accuracy"], "ceiling_ratio": r.get("ceiling_ratio"),
              "units_sent": r.get("units_sent")} for r in rows]
    correlations = []
    for b in run.budgets:
        pts = [(t["coverage"], t["offloaded_accuracy"]) for t in table
               if t["budget"] == b and t["offloaded_accuracy"] is not None]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        correlations.append({"budget": b, "num_strategies": len(pts), "pearson_r": pearson(xs, ys)})
    payload: dict[str, Any] = {
        "analysis": NAME,
        "provenance": provenance(run, command),
        "num_images": run.results.get("num_images"),
        "num_offloaded": run.results.get("num_offloaded"),
        "ceiling_offloaded_accuracy": (run.results.get("ceiling") or {}).get("offloaded_accuracy"),
        "strategies": list(dict.fromkeys(t["strategy"] for t in table)),
        "budgets": run.budgets,
        "budget_unit": run.budget_unit,
        "table": table,
        "correlation": correlations,
    }
    return write_outputs(run, NAME, payload, plot_coverage, out_dir)


def _prefix(payload: dict[str, Any]) -> str:
    return "B" if payload.get("budget_unit", "patches") == "patches" else "bytes"


def plot_coverage(payload: dict[str, Any], path: Path) -> Path:
    """Offloaded accuracy against coverage, one colour per strategy, each point labelled with its budget."""
    fig = figure(6.4, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    for s in payload["strategies"]:
        pts = sorted((t["budget"], t["coverage"], t["offloaded_accuracy"]) for t in payload["table"]
                     if t["strategy"] == s and t["offloaded_accuracy"] is not None)
        if not pts:
            continue
        budgets, xs, ys = zip(*pts)
        line = ax.plot(xs, [100.0 * y for y in ys], marker="o", markersize=5, linewidth=0.8, alpha=0.9, label=s)[0]
        for b, x, y in pts:
            ax.annotate(f"{_prefix(payload)}{b}", (x, 100.0 * y), textcoords="offset points", xytext=(4, 3), fontsize=7,
                        color=line.get_color())
    ceiling = payload.get("ceiling_offloaded_accuracy")
    if ceiling is not None:
        ax.axhline(100.0 * ceiling, color="0.3", linestyle=":", linewidth=1.2, label="ceiling (all patches)")
    rs = ", ".join(f"{_prefix(payload)}{c['budget']}: {'n/a' if c['pearson_r'] is None else format(c['pearson_r'], '+.2f')}"
                   for c in payload["correlation"])
    ax.set_xlabel("coverage (fraction of 2x2 cells with a sent patch)")
    ax.set_ylabel("offloaded accuracy (%)")
    ax.set_title(f"Pearson r across strategies per budget: {rs}", fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"{title_of(payload)}: accuracy vs spatial coverage", fontsize=10)
    return save(fig, path)


def format_coverage(payload: dict[str, Any]) -> str:
    """Terminal table: per strategy and budget, coverage / offloaded accuracy %, then r per budget."""
    budgets = payload["budgets"]
    by_key = {(t["strategy"], t["budget"]): t for t in payload["table"]}
    width = max(len("pearson r"), *(len(s) for s in payload["strategies"]))

    def cell(t: dict[str, Any] | None) -> str:
        if t is None:
            return "n/a"
        acc = "n/a" if t["offloaded_accuracy"] is None else f"{100 * t['offloaded_accuracy']:.1f}"
        return f"{t['coverage']:.3f} / {acc}"

    lines = [f"coverage vs accuracy on {payload['num_offloaded']} of {payload['num_images']} images offloaded",
             "coverage (fraction of 2x2 cells hit) / offloaded accuracy %", ""]
    header = f"{'strategy':<{width}} | " + " | ".join(f"{_prefix(payload) + '=' + str(b):>14}" for b in budgets)
    lines += [header, "-" * len(header)]
    for s in payload["strategies"]:
        lines.append(f"{s:<{width}} | " + " | ".join(f"{cell(by_key.get((s, b))):>14}" for b in budgets))
    rs = {c["budget"]: c["pearson_r"] for c in payload["correlation"]}
    lines.append(f"{'pearson r':<{width}} | " + " | ".join(
        f"{'n/a' if rs.get(b) is None else format(rs[b], '+.3f'):>14}" for b in budgets))
    return "\n".join(lines)


@register_analysis(NAME)
class CoverageAnalysis(Analysis):
    """Coverage against offloaded accuracy per strategy and budget, with Pearson's r per budget."""

    run = staticmethod(coverage)
    format = staticmethod(format_coverage)
