"""``best_of_random_oracle``: of K random subsets of B patches, one the server classifies right.

Why: an upper reference for subset selection. The server-attention oracle is not one (on the
cifar10 board it scores below the best deployable strategies); this one asks the server itself.
For each image it draws K subsets of B patches, uniformly at random and reproducibly (candidate 0
is exactly what ``random`` sends; candidate j > 0 is the same counter hash with the seed mixed
with j), asks the server whether each is classified as the image's label, and sends the first
that is (candidate 0 when none is). So it is right on every image ``random`` is right on, and on
more wherever some random subset of B patches suffices: the gap between it and the best
deployable row at a budget is headroom that choosing patches better could still win (a lower
bound on it: more candidates can only find more). It needs the server's forward and the label,
which a deployed edge device does not have, so it declares ``requires = {"server_judge"}``:
results mark it ``oracle`` and boards show it as a reference, never ranked. Cost: up to K extra
server passes per budget over the images still unsolved.
"""

from __future__ import annotations

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.errors import ConfigError
from sagebench.strategies.base import Strategy, check_budget
from sagebench.strategies.random import patch_hash
from sagebench.strategies.registry import register_strategy

_GOLDEN64 = 0x9E3779B97F4A7C15  # mixes the candidate number into the seed (odd, so j -> seed ^ j*c is one-to-one)


@register_strategy("best_of_random_oracle")
class BestOfRandomOracle(Strategy):
    """ORACLE: the first of K random B-patch subsets the server classifies right (an upper reference)."""

    requires = frozenset({"server_judge"})

    def __init__(self, k: int = 16) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"best_of_random_oracle: k must be a positive integer, got {k!r}")
        self.k = k

    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        budget = check_budget(budget, evidence.num_patches)
        if evidence.server_judge is None:
            raise ConfigError("best_of_random_oracle needs the server's verdict on candidate subsets, which the sweep "
                              "gives only to strategies that declare requires={'server_judge'}; build the evidence "
                              "with server_judge (see sagebench.testing.make_evidence).")
        ids = evidence.sample_ids.to(evidence.attention.device)
        chosen = self._candidate(evidence.seed, ids, evidence.num_patches, budget, 0)
        todo = torch.arange(ids.numel(), device=ids.device)
        for j in range(self.k):
            candidate = chosen[todo] if j == 0 else self._candidate(evidence.seed, ids[todo], evidence.num_patches,
                                                                    budget, j)
            right = evidence.server_judge(ids[todo], candidate).to(torch.bool)
            chosen[todo[right]] = candidate[right]
            todo = todo[~right]
            if todo.numel() == 0:
                break
        return chosen

    @staticmethod
    def _candidate(seed: int, ids: torch.Tensor, num_patches: int, budget: int, j: int) -> torch.Tensor:
        """Candidate ``j`` of each image: the B lowest of a counter hash of (seed mixed with j, sample id, patch)."""
        mixed = seed if j == 0 else (seed ^ (j * _GOLDEN64)) & ((1 << 64) - 1)
        order = torch.sort(patch_hash(mixed, ids, num_patches), dim=1, stable=True).indices
        return order[:, :budget].contiguous()
