"""Offloading gates: which images the edge sends to the server.

A gate looks at the edge's evidence of a batch (:class:`~sagebench.edge.evidence.EdgeEvidence`:
logits, attention, embeddings) and returns a boolean mask ``[b]`` (True = offload); the edge
answers the images it keeps. One class per gate, registered by name; its ``__init__`` keyword
arguments are its options (``gate: {name: min_entropy, threshold: 0.5}``), and :meth:`Gate.identity`
is what a run's key and its benchmark fingerprint record of it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Annotated, Any

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.errors import ConfigError
from sagebench.plugins import GATES
from sagebench.registry import Configurable

__all__ = ["Gate", "MinEntropyGate", "OffloadAll", "get_gate", "min_entropy", "offload_all", "offload_min_entropy",
           "register_gate"]


def min_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``-log2(max softmax)`` per image, in bits: 0 when certain, log2(C) when uniform."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -log_p.max(dim=-1).values / math.log(2.0)


def offload_all(logits: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """Offload every image (the server-only setting)."""
    return torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)


def offload_min_entropy(logits: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """Offload when the edge's min-entropy exceeds ``threshold`` bits (eta=1.0: max softmax < 0.5)."""
    return min_entropy(logits) > threshold


class Gate(Configurable, ABC):
    """Decides, from the edge's evidence of a batch, which images go to the server.

    Subclasses implement :meth:`offload`; their ``__init__`` keyword arguments are their options,
    each kept as an attribute of the same name (``name`` is set by the registry).
    """

    name: str = "gate"

    @abstractmethod
    def offload(self, evidence: EdgeEvidence) -> torch.Tensor:
        """``[b]`` bool, True for the images to send to the server; batched, deterministic, on the evidence's device."""

    def decide(self, evidence: EdgeEvidence) -> torch.Tensor:
        """:meth:`offload`, checked: a plug-in's wrong mask fails here, naming the gate, not deep in the sweep."""
        mask = self.offload(evidence)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (evidence.batch_size,):
            got = f"{tuple(mask.shape)} {mask.dtype}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"gate {self.name!r}: offload() must return a bool tensor of shape "
                            f"({evidence.batch_size},), got {got}")
        return mask

    def identity(self) -> dict[str, Any]:
        """What the run key, the benchmark fingerprint and the offload cache record of this gate.

        ``{"gate": name, "threshold": float | None, **other options}``: every results file has a
        ``threshold`` (null for a gate without one), so the built-ins' identity is what it has always been.
        """
        options = self.options()
        return {"gate": self.name, "threshold": options.pop("threshold", None), **options}


#: Class decorator: ``@register_gate("name")`` makes a :class:`Gate` subclass available as ``gate.name=name``.
register_gate = GATES.register


def get_gate(name: str, **options: Any) -> Gate:
    """The gate registered as ``name``, built with its options; unknown names or options fail clearly."""
    return GATES.create(name, **options)


@register_gate("all")
class OffloadAll(Gate):
    """Offload every image (the server-only setting)."""

    # accepted and ignored, so that `gate.name=all` works whatever threshold a config file sets
    ignored_options = frozenset({"threshold"})

    def offload(self, evidence: EdgeEvidence) -> torch.Tensor:
        return offload_all(evidence.logits)


@register_gate("min_entropy")
class MinEntropyGate(Gate):
    """Offload when the edge's min-entropy, -log2(max softmax), exceeds a threshold in bits."""

    def __init__(self, threshold: Annotated[float, "offload when -log2(max softmax) > threshold"] = 1.0) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ConfigError(f"gate.threshold must be a finite number (bits of edge entropy, e.g. "
                              f"gate.threshold=1.0), got {threshold!r}.")
        self.threshold = float(threshold)

    def offload(self, evidence: EdgeEvidence) -> torch.Tensor:
        return offload_min_entropy(evidence.logits, self.threshold)
