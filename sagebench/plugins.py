"""Every plug-in kind of sagebench, in one table: its base class, its built-ins, its entry-point group.

Declaring a registry imports nothing heavy (bases are named as ``"module:Class"``, built-ins are
read from source), so ``sagebench strategies``, ``sagebench gates`` and ``eval --help`` answer
without torch. Third-party packages add plug-ins through the groups below, e.g.::

    [project.entry-points."sagebench.gates"]
    top2_margin = "my_pkg.gates:Top2Margin"

* strategy: ``strategies.base.Strategy``, group ``sagebench.strategies``, ``sagebench strategies``
* gate: ``gates.Gate``, group ``sagebench.gates``, ``sagebench gates``
* codec: ``transmission.codecs.Codec``, group ``sagebench.codecs``, ``sagebench codecs``
* channel: ``transmission.channels.Channel``, group ``sagebench.channels``, ``sagebench channels``
* analysis: ``analysis.base.Analysis``, group ``sagebench.analyses``, ``sagebench analyses``

A channel plug-in is a ``Channel`` *object* (the built-ins are the YAML files of ``conf/channel/``);
the other kinds register classes.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sagebench.registry import Lazy, Registry, decorated_in
from sagebench.strategies import BUILTIN_MODULES, ENTRY_POINT_GROUP

if TYPE_CHECKING:
    from sagebench.analysis.base import Analysis
    from sagebench.gates import Gate
    from sagebench.strategies.base import Strategy
    from sagebench.transmission.channels import Channel
    from sagebench.transmission.codecs import Codec

__all__ = ["ANALYSES", "CHANNELS", "CODECS", "GATES", "REGISTRIES", "STRATEGIES"]


STRATEGIES: Registry[type[Strategy]] = Registry(
    "strategy", "strategies", "sagebench.strategies.base:Strategy", group=ENTRY_POINT_GROUP,
    builtins=decorated_in([f"sagebench.strategies.{m}" for m in BUILTIN_MODULES], "register_strategy"))

GATES: Registry[type[Gate]] = Registry(
    "gate", "gates", "sagebench.gates:Gate", group="sagebench.gates",
    builtins=decorated_in(["sagebench.gates"], "register_gate"))

CODECS: Registry[type[Codec]] = Registry(
    "codec", "codecs", "sagebench.transmission.codecs:Codec", group="sagebench.codecs",
    builtins=decorated_in(["sagebench.transmission.codecs"], "register_codec"))


def _channel_dir() -> Path:
    return Path(str(files("sagebench.conf"))) / "channel"


def channel_summary(channel: Any) -> str:
    """``LTE: 51000 kbit/s uplink, 20 ms round trip``: one line of ``sagebench channels``."""
    return (f"{channel.display_name}: {float(channel.uplink_kbps):g} kbit/s uplink, "
            f"{float(channel.rtt_ms):g} ms round trip")


def _shipped_channels() -> list[Lazy]:
    """The YAML files of ``conf/channel/``, summarised from the file (the channel module, and torch, load on use)."""
    from omegaconf import OmegaConf

    def load(path: Path) -> Callable[[], Channel]:
        def channel() -> Channel:
            from sagebench.transmission.channels import channel_from_file

            return channel_from_file(path)

        return channel

    out = []
    for path in sorted(_channel_dir().glob("*.yaml")):
        node = OmegaConf.load(path)
        try:
            summary = channel_summary(node)
        except Exception:  # a malformed file is reported when it is used, with the reason
            summary = f"(conf/channel/{path.name})"
        out.append(Lazy(path.stem, summary, "sagebench.transmission.channels", load(path), ()))
    return out


def load_channel(name_or_path: str) -> Channel:
    """A registered channel by name (``sagebench channels``), or a channel YAML file by path."""
    from sagebench.transmission.channels import channel_from_file

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return channel_from_file(path)
    return CHANNELS.get(str(name_or_path))  # unknown -> ConfigError with a suggestion and the known names


CHANNELS: Registry[Channel] = Registry(
    "channel", "channels", "sagebench.transmission.channels:Channel", group="sagebench.channels",
    builtins=_shipped_channels, instances=True, summarise=channel_summary,
    unknown_hint=" (or the path of a YAML file with uplink_kbps, rtt_ms and source)")

ANALYSES: Registry[type[Analysis]] = Registry(
    "analysis", "analyses", "sagebench.analysis.base:Analysis", group="sagebench.analyses",
    builtins=decorated_in([f"sagebench.analysis.{m}" for m in ("_replacement", "_entropy", "_coverage")],
                          "register_analysis"),
    name_pattern=r"[a-z0-9][a-z0-9_-]*")

#: Every registry by its plural (the CLI command that lists it).
REGISTRIES: dict[str, Registry[Any]] = {r.plural: r for r in (STRATEGIES, GATES, CODECS, CHANNELS, ANALYSES)}
