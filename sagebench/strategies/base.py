"""The contract every composition strategy follows."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod

import torch

from sagebench.edge.evidence import EdgeEvidence

#: Evidence a strategy may declare in :attr:`Strategy.requires` that only the server can provide.
ORACLE_EVIDENCE = ("server_attention", "server_judge")


class Strategy(ABC):
    """Chooses which ``budget`` patches of each image go over the uplink.

    Subclasses implement :meth:`select`. Constructor keyword arguments are the strategy's
    options (``get_strategy("sage", prefilter=3.0)``); ``name`` is set by the registry.
    """

    name: str = "strategy"
    #: Names of the counters :meth:`select_with_stats` reports (most strategies report none).
    stat_names: tuple[str, ...] = ()
    #: Evidence beyond the edge's that the strategy needs (read by the sweep before it runs):
    #: ``"server_attention"`` makes the ceiling pass also compute the server's CLS attention on the
    #: full image; ``"server_judge"`` gives the evidence a callable that scores a candidate subset by the
    #: server's own answer to it (``EdgeEvidence.server_judge``). A strategy that requires anything the edge does not have is an **oracle**:
    #: results and boards show it as a reference, never ranked with deployable strategies.
    requires: frozenset[str] = frozenset()

    @property
    def oracle(self) -> bool:
        """True when the strategy uses evidence a deployed edge device would not have."""
        return bool(set(self.requires) & set(ORACLE_EVIDENCE))

    def __init__(self, **options: object) -> None:
        if options:
            raise TypeError(f"strategy {self.name!r} takes no options, got {sorted(options)}")

    @abstractmethod
    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        """Return ``[b, budget]`` int64 distinct patch indices in ``[0, N)``, most wanted first.

        The priority order matters: byte budgets are filled from the front of this list.
        Must be batched on the evidence's device (no per-image Python loops) and deterministic
        for the same evidence.
        """

    def select_with_stats(self, evidence: EdgeEvidence, budget: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`select`, plus this call's counters: ``{name: scalar tensor}`` summed over the batch.

        The keys are :attr:`stat_names` (e.g. how many images a rule had to cut to the budget);
        the evaluation sums them over batches and processes per (strategy, budget). Default: none.
        """
        return self.select(evidence, budget), {}

    def options(self) -> dict[str, object]:
        """The strategy's options, recorded in results so that a run can be reproduced.

        Convention: each ``__init__`` keyword is stored as an attribute of the same name.
        """
        return {p: getattr(self, p) for p in self._parameters()}

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


def check_budget(budget: object, num_patches: int) -> int:
    """Validate a patch budget for an image of ``num_patches`` patches and return it as an ``int``.

    The budget must be an integer (not a bool, not a float such as ``2.5`` or ``2.0``) with
    ``1 <= budget <= num_patches``; anything else is a :class:`~sagebench.errors.ConfigError`.
    """
    from numbers import Integral

    from sagebench.errors import ConfigError

    if isinstance(budget, bool) or not isinstance(budget, Integral):
        raise ConfigError(f"patch budget must be an integer, got {budget!r} ({type(budget).__name__})")
    budget = int(budget)
    if not 1 <= budget <= num_patches:
        raise ConfigError(f"patch budget must be between 1 and the number of patches ({num_patches}), got {budget}")
    return budget



def check_byte_budget(budget: object) -> int:
    """Validate a byte budget (a positive integer number of bytes per request) and return it."""
    from numbers import Integral

    from sagebench.errors import ConfigError

    if isinstance(budget, bool) or not isinstance(budget, Integral) or int(budget) < 1:
        raise ConfigError(f"byte budget must be a positive integer number of bytes per request, got {budget!r}")
    return int(budget)
