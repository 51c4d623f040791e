"""Matplotlib on the Agg canvas, without pyplot: as :mod:`sagebench.plots` draws a run's figures.

Why not pyplot: no global figure state and no display are needed, so an analysis can run on a
headless server or inside a notebook without changing its backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, path: Path) -> Path:
    """Write a PNG atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, format="png", bbox_inches="tight")
    tmp.replace(path)
    return path


def title_of(payload: dict[str, Any]) -> str:
    prov = payload.get("provenance") or {}
    return f"{prov.get('benchmark') or 'run'} ({prov.get('benchmark_fingerprint') or '?'})"
