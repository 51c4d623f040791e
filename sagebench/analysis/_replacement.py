"""Which units SAGE sends instead of ``attention_prefix``'s, and whether that helps.

Why: the paper's claim is that SAGE trades some of the most attended (and mutually redundant)
patches for less attended but complementary ones, and that this raises the server's accuracy.
This analysis checks both halves of the claim on a finished run: per budget, the units SAGE
*adds* (in its set, not in the prefix set) and *drops* (in the prefix set, not in its set),
how much edge attention each carries, how much the *server* itself attends to them when it sees
the whole image (its own notion of importance), and the accuracy change on the same images with
the counts of images fixed and broken.

Only the edge evidence is recomputed (one edge pass, plus one server pass for its attention, per
offloaded image); the predictions come from the run's ``samples.parquet``. As a guard, the
recomputed edge predictions, server predictions and selection coverages are compared with the
run's records and the mismatches are reported (all zero when the run is reproduced exactly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sagebench.analysis._figures import figure, save, title_of
from sagebench.analysis._run import (
    AnalysisError,
    Models,
    build_models,
    load_run,
    mean_or_none,
    offloaded_batches,
    provenance,
    require_labels,
    write_outputs,
)
from sagebench.analysis.base import Analysis, register_analysis
from sagebench.cells import Cell

NAME = "replacement"


def _member(indices: torch.Tensor, n: int) -> torch.Tensor:
    """``[b, N]`` bool: which patches are in each row's set."""
    mask = torch.zeros(indices.shape[0], n, dtype=torch.bool, device=indices.device)
    return mask.scatter_(1, indices, True)


class _Cell:
    """Per-image accumulators of one budget (arrays indexed by position among the analysed images)."""

    def __init__(self, n: int) -> None:
        z = lambda: np.zeros(n, dtype=np.float64)  # noqa: E731
        self.added, self.dropped = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        self.edge_added, self.edge_dropped, self.server_added, self.server_dropped = z(), z(), z(), z()
        self.edge_mass_prefix, self.edge_mass_sage, self.server_mass_prefix, self.server_mass_sage = z(), z(), z(), z()
        self.coverage_prefix, self.coverage_sage = z(), z()
        self.added_units: list[list[int]] = [[] for _ in range(n)]
        self.dropped_units: list[list[int]] = [[] for _ in range(n)]


def _accumulate(cell: _Cell, at: slice, prefix: torch.Tensor, sage: torch.Tensor, edge_att: torch.Tensor,
                server_att: torch.Tensor, grid: tuple[int, int]) -> None:
    from sagebench.metrics import coverage

    n = edge_att.shape[1]
    in_prefix, in_sage = _member(prefix, n), _member(sage, n)
    added, dropped = in_sage & ~in_prefix, in_prefix & ~in_sage
    edge_att, server_att = edge_att.double(), server_att.double()
    cell.added[at] = added.sum(1).cpu().numpy()
    cell.dropped[at] = dropped.sum(1).cpu().numpy()
    cell.edge_added[at] = (edge_att * added).sum(1).cpu().numpy()
    cell.edge_dropped[at] = (edge_att * dropped).sum(1).cpu().numpy()
    cell.server_added[at] = (server_att * added).sum(1).cpu().numpy()
    cell.server_dropped[at] = (server_att * dropped).sum(1).cpu().numpy()
    cell.edge_mass_prefix[at] = (edge_att * in_prefix).sum(1).cpu().numpy()
    cell.edge_mass_sage[at] = (edge_att * in_sage).sum(1).cpu().numpy()
    cell.server_mass_prefix[at] = (server_att * in_prefix).sum(1).cpu().numpy()
    cell.server_mass_sage[at] = (server_att * in_sage).sum(1).cpu().numpy()
    cell.coverage_prefix[at] = coverage(prefix, grid).cpu().numpy()
    cell.coverage_sage[at] = coverage(sage, grid).cpu().numpy()
    # the units themselves, in each strategy's priority order (SAGE's pick order, prefix's attention order)
    prefix_np, sage_np = prefix.cpu().numpy(), sage.cpu().numpy()
    added_np, dropped_np = added.cpu().numpy(), dropped.cpu().numpy()
    for j, pos in enumerate(range(at.start, at.stop)):
        cell.added_units[pos] = [int(u) for u in sage_np[j] if added_np[j, u]]
        cell.dropped_units[pos] = [int(u) for u in prefix_np[j] if dropped_np[j, u]]


def _summary(cell: _Cell, budget: int, prefix_ok: np.ndarray, sage_ok: np.ndarray) -> dict[str, Any]:
    n = cell.added.size
    added, dropped = int(cell.added.sum()), int(cell.dropped.sum())
    fixed, broken = int((~prefix_ok & sage_ok).sum()), int((prefix_ok & ~sage_ok).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        kept = cell.edge_mass_sage / cell.edge_mass_prefix
    return {
        "budget": budget,
        "num_images": n,
        "images_changed": int((cell.added > 0).sum()),
        "mean_added": float(cell.added.mean()),
        "mean_dropped": float(cell.dropped.mean()),
        # pooled over every added (dropped) unit of every image: images with no change weigh nothing
        "edge_attention": {
            "added": mean_or_none(cell.edge_added.sum(), added),
            "dropped": mean_or_none(cell.edge_dropped.sum(), dropped),
            "mass_prefix": float(cell.edge_mass_prefix.mean()),
            "mass_sage": float(cell.edge_mass_sage.mean()),
            "mass_kept": float(np.nanmean(kept)) if np.isfinite(kept).any() else None,
        },
        "server_attention": {
            "added": mean_or_none(cell.server_added.sum(), added),
            "dropped": mean_or_none(cell.server_dropped.sum(), dropped),
            "mass_prefix": float(cell.server_mass_prefix.mean()),
            "mass_sage": float(cell.server_mass_sage.mean()),
        },
        "accuracy": {
            "prefix": float(prefix_ok.mean()),
            "sage": float(sage_ok.mean()),
            "change": float(sage_ok.mean() - prefix_ok.mean()),
            "prefix_correct": int(prefix_ok.sum()),
            "sage_correct": int(sage_ok.sum()),
            "fixed": fixed,
            "broken": broken,
        },
    }


def replacement(run_dir: str | Path, limit: int | None = None, *, prefix: str = "attention_prefix",
                sage: str = "sage", batch_size: int | None = None, device: str | None = None,
                out_dir: str | Path | None = None, command: str | None = None) -> dict[str, Any]:
    """Units SAGE adds / drops versus ``attention_prefix`` per budget, their attention, and the accuracy change.

    ``prefix`` and ``sage`` are the run's strategy labels (or registry names, when the run has
    exactly one strategy of that name). ``limit`` analyses only the first ``limit`` offloaded
    images (by sample id). Writes ``analysis/replacement.json`` and ``.png`` in the run folder
    (or ``out_dir``) and returns the JSON's content.

    Attention values are per unit, on the scale where a row sums to 1 over the N patches (a
    uniform map gives 1/N, reported as ``uniform_attention``): the edge's ``evidence.attention``
    (what the strategies rank by) and the server's last-layer CLS attention averaged over heads
    when it sees all N patches. ``added``/``dropped`` are means over all added/dropped units;
    ``mass_*`` are the mean per-image attention mass of each set; ``mass_kept`` is the mean
    per-image ratio of SAGE's edge attention mass to the prefix's (1 = nothing given up).
    """
    run = load_run(run_dir)
    if run.budget_unit != "patches":
        raise AnalysisError(f"The run in {run.path} used {run.budget_unit} budgets; the replacement analysis compares "
                            "the patch sets of a patch budget B: run it on a run with budgets=[...] (patches).")
    labels = require_labels(run, {"prefix": prefix, "sage": sage}, NAME)
    strategies = {role: run.build_strategy(label) for role, label in labels.items()}
    budgets = [b for b in run.budgets
               if all(run.cell_column("pred", labels[r], b) in run.samples for r in labels)]
    if not budgets:
        raise AnalysisError(f"{run.path / 'samples.parquet'} has no prediction columns of {labels['prefix']} and "
                            f"{labels['sage']} at the same budget.")
    ids = run.offloaded_ids(limit)
    models = build_models(run, with_server=True, strategies=list(strategies.values()), device=device,
                          batch_size=batch_size)
    n = ids.size
    cells = {b: _Cell(n) for b in budgets}
    edge_pred, server_pred = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    start = 0
    for batch in offloaded_batches(models, ids):
        at = slice(start, start + batch.sample_ids.size)
        if not np.array_equal(batch.sample_ids, ids[at]):
            raise RuntimeError("images came back out of order")  # a bug, not a user error
        ev = batch.evidence
        edge_pred[at] = ev.logits.argmax(-1).cpu().numpy()
        server_pred[at] = batch.server_pred
        for b in budgets:
            _accumulate(cells[b], at, strategies["prefix"].choose(ev, b).indices, strategies["sage"].choose(ev, b).indices,
                        ev.attention, batch.server_attention, tuple(ev.grid))
        start = at.stop
    return _finish(run, models, labels, ids, cells, edge_pred, server_pred, limit, out_dir, command)


def _finish(run: Any, models: Models, labels: dict[str, str], ids: np.ndarray, cells: dict[int, _Cell],
            edge_pred: np.ndarray, server_pred: np.ndarray, limit: int | None, out_dir: Any,
            command: str | None) -> dict[str, Any]:
    pos = np.searchsorted(run.column("sample_id"), ids)
    mismatches: dict[str, Any] = {
        "edge_pred": int((run.column("edge_pred")[pos] != edge_pred).sum()),
        "ceiling_pred": int((run.column("ceiling_pred")[pos] != server_pred).sum()),
        "coverage": {},
    }
    summaries = []
    for b, cell in cells.items():
        for role, values in (("prefix", cell.coverage_prefix), ("sage", cell.coverage_sage)):
            stored = run.column(run.cell_column("coverage", labels[role], b))[pos]
            mismatches["coverage"][Cell(labels[role], b).name] = int((~np.isclose(stored, values, atol=1e-12)).sum())
        prefix_ok = run.correct(run.cell_column("pred", labels['prefix'], b), ids)
        sage_ok = run.correct(run.cell_column("pred", labels['sage'], b), ids)
        summaries.append(_summary(cell, b, prefix_ok, sage_ok))
    num_offloaded = int(run.column("offloaded").astype(bool).sum())
    payload: dict[str, Any] = {
        "analysis": NAME,
        "provenance": provenance(run, command),
        "strategies": {"prefix": labels["prefix"], "sage": labels["sage"]},
        "limit": limit,
        "num_offloaded": num_offloaded,
        "num_analysed": int(ids.size),
        "num_patches": run.num_patches,
        "uniform_attention": 1.0 / run.num_patches,
        "edge_attention_kind": str(models.cfg.model.edge.attention),
        "device": str(models.device),
        "reproduction_mismatches": mismatches,
        "budgets": summaries,
        "images": {
            "sample_ids": ids,
            "by_budget": {str(b): {"added": cell.added_units, "dropped": cell.dropped_units}
                          for b, cell in cells.items()},
        },
    }
    return write_outputs(run, NAME, payload, plot_replacement, out_dir)


def plot_replacement(payload: dict[str, Any], path: Path) -> Path:
    """Per budget: edge and server attention of added vs dropped units, and the accuracy change."""
    rows = payload["budgets"]
    budgets = [r["budget"] for r in rows]
    x = np.arange(len(budgets))
    scale = float(payload["num_patches"])  # attention in units of the uniform share 1/N
    fig = figure(16.0, 4.2)
    for k, (key, title) in enumerate((("edge_attention", "edge attention"),
                                      ("server_attention", "server attention (all N patches)"))):
        ax = fig.add_subplot(1, 3, k + 1)
        for shift, which, color in ((-0.2, "added", "#2a9d8f"), (0.2, "dropped", "#e76f51")):
            vals = [np.nan if r[key][which] is None else r[key][which] * scale for r in rows]
            ax.bar(x + shift, vals, width=0.4, color=color, label=f"{which} by sage")
        ax.axhline(1.0, color="0.3", linestyle=":", linewidth=1.2, label="uniform (1/N)")
        ax.set_xticks(x, [f"B={b}" for b in budgets])
        ax.set_ylabel("mean attention per unit (x 1/N)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 3, 3)
    change = [100.0 * r["accuracy"]["change"] for r in rows]
    bars = ax.bar(x, change, width=0.6, color=["#2a9d8f" if c >= 0 else "#e76f51" for c in change])
    for bar, r in zip(bars, rows):
        acc = r["accuracy"]
        ax.annotate(f"+{acc['fixed']}/-{acc['broken']}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom" if bar.get_height() >= 0 else "top", fontsize=8)
    ax.axhline(0.0, color="0.3", linewidth=0.8)
    ax.set_xticks(x, [f"B={b}" for b in budgets])
    ax.set_ylabel("accuracy change sage - prefix (pp)")
    ax.set_title(f"accuracy change on {payload['num_analysed']} offloaded images (+fixed/-broken)", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"{title_of(payload)}: {payload['strategies']['sage']} vs {payload['strategies']['prefix']}",
                 fontsize=10)
    return save(fig, path)


def format_replacement(payload: dict[str, Any]) -> str:
    """Terminal table of :func:`replacement`'s result (attention in units of the uniform share 1/N)."""
    s = payload["strategies"]
    scale = float(payload["num_patches"])
    limited = f" (--limit {payload['limit']})" if payload.get("limit") else ""

    def att(v: float | None) -> str:
        return " n/a" if v is None else f"{v * scale:4.2f}"

    lines = [f"replacement: {s['sage']} vs {s['prefix']} on {payload['num_analysed']} of "
             f"{payload['num_offloaded']} offloaded images{limited}",
             "attention per unit in units of the uniform share 1/N (1.00 = average patch)",
             ""]
    header = (f"{'B':>3} | {'changed':>7} | {'swapped/img':>11} | {'edge att add/drop':>17} | {'edge mass kept':>14} | "
              f"{'server att add/drop':>19} | {'acc prefix -> sage':>18} | {'change':>7} | {'fixed':>5} | {'broken':>6}")
    lines += [header, "-" * len(header)]
    for r in payload["budgets"]:
        e, v, a = r["edge_attention"], r["server_attention"], r["accuracy"]
        kept = "n/a" if e["mass_kept"] is None else f"{100 * e['mass_kept']:.1f}%"
        acc = f"{100 * a['prefix']:.1f} -> {100 * a['sage']:.1f}"
        lines.append(
            f"{r['budget']:>3} | {r['images_changed']:>7} | {r['mean_added']:>11.2f} | "
            f"{att(e['added']) + ' / ' + att(e['dropped']):>17} | {kept:>14} | "
            f"{att(v['added']) + ' / ' + att(v['dropped']):>19} | "
            f"{acc:>18} | {100 * a['change']:>+6.1f}pp | "
            f"{a['fixed']:>5} | {a['broken']:>6}")
    m = payload["reproduction_mismatches"]
    bad = m["edge_pred"] + m["ceiling_pred"] + sum(m["coverage"].values())
    if bad:
        lines += ["", f"warning: the recomputation differs from the run's records (edge predictions {m['edge_pred']}, "
                      f"server predictions {m['ceiling_pred']}, selection coverages {sum(m['coverage'].values())}): "
                      "different device or precision than the run?"]
    return "\n".join(lines)


@register_analysis(NAME)
class ReplacementAnalysis(Analysis):
    """Units sage adds and drops relative to attention_prefix, their attention and the accuracy change."""

    run = staticmethod(replacement)
    format = staticmethod(format_replacement)
