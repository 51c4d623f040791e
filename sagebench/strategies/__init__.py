"""Composition strategies: which B patches of an image to send.

``register_strategy`` adds one, ``get_strategy`` builds one, ``list_strategies`` lists them.
The built-ins (one small module each, :data:`BUILTIN_MODULES`) are read from their source by the
registry (:data:`sagebench.plugins.STRATEGIES`) and each is imported when first built, so listing
them (``sagebench strategies``) answers without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: The modules of the built-in strategies (each registers its classes with ``@register_strategy`` on import).
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
    """Import every built-in strategy module (the registry imports each on first use; this imports all now)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")


def __getattr__(name: str) -> Any:
    if name == "Strategy":
        from sagebench.strategies.base import Strategy

        return Strategy
    if name in _REGISTRY_NAMES:
        from sagebench.strategies import registry

        return getattr(registry, name)
    if name in BUILTIN_MODULES or name in ("base", "registry", "importance"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
