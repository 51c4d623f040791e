"""The strategy contract as checks: ``check_strategy(strategy)``, or one check at a time, for plug-in tests.

Why functions (as scikit-learn's ``check_estimator`` and ``parametrize_with_checks``): a third-party
strategy is tested against exactly the promises sagebench relies on, in the author's own test
suite, without copying our tests. ``check_strategy`` runs every check and names every broken
promise at once; :func:`parametrize_with_checks` makes each (strategy, check) its own pytest test.
sagebench runs them over every registered strategy (``tests/test_strategy_contract.py``).

The promises, each a named check, for evidence of ``b`` images on an ``R x C`` grid of ``N`` patches
(patches are chosen through ``Strategy.choose``, the framework's entry point):

- ``valid_indices``: a ``[b, B]`` int64 tensor on the evidence's device, each row ``B`` distinct
  indices in ``[0, N)``, at ``B = 1`` and ``N // 2``;
- ``full_budget``: ``B == N`` gives such rows and sends every patch;
- ``deterministic``: equal evidence (rebuilt from equal tensors), another instance: the same answer
  (at ``B = 1`` and ``N // 2``);
- ``batch_independent``: a row depends only on its own image (alone, it gets the same answer);
- ``batch_order``: in a shuffled batch each image keeps its own answer;
- ``non_finite_attention``: NaN/Inf attention does not break the shape contract;
- ``counters``: ``select_with_stats`` reports exactly :attr:`~Strategy.stat_names`, sums over the
  batch (the sweep adds them up over batches), with the same indices as ``select``;
- ``declared_requirements``: :attr:`~Strategy.requires` names only evidence the framework provides
  (``EVIDENCE_KINDS``), and evidence holding only what is declared is enough;
- ``reproducible_options``: ``options()`` rebuilds the same strategy (same label, same answer):
  results record them so that a run can be reproduced.

The budget is not a promise of the strategy: ``Strategy.choose`` rejects budgets outside ``1..N``
(or not integers) before ``select`` runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Union

import torch

from sagebench.edge.evidence import EVIDENCE_KINDS, EdgeEvidence
from sagebench.strategies.base import Strategy, StrategyOutputError, check_requires

__all__ = ["CHECK_NAMES", "check_strategy", "fake_server_judge", "make_evidence", "parametrize_with_checks", "strategy_checks",
           "strategy_factory"]

#: What the checks accept: an instance, a zero-argument factory (to also check that two instances
#: agree), or a registered name (its default options).
StrategyLike = Union[Strategy, Callable[[], Strategy], str]
Grid = tuple[int, int]
DEFAULT_GRIDS: tuple[Grid, ...] = ((1, 1), (3, 5), (7, 7), (14, 14))


def make_evidence(grid: tuple[int, int] = (7, 7), b: int = 4, dim: int = 16, seed: int = 0,
                  gen_seed: int = 0, device: str | torch.device = "cpu", with_rollout: bool = True) -> EdgeEvidence:
    """Random but reproducible evidence for ``b`` images (attention rows sum to 1); with ``with_rollout``
    both rollouts (``rollout``, ``rollout_per_head``) are filled too."""
    g = torch.Generator().manual_seed(gen_seed)
    n = grid[0] * grid[1]
    attention = torch.softmax(torch.randn(b, n, generator=g), dim=1)
    rollout = torch.softmax(torch.randn(b, n, generator=g), dim=1) if with_rollout else None
    server_attention = torch.softmax(torch.randn(b, n, generator=g), dim=1)  # what an oracle may read
    evidence = EdgeEvidence(
        logits=torch.randn(b, 10, generator=g).to(device), attention=attention.to(device),
        embeddings=torch.randn(b, n, dim, generator=g).to(device), grid=grid,
        sample_ids=(torch.arange(b, dtype=torch.int64) + 1000).to(device), seed=seed,
        rollout=None if rollout is None else rollout.to(device), server_attention=server_attention.to(device),
        server_judge=fake_server_judge,
    )
    if with_rollout:  # drawn last: the other fields are those this function always gave
        evidence.rollout_per_head = torch.softmax(torch.randn(b, n, generator=g), dim=1).to(device)
    return evidence


def fake_server_judge(sample_ids: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """A stand-in for the server's verdict (``EdgeEvidence.server_judge``): a fixed function of the image and
    the patch set (order-free) with ties, in [-6, 0] like a log-probability, so oracle strategies can be tested."""
    key = torch.sort(indices, dim=1).values * torch.arange(1, indices.shape[1] + 1, device=indices.device)
    return -((key.sum(dim=1) + 3 * sample_ids.to(indices.device)) % 7).double()


def strategy_factory(strategy: StrategyLike) -> Callable[[], Strategy]:
    """A zero-argument factory for ``strategy``; a name that is not registered is a ConfigError now."""
    if isinstance(strategy, str):
        from sagebench.strategies import get_strategy, strategy_class

        strategy_class(strategy)  # unknown names fail here, with the known ones and a suggestion
        return functools.partial(get_strategy, strategy)
    if isinstance(strategy, Strategy):
        return lambda: strategy
    if callable(strategy):
        return strategy
    raise TypeError(f"check a Strategy instance, a factory returning one, or a registered name; "
                    f"got {type(strategy).__name__}")


def _build(make: Callable[[], Strategy]) -> Strategy:
    built = make()
    if not isinstance(built, Strategy):
        raise AssertionError(f"the factory returned {type(built).__name__}, not a sagebench Strategy")
    return built


def _label(make: Callable[[], Strategy]) -> str:
    """The strategy's label for messages and test ids; its class name if even that is broken."""
    try:
        built = make()
    except Exception:  # the checks report it
        return getattr(make, "__name__", "strategy")
    try:
        return str(built.label)
    except Exception:  # a broken label is reported by reproducible_options
        return type(built).__name__


def _choose(strategy: Strategy, evidence: EdgeEvidence, budget: int, what: str) -> torch.Tensor:
    """``strategy.choose(...).indices``, checked as every row the sweep would use."""
    try:
        idx = strategy.choose(evidence, budget).indices
    except StrategyOutputError as exc:
        raise AssertionError(f"{what}: {exc}") from exc
    _check_rows(idx, evidence, budget, what)
    return idx


def _check_rows(idx: torch.Tensor, evidence: EdgeEvidence, budget: int, what: str) -> None:
    b, n = evidence.batch_size, evidence.num_patches
    if not isinstance(idx, torch.Tensor):
        raise AssertionError(f"{what}: select returned {type(idx).__name__}, not a torch.Tensor")
    if tuple(idx.shape) != (b, budget):
        raise AssertionError(f"{what}: shape {tuple(idx.shape)}, expected ({b}, {budget})")
    if idx.dtype != torch.int64:
        raise AssertionError(f"{what}: dtype {idx.dtype}, expected torch.int64")
    if idx.device != evidence.attention.device:
        raise AssertionError(f"{what}: on {idx.device}, the evidence is on {evidence.attention.device}")
    if budget and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise AssertionError(f"{what}: indices outside [0, {n}): min {int(idx.min())}, max {int(idx.max())}")
    for r, row in enumerate(idx.tolist()):
        if len(set(row)) != budget:
            raise AssertionError(f"{what}: row {r} repeats patches: {row}")


def _budgets(n: int) -> list[int]:
    """The budgets checked below ``N`` (``N`` itself is :func:`check_full_budget`'s)."""
    return sorted({1, max(1, n // 2)})


def check_valid_indices(make: Callable[[], Strategy], grids: Sequence[Grid], device: str | torch.device) -> None:
    """Rows the sweep can use: ``[b, B]`` int64 on the evidence's device, B distinct indices in ``[0, N)``."""
    strategy = _build(make)
    for grid in grids:
        ev = make_evidence(grid=grid, b=4, device=device)
        for budget in _budgets(grid[0] * grid[1]):
            _choose(strategy, ev, budget, f"on a {grid[0]}x{grid[1]} grid at B={budget}")


def check_full_budget(make: Callable[[], Strategy], grids: Sequence[Grid], device: str | torch.device) -> None:
    """``B == N`` sends every patch (the ceiling's patch set)."""
    strategy = _build(make)
    for grid in grids:
        n = grid[0] * grid[1]
        idx = _choose(strategy, make_evidence(grid=grid, b=4, device=device), n, f"on a {grid[0]}x{grid[1]} grid")
        if any(sorted(row) != list(range(n)) for row in idx.tolist()):
            raise AssertionError(f"on a {grid[0]}x{grid[1]} grid: B == N must send every patch")


def check_deterministic(make: Callable[[], Strategy], grids: Sequence[Grid], device: str | torch.device) -> None:
    """Equal evidence and another instance give the same answer (records are reproducible)."""
    first, other = _build(make), _build(make)
    for grid in grids:
        ev = make_evidence(grid=grid, b=4, device=device)
        for budget in _budgets(grid[0] * grid[1]):
            what = f"on a {grid[0]}x{grid[1]} grid at B={budget}"
            idx = _choose(first, ev, budget, what)
            if not torch.equal(idx, _choose(other, make_evidence(grid=grid, b=4, device=device), budget, what)):
                raise AssertionError(f"{what}: not deterministic (equal evidence, another instance, another answer)")


def check_batch_independent(make: Callable[[], Strategy], grids: Sequence[Grid], device: str | torch.device) -> None:
    """An image alone gets the patches it gets in a batch (batching is a speed setting)."""
    strategy = _build(make)
    ev = make_evidence(grid=(7, 7), b=5, device=device)
    full = _choose(strategy, ev, 12, "a batch of 5")
    for i in range(ev.batch_size):
        alone = _choose(strategy, ev.subset(torch.tensor([i], device=device)), 12, f"image {i} alone")
        if not torch.equal(alone[0], full[i]):
            raise AssertionError(f"image {i}'s patches depend on the other images in the batch")


def check_batch_order(make: Callable[[], Strategy], grids: Sequence[Grid], device: str | torch.device) -> None:
    """A shuffled batch gives each image its own patches (data order is a speed setting)."""
    strategy = _build(make)
    ev = make_evidence(grid=(7, 7), b=5, device=device)
    full = _choose(strategy, ev, 12, "a batch of 5")
    perm = torch.tensor([3, 0, 4, 2, 1], device=device)
    if not torch.equal(_choose(strategy, ev.subset(perm), 12, "a shuffled batch"), full[perm]):
        raise AssertionError("a shuffled batch changes the patches of its images")


def check_non_finite_attention(make: Callable[[], Strategy], grids: Sequence[Grid],
                               device: str | torch.device) -> None:
    """NaN/Inf attention still gives valid rows (a broken edge must not crash the sweep)."""
    broken = make_evidence(grid=(3, 5), b=3, device=device)
    broken.attention[0, 2] = float("nan")
    broken.attention[1] = float("inf")
    _choose(_build(make), broken, 7, "with NaN/Inf attention")


def check_counters(make: Callable[[], Strategy], grids: Sequence[Grid], device: str | torch.device) -> None:
    """Counters are exactly ``stat_names``, sums over the batch, beside the same indices as ``select``."""
    strategy = _build(make)
    ev = make_evidence(grid=(7, 7), b=4, device=device)
    idx, stats = strategy.choose(ev, 12)
    if set(stats) != set(strategy.stat_names):
        raise AssertionError(f"select_with_stats reported {sorted(stats)}, stat_names declares "
                             f"{sorted(strategy.stat_names)}")
    if not torch.equal(idx, strategy.select(ev, 12)):
        raise AssertionError("select and select_with_stats choose different patches")
    halves = [strategy.choose(ev.subset(torch.arange(a, b, device=device)), 12).stats for a, b in ((0, 2), (2, 4))]
    for name, value in stats.items():
        if not isinstance(value, torch.Tensor):
            raise AssertionError(f"counter {name!r} is a {type(value).__name__}, not a tensor")
        whole = value.double().sum()
        parts = sum(h[name].double().sum() for h in halves)
        if not torch.allclose(whole.cpu(), parts.cpu()):
            raise AssertionError(f"counter {name!r} is not a sum over the batch: {float(whole)} for 4 images, "
                                 f"{float(parts)} for the same images in two batches of 2")


def check_declared_requirements(make: Callable[[], Strategy], grids: Sequence[Grid],
                                device: str | torch.device) -> None:
    """``requires`` names known evidence only, and the declared evidence is enough."""
    strategy = _build(make)
    try:
        requires = check_requires(strategy)
    except Exception as exc:  # ConfigError: a name the framework cannot provide
        raise AssertionError(str(exc)) from exc
    ev = make_evidence(grid=(7, 7), b=4, device=device)
    for kind in EVIDENCE_KINDS:  # each kind is an optional EdgeEvidence field of the same name
        if kind not in requires:
            setattr(ev, kind, None)
    try:
        strategy.choose(ev, 12)
    except Exception as exc:
        try:
            strategy.choose(make_evidence(grid=(7, 7), b=4, device=device), 12)
        except Exception:
            return  # it fails with every kind of evidence too: the other checks report that
        declared = ", ".join(sorted(requires)) or "nothing beyond logits, attention and embeddings"
        raise AssertionError(f"with only the declared evidence ({declared}) select failed ({type(exc).__name__}: "
                             f"{exc}); declare what it reads in requires") from exc


def check_reproducible_options(make: Callable[[], Strategy], grids: Sequence[Grid],
                               device: str | torch.device) -> None:
    """``options()`` rebuilds the same strategy: results record them to reproduce a run."""
    strategy = _build(make)
    try:
        options, label = strategy.options(), strategy.label
    except AttributeError as exc:
        raise AssertionError(f"options() needs each __init__ keyword stored as an attribute of the same name: "
                             f"{exc}") from exc
    twin = type(strategy)(**options)
    if twin.label != label or twin.options() != options:
        raise AssertionError(f"rebuilt from its options {options} it is {twin.label!r} with {twin.options()}, "
                             f"not {label!r}: store each __init__ keyword as given")
    ev = make_evidence(grid=(7, 7), b=4, device=device)
    if not torch.equal(_choose(strategy, ev, 12, label), _choose(twin, ev, 12, f"{label} rebuilt")):
        raise AssertionError(f"rebuilt from its options {options} it chooses other patches")


_CHECKS: dict[str, Callable[[Callable[[], Strategy], Sequence[Grid], Any], None]] = {
    "valid_indices": check_valid_indices,
    "full_budget": check_full_budget,
    "deterministic": check_deterministic,
    "batch_independent": check_batch_independent,
    "batch_order": check_batch_order,
    "non_finite_attention": check_non_finite_attention,
    "counters": check_counters,
    "declared_requirements": check_declared_requirements,
    "reproducible_options": check_reproducible_options,
}
#: The names of the contract's checks, in the order they run.
CHECK_NAMES: tuple[str, ...] = tuple(_CHECKS)


def strategy_checks(strategy: StrategyLike, grids: Sequence[Grid] = DEFAULT_GRIDS,
                    device: str | torch.device = "cpu") -> Iterator[tuple[str, Callable[[], None]]]:
    """``(check name, check)`` for each promise; calling a check raises ``AssertionError`` if it is broken."""
    make = strategy_factory(strategy)
    for name, check in _CHECKS.items():
        yield name, functools.partial(check, make, tuple(grids), device)


def check_strategy(strategy: StrategyLike, grids: Sequence[Grid] = DEFAULT_GRIDS,
                   device: str | torch.device = "cpu") -> None:
    """Run every check of the strategy contract; raise one ``AssertionError`` naming each broken promise.

    ``strategy`` is an instance, a zero-argument factory (to also check that two instances agree)
    or a registered name. Every check runs even when an earlier one fails (a crash counts as a
    broken promise), so one run lists everything to fix. Well under a second per built-in on a CPU.
    """
    make = strategy_factory(strategy)
    failures = []
    for name, check in strategy_checks(make, grids, device):
        try:
            check()
        except Exception as exc:
            detail = str(exc) if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {exc}"
            failures.append(f"{name}: {detail}")
    if failures:
        raise AssertionError(f"{_label(make)} breaks {len(failures)} of {len(_CHECKS)} promises of the strategy "
                             "contract:\n" + "\n".join(f"  - {f}" for f in failures))


def parametrize_with_checks(strategies: Iterable[StrategyLike], grids: Sequence[Grid] = DEFAULT_GRIDS,
                            device: str | torch.device = "cpu") -> Any:
    """A pytest decorator: one test per (strategy, check), with the id ``<label>-<check name>``.

    The decorated test takes one argument, ``check``, and calls it::

        @parametrize_with_checks(["centre_first", lambda: CentreFirst(margin=2)])
        def test_contract(check):
            check()
    """
    import pytest

    params = []
    for strategy in strategies:
        make = strategy_factory(strategy)
        label = _label(make)
        params += [pytest.param(check, id=f"{label}-{name}") for name, check in strategy_checks(make, grids, device)]
    return pytest.mark.parametrize("check", params)
