"""The typed results of a run: one object that evaluate writes and tracking and the leaderboard read.

Why typed (as MTEB's ``TaskResult``): the fields of ``results.json`` are declared once, here,
instead of being spelled out as dict keys in every module that touches them; ``to_json`` /
``from_json`` are the only way between the object and the file, and ``from_json`` says what is
missing instead of failing on a ``KeyError`` deep inside a reader. On disk it stays plain JSON
(schema ``results.schema.json``), so older files and third-party tools keep working; fields
this version does not know are kept in :attr:`RunResults.extra` and written back unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sagebench.cells import Cell
from sagebench.errors import SageBenchError


@dataclass
class RunResults:
    """Everything ``results.json`` holds. ``results`` rows: one per (strategy, budget) cell."""

    schema_version: str
    benchmark: dict[str, Any]
    results: list[dict[str, Any]]
    num_images: int
    num_offloaded: int | None = None  # None in reported (copied, not measured) entries
    edge_accuracy: float | None = None
    ceiling: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    strategies: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    transmission: dict[str, Any] = field(default_factory=dict)
    strategy_stats: list[dict[str, Any]] = field(default_factory=list)
    nonfinite: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, Any] = field(default_factory=dict)
    resume: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not declare (kept as they are)

    REQUIRED = ("schema_version", "benchmark", "results", "num_images")

    # -- the file

    @classmethod
    def from_json(cls, obj: dict[str, Any] | str | os.PathLike) -> "RunResults":
        """From a results dict, a results.json path or a run folder."""
        if not isinstance(obj, dict):
            path = Path(obj)
            path = path / "results.json" if path.is_dir() else path
            obj = json.loads(path.read_text())
        missing = [k for k in cls.REQUIRED if k not in obj]
        if missing:
            raise SageBenchError(f"not a sagebench results file: it lacks {', '.join(missing)}")
        declared = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in obj.items() if k in declared},
                   extra={k: v for k, v in obj.items() if k not in declared})

    def to_json(self) -> dict[str, Any]:
        """The results dict, in the order results.json has always had (undeclared keys last)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        order = ("schema_version", "benchmark", "config", "strategies", "provenance", "num_images", "num_offloaded",
                 "edge_accuracy", "ceiling", "results", "transmission", "strategy_stats", "nonfinite", "skipped",
                 "resume", "warnings", "timing")
        return {**{k: out[k] for k in order}, **self.extra}

    def __post_init__(self) -> None:
        if self.num_offloaded is not None and self.num_images and self.num_offloaded > self.num_images:
            raise SageBenchError(f"results claim {self.num_offloaded} offloaded of {self.num_images} images")

    # -- reading it

    @property
    def budget_unit(self) -> str:
        return str((self.transmission or {}).get("budget_unit")
                   or (self.results[0].get("budget_unit") if self.results else None) or "patches")

    @property
    def fingerprint(self) -> str | None:
        return self.benchmark.get("fingerprint")

    @property
    def offload_rate(self) -> float | None:
        return self.num_offloaded / self.num_images if self.num_images else None

    def cells(self) -> list[Cell]:
        return [Cell.from_row(r) for r in self.results]

    def row(self, strategy: str, budget: int) -> dict[str, Any]:
        for r in self.results:
            if r["strategy"] == strategy and int(r["budget"]) == int(budget):
                return r
        raise KeyError(f"no result for {strategy!r} at budget {budget}")

    @property
    def strategy_labels(self) -> list[str]:
        """Strategy labels in the run's order."""
        labels = [str(s["label"]) for s in self.strategies] if self.strategies else []
        return labels or list(dict.fromkeys(str(r["strategy"]) for r in self.results))

    @property
    def budgets(self) -> list[int]:
        return sorted({int(r["budget"]) for r in self.results})
