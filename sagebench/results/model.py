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
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sagebench.cells import Cell
from sagebench.errors import SageBenchError

#: what ``evaluate`` adds to the results it returns, never written to results.json
RUNTIME_FIELDS = ("output_dir", "report")
#: short names of a results row's figures, as ``sagebench report --metric`` and :meth:`RunResults.to_dataframe` take
#: them (``ratio``); ``latency`` is the ``latency_ms`` of one uplink channel
METRIC_ALIASES = {"accuracy": "offloaded_accuracy", "ratio": "ceiling_ratio", "overall": "overall_accuracy",
                  "bytes": "bytes_sent", "latency_ms": "latency"}


@dataclass
class RunResults(dict):
    """Everything ``results.json`` holds. ``results`` rows: one per (strategy, budget) cell.

    Also the dict ``evaluate`` used to return: the keys of ``results.json`` (``res["results"]``,
    ``res.get("ceiling")``, ``"timing" in res``, ``json.dumps(res)``), plus ``output_dir`` and ``report``
    once ``evaluate`` set them. Why: callers written for the dict keep working; new code reads the
    attributes. The two views are one: setting an attribute or an item updates both (nested values
    are shared). Write an undeclared key through the mapping (``res["key"] = v``), not into
    :attr:`extra` in place, so that the dict view sees it.
    """

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
    # set by evaluate on what it returns (the run folder; what report_run produced); never in results.json
    output_dir: str | None = field(default=None, compare=False)
    report: dict[str, Any] | None = field(default=None, compare=False)

    REQUIRED = ("schema_version", "benchmark", "results", "num_images")

    # -- the file

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | str | os.PathLike) -> "RunResults":
        """From a results dict (or another ``RunResults``), a results.json path or a run folder."""
        if isinstance(obj, RunResults):
            obj = {**obj.to_json(), **{k: getattr(obj, k) for k in RUNTIME_FIELDS if getattr(obj, k) is not None}}
        elif not isinstance(obj, Mapping):
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
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", *RUNTIME_FIELDS)}
        order = ("schema_version", "benchmark", "config", "strategies", "provenance", "num_images", "num_offloaded",
                 "edge_accuracy", "ceiling", "results", "transmission", "strategy_stats", "nonfinite", "skipped",
                 "resume", "warnings", "timing")
        return {**{k: out[k] for k in order}, **self.extra}

    def __post_init__(self) -> None:
        if self.num_offloaded is not None and self.num_images and self.num_offloaded > self.num_images:
            raise SageBenchError(f"results claim {self.num_offloaded} offloaded of {self.num_images} images")
        object.__setattr__(self, "_ready", True)
        self._sync()

    # -- the dict of old callers (the keys of results.json, then output_dir and report when set)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if self.__dict__.get("_ready"):
            self._sync()

    def _sync(self) -> None:
        """The dict view rebuilt from the attributes, in results.json's order."""
        dict.clear(self)
        dict.update(self, self.to_json())
        dict.update(self, {k: getattr(self, k) for k in RUNTIME_FIELDS if getattr(self, k) is not None})

    def __setitem__(self, key: str, value: Any) -> None:
        if key in _FILE_FIELDS or key in RUNTIME_FIELDS:
            setattr(self, key, value)
        else:
            self.extra[key] = value
            dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        if key in RUNTIME_FIELDS and getattr(self, key) is not None:
            setattr(self, key, None)
        elif key in _FILE_FIELDS:
            raise KeyError(f"{key!r} is a field every results file has: it cannot be deleted")
        else:
            del self.extra[key]
            dict.__delitem__(self, key)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key not in self:
            self[key] = default
        return self[key]

    _MISSING = object()

    def pop(self, key: str, default: Any = _MISSING) -> Any:  # type: ignore[override]
        if key not in self:
            if default is RunResults._MISSING:
                raise KeyError(key)
            return default
        value = self[key]
        del self[key]
        return value

    def popitem(self) -> tuple[str, Any]:
        raise TypeError("RunResults has fields every results file needs: delete undeclared keys by name")

    def clear(self) -> None:
        raise TypeError("RunResults has fields every results file needs: it cannot be cleared")

    def __reduce__(self) -> tuple:
        """Copied and pickled by its fields (a dict subclass's default would replay the items first)."""
        return (_from_fields, (type(self), {f.name: getattr(self, f.name) for f in fields(self)}))

    def __reduce_ex__(self, protocol: Any) -> tuple:  # type: ignore[override]
        return self.__reduce__()

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

    def to_dataframe(self, wide: bool = False, metric: str = "offloaded_accuracy", channel: str | None = None) -> Any:
        """The results as a pandas DataFrame: long (one row per strategy and budget, every figure, each
        interval as ``<metric>_low`` / ``<metric>_high``, each channel's mean request latency as
        ``latency_ms_<channel>``) or ``wide`` (strategies x budgets of ``metric``, with ``(metric, "low")`` /
        ``(metric, "high")`` column levels beside the value). ``metric`` takes the names and aliases of
        ``sagebench report`` (``ratio``; ``latency`` over ``channel``, default the first listed)."""
        import pandas as pd

        rows = []
        for r in self.results:
            row = {k: v for k, v in r.items() if not k.endswith("_ci") and not isinstance(v, (dict, list))}
            for k, v in r.items():
                if k.endswith("_ci") and isinstance(v, (list, tuple)) and len(v) == 2:
                    row[f"{k[:-3]}_low"], row[f"{k[:-3]}_high"] = v
            for ch, ms in (r.get("latency_ms") or {}).items():
                row[f"latency_ms_{ch}"] = ms
            rows.append(row)
        long = pd.DataFrame(rows)
        if not wide:
            return long
        metric = METRIC_ALIASES.get(metric, metric)
        if metric == "latency":
            channels = [c for c in long.columns if c.startswith("latency_ms_")]
            if not channels:
                raise KeyError("these results report no latency (no transmission.channels)")
            metric = f"latency_ms_{channel}" if channel is not None else channels[0]
        if metric not in long.columns:
            raise KeyError(f"no metric {metric!r} in the results; known: {sorted(long.columns)}")
        order = {label: i for i, label in enumerate(self.strategy_labels)}
        parts = {name: long.pivot(index="strategy", columns="budget", values=column)
                 for name, column in ((metric, metric), ("low", f"{metric}_low"), ("high", f"{metric}_high"))
                 if column in long.columns}
        table = pd.concat(parts, axis=1)
        return table.sort_index(key=lambda idx: idx.map(order))


def _from_fields(cls: type, values: dict[str, Any]) -> "RunResults":
    return cls(**values)


#: the fields of results.json (the mapping's keys besides ``extra``'s and the runtime ones)
_FILE_FIELDS = frozenset(f.name for f in fields(RunResults)) - {"extra", *RUNTIME_FIELDS}
