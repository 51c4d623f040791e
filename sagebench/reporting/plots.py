"""PNG figures of a run (and of a leaderboard): accuracy curves and selection overlays.

Why files as well as W&B: a user without W&B (or offline) still sees the curves and what each
strategy sent, in the run's output folder. Figures are drawn on matplotlib's Agg canvas through
``matplotlib.figure.Figure`` (no pyplot global state, no display needed, thread-safe enough for
a post-run step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

CURVES_FILE = "curves.png"
LATENCY_FILE = "latency.png"
OPERATING_CURVE_FILE = "operating_curve.png"
OVERLAYS_FILE = "overlays.png"


@dataclass
class Series:
    """One line of a curves figure: values per budget (``None`` = not measured at that budget)."""

    label: str
    budgets: list[int]
    offloaded_accuracy: list[float | None]
    ceiling_ratio: list[float | None]
    dashed: bool = False
    # 95% intervals per budget ([low, high] or None): drawn as bands around the line
    offloaded_accuracy_ci: list[Sequence[float] | None] | None = None
    ceiling_ratio_ci: list[Sequence[float] | None] | None = None


@dataclass
class Example:
    """One image of the selection overlays: what the edge saw and what each strategy sent.

    ``image`` is ``[H, W]`` (grayscale) or ``[H, W, 3]`` in [0, 1], as the models saw it (after
    the eval transform, de-normalised); ``attention`` is ``[rows, cols]``; ``selections`` maps a
    strategy label to its chosen patch indices (raster order) at ``budget``.
    """

    sample_id: int
    label: int
    edge_pred: int
    image: np.ndarray
    attention: np.ndarray
    patch_size: tuple[int, int]
    budget: int
    selections: dict[str, list[int]] = field(default_factory=dict)
    class_names: Sequence[str] | None = None
    rendered: np.ndarray | None = field(default=None, repr=False, compare=False)  # overlay_array, once drawn

    def name_of(self, cls: int) -> str:
        if self.class_names and 0 <= cls < len(self.class_names):
            return str(self.class_names[cls])
        return str(cls)


def figure(width: float, height: float, layout: str = "tight") -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot: no global state, no display).

    ``layout="constrained"`` makes room for a legend placed outside the axes (``loc="outside ..."``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout=layout)  # laid out once, while it is drawn
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, path: Path) -> Path:
    """Write a PNG atomically: a new temporary file of an unpredictable name (created exclusively,
    so a symlink planted at a fixed name is never followed), then a rename over ``path``."""
    import io

    from sagebench.runtime.files import atomic_write_bytes

    buf = io.BytesIO()
    # no bbox_inches="tight": it draws and encodes the whole figure twice (a third of a run's report time)
    fig.savefig(buf, format="png")
    return atomic_write_bytes(Path(path), buf.getvalue(), durable=False)


def series_from_results(results: dict[str, Any]) -> list[Series]:
    """One :class:`Series` per strategy of a results dict, budgets ascending."""
    budgets = sorted({int(r["budget"]) for r in results["results"]})
    by_key = {(r["strategy"], int(r["budget"])): r for r in results["results"]}
    oracles = {s.get("label") for s in results.get("strategies") or [] if s.get("oracle")}
    out = []
    for strategy in dict.fromkeys(r["strategy"] for r in results["results"]):
        rows = [by_key.get((strategy, b)) for b in budgets]
        out.append(Series(strategy if strategy not in oracles else f"{strategy} (oracle)", budgets,
                          [r and r.get("offloaded_accuracy") for r in rows],
                          [r and r.get("ceiling_ratio") for r in rows],
                          offloaded_accuracy_ci=[r and r.get("offloaded_accuracy_ci") for r in rows],
                          ceiling_ratio_ci=[r and r.get("ceiling_ratio_ci") for r in rows],
                          dashed=strategy in oracles))
    return out


#: Line styles that keep up to 30 strategies apart: 10 colours (matplotlib's tab10) x 3 dash patterns,
#: with markers cycling too; references (oracles, reported or unverified rows) are grey and dotted.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
DASHES = ("-", "--", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
REFERENCE_STYLE = {"color": "0.45", "linestyle": ":", "marker": "x"}
REFERENCE_MARKERS = ("x", "+", "1", "*", "|")
REFERENCE_GREYS = ("0.45", "0.25", "0.6")


def line_style(index: int, reference: bool = False) -> dict[str, Any]:
    """The ``index``-th strategy's colour, dash pattern and marker (distinct for the first 30); a reference's
    own style (a separate counter: references never take a strategy's colour)."""
    if reference:  # the index-th reference: grey and dotted, told apart by its marker and shade
        return {**REFERENCE_STYLE, "marker": REFERENCE_MARKERS[index % len(REFERENCE_MARKERS)],
                "color": REFERENCE_GREYS[index % len(REFERENCE_GREYS)]}
    return {"color": PALETTE[index % len(PALETTE)], "linestyle": DASHES[(index // len(PALETTE)) % len(DASHES)],
            "marker": MARKERS[index % len(MARKERS)]}


def _line(ax: Any, s: Series, values: list[float | None], scale: float,
          intervals: list[Sequence[float] | None] | None = None, style: dict[str, Any] | None = None) -> None:
    pts = [(b, v * scale) for b, v in zip(s.budgets, values) if v is not None]
    if not pts:
        return
    xs, ys = zip(*pts)
    style = style or line_style(0, s.dashed)
    (line,) = ax.plot(xs, ys, markersize=4, linewidth=1.6, label=s.label, **style)
    band = [(b, ci[0] * scale, ci[1] * scale) for b, ci in zip(s.budgets, intervals or []) if ci]
    if len(band) >= 2:  # the 95% interval of each point, as a band
        bx, lo, hi = zip(*band)
        ax.fill_between(bx, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)


def plot_curves(series: Sequence[Series], path: Path, *, title: str = "", ceiling: float | None = None,
                num_patches: int | None = None, which: Sequence[str] | None = None,
                budget_unit: str = "patches") -> Path:
    """Offloaded accuracy (%) against the budget, one line per series, the legend outside the data.

    With a common ``ceiling`` (offloaded accuracy of the server on all patches, a fraction) the ceiling
    ratio is the accuracy divided by it: it is read on a right-hand axis of the same panel (a second
    panel would repeat the first), and the ceiling is a dotted line. Without one (rows measured on
    different offloaded images), ``which`` defaults to both panels. Series flagged ``dashed``
    (oracles, reported or unverified rows) are drawn apart (:data:`REFERENCE_STYLE`).
    """
    if which is None:
        which = ("offloaded_accuracy",) if ceiling else ("offloaded_accuracy", "ceiling_ratio")
    rows_of_legend = (len(series) + 1 + 2) // 3
    fig = figure(max(8.5, 5.6 * len(which)), 4.0 + 0.2 * rows_of_legend, layout="constrained")
    axes = [fig.add_subplot(1, len(which), i + 1) for i in range(len(which))]
    styles, counts = [], {False: 0, True: 0}  # strategies and references counted apart
    for s in series:
        styles.append(line_style(counts[s.dashed], s.dashed))
        counts[s.dashed] += 1
    budgets = sorted({b for s in series for b in s.budgets})
    for ax, metric in zip(axes, which):
        scale = 100.0 if metric == "offloaded_accuracy" else 1.0
        for s, style in zip(series, styles):
            _line(ax, s, getattr(s, metric), scale, getattr(s, f"{metric}_ci"), style)
        if metric == "offloaded_accuracy":
            if ceiling is not None:
                ax.axhline(100.0 * ceiling, color="0.2", linestyle=(0, (1, 3)), linewidth=1.2,
                           label=f"ceiling (all {num_patches} patches)" if num_patches else "ceiling")
                if ceiling > 0:  # the same lines read as ceiling ratio: accuracy / ceiling (none for a zero ceiling)
                    ratio = ax.twinx()
                    low, high = ax.get_ylim()
                    ratio.set_ylim(low / (100.0 * ceiling), high / (100.0 * ceiling))
                    ratio.set_ylabel("ceiling ratio")
            ax.set_ylabel("offloaded accuracy (%)")
        else:
            ax.axhline(1.0, color="0.2", linestyle=(0, (1, 3)), linewidth=1.2, label="ceiling")
            ax.set_ylabel("ceiling ratio")
        ax.set_xlabel("budget B (patches sent)" if budget_unit == "patches" else "byte budget per request")
        if budgets:
            ax.set_xticks(budgets)
            if budget_unit != "patches":
                ax.tick_params(axis="x", labelrotation=45)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    # below the panels, in columns: 20 strategies take seven short rows instead of covering the lines
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, max(1, len(labels))), fontsize=8,
               frameon=False)
    if title:
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, 90)), fontsize=10)
    return save(fig, path)


def plot_results_curves(results: dict[str, Any], path: Path) -> Path:
    bench = results.get("benchmark", {})
    title = (f"{bench.get('name', '')}: {bench.get('edge', {}).get('name', '?')} -> "
             f"{bench.get('server', {}).get('name', '?')}, {results.get('num_offloaded')} of "
             f"{results.get('num_images')} images offloaded")
    return plot_curves(series_from_results(results), path, title=title,
                       ceiling=(results.get("ceiling") or {}).get("offloaded_accuracy"),
                       num_patches=bench.get("num_patches"),
                       budget_unit=(results.get("transmission") or {}).get("budget_unit", "patches"))


def _bytes_of(row: dict[str, Any], channels: Sequence[dict[str, Any]]) -> float | None:
    """A results row's mean bytes sent per offloaded image (from its latency on a channel when the row
    predates ``bytes_sent``: the latency model is invertible)."""
    if row.get("bytes_sent") is not None:
        return float(row["bytes_sent"])
    for c in channels:
        latency = (row.get("latency_ms") or {}).get(c["name"])
        if latency is not None:
            return (float(latency) - float(c["rtt_ms"])) * float(c["uplink_kbps"]) / 8.0
    return None


LATENCY_AXIS_INCHES = 0.62  # one channel's latency axis below the panel: ticks, their labels and its name


def plot_latency(results: dict[str, Any], path: Path) -> Path | None:
    """Offloaded accuracy against the mean request latency: one panel, one line per strategy, and one
    latency axis per channel beneath it.

    Why one panel: a request's latency is ``rtt + 8 * bytes_sent / uplink`` (sagebench.transmission.channels),
    affine in the bytes sent, so one panel per channel drew the same curves again with a rescaled x axis (on a
    fast link over a fraction of a millisecond, its tick labels overprinted). The curves are drawn once against
    the mean bytes sent per offloaded image, and each channel's latency is read on its own axis below, its
    ticks placed at round milliseconds. Strategies take :func:`line_style` (oracles styled apart), the
    ceiling is a dotted line, the legend sits right of the panel. Returns ``None`` when the run reports no
    channel.
    """
    import math

    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    channels = (results.get("transmission") or {}).get("channels") or []
    if not channels:
        return None
    oracles = {s.get("label") for s in results.get("strategies") or [] if s.get("oracle")}
    curves = []
    for strategy in dict.fromkeys(r["strategy"] for r in results["results"]):
        pts = sorted((x, 100.0 * r["offloaded_accuracy"]) for r in results["results"]
                     if r["strategy"] == strategy and r.get("offloaded_accuracy") is not None
                     and (x := _bytes_of(r, channels)) is not None)
        if pts:
            curves.append((strategy if strategy not in oracles else f"{strategy} (oracle)", strategy in oracles, pts))
    ceiling = (results.get("ceiling") or {}).get("offloaded_accuracy")
    labels = len(curves) + (ceiling is not None)
    axes_h, top, bottom = 3.6, 0.55, 0.55 + LATENCY_AXIS_INCHES * len(channels)
    per_column = max(1, int(axes_h / 0.19))  # legend rows that fit beside the panel
    legend_cols = max(1, math.ceil(labels / per_column))
    left, axes_w, legend_w = 0.75, 6.4, 2.5 * legend_cols
    width, height = left + axes_w + 0.3 + legend_w, top + axes_h + bottom
    fig = figure(width, height, layout="none")
    ax = fig.add_axes((left / width, bottom / height, axes_w / width, axes_h / height))
    counts = {False: 0, True: 0}
    for label, reference, pts in curves:
        style = line_style(counts[reference], reference)
        counts[reference] += 1
        ax.plot([p[0] for p in pts], [p[1] for p in pts], markersize=4, linewidth=1.6, label=label, **style)
    if ceiling is not None:
        ax.axhline(100.0 * ceiling, color="0.2", linestyle=(0, (1, 3)), linewidth=1.2, label="ceiling (all patches)")
    ax.set_ylabel("offloaded accuracy (%)")
    ax.set_xlabel("mean bytes sent per offloaded image", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8))
    ax.grid(True, alpha=0.3)
    for k, c in enumerate(channels):
        rate, rtt = float(c["uplink_kbps"]), float(c["rtt_ms"])

        def to_ms(b: Any, rate: float = rate, rtt: float = rtt) -> Any:
            return rtt + 8.0 * np.asarray(b, dtype=float) / rate

        def to_bytes(ms: Any, rate: float = rate, rtt: float = rtt) -> Any:
            return (np.asarray(ms, dtype=float) - rtt) * rate / 8.0

        sec = ax.secondary_xaxis(-(0.5 + LATENCY_AXIS_INCHES * k) / axes_h - 0.02, functions=(to_ms, to_bytes))
        sec.xaxis.set_major_locator(MaxNLocator(nbins=7))
        sec.xaxis.set_major_formatter(ScalarFormatter(useOffset=False))
        sec.tick_params(labelsize=8)
        sec.set_xlabel(f"{c.get('display_name', c['name'])} latency (ms): {rate:g} kbit/s up, RTT {rtt:g} ms",
                       fontsize=8, labelpad=1)
    fig.legend(*ax.get_legend_handles_labels(), loc="upper left", fontsize=8, frameon=False, ncols=legend_cols,
               bbox_to_anchor=((left + axes_w + 0.3) / width, 1 - top / height))
    codec = (results.get("transmission") or {}).get("codec") or {}
    fig.suptitle(f"accuracy vs uplink latency, one axis per channel (codec {codec.get('name', 'raw')}"
                 f"{' q' + str(codec['quality']) if 'quality' in codec else ''})", fontsize=10)
    return save(fig, path)


def curve_budget(curve: dict[str, Any]) -> int | None:
    """The budget the operating-curve figure shows by default: the middle one of the run's."""
    budgets = sorted({r["budget"] for r in curve.get("curve") or []})
    return budgets[(len(budgets) - 1) // 2] if budgets else None


def plot_operating_curve(results: dict[str, Any], path: Path, budget: int | None = None) -> Path | None:
    """The system view of a run with a list of gate thresholds (``results["operating_curve"]``).

    System accuracy (%) against the offload share (left) and against the uplink bytes per image (right,
    averaged over all images), one line per strategy at ``budget`` (default: the middle budget), each point
    a threshold, with its 95% Wilson band. References: the server on all units at each threshold (dotted),
    edge only (share 0) and server only (share 1; an interval bar when only bounds are known: the lowest
    threshold did not offload every image). ``None`` when the run has no curve.
    """
    curve = results.get("operating_curve")
    if not curve or not curve.get("curve"):
        return None
    budget = curve_budget(curve) if budget is None else budget
    rows = [r for r in curve["curve"] if r["budget"] == budget]
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    oracle = {s["label"] for s in results.get("strategies") or [] if s.get("oracle")}
    unit = "B=" if rows and rows[0]["budget_unit"] == "patches" else "bytes="
    fig = figure(11.5, 4.6 + 0.2 * ((len(strategies) + 4) // 3), layout="constrained")
    axes = [fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)]
    points = sorted(curve["points"], key=lambda p: p["offload_share"] or 0.0)
    edge, server = curve["edge_only"], curve["server_only"]
    counts = {False: 0, True: 0}
    for strategy in strategies:
        mine = sorted((r for r in rows if r["strategy"] == strategy and r["system_accuracy"] is not None),
                      key=lambda r: r["offload_share"])
        ref = strategy in oracle
        style = line_style(counts[ref], ref)
        counts[ref] += 1
        for ax, x in zip(axes, ("offload_share", "bytes_per_image")):
            xs = [r[x] * (100.0 if x == "offload_share" else 1.0) for r in mine]
            (line,) = ax.plot(xs, [100.0 * r["system_accuracy"] for r in mine], markersize=4, linewidth=1.6,
                              label=strategy + (" (oracle)" if ref else ""), **style)
            band = [(xv, r["system_accuracy_ci"]) for xv, r in zip(xs, mine) if r.get("system_accuracy_ci")]
            if len(band) >= 2:
                ax.fill_between([b[0] for b in band], [100.0 * b[1][0] for b in band], [100.0 * b[1][1] for b in band],
                                color=line.get_color(), alpha=0.12, linewidth=0)
    ceil = [(100.0 * p["offload_share"], 100.0 * p["ceiling"]["system_accuracy"]) for p in points
            if p["ceiling"]["system_accuracy"] is not None]
    if ceil:
        axes[0].plot(*zip(*ceil), color="0.2", linestyle=(0, (1, 3)), linewidth=1.2, marker=".",
                     label="server on all units (same gate)")
    for ax, scale in zip(axes, (100.0, None)):
        if edge.get("system_accuracy") is not None:
            ax.plot([0.0], [100.0 * edge["system_accuracy"]], marker="s", color="k", linestyle="none",
                    markersize=7, label="edge only (share 0)")
        x_server = 100.0 if scale else server.get("bytes_per_image")
        if x_server is not None:
            if server.get("system_accuracy") is not None:
                ax.plot([x_server], [100.0 * server["system_accuracy"]], marker="D", color="k", linestyle="none",
                        markersize=7, label="server only, full image (share 1)")
            elif server.get("system_accuracy_bounds"):
                lo, hi = (100.0 * v for v in server["system_accuracy_bounds"])
                ax.errorbar([x_server], [(lo + hi) / 2], yerr=[[(hi - lo) / 2], [(hi - lo) / 2]], color="k",
                            marker="D", markerfacecolor="white", capsize=4, linestyle="none",
                            label=f"server only: bounds (known for {server['images_known']} images)")
        ax.set_ylabel("system accuracy (%)")
        ax.grid(True, alpha=0.3)
    axes[0].set_xlabel("offload share (% of images sent to the server)")
    axes[1].set_xlabel("uplink bytes per image (mean over all images)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, max(1, len(labels))), fontsize=8,
               frameon=False)
    bench = results.get("benchmark", {})
    etas = ", ".join(f"{t:g}" for t in curve["thresholds"])
    fig.suptitle(f"{bench.get('name', '')}: operating curve at {unit}{budget}, gate {curve.get('gate')} "
                 f"eta in {{{etas}}} ({curve.get('num_images')} images)", fontsize=10)
    return save(fig, path)


# --------------------------------------------------------------------------------------------
# Selection overlays


def _upsample(grid_values: np.ndarray, patch_size: tuple[int, int]) -> np.ndarray:
    return np.kron(grid_values, np.ones(patch_size))


def sent_mask(indices: Sequence[int], grid: tuple[int, int], patch_size: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` boolean mask of the pixels in the sent patches."""
    cells = np.zeros(grid[0] * grid[1], dtype=float)
    cells[np.asarray(list(indices), dtype=int)] = 1.0
    return _upsample(cells.reshape(grid), patch_size) > 0.5


def _show_image(ax: Any, image: np.ndarray) -> None:
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")


def _draw_row(axes: Sequence[Any], ex: Example, titles: bool = True) -> None:
    from matplotlib.patches import Rectangle

    grid = ex.attention.shape
    ph, pw = ex.patch_size
    _show_image(axes[0], ex.image)
    ok = "ok" if ex.edge_pred == ex.label else "wrong"
    axes[0].set_title(f"#{ex.sample_id}: {ex.name_of(ex.label)}\nedge: {ex.name_of(ex.edge_pred)} ({ok})", fontsize=8)
    _show_image(axes[1], ex.image)
    axes[1].imshow(_upsample(ex.attention, ex.patch_size), cmap="inferno", alpha=0.6, interpolation="nearest")
    axes[1].set_title("edge attention", fontsize=8)
    for ax, (strategy, indices) in zip(axes[2:], ex.selections.items()):
        mask = sent_mask(indices, grid, ex.patch_size)
        shown = ex.image * (np.where(mask, 1.0, 0.25)[..., None] if ex.image.ndim == 3 else np.where(mask, 1.0, 0.25))
        _show_image(ax, shown)
        for i in indices:
            r, c = divmod(int(i), grid[1])
            ax.add_patch(Rectangle((c * pw - 0.5, r * ph - 0.5), pw, ph, fill=False, edgecolor="#00c8ff",
                                   linewidth=0.8))
        ax.set_title(f"{strategy}\nB={ex.budget} sent", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])


def _overlay_figure(examples: Sequence[Example]) -> Any:
    cols = 2 + max(len(ex.selections) for ex in examples)
    row_height = 2.15  # inches: a square image plus its two-line title
    fig = figure(1.9 * cols, row_height * len(examples))
    fig.set_layout_engine(None)  # fixed margins: the tight engine clips the titles of square image panels
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.01 / len(examples),
                        top=1 - 0.42 / (row_height * len(examples)), wspace=0.06, hspace=0.42 / row_height)
    for r, ex in enumerate(examples):
        axes = [fig.add_subplot(len(examples), cols, r * cols + c + 1) for c in range(2 + len(ex.selections))]
        _draw_row(axes, ex)
    return fig


def plot_overlays(examples: Sequence[Example], path: Path) -> Path:
    """One row per image: the image, the edge attention heat map, then what each strategy sent.

    Each row is drawn once (:func:`overlay_array`, kept on the example for W&B) and the rows are
    stacked into the PNG, so logging the overlays draws nothing again.
    """
    import io

    from PIL import Image

    from sagebench.runtime.files import atomic_write_bytes

    if not examples:
        raise ValueError("no examples to plot")
    rows = [overlay_array(ex) for ex in examples]
    width = max(r.shape[1] for r in rows)
    stacked = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
                              for r in rows])
    buf = io.BytesIO()
    Image.fromarray(stacked).save(buf, format="png")
    return atomic_write_bytes(Path(path), buf.getvalue(), durable=False)


def overlay_array(example: Example) -> np.ndarray:
    """The overlay row of one image as an ``[H, W, 3]`` uint8 array (for ``wandb.Image``), drawn once."""
    if example.rendered is None:
        fig = _overlay_figure([example])
        fig.canvas.draw()
        example.rendered = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    return example.rendered
