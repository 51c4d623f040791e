"""Composition strategies: which B patches of an image to send.

``register_strategy`` adds one, ``get_strategy`` builds one, ``list_strategies`` lists them.
Importing this package registers the built-ins (one small module each).
"""

from sagebench.strategies import (  # noqa: F401,E402  (built-ins)  # noqa: F401,E402  (built-ins)  # noqa: F401,E402  (built-ins)
    ats,
    attention_prefix,
    attention_rules,
    bat,
    diversity_only,
    facility_location,
    kdpp,
    random,
    sage,
    tome,
    uniform,
)
from sagebench.strategies.base import Strategy
from sagebench.strategies.registry import (
    ENTRY_POINT_GROUP,
    describe,
    get_strategy,
    list_strategies,
    register_strategy,
    strategy_class,
)

__all__ = [
    "ENTRY_POINT_GROUP", "Strategy", "describe", "get_strategy", "list_strategies",
    "register_strategy", "strategy_class",
]
