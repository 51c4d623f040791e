"""Registry of composition strategies: one decorator to add one, one call to build one.

The strategies' face of :data:`sagebench.plugins.STRATEGIES` (a :class:`sagebench.registry.Registry`).
Built-ins are read from their source files and imported one by one when first built; third-party
packages register without touching sagebench by declaring an entry point in the group
``sagebench.strategies`` (``my_strategy = "my_pkg.module:MyStrategy"``, or pointing at a module
whose import runs ``@register_strategy``). Listing names imports no plug-in, so a broken plug-in
cannot break ``import sagebench`` or ``sagebench strategies``; it fails when it is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, TypeVar

from sagebench.plugins import STRATEGIES
from sagebench.strategies import ENTRY_POINT_GROUP  # one owner: the package

if TYPE_CHECKING:
    from sagebench.strategies.base import Strategy

__all__ = ["ENTRY_POINT_GROUP", "describe", "get_strategy", "list_strategies", "register_strategy", "strategy_class"]

S = TypeVar("S", bound="type[Strategy]")


def register_strategy(name: str) -> Callable[[S], S]:
    """Class decorator: make ``cls`` available as ``get_strategy(name)``.

    The first line of the class docstring is the description ``sagebench strategies`` shows.
    """
    return STRATEGIES.register(name)


def list_strategies(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style wildcard (``list_strategies("attention*")``), sorted.

    Imports no strategy (built-ins are read from source, plug-ins by their entry-point names).
    """
    return STRATEGIES.names(pattern)


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name``; unknown names fail with the known ones and a suggestion."""
    return STRATEGIES.get(name)


def describe(name: str) -> str:
    """First line of the strategy's docstring."""
    return STRATEGIES.describe(name)


def get_strategy(name: str, **options: Any) -> Strategy:
    """Build the strategy registered as ``name`` with its options; bad options fail clearly."""
    return STRATEGIES.create(name, **options)
