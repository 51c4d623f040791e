"""Composition strategies: which B patches of an image to send.

``register_strategy`` adds one, ``get_strategy`` builds one, ``list_strategies`` lists them.
The built-ins (one small module each, :data:`BUILTIN_MODULES`) register the first time the
registry is used; :mod:`sagebench.strategies.catalog` lists them without importing torch (for
``sagebench strategies`` and config checks, which must answer in well under a second).
"""

from __future__ import annotations

import importlib
from typing import Any

#: The modules of the built-in strategies, imported (and so registered) on first use of the registry.
BUILTIN_MODULES = (
    "attention_prefix", "random", "sage", "uniform",
    "attention_rules", "bat", "diversity_only", "tome",
    "ats", "facility_location", "kdpp",
    "server_attention_oracle", "best_of_random",  # oracle references
)

#: The entry-point group third-party packages declare their strategies in.
ENTRY_POINT_GROUP = "sagebench.strategies"

_REGISTRY_NAMES = ("describe", "get_strategy", "list_strategies", "register_strategy",
                   "strategy_class")
__all__ = ["BUILTIN_MODULES", "ENTRY_POINT_GROUP", "Strategy", *_REGISTRY_NAMES]


def load_builtins() -> None:
    """Import every built-in strategy module (each registers itself with ``@register_strategy``)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")


def __getattr__(name: str) -> Any:
    if name == "Strategy":
        from sagebench.strategies.base import Strategy

        return Strategy
    if name in _REGISTRY_NAMES:
        from sagebench.strategies import registry

        load_builtins()
        return getattr(registry, name)
    if name in BUILTIN_MODULES or name in ("base", "registry", "importance", "catalog"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
