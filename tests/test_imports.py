"""sagebench's import graph, read from the source with ``ast`` (nothing is imported).

Why: an import cycle makes a module's behaviour depend on which module a user happens to import
first (a half-initialised module, names missing at import time), and a config loader that pulls in
the sweep (and so Lightning) makes every config mistake wait for Lightning to load. Imports inside
functions run late and are counted apart: only module-level imports (including class bodies and
module-level ``if``/``try`` blocks, but not ``if TYPE_CHECKING:``) can form a cycle at import time.

``python tests/test_imports.py`` prints the module-level cycles and the function-level ones.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "sagebench"


@dataclass
class ImportGraph:
    """Edges between sagebench modules, split by when the import runs, and each module's outside imports."""

    modules: set[str] = field(default_factory=set)
    eager: dict[str, set[str]] = field(default_factory=dict)     # module level: run at import time
    deferred: dict[str, set[str]] = field(default_factory=dict)  # inside a function: run on call
    eager_external: dict[str, set[str]] = field(default_factory=dict)  # top-level names of other packages


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it runs at module import time (False: inside a function)."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, eager: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, eager))
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:  # the body only runs under a type checker
                    visit(ast.Module(body=[stmt], type_ignores=[]), eager)
            else:
                late = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                visit(child, eager and not late)

    visit(tree, True)
    return found


def _resolve(name: str, modules: set[str]) -> str | None:
    """The longest prefix of ``name`` that is a sagebench module (``sagebench.x.Class`` -> ``sagebench.x``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             modules: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    # `from pkg import sub` imports the submodule; `from mod import name` imports mod
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def build_graph(root: Path = ROOT) -> ImportGraph:
    """The import graph of every module under ``root/sagebench``."""
    files = {(_module_name(p, root), p) for p in (root / PACKAGE).rglob("*.py")}
    graph = ImportGraph(modules={name for name, _ in files})
    for name, path in files:
        graph.eager[name], graph.deferred[name], graph.eager_external[name] = set(), set(), set()
        tree = ast.parse(path.read_text(), str(path))
        for node, eager in _imports(tree):
            for target in _targets(node, name, path.name == "__init__.py", graph.modules):
                inside = _resolve(target, graph.modules) if target.split(".")[0] == PACKAGE else None
                if inside is None:
                    if eager and target.split(".")[0] != PACKAGE:
                        graph.eager_external[name].add(target.split(".")[0])
                elif inside != name:
                    (graph.eager if eager else graph.deferred)[name].add(inside)
    return graph


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (each one or more import cycles), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm; the graph is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(out)


def eager_closure(graph: ImportGraph, start: str) -> set[str]:
    """Every sagebench module that importing ``start`` runs (its parent packages included)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for m in [".".join(parts[:i]) for i in range(1, len(parts))] + [module]:
            if m not in seen:
                seen.add(m)
                todo.extend(graph.eager.get(m, ()))
    return seen


def test_the_graph_reader_sees_a_cycle_and_ignores_late_and_type_only_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from sagebench.b import f\n")
    (pkg / "b.py").write_text("from . import c\ndef f():\n    from sagebench import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sagebench.a import x\n"
                              "class C:\n    from .b import f\n")
    graph = build_graph(tmp_path)
    assert graph.eager["sagebench.a"] == {"sagebench.b"}
    assert graph.eager["sagebench.b"] == {"sagebench.c"} and graph.deferred["sagebench.b"] == {"sagebench.a"}
    assert graph.eager["sagebench.c"] == {"sagebench.b"}  # a class body runs at import time; TYPE_CHECKING not
    assert cycles(graph.eager) == [["sagebench.b", "sagebench.c"]]
    assert eager_closure(graph, "sagebench.a") == {"sagebench", "sagebench.a", "sagebench.b", "sagebench.c"}


def all_edges(graph: ImportGraph) -> dict[str, set[str]]:
    """Module-level and function-level edges together, less a package loading its own submodules lazily.

    A cycle hidden behind a function-level import still ties two modules together (neither can be
    read, tested or moved without the other) and breaks as soon as someone hoists the import.
    A package's ``__init__`` importing its own submodules on first use is how it stays cheap to import,
    not a dependency between modules.
    """
    return {m: graph.eager[m] | {t for t in graph.deferred[m] if not t.startswith(m + ".")} for m in graph.modules}


def test_no_module_level_import_cycle():
    found = cycles(build_graph().eager)
    assert not found, "module-level import cycles (each group imports itself through the others): " + \
        "; ".join(" <-> ".join(c) for c in found)


def test_no_import_cycle_hidden_in_a_function():
    found = cycles(all_edges(build_graph()))
    assert not found, "import cycles through function-level imports: " + "; ".join(" <-> ".join(c) for c in found)


def test_config_does_not_reach_the_sweep_nor_lightning():
    """The config loader sits below the sweep: it must not import it, and loading it must not load Lightning."""
    graph = build_graph()
    assert not {m for m in graph.eager["sagebench.config"] | graph.deferred["sagebench.config"]
                if m.startswith("sagebench.sweep")}, "sagebench.config imports sagebench.sweep"
    reached = eager_closure(graph, "sagebench.config")
    assert not {m for m in reached if m.startswith("sagebench.sweep")}, sorted(reached)
    assert not {"lightning", "pytorch_lightning"} & set().union(*(graph.eager_external[m] for m in reached))


def test_a_config_mistake_is_reported_before_lightning_loads():
    """``sagebench eval no_such_key=1`` answers without importing Lightning (seconds, not tens of seconds)."""
    code = ("import sys\nfrom sagebench.cli import main\nrc = main(['eval', 'no_such_key=1'])\n"
            "print('rc', rc, 'lightning' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.strip().splitlines()[-1] == "rc 2 False", done.stdout + done.stderr
    assert "no_such_key" in done.stderr



#: Libraries that cost seconds to import and that only some jobs use: each must load when it is used
#: (Lightning when a Trainer is built, W&B when a run logs to it, matplotlib when a figure is drawn,
#: datasets/pyarrow/pandas when data or results files are read or written, scipy for an interval).
#: timm loads W&B when installed (timm.utils.summary), so timm itself loads when a model is built.
LATE = ("lightning", "pytorch_lightning", "torchmetrics", "wandb", "matplotlib", "datasets", "pyarrow", "pandas",
        "scipy", "timm")


def _loaded(code: str) -> list[str]:
    """The :data:`LATE` libraries (and torch) that ``code`` loaded, run in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {LATE + ('torch',)!r} if m in sys.modules))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def test_importing_the_sweep_loads_no_library_before_it_is_used():
    """``import sagebench.sweep.evaluate`` (and build) costs torch's import, not Lightning's, W&B's or matplotlib's.

    Why: the fixed cost of every job (and of every notebook that imports the API) is what these imports
    cost; Lightning alone (with torchmetrics, which loads scipy and matplotlib) costs seconds.
    """
    assert _loaded("import sagebench, sagebench.cli, sagebench.sweep.build, sagebench.sweep.evaluate") == ["torch"]


def test_building_a_model_loads_timm_without_wandb_and_wandb_still_imports_afterwards():
    """timm imports W&B for its training scripts; sagebench hides it while timm loads (seconds on a busy
    machine, in every run): a model is built without W&B, and ``import wandb`` works as usual afterwards."""
    code = ("import sys\nfrom sagebench.vit.loading import ModelSpec, create_model\n"
            "create_model(ModelSpec('sagebench_fmnist_edge'))\nassert 'timm' in sys.modules\n"
            "assert 'wandb' not in sys.modules, 'building a model loaded W&B'\n"
            "import wandb\nassert callable(wandb.init) and callable(wandb.log)\n")
    assert "wandb" in _loaded(code)


def test_the_cli_answers_help_and_listings_without_torch():
    """``sagebench --help``, ``eval --help``, ``strategies`` and ``config`` load neither torch nor any :data:`LATE`."""
    code = ("import contextlib, io\nfrom sagebench.cli import main\n"
            "for argv in (['--help'], ['eval', '--help'], ['strategies'], ['gates'], ['config']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "        try:\n            main(argv)\n        except SystemExit:\n            pass\n")
    assert _loaded(code) == []


def test_the_public_api_resolves_and_removed_paths_stay_removed():
    """Every name ``sagebench`` exports resolves, ``sagebench.evaluate`` is the function, and the shims are gone."""
    import inspect

    import sagebench

    assert all(getattr(sagebench, name) is not None for name in sagebench.__all__)
    assert inspect.isfunction(sagebench.evaluate)
    # a submodule named evaluate would rebind sagebench.evaluate on import; models/ is now vit/
    assert not [p for p in ("evaluate.py", "evaluate", "models") if (ROOT / PACKAGE / p).exists()]

if __name__ == "__main__":
    g = build_graph()
    for title, edges in (("module-level", g.eager),
                         ("with function-level imports", {m: g.eager[m] | g.deferred[m] for m in g.modules}),
                         ("with function-level imports, less lazy submodules", all_edges(g))):
        found = cycles(edges)
        print(f"{title}: {len(found)} strongly connected group(s)")
        for c in found:
            print("  " + " <-> ".join(c))
