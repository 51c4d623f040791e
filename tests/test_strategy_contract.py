"""Every registered strategy keeps the contract of ``sagebench.testing.check_strategy``.

Parametrized over the registry (as timm's model tests are): a new strategy is tested here
without editing a list, and a plug-in author runs the same check in their own tests.
"""

from __future__ import annotations

import pytest
import torch

from sagebench.errors import ConfigError
from sagebench.plugins import STRATEGIES  # built-ins only: tests must not depend on what else is installed
from sagebench.strategies import Strategy, get_strategy
from sagebench.strategies.base import check_budget
from sagebench.testing import check_strategy, make_evidence


@pytest.mark.parametrize("name", STRATEGIES.names(builtin_only=True))
def test_every_registered_strategy_keeps_the_contract(name):
    check_strategy(lambda: get_strategy(name))


class _Duplicates(Strategy):
    name = "duplicates"

    def select(self, evidence, budget):
        budget = check_budget(budget, evidence.num_patches)
        return torch.zeros(evidence.batch_size, budget, dtype=torch.int64)


class _LooksAtTheBatch(Strategy):
    name = "batch_dependent"

    def select(self, evidence, budget):
        budget = check_budget(budget, evidence.num_patches)
        shared = evidence.attention.mean(0)  # one order for every image: depends on the batch
        return torch.argsort(shared, descending=True, stable=True)[:budget].expand(evidence.batch_size, -1).clone()


class _NoBudgetCheck(Strategy):
    name = "no_check"

    def select(self, evidence, budget):
        n = evidence.num_patches
        return torch.arange(n).expand(evidence.batch_size, -1)[:, : max(0, min(int(budget), n))].clone()


class _Float(Strategy):
    name = "float_indices"

    def select(self, evidence, budget):
        budget = check_budget(budget, evidence.num_patches)
        return torch.arange(budget, dtype=torch.float32).expand(evidence.batch_size, -1)


@pytest.mark.parametrize("broken,message", [
    (_Duplicates, "repeats patches"),
    (_LooksAtTheBatch, "depend on the other images"),
    (_NoBudgetCheck, "was accepted"),
    (_Float, "dtype"),
])
def test_the_check_names_the_broken_promise(broken, message):
    with pytest.raises(AssertionError, match=message):
        check_strategy(broken())


def test_make_evidence_is_reproducible():
    a, b = make_evidence(gen_seed=3), make_evidence(gen_seed=3)
    assert torch.equal(a.attention, b.attention) and torch.equal(a.embeddings, b.embeddings)
    with pytest.raises(ConfigError):
        check_budget(0, a.num_patches)
