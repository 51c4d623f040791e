"""Every registered strategy keeps the contract of ``sagebench.testing``, one test id per (strategy, check).

Parametrized over the registry (as timm's model tests are) and over the checks (as scikit-learn's
``parametrize_with_checks``): a new strategy is tested here without editing a list, a plug-in
author runs the same checks in their own tests, and a failure names the strategy and the promise.
"""

from __future__ import annotations

import functools
import inspect

import pytest
import torch

from sagebench.errors import ConfigError
from sagebench.plugins import STRATEGIES  # built-ins only: tests must not depend on what else is installed
from sagebench.strategies import Strategy, get_strategy, strategy_class
from sagebench.strategies.base import StrategyOutputError, check_budget, required_evidence
from sagebench.testing import (
    CHECK_NAMES,
    check_strategy,
    make_evidence,
    parametrize_with_checks,
    strategy_checks,
)


def _ranking_by_rollout() -> list:
    """Every strategy that takes ``importance``, ranking by each rollout: it must declare that it requires it."""
    return [functools.partial(get_strategy, name, importance=kind) for name in STRATEGIES.names(builtin_only=True)
            if "importance" in inspect.signature(strategy_class(name)).parameters
            for kind in ("rollout", "rollout_per_head")]


@parametrize_with_checks(STRATEGIES.names(builtin_only=True))
def test_strategy_contract(check):
    check()


@parametrize_with_checks(_ranking_by_rollout(), grids=((1, 1), (3, 5), (7, 7)))  # the same code: smaller grids
def test_strategy_contract_ranking_by_rollout(check):
    check()


# --------------------------------------------------------------------------- strategies that break promises

class _Duplicates(Strategy):
    name = "duplicates"

    def select(self, evidence, budget):
        return torch.zeros(evidence.batch_size, budget, dtype=torch.int64)


class _Float(Strategy):
    name = "float_indices"

    def select(self, evidence, budget):
        return torch.arange(budget, dtype=torch.float32).expand(evidence.batch_size, -1)


class _BrokenEverywhere(Strategy):
    """Valid rows, and six broken promises: batch (twice), determinism, counters, requirements, options."""

    name = "broken_everywhere"
    stat_names = ("calls",)  # declared, never reported
    requires = frozenset({"depth_map"})  # evidence nobody provides
    instances = 0

    def __init__(self, k: int = 1) -> None:
        self.k = k * 2  # not stored as given: options() cannot rebuild it
        type(self).instances += 1
        self.shift = type(self).instances  # every instance answers differently

    def select(self, evidence, budget):
        shared = evidence.attention.nan_to_num(0.0, 0.0, 0.0).mean(0)  # one order for the whole batch ...
        order = torch.argsort(shared, descending=True, stable=True).roll(self.shift)
        return torch.stack([order.roll(i)[:budget] for i in range(evidence.batch_size)])  # ... turned per position


def _failed_checks(strategy) -> set[str]:
    failed = set()
    for name, check in strategy_checks(strategy):
        try:
            check()
        except Exception:
            failed.add(name)
    return failed


def test_check_strategy_names_every_broken_promise_at_once():
    broken = {"batch_independent", "batch_order", "deterministic", "counters", "declared_requirements",
              "reproducible_options"}
    with pytest.raises(AssertionError) as info:
        check_strategy(_BrokenEverywhere)
    message = str(info.value)
    assert f"breaks {len(broken)} of {len(CHECK_NAMES)} promises" in message
    for name in CHECK_NAMES:
        assert (f"  - {name}: " in message) == (name in broken), name
    assert "'depth_map'" in message and "known evidence: rollout, rollout_per_head, server_attention, server_judge" in message
    assert _failed_checks(_BrokenEverywhere) == broken  # the same checks, run one at a time


ROWS_CHECKS = {"valid_indices", "full_budget", "deterministic", "batch_independent", "batch_order",
               "non_finite_attention", "reproducible_options"}


@pytest.mark.parametrize("broken,failed,message", [
    (_Duplicates, ROWS_CHECKS, "valid_indices: on a 3x5 grid at B=7: row 0 repeats patches"),
    # every call refused by the entry point: the counters crash too; requirements are not to blame
    (_Float, ROWS_CHECKS | {"counters"}, "valid_indices: on a 1x1 grid at B=1: strategy 'float_indices' returned "
                                         r"\(4, 1\) torch.float32"),
])
def test_broken_rows_break_every_check_that_chooses_patches(broken, failed, message):
    assert _failed_checks(broken) == failed
    with pytest.raises(AssertionError, match=message):
        check_strategy(broken())


def test_a_rollout_reader_that_does_not_declare_it_breaks_declared_requirements():
    class Undeclared(Strategy):
        name = "undeclared_rollout"

        def select(self, evidence, budget):
            if evidence.rollout is None:
                raise ConfigError("no rollout")
            return torch.sort(evidence.rollout, dim=1, descending=True, stable=True).indices[:, :budget]

    assert _failed_checks(Undeclared) == {"declared_requirements"}
    Undeclared.requires = frozenset({"rollout"})
    assert _failed_checks(Undeclared) == set()


def test_checks_are_exposed_one_by_one_and_accept_a_registered_name():
    checks = dict(strategy_checks("sage"))
    assert tuple(checks) == CHECK_NAMES and len(CHECK_NAMES) == 9
    for check in checks.values():
        check()
    check_strategy("sage")
    with pytest.raises(ConfigError, match="Unknown strategy 'sagee'. Did you mean 'sage'"):
        check_strategy("sagee")
    with pytest.raises(TypeError, match="registered name"):
        check_strategy(3)  # type: ignore[arg-type]


def test_parametrize_with_checks_gives_one_test_id_per_strategy_and_check():
    mark = parametrize_with_checks(["sage", functools.partial(get_strategy, "sage", importance="rollout")])
    ids = [p.id for p in mark.args[1]]
    assert ids == [f"sage-{c}" for c in CHECK_NAMES] + [f"sage[importance=rollout]-{c}" for c in CHECK_NAMES]


# --------------------------------------------------------------------------- the framework's entry point

class _NoBudgetCheck(Strategy):
    """First patches in raster order; never checks its budget (the framework does)."""

    name = "no_check"
    seen: list = []

    def select(self, evidence, budget):
        type(self).seen.append(budget)
        return torch.arange(budget).expand(evidence.batch_size, -1).clone()


def test_the_entry_point_checks_the_budget_for_a_strategy_that_does_not():
    strategy = _NoBudgetCheck()
    ev = make_evidence(grid=(7, 7), b=2)
    _NoBudgetCheck.seen.clear()
    for bad in (0, ev.num_patches + 1, -1, 2.5, 2.0, "3", None, True):
        with pytest.raises(ConfigError, match="budget"):
            strategy.choose(ev, bad)
    assert _NoBudgetCheck.seen == []  # select never saw a bad budget
    import numpy as np

    assert strategy.choose(ev, np.int64(3)).indices.tolist() == [[0, 1, 2]] * 2
    assert _NoBudgetCheck.seen == [3] and type(_NoBudgetCheck.seen[0]) is int  # checked once, as an int
    check_strategy(_NoBudgetCheck)


def test_the_entry_point_refuses_rows_of_the_wrong_shape_dtype_or_type():
    ev = make_evidence(grid=(3, 3), b=2)
    with pytest.raises(StrategyOutputError, match=r"float_indices.*\(2, 4\) torch.float32.*expected shape \(2, 4\)"):
        _Float().choose(ev, 4)

    class Short(Strategy):
        name = "short"

        def select(self, evidence, budget):
            return torch.arange(budget - 1).expand(evidence.batch_size, -1)

    with pytest.raises(StrategyOutputError, match=r"\(2, 3\) torch.int64.*expected shape \(2, 4\)"):
        Short().choose(ev, 4)

    class NotATensor(Strategy):
        name = "list"

        def select(self, evidence, budget):
            return [[0]]

    with pytest.raises(StrategyOutputError, match="returned list"):
        NotATensor().choose(ev, 1)


def test_the_entry_point_cannot_be_overridden():
    with pytest.raises(TypeError, match="overrides Strategy.choose"):
        class Sneaky(Strategy):
            def choose(self, evidence, budget):  # noqa: D102
                return None

            def select(self, evidence, budget):
                return None


def test_choose_returns_select_with_stats():
    ev = make_evidence(grid=(7, 7), b=3)
    rule = get_strategy("attention_cumsum")
    indices, stats = rule.choose(ev, 5)
    expected_indices, expected_stats = rule.select_with_stats(ev, 5)
    assert torch.equal(indices, expected_indices) and stats.keys() == expected_stats.keys()
    assert all(torch.equal(stats[k], expected_stats[k]) for k in stats)
    assert rule.choose(ev, 5).indices is not None and get_strategy("sage").choose(ev, 5).stats == {}


# --------------------------------------------------------------------------- requirements are declared

def test_requirements_are_declared_per_instance():
    for name in STRATEGIES.names(builtin_only=True):
        if "importance" in inspect.signature(strategy_class(name)).parameters:
            assert get_strategy(name).requires == frozenset(), name
            for kind in ("rollout", "rollout_per_head"):
                assert get_strategy(name, importance=kind).requires == {kind}, name
                assert not get_strategy(name, importance=kind).oracle
    assert get_strategy("server_attention_oracle").requires == {"server_attention"}
    strategies = [get_strategy("sage"), get_strategy("tome", importance="rollout"),
                  get_strategy("server_attention_oracle")]
    assert required_evidence(strategies) == {"rollout", "server_attention"}
    assert required_evidence([get_strategy("sage")]) == frozenset()


def test_an_unknown_requirement_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"requires 'depth_map'.*known evidence: rollout, rollout_per_head, "
                                          r"server_attention"):
        required_evidence([get_strategy("sage"), _BrokenEverywhere()])
    weird = _NoBudgetCheck()
    weird.requires = "rollout"  # a string, not a set of names
    with pytest.raises(ConfigError, match="must be a set of evidence names"):
        required_evidence([weird])


def test_check_budget_stays_importable():
    with pytest.raises(ConfigError):
        check_budget(0, make_evidence().num_patches)


def test_make_evidence_is_reproducible():
    a, b = make_evidence(gen_seed=3), make_evidence(gen_seed=3)
    assert torch.equal(a.attention, b.attention) and torch.equal(a.embeddings, b.embeddings)


def test_a_strategy_names_the_code_it_is():
    """Reproduction needs to know which code ran: distribution, version and a hash of the defining source."""
    import hashlib
    import inspect

    from sagebench.strategies import get_strategy

    sage = get_strategy("sage")
    identity = sage.code_identity()
    source = inspect.getsourcefile(type(sage))
    assert identity["distribution"] == "sagebench" and identity["version"]
    assert identity["source_sha256"] == hashlib.sha256(open(source, "rb").read()).hexdigest()[:16]
    assert identity["module"] == "sagebench.strategies.sage" and identity["class"] == type(sage).__qualname__
    assert get_strategy("random").code_identity()["source_sha256"] != identity["source_sha256"]
