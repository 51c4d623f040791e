"""How a (strategy, budget) cell is named: the one owner of every per-cell key.

Why one module: the per-sample columns (``pred/sage/B8``), the summary and W&B keys
(``offloaded_acc/sage/B8``), the leaderboard's checks and the analyses all name cells; written
out in several places they drifted apart (a byte-budget run wrote ``pred/sage/bytes400`` while
the leaderboard looked for ``pred/sage/B400``). Everything builds and parses names here.
Torch-free, so that reading results needs no model stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from sagebench.errors import SageBenchError

BUDGET_UNITS = ("patches", "bytes")
_PREFIX = {"patches": "B", "bytes": "bytes"}


def check_unit(unit: str) -> str:
    if unit not in BUDGET_UNITS:
        raise SageBenchError(f"budget unit must be one of {BUDGET_UNITS}, got {unit!r}")
    return unit


def budget_token(budget: int, unit: str = "patches") -> str:
    """``B24`` (24 patches) or ``bytes512`` (512 bytes per request)."""
    return f"{_PREFIX[check_unit(unit)]}{int(budget)}"


def parse_budget_token(token: str) -> tuple[int, str]:
    """Inverse of :func:`budget_token`: ``"bytes512"`` -> ``(512, "bytes")``."""
    for unit, prefix in sorted(_PREFIX.items(), key=lambda kv: -len(kv[1])):
        rest = token[len(prefix):]
        if token.startswith(prefix) and rest.isdigit():
            return int(rest), unit
    raise SageBenchError(f"not a budget token: {token!r} (expected e.g. B24 or bytes512)")


@dataclass(frozen=True)
class Cell:
    """One (strategy, budget) cell of a sweep."""

    strategy: str
    budget: int
    unit: str = "patches"

    @property
    def token(self) -> str:
        return budget_token(self.budget, self.unit)

    @property
    def name(self) -> str:
        """``<strategy>/<token>``, e.g. ``sage/B8``: the cell in phase timers and messages."""
        return f"{self.strategy}/{self.token}"

    def key(self, field: str) -> str:
        """``<field>/<strategy>/<token>``: a per-sample column or a summary key."""
        return f"{field}/{self.name}"

    @property
    def title(self) -> str:
        """Human form for messages: ``sage @ B=24`` or ``sage @ 512 bytes``."""
        return f"{self.strategy} @ " + (f"B={self.budget}" if self.unit == "patches" else f"{self.budget} bytes")

    @classmethod
    def from_row(cls, row: dict) -> "Cell":
        """The cell of a results row (``strategy``, ``budget``, ``budget_unit``)."""
        return cls(str(row["strategy"]), int(row["budget"]), row.get("budget_unit", "patches"))


def parse_key(key: str) -> tuple[str, Cell]:
    """``"offloaded_acc/sage[prefilter=3.0]/B8"`` -> ``("offloaded_acc", Cell("sage[prefilter=3.0]", 8))``.

    The strategy label may itself hold ``/`` (an option value): the field is the first part and
    the budget token the last.
    """
    field, sep, rest = key.partition("/")
    strategy, sep2, token = rest.rpartition("/")
    if not sep or not sep2 or not strategy:
        raise SageBenchError(f"not a cell key: {key!r} (expected <field>/<strategy>/<budget token>)")
    budget, unit = parse_budget_token(token)
    return field, Cell(strategy, budget, unit)
