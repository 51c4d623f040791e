"""The strategies ``sagebench strategies`` lists, read without importing torch.

Why: listing names is what a user does first, and importing torch for it costs 3-7 s. The
built-ins are read from their source files (each ``@register_strategy("name")`` class and the
first line of its docstring); plug-ins declared as entry points are imported, since their
descriptions live in their code. ``tests/test_strategy_contract.py`` checks that this catalogue
and the imported registry agree, name by name.
"""

from __future__ import annotations

import ast
import fnmatch
from importlib.metadata import entry_points
from pathlib import Path

from sagebench.strategies import BUILTIN_MODULES, ENTRY_POINT_GROUP


def _first_line(doc: str | None) -> str:
    doc = (doc or "").strip()
    return doc.splitlines()[0] if doc else ""


def _registered(path: Path) -> dict[str, str]:
    """``{name: description}`` of the classes of one module decorated with ``@register_strategy("name")``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: dict[str, str] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for deco in node.decorator_list:
            if (isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "register_strategy"
                    and deco.args and isinstance(deco.args[0], ast.Constant)):
                found[str(deco.args[0].value)] = _first_line(ast.get_docstring(node))
    return found


def builtin_catalog() -> dict[str, str]:
    """``{name: description}`` of every built-in strategy, from the source files only."""
    here = Path(__file__).parent
    out: dict[str, str] = {}
    for module in BUILTIN_MODULES:
        out.update(_registered(here / f"{module}.py"))
    return out


def catalog(pattern: str = "*") -> dict[str, str]:
    """``{name: description}`` of the strategies matching ``pattern``, sorted by name.

    Only when a plug-in is installed (an entry point in ``sagebench.strategies``) is the registry
    imported, and with it torch.
    """
    found = builtin_catalog()
    if list(entry_points(group=ENTRY_POINT_GROUP)):
        from sagebench.strategies import describe, list_strategies

        found = {name: describe(name) for name in list_strategies()}
    return {n: found[n] for n in sorted(found) if fnmatch.fnmatchcase(n, pattern)}
