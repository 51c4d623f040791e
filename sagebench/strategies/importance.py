"""Which per-patch importance an attention-based strategy ranks patches by, and option checks.

Three importance signals come out of the edge's single forward pass (see :class:`EdgeEvidence`):

* ``"last_layer"`` (default): ``evidence.attention``, the last block's CLS->patch attention,
  averaged over heads and renormalised over the patches.
* ``"rollout"``: ``evidence.rollout``, Abnar & Zuidema's (2020) attention rollout: per block the
  head-mean attention plus the identity, rows renormalised, multiplied from the first block on;
  the CLS row over the patches, renormalised.
* ``"rollout_per_head"``: ``evidence.rollout_per_head``, attention rollout in the order of Im et
  al.'s code (their ``compute_rollout_attention``): per head the attention plus the identity,
  multiplied from the first block on (no per-block renormalisation, as theirs: a constant factor
  the final renormalisation cancels), heads averaged at the end; the CLS row over the patches,
  renormalised. Not the same ranking: on the embedded CIFAR-10 benchmark's edge the top-16 sets
  of the two rollouts differ for most images (numbers in ``docs/troubleshooting.md``).

The edge computes a rollout only when asked (``EdgeModel(..., with_rollout=True)`` /
``with_rollout_per_head=True``; ``evaluate`` does so whenever a configured strategy requires it).

Every attention-based strategy takes ``importance`` as an option, declares what it needs with
:func:`importance_requires` (``self.requires = importance_requires(self.importance)``) and calls
:func:`importance`.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.errors import ConfigError

IMPORTANCE_KINDS = ("last_layer", "rollout", "rollout_per_head")
#: The importance kinds read from an evidence field the edge computes only on request, each also the
#: evidence name a strategy ranking by it requires, and the EdgeModel argument that computes it.
_ON_REQUEST = {"rollout": "with_rollout", "rollout_per_head": "with_rollout_per_head"}


class StrategyOptionError(ConfigError, ValueError):
    """An invalid strategy option: a ConfigError for the CLI, a ValueError for Python callers."""


def check_importance(kind: object, strategy: str) -> str:
    """Validate an ``importance`` option; anything but one of :data:`IMPORTANCE_KINDS` is a ConfigError."""
    if not isinstance(kind, str) or kind not in IMPORTANCE_KINDS:
        raise StrategyOptionError(f"{strategy}: importance must be one of {', '.join(IMPORTANCE_KINDS)}, "
                                  f"got {kind!r}")
    return kind


def importance_requires(kind: str) -> frozenset[str]:
    """What ranking by ``kind`` requires of the evidence (:attr:`Strategy.requires`): ``{kind}`` for a
    rollout (``"rollout"``, ``"rollout_per_head"``), which the edge computes only on request;
    nothing for the last layer's attention."""
    return frozenset({kind}) if kind in _ON_REQUEST else frozenset()


def importance(evidence: EdgeEvidence, kind: str = "last_layer") -> torch.Tensor:
    """``[b, N]`` per-patch importance of the given kind (each row sums to 1)."""
    if kind == "last_layer":
        return evidence.attention
    if kind in _ON_REQUEST:
        scores = getattr(evidence, kind, None)
        if scores is None:
            raise ConfigError(f"importance={kind!r} needs that attention rollout in the edge evidence, but it was "
                              f"not computed: build the edge with EdgeModel(..., {_ON_REQUEST[kind]}=True) (evaluate "
                              f"does this when a configured strategy requires {kind!r}, as importance: {kind} does).")
        return scores
    raise ConfigError(f"importance must be one of {', '.join(IMPORTANCE_KINDS)}, got {kind!r}")


def attention_order(attention: torch.Tensor) -> torch.Tensor:
    """``[b, N]`` patch indices by decreasing attention (or any score), ties by increasing patch index."""
    return torch.sort(attention, dim=1, descending=True, stable=True).indices


def importance_order(evidence: EdgeEvidence, kind: str = "last_layer") -> torch.Tensor:
    """``[b, N]`` patch indices by decreasing importance (ties: lower index), sorted once per evidence.

    Why a memo: a sweep asks several strategies at several budgets for the same ranking of the
    same images; the sort is computed on the first request and kept in ``evidence.memo`` (keyed
    by ``kind``, computed from the importance tensor, so replacing the tensor invalidates it).
    Callers must treat the result as read-only (slice and copy, never write into it).
    """
    scores = importance(evidence, kind)
    return evidence.memo.get_or_compute(("importance_order", kind), (scores,), lambda: attention_order(scores))


def check_real(value: object, option: str, strategy: str, low: float | None = None, high: float | None = None,
               low_open: bool = False) -> float:
    """A finite real number in ``[low, high]`` (``(low, high]`` with ``low_open``), as a ``float``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise StrategyOptionError(f"{strategy}: {option} must be a finite number, got {value!r}")
    value = float(value)
    if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else f"<= {high}"
        raise StrategyOptionError(f"{strategy}: {option} must be {' and '.join(x for x in (lo, hi) if x)}, "
                                  f"got {value!r}")
    return value


def check_positive_int(value: object, option: str, strategy: str) -> int:
    """An integer >= 1 (not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < 1:
        raise StrategyOptionError(f"{strategy}: {option} must be an integer >= 1, got {value!r}")
    return int(value)
