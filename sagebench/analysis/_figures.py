"""Matplotlib on the Agg canvas, without pyplot: as :mod:`sagebench.reporting.plots` draws a run's figures.

Why not pyplot: no global figure state and no display are needed, so an analysis can run on a
headless server or inside a notebook without changing its backend.
"""

from __future__ import annotations

from typing import Any

from sagebench.reporting.plots import figure, save  # noqa: F401  (re-exported for the analyses)


def title_of(payload: dict[str, Any]) -> str:
    prov = payload.get("provenance") or {}
    return f"{prov.get('benchmark') or 'run'} ({prov.get('benchmark_fingerprint') or '?'})"
