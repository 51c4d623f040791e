"""The contract every composition strategy follows, and the framework's single entry point to it.

A strategy implements :meth:`Strategy.select` (or :meth:`Strategy.select_with_stats`); the framework
calls :meth:`Strategy.choose`, which does the work every strategy would otherwise repeat: it checks
the budget once (so ``select`` always receives an ``int`` in ``1..N``) and checks the output's
shape, dtype and device (metadata only: no device synchronisation). What a strategy needs beyond
the edge's logits, attention and embeddings it declares in :attr:`Strategy.requires`, never sniffed.
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple, final

import torch

from sagebench.edge.evidence import EVIDENCE_KINDS, EdgeEvidence
from sagebench.errors import ConfigError

if TYPE_CHECKING:
    from sagebench.cost import EdgeDims

#: Evidence a strategy may declare in :attr:`Strategy.requires` that only the server can provide.
ORACLE_EVIDENCE = tuple(kind for kind, provider in EVIDENCE_KINDS.items() if provider == "server")


class StrategyOutputError(RuntimeError):
    """A strategy's ``select`` returned something other than ``[b, budget]`` int64 indices on the
    evidence's device: a bug in the strategy (``sagebench.testing.check_strategy`` finds it)."""


class Selection(NamedTuple):
    """What :meth:`Strategy.choose` returns: the indices and this call's counters."""

    #: ``[b, budget]`` int64 distinct patch indices in ``[0, N)``, most wanted first.
    indices: torch.Tensor
    #: ``{name: scalar tensor}`` summed over the batch, keys from :attr:`Strategy.stat_names` (often empty).
    stats: dict[str, torch.Tensor]


class Strategy(ABC):
    """Chooses which ``budget`` patches of each image go over the uplink.

    Subclasses implement :meth:`select`; the framework calls :meth:`choose` (never overridden).
    Constructor keyword arguments are the strategy's options (``get_strategy("sage", prefilter=3.0)``);
    ``name`` is set by the registry.
    """

    name: str = "strategy"
    #: Names of the counters :meth:`select_with_stats` reports (most strategies report none).
    stat_names: tuple[str, ...] = ()
    #: Evidence beyond the edge's logits, attention and embeddings that the strategy needs, each a
    #: name of :data:`sagebench.edge.evidence.EVIDENCE_KINDS` (read by the sweep before it runs, to
    #: decide what to compute): ``"rollout"`` makes the edge compute attention rollout,
    #: ``"server_attention"`` makes the ceiling pass also compute the server's CLS attention on the
    #: full image; ``"server_judge"`` gives the evidence a callable that scores a candidate subset by the
    #: server's own answer to it (``EdgeEvidence.server_judge``). A class attribute, or an instance attribute
    #: set in ``__init__`` where it depends on the options (``importance="rollout"`` requires ``"rollout"``).
    #: A strategy that requires anything only the server has is an **oracle**: results and boards show it as
    #: a reference, never ranked with deployable strategies.
    requires: frozenset[str] = frozenset()
    #: True when :meth:`select` draws randomness from ``evidence.seed``: ``seeds=[...]`` then evaluates it at
    #: every seed of the list in one run (:mod:`sagebench.seeds`), and results give its spread over seeds.
    seeded: bool = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "choose" in vars(cls):
            raise TypeError(f"{cls.__qualname__} overrides Strategy.choose, the framework's entry point (it checks "
                            "the budget and the output): implement select (or select_with_stats) instead")

    @property
    def oracle(self) -> bool:
        """True when the strategy uses evidence a deployed edge device would not have."""
        return bool(set(self.requires) & set(ORACLE_EVIDENCE))

    def __init__(self, **options: object) -> None:
        if options:
            raise TypeError(f"strategy {self.name!r} takes no options, got {sorted(options)}")

    @final
    def choose(self, evidence: EdgeEvidence, budget: object) -> Selection:
        """The framework's call: the budget checked, then :meth:`select_with_stats`, its output checked.

        ``budget`` outside ``1..N`` or not an integer is a :class:`~sagebench.errors.ConfigError`;
        indices of the wrong shape, dtype or device are a :class:`StrategyOutputError`. Use this
        (not ``select``) wherever patches are chosen: the sweep, byte budgets, analyses, benchmarks.
        """
        budget = check_budget(budget, evidence.num_patches)
        indices, stats = self.select_with_stats(evidence, budget)
        expected = (evidence.batch_size, budget)
        if not isinstance(indices, torch.Tensor) or tuple(indices.shape) != expected \
                or indices.dtype != torch.int64 or indices.device != evidence.attention.device:
            got = (f"{tuple(indices.shape)} {indices.dtype} on {indices.device}" if isinstance(indices, torch.Tensor)
                   else type(indices).__name__)
            raise StrategyOutputError(f"strategy {self.label!r} returned {got}; expected shape {expected} "
                                      f"dtype torch.int64 on {evidence.attention.device} (run "
                                      "sagebench.testing.check_strategy on it)")
        return Selection(indices, stats)

    @abstractmethod
    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        """Return ``[b, budget]`` int64 distinct patch indices in ``[0, N)``, most wanted first.

        ``budget`` is an ``int`` in ``1..N``, already checked by :meth:`choose`. The priority order
        matters: byte budgets are filled from the front of this list. Must be batched on the
        evidence's device (no per-image Python loops) and deterministic for the same evidence.
        Values derived from the evidence that other calls could reuse go in ``evidence.memo``.
        """

    def select_with_stats(self, evidence: EdgeEvidence, budget: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`select`, plus this call's counters: ``{name: scalar tensor}`` summed over the batch.

        The keys are :attr:`stat_names` (e.g. how many images a rule had to cut to the budget);
        the evaluation sums them over batches and processes per (strategy, budget). Default: none.
        ``budget`` is already checked, as for :meth:`select`.
        """
        return self.select(evidence, budget), {}

    def selection_macs(self, budget: int, edge: EdgeDims) -> int | None:
        """Multiply-accumulates one image's selection at ``budget`` costs the edge, or None when not derived.

        Counted as :mod:`sagebench.cost` says (matrix and dot products; not element-wise operations, sorts or
        comparisons), including any evidence beyond the edge's forward the strategy needs (e.g. attention
        rollout, :func:`sagebench.cost.importance_macs`). ``edge``: the edge ViT's dimensions (N patches, width
        D, depth, heads, tokens). A count is comparable across machines, unlike the measured time; results and
        boards show None as unknown.
        """
        return None

    def options(self) -> dict[str, object]:
        """The strategy's options, recorded in results so that a run can be reproduced.

        Convention: each ``__init__`` keyword is stored as an attribute of the same name.
        """
        return {p: getattr(self, p) for p in self._parameters()}

    @classmethod
    def code_identity(cls) -> dict[str, object]:
        """Which code this strategy is: the module and class, the distribution that ships it and its version,
        and a hash of the source file that defines it.

        Why: a board entry is reproduced by rerunning its strategies (``verify --reproduce``); a rerun is
        only meaningful with the same code, and "package ``y`` is not installed" or "source changed" must be
        sayable. ``distribution``/``version`` are None for code outside an installed distribution (a
        notebook, a test file).
        """
        return _code_identity(cls)

    @classmethod
    def _parameters(cls) -> dict[str, inspect.Parameter]:
        sig = inspect.signature(cls.__init__)
        return {n: p for n, p in sig.parameters.items()
                if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    @property
    def label(self) -> str:
        """Name used in results: the registry name plus non-default options, e.g. ``sage[prefilter=3.0]``."""
        changed = {n: getattr(self, n) for n, p in self._parameters().items() if getattr(self, n) != p.default}
        if not changed:
            return self.name
        return f"{self.name}[{','.join(f'{k}={v}' for k, v in sorted(changed.items()))}]"


@functools.lru_cache(maxsize=None)
def _distributions() -> dict[str, list[str]]:
    import importlib.metadata

    return dict(importlib.metadata.packages_distributions())


@functools.lru_cache(maxsize=None)
def _code_identity(cls: type) -> dict[str, object]:
    import hashlib
    import importlib.metadata

    try:
        path = inspect.getsourcefile(cls)
        source = hashlib.sha256(open(path, "rb").read()).hexdigest()[:16] if path else None
    except (OSError, TypeError):
        source = None
    dists = _distributions().get(cls.__module__.split(".")[0]) or []
    dist = dists[0] if dists else None
    try:
        version = importlib.metadata.version(dist) if dist else None
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"module": cls.__module__, "class": cls.__qualname__, "distribution": dist, "version": version,
            "source_sha256": source}


def check_requires(strategy: Strategy) -> frozenset[str]:
    """The strategy's :attr:`~Strategy.requires`, each name checked against the evidence the framework can
    provide (:data:`~sagebench.edge.evidence.EVIDENCE_KINDS`); anything else is a ConfigError."""
    requires = strategy.requires
    if isinstance(requires, str) or not all(isinstance(k, str) for k in requires):
        raise ConfigError(f"strategy {strategy.label!r}: requires must be a set of evidence names, got {requires!r}")
    unknown = sorted(set(requires) - set(EVIDENCE_KINDS))
    if unknown:
        raise ConfigError(f"strategy {strategy.label!r} requires {', '.join(map(repr, unknown))}, which the framework "
                          f"cannot provide; known evidence: {', '.join(EVIDENCE_KINDS)}")
    return frozenset(requires)


def required_evidence(strategies: Iterable[Strategy]) -> frozenset[str]:
    """Everything the strategies declare they need (checked by :func:`check_requires`): the sweep asks
    this once to decide what to compute (``"rollout" in ...``: the edge computes attention rollout)."""
    return frozenset().union(*(check_requires(s) for s in strategies))


def check_budget(budget: object, num_patches: int) -> int:
    """Validate a patch budget for an image of ``num_patches`` patches and return it as an ``int``.

    The budget must be an integer (not a bool, not a float such as ``2.5`` or ``2.0``) with
    ``1 <= budget <= num_patches``; anything else is a :class:`~sagebench.errors.ConfigError`.
    :meth:`Strategy.choose` calls it before every selection: strategies need not.
    """
    from numbers import Integral

    if isinstance(budget, bool) or not isinstance(budget, Integral):
        raise ConfigError(f"patch budget must be an integer, got {budget!r} ({type(budget).__name__})")
    budget = int(budget)
    if not 1 <= budget <= num_patches:
        raise ConfigError(f"patch budget must be between 1 and the number of patches ({num_patches}), got {budget}")
    return budget


def check_byte_budget(budget: object) -> int:
    """Validate a byte budget (a positive integer number of bytes per request) and return it."""
    from numbers import Integral

    if isinstance(budget, bool) or not isinstance(budget, Integral) or int(budget) < 1:
        raise ConfigError(f"byte budget must be a positive integer number of bytes per request, got {budget!r}")
    return int(budget)
