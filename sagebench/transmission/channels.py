"""Uplink channels: what a request of ``bytes_sent`` bytes costs in time on NB-IoT, LTE-M, LTE, 5G, Wi-Fi.

Why a simple model: a composition strategy changes how many bytes go up, not the radio; the
latency of one request is modelled as ``rtt_ms + 8 * bytes / uplink_kbps`` milliseconds (one
round trip plus the serialisation time of the payload). Each channel is one YAML file in
``conf/channel/`` with its uplink rate, round-trip time and the source of each figure; a user
adds a channel by passing the path of such a file, or a package registers a :class:`Channel` object
in the entry-point group ``sagebench.channels`` (:data:`sagebench.plugins.CHANNELS`, :func:`sagebench.plugins.load_channel`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from sagebench.errors import ConfigError


@dataclass(frozen=True)
class Channel:
    name: str
    display_name: str
    uplink_kbps: float
    rtt_ms: float
    source: str

    def __post_init__(self) -> None:
        check_channel_numbers(self.uplink_kbps, self.rtt_ms, f"Channel {self.name!r}")

    def latency_ms(self, num_bytes: float) -> float:
        """Milliseconds from sending a request of ``num_bytes`` bytes to getting the answer back."""
        return float(self.rtt_ms) + 8.0 * float(num_bytes) / float(self.uplink_kbps)

    def describe(self) -> dict:
        return {"name": self.name, "display_name": self.display_name, "uplink_kbps": self.uplink_kbps,
                "rtt_ms": self.rtt_ms, "source": self.source}


def check_channel_numbers(rate: float, rtt: float, where: str) -> None:
    """A channel's uplink rate and round trip: finite, rate > 0, rtt >= 0 (NaN and Inf refused)."""
    if not (math.isfinite(rate) and math.isfinite(rtt)) or rate <= 0 or rtt < 0:
        raise ConfigError(f"{where}: uplink_kbps must be a finite number > 0 and rtt_ms a finite number >= 0, "
                          f"got {rate}, {rtt}.")


def channel_from_file(path: Path) -> Channel:
    """A channel YAML file (``uplink_kbps``, ``rtt_ms``, ``source``; ``name`` and ``display_name`` default to
    the file's stem)."""
    node = OmegaConf.load(path)
    try:
        rate, rtt = float(node.uplink_kbps), float(node.rtt_ms)
    except Exception as exc:
        raise ConfigError(f"Channel file {path} needs numeric uplink_kbps and rtt_ms: {exc}") from exc
    check_channel_numbers(rate, rtt, f"Channel file {path}")
    return Channel(name=str(node.get("name", path.stem)), display_name=str(node.get("display_name", path.stem)),
                   uplink_kbps=rate, rtt_ms=rtt, source=str(node.get("source", "")).strip())


def add_latency(results: list[dict], channels: list[Channel]) -> None:
    """Give each results entry ``latency_ms: {channel: mean request latency}`` over its offloaded images.

    The latency model is linear in the bytes, so the mean latency is the latency of the mean
    ``bytes_sent`` (exact, no per-image pass needed).
    """
    for entry in results:
        mean_bytes = entry.get("bytes_sent")
        entry["latency_ms"] = {c.name: (None if mean_bytes is None else round(c.latency_ms(mean_bytes), 3))
                               for c in channels}
