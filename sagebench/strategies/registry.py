"""Registry of composition strategies: one decorator to add one, one call to build one.

Built-ins register on import of :mod:`sagebench.strategies`. Third-party packages register
without touching sagebench by declaring an entry point in the group ``sagebench.strategies``
(``my_strategy = "my_pkg.module:MyStrategy"``, or pointing at a module whose import runs
``@register_strategy``). Entry points are loaded lazily, the first time a name is looked up or
the registry is listed, so a broken plug-in cannot break ``import sagebench``.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import logging
from importlib.metadata import entry_points
from typing import Callable, TypeVar

from sagebench.errors import ConfigError
from sagebench.strategies import ENTRY_POINT_GROUP  # one owner: the package
from sagebench.strategies.base import Strategy

__all__ = ["ENTRY_POINT_GROUP", "describe", "get_strategy", "list_strategies", "register_strategy", "strategy_class"]
_REGISTRY: dict[str, type[Strategy]] = {}
_entry_points_loaded = False
_log = logging.getLogger(__name__)

S = TypeVar("S", bound=type[Strategy])


def register_strategy(name: str) -> Callable[[S], S]:
    """Class decorator: make ``cls`` available as ``get_strategy(name)``.

    The first line of the class docstring is the description ``sagebench strategies`` shows.
    """
    if not name or not name.replace("_", "").isalnum() or name != name.lower():
        raise ValueError(f"strategy names are lower-case identifiers, got {name!r}")

    def decorator(cls: S) -> S:
        if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
            raise TypeError(f"@register_strategy({name!r}) must decorate a Strategy subclass")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"strategy {name!r} is already registered by {existing.__module__}.{existing.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _load_entry_points() -> None:
    """The built-ins, then the plug-ins (once), so that every lookup sees both."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from sagebench.strategies import load_builtins

    load_builtins()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not hide the others
            _log.warning("could not load strategy plug-in %s (%s): %s", ep.name, ep.value, exc)
            continue
        if inspect.isclass(obj) and issubclass(obj, Strategy) and ep.name not in _REGISTRY:
            register_strategy(ep.name)(obj)


def list_strategies(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style wildcard (``list_strategies("attention*")``), sorted."""
    _load_entry_points()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name``; unknown names fail with the known ones and a suggestion."""
    _load_entry_points()
    if name not in _REGISTRY:
        known = sorted(_REGISTRY)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"Unknown strategy {name!r}.{hint} Known strategies: {', '.join(known)}.")
    return _REGISTRY[name]


def describe(name: str) -> str:
    """First line of the strategy's docstring."""
    doc = inspect.getdoc(strategy_class(name)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def get_strategy(name: str, **options: object) -> Strategy:
    """Build the strategy registered as ``name`` with its options; bad options fail clearly."""
    cls = strategy_class(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"Bad options for strategy {name!r}: {exc}") from exc
