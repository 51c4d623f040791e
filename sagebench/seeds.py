"""Seeds: a strategy that draws randomness, evaluated at several seeds in one run, and its spread.

Why: ``random`` (and ``best_of_random_oracle``) draw their patches from the run seed, so one run shows one
draw; whether a strategy beats ``random`` by more than ``random`` varies from seed to seed is unknown
from it. ``seeds=[0,1,2,3,4]`` evaluates every strategy that declares :attr:`Strategy.seeded
<sagebench.strategies.base.Strategy.seeded>` at each seed, on the same images and the same edge and server
passes (one extra cell per other seed, labelled ``<label>@seed<k>``: a :class:`SeededStrategy`), and
results.json gains a ``seeds`` block: per (strategy, budget), the figure at each seed with its Wilson
interval, and their mean, sample standard deviation, minimum and maximum.

How the paired tests use it: they are **per seed**, never pooled. The strategy's usual row (its plain
label) is the run seed's draw, and boards rank that row as before; ``sagebench leaderboard compare RUN -s
sage -s random`` reports the paired test at the run seed and, beside it, the same test against each other
seed's draw (``random@seed<k>``), so a claim is one that holds at every seed (the worst seed's interval is
the one to quote; no correction across seeds is applied, and none is needed for a claim made at all of them).
The spread over a handful of seeds is not an interval of anything: it is shown as the range it is.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from sagebench.errors import ConfigError
from sagebench.strategies.base import Strategy

#: What results.json says the block is.
NOTE = ("each seeded strategy evaluated at every seed on the same images; per (strategy, budget): each seed's "
        "figure with its Wilson interval, and the mean, sample std (n-1), min and max over seeds. The plain label "
        "is the run seed's draw (what boards rank); paired tests are per seed (leaderboard compare), never pooled.")
SEP = "@seed"


class SeededStrategy(Strategy):
    """A seeded strategy at another seed than the run's: the inner strategy, given evidence whose ``seed`` is
    ``seed``. Not registered: ``seeds=[...]`` makes one per (seeded strategy, other seed)."""

    def __init__(self, inner: Strategy, seed: int) -> None:  # noqa: D107 (not a plug-in: no options of its own)
        self.inner = inner
        self.seed = int(seed)
        self.name = inner.name
        self.requires = inner.requires
        self.stat_names = inner.stat_names

    @property
    def label(self) -> str:
        return f"{self.inner.label}{SEP}{self.seed}"

    def options(self) -> dict[str, object]:
        return self.inner.options()

    def code_identity(self) -> dict[str, object]:  # type: ignore[override]
        return self.inner.code_identity()

    def selection_macs(self, budget: int, edge: Any) -> int | None:
        return self.inner.selection_macs(budget, edge)

    def select_with_stats(self, evidence: Any, budget: int) -> tuple[Any, dict[str, Any]]:
        # a copy with this seed (and a fresh memo: a value derived under one seed never serves another)
        return self.inner.select_with_stats(dataclasses.replace(evidence, seed=self.seed), budget)

    def select(self, evidence: Any, budget: int) -> Any:
        return self.select_with_stats(evidence, budget)[0]


def check_seeds(seeds: Any, run_seed: int) -> list[int] | None:
    """``seeds`` as distinct ints, the run seed among them (its draw is the strategy's usual row); None: off."""
    if seeds is None:
        return None
    values = list(seeds) if isinstance(seeds, Sequence) and not isinstance(seeds, str) else None  # a ListConfig too
    if not values or any(isinstance(s, bool) or not isinstance(s, int) for s in values):
        raise ConfigError(f"seeds must be a non-empty list of integers, e.g. seeds=[0,1,2,3,4]; got {seeds!r}.")
    if len(set(values)) != len(values):
        raise ConfigError(f"seeds lists a seed twice: {values}.")
    if int(run_seed) not in values:
        raise ConfigError(f"seeds={values} must include the run's seed ({run_seed}): its draw is each seeded "
                          f"strategy's usual row. Add it, or set seed= to one of them.")
    return [int(s) for s in values]


def expand_seeds(strategies: Sequence[Strategy], seeds: Sequence[int] | None, run_seed: int) -> list[Strategy]:
    """The strategies, then for each seeded one a :class:`SeededStrategy` per seed other than the run's."""
    out = list(strategies)
    if not seeds:
        return out
    for strategy in strategies:
        if getattr(strategy, "seeded", False):
            out += [SeededStrategy(strategy, s) for s in seeds if int(s) != int(run_seed)]
    return out


def _spread(values: list[float | None]) -> dict[str, float | None]:
    known = [v for v in values if v is not None]
    if not known:
        return {"mean": None, "std": None, "min": None, "max": None}
    mean = sum(known) / len(known)
    std = math.sqrt(sum((v - mean) ** 2 for v in known) / (len(known) - 1)) if len(known) > 1 else None
    return {"mean": mean, "std": std, "min": min(known), "max": max(known)}


def seed_summary(results: Sequence[dict[str, Any]], seeds: Sequence[int], run_seed: int) -> dict[str, Any]:
    """The ``seeds`` block from the results rows of a run with ``seeds`` (plain labels: the run seed's draw;
    ``<label>@seed<k>``: seed k's)."""
    rows = {(r["strategy"], r["budget"]): r for r in results}
    seeded = list(dict.fromkeys(r["strategy"].rsplit(SEP, 1)[0] for r in results if SEP in r["strategy"]))
    out = []
    for label in seeded:
        for budget in dict.fromkeys(r["budget"] for r in results if r["strategy"] == label):
            per_seed = []
            for seed in seeds:
                row = rows.get((label if int(seed) == int(run_seed) else f"{label}{SEP}{seed}", budget))
                if row is None:
                    continue
                per_seed.append({"seed": int(seed), "offloaded_accuracy": row.get("offloaded_accuracy"),
                                 "offloaded_accuracy_ci": row.get("offloaded_accuracy_ci"),
                                 "overall_accuracy": row.get("overall_accuracy"),
                                 "overall_accuracy_ci": row.get("overall_accuracy_ci"),
                                 "ceiling_ratio": row.get("ceiling_ratio")})
            out.append({"strategy": label, "budget": budget, "seeds": [p["seed"] for p in per_seed],
                        "per_seed": per_seed,
                        "offloaded_accuracy": _spread([p["offloaded_accuracy"] for p in per_seed]),
                        "overall_accuracy": _spread([p["overall_accuracy"] for p in per_seed]),
                        "ceiling_ratio": _spread([p["ceiling_ratio"] for p in per_seed])})
    return {"seeds": [int(s) for s in seeds], "run_seed": int(run_seed), "note": NOTE, "rows": out}


def format_seeds(block: dict[str, Any]) -> str:
    """Terminal lines: per seeded strategy and budget, the offloaded accuracy's mean +- std and range over seeds."""
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}"

    lines = [f"seeds {block['seeds']} (run seed {block['run_seed']}): offloaded accuracy % mean +- std [min, max] "
             "over seeds; paired tests are per seed (leaderboard compare)"]
    by: dict[str, list[str]] = {}
    for row in block["rows"]:
        acc = row["offloaded_accuracy"]
        std = "" if acc["std"] is None else f" +- {100 * acc['std']:.1f}"
        by.setdefault(row["strategy"], []).append(f"B={row['budget']}: {pct(acc['mean'])}{std} "
                                                  f"[{pct(acc['min'])}, {pct(acc['max'])}]")
    lines += [f"{label}: " + "; ".join(cells) for label, cells in by.items()]
    return "\n".join(lines)
