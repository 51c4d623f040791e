"""Analyses of a finished run folder: why strategies differ, not only by how much.

Each analysis reads a run's ``results.json`` (and, where it needs per-image facts, its
``samples.parquet`` and the edge/server models rebuilt from its ``config.yaml``), writes
``RUN_DIR/analysis/<name>.json`` and ``.png``, and returns the JSON's content::

    from sagebench import analysis
    out = analysis.replacement("runs/my-run", limit=200)   # units SAGE swaps vs attention_prefix
    out = analysis.entropy_split("runs/my-run")             # accuracy on focused vs diffuse attention
    out = analysis.coverage("runs/my-run")                  # coverage vs accuracy table, Pearson r
    print(analysis.format_table(out))

``sagebench analyze {replacement,entropy-split,coverage} RUN_DIR`` is the command-line shell.
"""

from __future__ import annotations

from typing import Any, Callable

from sagebench.analysis._coverage import coverage, format_coverage, pearson
from sagebench.analysis._entropy import (
    attention_entropy,
    entropy_split,
    format_entropy_split,
    split_by_entropy,
)
from sagebench.analysis._replacement import format_replacement, replacement
from sagebench.analysis._run import AnalysisError, load_run

ANALYSES: dict[str, Callable[..., dict[str, Any]]] = {
    "replacement": replacement,
    "entropy-split": entropy_split,
    "coverage": coverage,
}

_FORMATTERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "replacement": format_replacement,
    "entropy-split": format_entropy_split,
    "coverage": format_coverage,
}


def format_table(payload: dict[str, Any]) -> str:
    """The terminal table of any analysis result (dispatching on its ``analysis`` field)."""
    return _FORMATTERS[payload["analysis"]](payload)


__all__ = [
    "ANALYSES", "AnalysisError", "attention_entropy", "coverage", "entropy_split", "format_coverage",
    "format_entropy_split", "format_replacement", "format_table", "load_run", "pearson", "replacement",
    "split_by_entropy",
]
