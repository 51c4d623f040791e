"""The generic plug-in registry (:mod:`sagebench.registry`) and the five registries of :mod:`sagebench.plugins`.

What a registry promises: a base-class check at registration, duplicates refused, unknown names
answered with the known ones and a suggestion, options read from the class and checked before it
is built, and laziness -- listing names reads built-ins from source and plug-ins from their
entry-point names, and imports neither; a plug-in is imported when it is asked for. Installed
plug-ins are faked with a temporary ``*.dist-info`` folder on ``sys.path``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated

import pytest

from sagebench.errors import ConfigError
from sagebench.plugins import REGISTRIES
from sagebench.registry import REQUIRED, Configurable, Option, Registry, class_options


class Widget(Configurable):
    """A base class for the tests' own registry."""


def _registry(**kwargs) -> Registry:
    return Registry("widget", "widgets", Widget, **kwargs)


# --------------------------------------------------------------------------- registration


def test_only_subclasses_of_the_base_are_registered():
    reg = _registry()
    with pytest.raises(TypeError, match="must be a subclass of .*Widget"):
        reg.register("plain")(type("Plain", (), {}))
    with pytest.raises(TypeError, match="must be a subclass"):
        reg.add("instance", Widget())
    objects = Registry("thing", "things", Widget, instances=True)
    with pytest.raises(TypeError, match="must be an instance"):
        objects.add("cls", Widget)
    thing = Widget()
    assert objects.add("one", thing) is thing and objects.get("one") is thing


def test_a_registered_class_learns_its_name_and_a_taken_name_is_refused():
    reg = _registry()

    @reg.register("blue")
    class Blue(Widget):
        """Blue."""

    assert Blue.name == "blue" and reg.get("blue") is Blue
    reg.register("blue")(Blue)  # the same class again: nothing changes
    with pytest.raises(ValueError, match="'blue' is already registered by .*Blue"):
        reg.register("blue")(type("Other", (Widget,), {}))
    with pytest.raises(ValueError, match="lower case"):
        reg.register("Blue")
    reg.unregister("blue")
    assert reg.names() == []


def test_an_unknown_name_lists_the_known_ones_with_a_suggestion():
    reg = _registry(unknown_hint=" (or a path)")
    for name in ("alpha", "beta"):
        reg.register(name)(type(name.title(), (Widget,), {}))
    with pytest.raises(ConfigError, match=r"Unknown widget 'alpah'\. Did you mean 'alpha'\? "
                                          r"Known widgets: alpha, beta \(or a path\)\."):
        reg.get("alpah")
    assert reg.names("b*") == ["beta"]


# --------------------------------------------------------------------------- options


class Dial(Widget):
    """A widget with options."""

    ignored_options = frozenset({"legacy"})

    def __init__(self, level: Annotated[int, "how far up"] = 3, label: str | None = None, *, scale: float) -> None:
        if level < 0:
            raise ConfigError(f"widget 'dial': level must be >= 0, got {level}.")
        self.level, self.label, self.scale = level, label, scale


def test_options_are_read_from_the_init_signature_with_their_help():
    assert class_options(Dial) == (Option("level", "int", 3, "how far up"), Option("label", "str | None", None, ""),
                                   Option("scale", "float", REQUIRED, ""))
    assert Dial(scale=1.0).options() == {"level": 3, "label": None, "scale": 1.0}
    assert class_options(Widget) == ()


def test_create_checks_the_options_before_building():
    reg = _registry()
    reg.register("dial")(Dial)
    reg.register("plain")(type("Plain", (Widget,), {}))
    assert reg.create("dial", scale=2.0, level=5, legacy=1).options() == {"level": 5, "label": None, "scale": 2.0}
    with pytest.raises(ConfigError, match="widget 'dial' has no option 'levl'. Did you mean 'level'?"):
        reg.create("dial", scale=1.0, levl=2)
    with pytest.raises(ConfigError, match="needs the option.* scale"):
        reg.create("dial")
    with pytest.raises(ConfigError, match="level must be >= 0"):  # the class's own check
        reg.create("dial", scale=1.0, level=-1)
    with pytest.raises(ConfigError, match="'plain' has no option 'level'. It takes no options."):
        reg.create("plain", level=1)


# --------------------------------------------------------------------------- built-ins: read from source, imported on use


@pytest.mark.parametrize("plural", sorted(REGISTRIES))
def test_every_builtin_read_from_source_matches_the_imported_plugin(plural):
    """What the CLI and ``eval --help`` show without importing (names, descriptions, options) is what the
    imported classes say."""
    registry = REGISTRIES[plural]
    from_source = {lazy.name: (lazy.summary, lazy.options) for lazy in registry.read_builtins()}
    builtins = registry.names(builtin_only=True)
    assert builtins and sorted(from_source) == builtins
    imported = {n: (registry.describe(n), registry.options(n)) for n in builtins}  # imports each
    assert from_source == imported
    assert all(description for description, _ in imported.values())
    assert all(registry.origin(n) == "built-in" for n in builtins)


def _run_python(code: str, *paths: Path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (nothing imported yet), with ``paths`` first on its path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), *sys.path])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          env=env)


def test_listing_imports_no_builtin_and_a_lookup_imports_only_its_module():
    done = _run_python("""
        import sys
        from sagebench.plugins import REGISTRIES
        for registry in REGISTRIES.values():
            registry.catalog(); [registry.options(n) for n in registry.names()]
        assert "torch" not in sys.modules, "torch was imported by a listing"
        from sagebench.strategies import get_strategy, list_strategies
        assert "sage" in list_strategies() and "torch" not in sys.modules
        get_strategy("sage")
        assert "sagebench.strategies.sage" in sys.modules and "sagebench.strategies.kdpp" not in sys.modules
    """)
    assert done.returncode == 0, done.stderr[-3000:]


# --------------------------------------------------------------------------- plug-ins: entry points, lazily


def _install(tmp_path: Path, group: str, entries: dict[str, str], modules: dict[str, str]) -> Path:
    """A fake installed distribution: ``<tmp>/fake_plugins-0.1.dist-info`` with its entry points, and modules."""
    dist = tmp_path / "fake_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    return tmp_path


WIDGET_PLUGINS = {
    "fake_widgets": '''
        from test_registry import Widget

        class Knob(Widget):
            """A knob from another package."""

            def __init__(self, turns: int = 2) -> None:
                self.turns = turns
    ''',
    "fake_broken": "raise ImportError('a dependency is missing')\n",
    "fake_not_a_widget": "class Thing:\n    pass\n",
}


@pytest.fixture()
def widget_plugins(tmp_path, monkeypatch):
    """Three entry points in ``sagebench_test.widgets``: a good one, one that fails to import, one of the wrong type;
    plus one named like a registered widget."""
    path = _install(tmp_path, "sagebench_test.widgets",
                    {"knob": "fake_widgets:Knob", "broken": "fake_broken:Anything",
                     "thing": "fake_not_a_widget:Thing", "dial": "fake_widgets:Knob"}, WIDGET_PLUGINS)
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.setitem(sys.modules, "test_registry", sys.modules[__name__])  # the plug-ins' base class
    for module in ("fake_widgets", "fake_broken", "fake_not_a_widget"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    reg = _registry(group="sagebench_test.widgets")
    reg.register("dial")(Dial)
    return reg


def test_listing_reads_entry_point_names_and_imports_no_plugin(widget_plugins):
    reg = widget_plugins
    warnings: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = warnings.append
    logging.getLogger("sagebench.registry").addHandler(handler)
    try:
        assert reg.names() == ["broken", "dial", "knob", "thing"]
    finally:
        logging.getLogger("sagebench.registry").removeHandler(handler)
    assert reg.get("dial") is Dial  # the plug-in also named "dial" is ignored, with a warning
    assert any("'dial' of fake-plugins (fake_widgets:Knob) is ignored" in r.getMessage() for r in warnings)
    assert reg.origin("knob") == "plug-in fake-plugins"
    assert "not imported" in reg.catalog()["knob"] and reg.options("knob") is None
    assert not {"fake_widgets", "fake_broken", "fake_not_a_widget"} & set(sys.modules)


def test_a_plugin_is_imported_when_asked_for(widget_plugins):
    reg = widget_plugins
    knob = reg.get("knob")
    assert "fake_widgets" in sys.modules and knob.name == "knob"
    assert reg.describe("knob") == "A knob from another package."
    assert reg.options("knob") == (Option("turns", "int", 2, ""),)
    assert reg.create("knob", turns=4).turns == 4
    with pytest.raises(ConfigError, match=r"Could not import widget 'broken' \(fake_broken:Anything"):
        reg.get("broken")
    with pytest.raises(ConfigError, match="did not register widget 'thing'"):
        reg.get("thing")
    assert reg.get("knob") is knob  # the broken ones hid nothing


def test_sagebench_lists_an_installed_plugin_without_importing_it_or_torch(tmp_path):
    """With third-party packages installed, `sagebench gates` / `strategies` still answer without torch and
    without importing them (the project's tests do not depend on what else is installed)."""
    path = _install(tmp_path, "sagebench.gates", {"fake_gate": "fake_gate_pkg:FakeGate"},
                    {"fake_gate_pkg": "raise RuntimeError('imported by a listing')\n"})
    with (path / "fake_plugins-0.1.dist-info" / "entry_points.txt").open("a") as f:
        f.write("[sagebench.strategies]\nfake_strategy = fake_gate_pkg:Nothing\n")
    done = _run_python("""
        import sys
        import sagebench.cli as c
        assert c.main(["gates"]) == 0 and c.main(["strategies"]) == 0
        assert "torch" not in sys.modules, "torch was imported"
        try:
            c.main(["eval", "--help"])
        except SystemExit:
            pass
        assert "fake_gate_pkg" not in sys.modules
    """, path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fake_gate" in done.stdout and "fake_strategy" in done.stdout and "not imported" in done.stdout
