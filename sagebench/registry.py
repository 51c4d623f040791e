"""One generic registry for every plug-in kind: strategies, gates, codecs, channels, analyses.

Why one class: each kind needs the same things -- a decorator that adds a named plug-in and checks
its base class, a lookup that names the known ones (with a suggestion) when a name is unknown,
duplicates refused, options read from the class, and plug-ins of other packages found through an
entry-point group (``sagebench.<kind>s``). Written once here, a new kind is one
:class:`Registry` line in :mod:`sagebench.plugins`.

Why lazy: listing names is what a user does first (``sagebench gates``, ``eval --help``), and
importing a plug-in costs seconds (torch). So a registry knows its entries before importing them:
the built-ins from their source files (each ``@register_<kind>("name")`` class, its docstring's
first line and its ``__init__`` options, read with :mod:`ast`) and the plug-ins from their
entry-point *names*. A plug-in is imported by :meth:`Registry.get`, never by
:meth:`Registry.names` or :meth:`Registry.catalog`, so a broken or slow plug-in cannot break or slow
a listing.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import importlib
import inspect
import logging
import re
import threading
import typing
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Iterable, Sequence, TypeVar

from sagebench.errors import ConfigError

__all__ = ["REQUIRED", "Configurable", "Lazy", "Option", "Registry", "class_options", "decorated_in"]

T = TypeVar("T")
_log = logging.getLogger(__name__)


class _Required:
    """The default of an option that has none (the caller must give it)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Option:
    """One option of a plug-in class: a keyword argument of its ``__init__``.

    ``type`` is the annotation as written (``float``, ``int | None``); ``help`` is the text of an
    ``Annotated[T, "help"]`` annotation (empty otherwise); ``default`` is :data:`REQUIRED` when
    the argument has none.
    """

    name: str
    type: str = ""
    default: Any = REQUIRED
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _split_annotation(text: str) -> tuple[str, str]:
    """``"Annotated[float, 'help']"`` -> ``("float", "help")``; any other annotation -> ``(text, "")``."""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return text, ""
    if isinstance(node, ast.Subscript) and getattr(node.value, "id", getattr(node.value, "attr", None)) == "Annotated":
        parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        helps = [p.value for p in parts[1:] if isinstance(p, ast.Constant) and isinstance(p.value, str)]
        return ast.unparse(parts[0]), (helps[0] if helps else "")
    return text, ""


def _annotation_text(annotation: Any) -> tuple[str, str]:
    """(type, help) of an annotation object or string (modules with ``from __future__ import annotations``)."""
    if annotation is inspect.Parameter.empty:
        return "", ""
    if isinstance(annotation, str):
        return _split_annotation(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        helps = [m for m in meta if isinstance(m, str)]
        return inspect.formatannotation(base), (helps[0] if helps else "")
    return inspect.formatannotation(annotation), ""


def _options_signature(cls: type) -> list[inspect.Parameter] | None:
    """The named keyword parameters of ``cls.__init__``; None when it also takes ``**kwargs``."""
    init = cls.__init__
    if init is object.__init__:
        return []
    params = list(inspect.signature(init).parameters.values())[1:]  # without self
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def class_options(cls: type) -> tuple[Option, ...]:
    """The options of a plug-in class: its ``__init__`` keyword arguments, their types, defaults and help."""
    out = []
    for p in _options_signature(cls) or []:
        type_text, help_text = _annotation_text(p.annotation)
        out.append(Option(p.name, type_text, REQUIRED if p.default is p.empty else p.default, help_text))
    return tuple(out)


class Configurable:
    """A plug-in whose options are its ``__init__`` keyword arguments, each kept as an attribute of that name.

    ``ignored_options``: option names the class accepts and ignores, so that a config written for
    another plug-in of the same kind still loads (``gate: {name: all, threshold: 1.0}``).
    """

    name: str = "?"
    ignored_options: ClassVar[frozenset[str]] = frozenset()

    def options(self) -> dict[str, Any]:
        """``{option: value}``: what this instance was built with (recorded with the run)."""
        return {o.name: getattr(self, o.name) for o in class_options(type(self))}


# --------------------------------------------------------------------------- built-ins read from source


@dataclass
class Lazy:
    """An entry known before its import: its name, a one-line summary, its options (None: unknown
    until imported), the module whose import registers it, and how to import it."""

    name: str
    summary: str
    module: str
    load: Callable[[], Any]
    options: tuple[Option, ...] | None = None


def _first_line(doc: str | None) -> str:
    doc = inspect.cleandoc(doc or "")
    return doc.splitlines()[0] if doc else ""


def _ast_options(node: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> tuple[Option, ...]:
    """The ``__init__`` options of a class read from source; a class without ``__init__`` takes its first
    base's (when that base is in the same module) or none (a framework base class takes no options)."""
    init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is None:
        local = [classes[b.id] for b in node.bases if isinstance(b, ast.Name) and b.id in classes]
        return _ast_options(local[0], classes) if local else ()
    a = init.args
    positional = [*a.posonlyargs, *a.args][1:]  # without self
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    out = []
    for arg, default in [*zip(positional, defaults), *zip(a.kwonlyargs, a.kw_defaults)]:
        type_text, help_text = _split_annotation(ast.unparse(arg.annotation)) if arg.annotation else ("", "")
        if default is None:
            value = REQUIRED
        else:
            try:
                value = ast.literal_eval(default)
            except ValueError:
                value = ast.unparse(default)
        out.append(Option(arg.arg, type_text, value, help_text))
    return tuple(out)


def _module_file(module: str) -> Path:
    """The source file of a module inside sagebench, found without importing it (or its package)."""
    root = Path(__file__).resolve().parent
    parts = module.split(".")
    if parts[0] != root.name:
        raise ValueError(f"built-in plug-ins live inside sagebench, not in {module!r}")
    base = root.joinpath(*parts[1:])
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _import(module: str) -> Callable[[], Any]:
    return lambda: importlib.import_module(module)


def decorated_in(modules: Sequence[str], decorator: str) -> Callable[[], list[Lazy]]:
    """Built-ins of a registry: the classes of ``modules`` decorated ``@<decorator>("name")``, read from source.

    Returns the function a :class:`Registry` calls once, on first use.
    """

    def scan() -> list[Lazy]:
        found = []
        for module in modules:
            path = _module_file(module)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
            constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                         and isinstance(n.value, ast.Constant) for t in n.targets if isinstance(t, ast.Name)}
            for node in classes.values():
                for deco in node.decorator_list:
                    func = deco.func if isinstance(deco, ast.Call) else None
                    if func is None or getattr(func, "id", getattr(func, "attr", None)) != decorator or not deco.args:
                        continue
                    arg = deco.args[0]  # "name", or a module constant: @register_analysis(NAME)
                    name = arg.value if isinstance(arg, ast.Constant) else constants.get(getattr(arg, "id", None))
                    if not isinstance(name, str):
                        raise ValueError(f"{path}: @{decorator} of {node.name} must name it with a string "
                                         "(or a module-level string constant)")
                    found.append(Lazy(name, _first_line(ast.get_docstring(node)), module, _import(module),
                                      _ast_options(node, classes)))
        return found

    return scan


# --------------------------------------------------------------------------- the registry


@dataclass
class _Entry:
    name: str
    origin: str  # "built-in" | "plug-in <dist>" | "registered"
    summary: str
    module: str | None
    load: Callable[[], Any] | None  # None once loaded
    options: tuple[Option, ...] | None = None
    obj: Any = None
    builtin: bool = False
    where: str = field(default="")  # what registered it, for duplicate messages

    @property
    def loaded(self) -> bool:
        return self.load is None


class Registry(Generic[T]):
    """Named plug-ins of one kind, each a subclass (or, with ``instances=True``, an instance) of ``base``.

    ``kind``/``plural``: the words of messages and of the CLI (``gate``/``gates``); ``base``: the
    base class or its ``"module:Name"`` (imported on first registration, so declaring a registry
    is free); ``builtins``: a function returning the built-ins as :class:`Lazy` entries (e.g.
    :func:`decorated_in`); ``group``: the entry-point group plug-ins declare themselves in;
    ``name_pattern``: what a name may look like; ``unknown_hint``: appended to the list of known
    names in the error for an unknown one; ``summarise``: the one-line description of a loaded
    entry (default: the first line of its docstring).
    """

    def __init__(self, kind: str, plural: str, base: type | str, *, group: str | None = None,
                 builtins: Callable[[], Iterable[Lazy]] | None = None, instances: bool = False,
                 name_pattern: str = r"[a-z0-9_]+", unknown_hint: str = "",
                 summarise: Callable[[Any], str] | None = None) -> None:
        self.kind, self.plural, self.group = kind, plural, group
        self.instances = instances
        self._base = base
        self._builtins = builtins
        self._pattern = re.compile(name_pattern)
        self._unknown_hint = unknown_hint
        # a class's own docstring (not its base's): what the source scan of a built-in reads too
        self._summarise = summarise or (lambda obj: _first_line(obj.__doc__ if inspect.isclass(obj)
                                                                else type(obj).__doc__))
        self._entries: dict[str, _Entry] = {}
        self._loading: set[str] = set()
        self._builtins_found = self._plugins_found = False
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, group={self.group!r})"

    # -- the base class ---------------------------------------------------------------------------
    @property
    def base(self) -> type:
        if isinstance(self._base, str):
            module, _, name = self._base.partition(":")
            self._base = getattr(importlib.import_module(module), name)
        return self._base

    def _accepts(self, obj: Any) -> bool:
        if self.instances:
            return isinstance(obj, self.base)
        return inspect.isclass(obj) and issubclass(obj, self.base)

    # -- discovery (no plug-in is imported) -------------------------------------------------------
    def _discover(self, *, plugins: bool = True) -> None:
        """The built-ins (read from source), then, with ``plugins``, the entry points' names; each once."""
        with self._lock:
            if not self._builtins_found:
                self._builtins_found = True
                for lazy in self.read_builtins():
                    self._entries.setdefault(lazy.name, _Entry(lazy.name, "built-in", lazy.summary, lazy.module,
                                                               lazy.load, lazy.options, builtin=True,
                                                               where=lazy.module))
            if plugins and not self._plugins_found:
                self._plugins_found = True
                for ep in (entry_points(group=self.group) if self.group else ()):
                    self._add_entry_point(ep)

    def read_builtins(self) -> list[Lazy]:
        """The built-ins as known without importing them (names, summaries, options), read afresh."""
        return list(self._builtins()) if self._builtins else []

    def _add_entry_point(self, ep: Any) -> None:
        dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
        module = ep.value.split(":", 1)[0].strip()
        taken = self._entries.get(ep.name)
        if taken is not None and (taken.module or "").split(".")[0] == module.split(".")[0]:
            return  # its package was imported (and registered it) before the entry points were read
        if taken is not None:
            _log.warning("%s plug-in %r of %s (%s) is ignored: the name is taken by %s", self.kind, ep.name, dist,
                         ep.value, self._entries[ep.name].where)
            return
        if not self._pattern.fullmatch(ep.name):
            _log.warning("%s plug-in %r of %s is ignored: not a valid name", self.kind, ep.name, dist)
            return
        self._entries[ep.name] = _Entry(ep.name, f"plug-in {dist}", f"(plug-in {ep.value} from {dist}; not imported)",
                                        module, ep.load, None, where=f"{ep.value} ({dist})")

    # -- registration -----------------------------------------------------------------------------
    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: add the decorated class (or object) as ``name``; a class learns its ``name``."""
        self._check_name(name)

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not self._pattern.fullmatch(name):
            raise ValueError(f"{self.kind} names match {self._pattern.pattern} (lower case), got {name!r}")

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` as ``name`` (what :meth:`register` does); a different object under a taken name is refused."""
        self._check_name(name)
        if not self._accepts(obj):
            what = "an instance" if self.instances else "a subclass"
            raise TypeError(f"{self.kind} {name!r} must be {what} of {self.base.__module__}.{self.base.__qualname__}, "
                            f"got {obj!r}")
        module = getattr(obj, "__module__", None) if inspect.isclass(obj) else type(obj).__module__
        with self._lock:
            # built-ins only: registering never scans installed packages; a plug-in found later under a taken
            # name is ignored (built-ins and plug-ins registered in this process win)
            self._discover(plugins=False)
            entry = self._entries.get(name)
            if entry is not None:
                if entry.loaded and entry.obj is obj:
                    return obj
                if not entry.loaded and (name in self._loading or entry.module == module):
                    entry.obj, entry.load = obj, None  # its lazy entry, now imported
                else:
                    raise ValueError(f"{self.kind} {name!r} is already registered by {entry.where}")
            else:
                where = f"{module}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
                self._entries[name] = _Entry(name, "registered", "", module, None, obj=obj, where=where)
            if inspect.isclass(obj):
                obj.name = name
        return obj

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests that register a plug-in of their own clean up with it)."""
        with self._lock:
            self._entries.pop(name, None)

    # -- listing (never imports a plug-in) --------------------------------------------------------
    def names(self, pattern: str = "*", *, builtin_only: bool = False) -> list[str]:
        """Names matching a shell-style wildcard, sorted; ``builtin_only``: those shipped with sagebench."""
        self._discover(plugins=not builtin_only)
        return sorted(n for n, e in self._entries.items()
                      if fnmatch.fnmatchcase(n, pattern) and (e.builtin or not builtin_only))

    def catalog(self, pattern: str = "*", *, builtin_only: bool = False) -> dict[str, str]:
        """``{name: one-line description}``, without importing a plug-in (one not imported yet says so)."""
        out = {}
        for name in self.names(pattern, builtin_only=builtin_only):
            entry = self._entries[name]
            out[name] = self._summarise(entry.obj) if entry.loaded else entry.summary
        return out

    def known_options(self) -> dict[str, tuple[Option, ...]]:
        """``{name: options}`` of the built-ins and of the plug-ins already imported or registered in this
        process, without scanning installed packages (for ``eval --help``, which must stay fast)."""
        self._discover(plugins=False)
        with self._lock:
            entries = sorted(self._entries.items())
        return {n: (() if self.instances else class_options(e.obj)) if e.loaded else e.options
                for n, e in entries if e.loaded or e.options is not None}

    def options(self, name: str) -> tuple[Option, ...] | None:
        """The options of ``name`` when known without importing it (built-ins, loaded ones); else None."""
        entry = self._entry(name)
        if entry.loaded:
            return () if self.instances else class_options(entry.obj)
        return entry.options

    def origin(self, name: str) -> str:
        """``built-in``, ``plug-in <distribution>`` or ``registered`` (at run time, e.g. by a test)."""
        return self._entry(name).origin

    # -- lookup (imports the plug-in) -------------------------------------------------------------
    def _entry(self, name: str) -> _Entry:
        self._discover()
        entry = self._entries.get(name)
        if entry is None:
            known = sorted(self._entries)
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"Unknown {self.kind} {name!r}.{hint} Known {self.plural}: "
                              f"{', '.join(known) or 'none'}{self._unknown_hint}.")
        return entry

    def get(self, name: str) -> T:
        """The plug-in registered as ``name``, imported on first use; unknown names fail with the known ones."""
        entry = self._entry(name)
        if entry.loaded:
            return entry.obj
        with self._lock:
            if entry.loaded:
                return entry.obj
            self._loading.add(name)
            try:
                result = entry.load()
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(f"Could not import {self.kind} {name!r} ({entry.where}): "
                                  f"{type(exc).__name__}: {exc}") from exc
            finally:
                self._loading.discard(name)
            if not entry.loaded:  # an entry point naming the object itself (no decorator ran)
                if not self._accepts(result):
                    raise ConfigError(f"{entry.where} did not register {self.kind} {name!r}: it names "
                                      f"{result!r}, not a {self.base.__qualname__}"
                                      + (" subclass." if not self.instances else "."))
                self.add(name, result)
        return entry.obj

    def describe(self, name: str) -> str:
        """The first line of the plug-in's docstring (imports it; :meth:`catalog` does not)."""
        return self._summarise(self.get(name))

    def create(self, name: str, **options: Any) -> Any:
        """An instance of the class registered as ``name``, built with ``options``.

        Options are checked against the class's ``__init__`` first, so a misspelt one is named with
        a suggestion; options in the class's ``ignored_options`` are dropped; a bad value is the
        class's own :class:`ConfigError`.
        """
        cls = self.get(name)
        if self.instances:
            raise TypeError(f"{self.plural} are registered as objects; use get({name!r})")
        # the base's own __init__ takes no options (Strategy's takes **options only to refuse them); None:
        # a class whose __init__ takes **kwargs checks its options itself
        params = [] if cls.__init__ is self.base.__init__ else _options_signature(cls)
        accepted = [p.name for p in params or []]
        given = {k: v for k, v in options.items() if k in accepted or k not in getattr(cls, "ignored_options", ())}
        if params is not None:
            unknown = sorted(set(given) - set(accepted))
            if unknown:
                close = difflib.get_close_matches(unknown[0], accepted, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                takes = f"Its options: {', '.join(accepted)}." if accepted else "It takes no options."
                raise ConfigError(f"{self.kind} {name!r} has no option {unknown[0]!r}.{hint} {takes}")
            missing = [p.name for p in params if p.default is p.empty and p.name not in given]
            if missing:
                raise ConfigError(f"{self.kind} {name!r} needs the option(s) {', '.join(missing)}.")
        try:
            return cls(**given)
        except TypeError as exc:
            raise ConfigError(f"Bad options for {self.kind} {name!r}: {exc}") from exc

