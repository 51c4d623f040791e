"""What an analysis is: an experiment that reads a finished run folder (``sagebench analyze NAME RUN_DIR``).

Each analysis writes ``RUN_DIR/analysis/<name>.json`` and ``.png`` and returns the JSON's content;
:meth:`Analysis.format` turns that content into the terminal table. Built-ins and plug-ins (entry-point
group ``sagebench.analyses``) register with ``@register_analysis("name")``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from sagebench.plugins import ANALYSES

__all__ = ["Analysis", "register_analysis"]

#: Keyword arguments of :meth:`Analysis.run` every analysis takes; the others are its options.
COMMON = ("run_dir", "out_dir", "command")


class Analysis(ABC):
    """An experiment on a finished run: :meth:`run` computes and writes it, :meth:`format` prints it."""

    name: str = "analysis"

    @abstractmethod
    def run(self, run_dir: str | Path, *, out_dir: str | Path | None = None, command: str | None = None,
            **options: Any) -> dict[str, Any]:
        """Analyse ``run_dir``; write ``<out_dir or RUN_DIR/analysis>/<name>.json`` and ``.png``; return the JSON."""

    @abstractmethod
    def format(self, payload: dict[str, Any]) -> str:
        """The terminal table of what :meth:`run` returned."""

    def run_options(self) -> dict[str, inspect.Parameter]:
        """The options of :meth:`run` beyond those every analysis takes (``limit``, ``batch_size``, ...)."""
        params = inspect.signature(self.run).parameters
        return {n: p for n, p in params.items()
                if n not in COMMON and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


#: Class decorator: ``@register_analysis("name")`` makes an :class:`Analysis` runnable as ``sagebench analyze name``.
register_analysis = ANALYSES.register
