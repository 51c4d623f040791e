# ruff: noqa: I001  (import order matters: the registry first, then the built-ins that register into it)
"""Composition strategies: which B patches of an image to send.

``register_strategy`` adds one, ``get_strategy`` builds one, ``list_strategies`` lists them.
Importing this package registers the built-ins (one small module each).
"""

from sagebench.strategies.base import Strategy
from sagebench.strategies.registry import (
    ENTRY_POINT_GROUP,
    describe,
    get_strategy,
    list_strategies,
    register_strategy,
    strategy_class,
)
from sagebench.strategies import attention_prefix, random, sage, uniform  # noqa: F401,E402  (built-ins)
from sagebench.strategies import attention_rules, bat, diversity_only, tome  # noqa: F401,E402  (built-ins)
from sagebench.strategies import ats, facility_location, kdpp  # noqa: F401,E402  (built-ins)
from sagebench.strategies import server_attention_oracle  # noqa: F401,E402  (an oracle reference)

__all__ = [
    "ENTRY_POINT_GROUP", "Strategy", "describe", "get_strategy", "list_strategies",
    "register_strategy", "strategy_class",
]
