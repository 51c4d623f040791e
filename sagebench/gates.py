"""Offloading gates: which images the edge sends to the server.

A gate looks at the edge's evidence of a batch (:class:`~sagebench.edge.evidence.EdgeEvidence`:
logits, attention, embeddings) and returns a boolean mask ``[b]`` (True = offload); the edge
answers the images it keeps. One class per gate, registered by name; its ``__init__`` keyword
arguments are its options (``gate: {name: min_entropy, threshold: 0.5}``), and :meth:`Gate.identity`
is what a run's key and its benchmark fingerprint record of it.

A gate that decides by comparing a per-image score with a threshold (``min_entropy``) may be given a
list of thresholds (``gate.threshold=[0.5,1.0,1.5]``, or ``{start: 0.5, stop: 2.5, step: 0.5}``): the
run then serves the images the *lowest* threshold offloads (a superset of every other threshold's, as
the offloaded sets ``score > eta`` are nested), records each image's score, and
:mod:`sagebench.operating_curve` evaluates every threshold from those records. The lowest threshold is
the gate's primary one: its decision is the records' ``offloaded`` column and the usual results.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Annotated, Any

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.errors import ConfigError
from sagebench.plugins import GATES
from sagebench.registry import Configurable

__all__ = ["Gate", "MinEntropyGate", "OffloadAll", "get_gate", "min_entropy", "offload_all", "offload_min_entropy",
           "parse_thresholds", "register_gate"]

#: The most thresholds one run evaluates (each is a pass over the records, not over the images).
MAX_THRESHOLDS = 1000


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


def parse_thresholds(value: Any, option: str = "gate.threshold") -> tuple[float, ...]:
    """A threshold, a list of them, or a range ``{start, stop, step}`` (stop included), as sorted distinct floats.

    Why a range form: an operating curve is usually evenly spaced, and ``{start: 0, stop: 3, step: 0.25}``
    is shorter and harder to mistype than 13 numbers. Values are rounded to 12 decimals so that
    ``0.1 + 0.2`` steps name the threshold a user would write (0.3).
    """
    def number(x: Any) -> float:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ConfigError(f"{option} must be a finite number, a list of them or {{start, stop, step}} (bits of "
                              f"edge entropy, e.g. {option}=1.0 or {option}=[0.5,1.0,1.5]), got {x!r}.")
        return float(x)

    if isinstance(value, Mapping):
        unknown = set(value) - {"start", "stop", "step"}
        if unknown or not {"start", "stop", "step"} <= set(value):
            raise ConfigError(f"{option} as a range takes exactly start, stop and step (stop included), e.g. "
                              f"{option}={{start: 0.5, stop: 2.5, step: 0.5}}; got {dict(value)!r}.")
        start, stop, step = number(value["start"]), number(value["stop"]), number(value["step"])
        if step <= 0 or stop < start:
            raise ConfigError(f"{option}: a range needs step > 0 and stop >= start, got {dict(value)!r}.")
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        if count > MAX_THRESHOLDS:
            raise ConfigError(f"{option}: the range has {count} thresholds, more than {MAX_THRESHOLDS}; use a larger step.")
        values = [round(start + i * step, 12) for i in range(count)]
    elif isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"{option} is an empty list; give at least one threshold, e.g. {option}=[0.5,1.0].")
        if len(value) > MAX_THRESHOLDS:
            raise ConfigError(f"{option}: {len(value)} thresholds, more than {MAX_THRESHOLDS}.")
        values = [number(x) for x in value]
    else:
        values = [number(value)]
    return tuple(sorted(set(values)))


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

    #: Every threshold the run evaluates, sorted (the first is the primary one, which :meth:`offload` uses);
    #: empty for a gate without thresholds. More than one: the run records :meth:`score` per image.
    thresholds: tuple[float, ...] = ()

    @property
    def curve(self) -> bool:
        """True when the gate evaluates several thresholds in one run (an operating curve)."""
        return len(self.thresholds) > 1

    def score(self, evidence: EdgeEvidence) -> torch.Tensor:
        """``[b]`` the per-image score the gate thresholds (offload when ``score > threshold``).

        Only gates with :attr:`thresholds` have one; it is recorded per image in an operating-curve run.
        """
        raise NotImplementedError(f"gate {self.name!r} has no per-image score, so it takes one decision, not a list "
                                  "of thresholds")

    @staticmethod
    def offload_at(score: torch.Tensor, threshold: float) -> torch.Tensor:
        """The decision at ``threshold`` from the scores: ``score > threshold``, in the score's own dtype.

        One owner for the comparison, so that the operating curve (which re-thresholds the recorded scores,
        stored as float64 copies of the float32 ones) decides exactly as a run at that threshold would.
        """
        return score > threshold

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

    def __init__(self, threshold: Annotated[float | list | dict, "offload when -log2(max softmax) > threshold; a list "
                                            "or {start, stop, step}: an operating curve"] = 1.0) -> None:
        self.thresholds = parse_thresholds(threshold)
        # the primary threshold: the one that decides what is served and what identity() records, so that a run
        # with one threshold is what it always was (run key, fingerprint, records)
        self.threshold = self.thresholds[0]

    def score(self, evidence: EdgeEvidence) -> torch.Tensor:
        return min_entropy(evidence.logits)

    def offload(self, evidence: EdgeEvidence) -> torch.Tensor:
        return self.offload_at(self.score(evidence), self.threshold)
