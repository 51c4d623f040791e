"""Analyses of a finished run folder: why strategies differ, not only by how much.

Each analysis reads a run's ``results.json`` (and, where it needs per-image facts, its
``samples.parquet`` and the edge/server models rebuilt from its ``config.yaml``), writes
``RUN_DIR/analysis/<name>.json`` and ``.png``, and returns the JSON's content::

    from sagebench import analysis
    out = analysis.replacement("runs/my-run", limit=200)   # units SAGE swaps vs attention_prefix
    out = analysis.entropy_split("runs/my-run")             # accuracy on focused vs diffuse attention
    out = analysis.coverage("runs/my-run")                  # coverage vs accuracy table, Pearson r
    print(analysis.format_table(out))

``sagebench analyze {replacement,entropy-split,coverage} RUN_DIR`` is the command-line shell;
``sagebench analyses`` lists them. Each is an :class:`Analysis` registered by name
(:data:`sagebench.plugins.ANALYSES`); packages add their own through the entry-point group
``sagebench.analyses``.
"""

from __future__ import annotations

from typing import Any

from sagebench.analysis._coverage import coverage, format_coverage, pearson
from sagebench.analysis._entropy import (
    attention_entropy,
    entropy_split,
    format_entropy_split,
    split_by_entropy,
)
from sagebench.analysis._replacement import format_replacement, replacement
from sagebench.analysis._run import AnalysisError, load_run
from sagebench.analysis.base import Analysis, register_analysis


def format_table(payload: dict[str, Any]) -> str:
    """The terminal table of any analysis result (the analysis registered under its ``analysis`` field)."""
    from sagebench.plugins import ANALYSES

    return ANALYSES.create(payload["analysis"]).format(payload)


__all__ = [
    "Analysis", "AnalysisError", "attention_entropy", "coverage", "entropy_split", "format_coverage",
    "format_entropy_split", "format_replacement", "format_table", "load_run", "pearson", "register_analysis", "replacement",
    "split_by_entropy",
]
