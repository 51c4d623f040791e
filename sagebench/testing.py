"""The strategy contract as a function: ``check_strategy(strategy)``, for plug-in authors' own tests.

Why a function (as scikit-learn's ``check_estimator``): a third-party strategy is tested against
exactly the promises sagebench relies on, in the author's own test suite, without copying our
tests. sagebench runs it over every registered strategy (``tests/test_strategy_contract.py``).

The promises, for evidence of ``b`` images on an ``R x C`` grid of ``N`` patches:

- ``select(evidence, B)`` returns a ``[b, B]`` int64 tensor on the evidence's device;
- every row holds exactly ``B`` distinct indices in ``[0, N)``; ``B == N`` sends every patch;
- the same evidence gives the same answer (also rebuilt from equal tensors);
- a row depends only on its own image (alone, or in a shuffled batch, it gets the same answer);
- budgets outside ``1..N`` (or not integers) raise :class:`~sagebench.errors.ConfigError`;
- non-finite attention does not break the shape contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.errors import ConfigError
from sagebench.strategies.base import Strategy

__all__ = ["check_strategy", "fake_server_judge", "make_evidence"]


def make_evidence(grid: tuple[int, int] = (7, 7), b: int = 4, dim: int = 16, seed: int = 0,
                  gen_seed: int = 0, device: str | torch.device = "cpu", with_rollout: bool = True) -> EdgeEvidence:
    """Random but reproducible evidence for ``b`` images (attention rows sum to 1)."""
    g = torch.Generator().manual_seed(gen_seed)
    n = grid[0] * grid[1]
    attention = torch.softmax(torch.randn(b, n, generator=g), dim=1)
    rollout = torch.softmax(torch.randn(b, n, generator=g), dim=1) if with_rollout else None
    server_attention = torch.softmax(torch.randn(b, n, generator=g), dim=1)  # what an oracle may read
    return EdgeEvidence(
        logits=torch.randn(b, 10, generator=g).to(device), attention=attention.to(device),
        embeddings=torch.randn(b, n, dim, generator=g).to(device), grid=grid,
        sample_ids=(torch.arange(b, dtype=torch.int64) + 1000).to(device), seed=seed,
        rollout=None if rollout is None else rollout.to(device), server_attention=server_attention.to(device),
        server_judge=fake_server_judge,
    )


def fake_server_judge(sample_ids: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """A stand-in for the server's verdict (``EdgeEvidence.server_judge``): a fixed function of the image and
    the patch set (order-free) with ties, in [-6, 0] like a log-probability, so oracle strategies can be tested."""
    key = torch.sort(indices, dim=1).values * torch.arange(1, indices.shape[1] + 1, device=indices.device)
    return -((key.sum(dim=1) + 3 * sample_ids.to(indices.device)) % 7).double()


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


def check_strategy(strategy: Strategy | Callable[[], Strategy],
                   grids: Sequence[tuple[int, int]] = ((1, 1), (3, 5), (7, 7), (14, 14)),
                   device: str | torch.device = "cpu") -> None:
    """Raise ``AssertionError`` naming the first broken promise of the strategy contract.

    ``strategy`` is an instance (or a zero-argument factory, to also check that two instances
    agree). Runs in well under a second for the built-ins on a CPU.
    """
    make = strategy if callable(strategy) and not isinstance(strategy, Strategy) else (lambda: strategy)
    first: Strategy = make()
    name = getattr(first, "label", type(first).__name__)
    for grid in grids:
        n = grid[0] * grid[1]
        ev = make_evidence(grid=grid, b=4, device=device)
        for budget in sorted({1, max(1, n // 2), n}):
            what = f"{name} on a {grid[0]}x{grid[1]} grid at B={budget}"
            idx = first.select(ev, budget)
            _check_rows(idx, ev, budget, what)
            if budget == n and any(sorted(row) != list(range(n)) for row in idx.tolist()):
                raise AssertionError(f"{what}: B == N must send every patch")
            if not torch.equal(idx, make().select(make_evidence(grid=grid, b=4, device=device), budget)):
                raise AssertionError(f"{what}: not deterministic (equal evidence, another instance, another answer)")
    ev = make_evidence(grid=(7, 7), b=5, device=device)
    full = first.select(ev, 12)
    for i in range(ev.batch_size):
        alone = first.select(ev.subset(torch.tensor([i], device=device)), 12)
        if not torch.equal(alone[0], full[i]):
            raise AssertionError(f"{name}: image {i}'s patches depend on the other images in the batch")
    perm = torch.tensor([3, 0, 4, 2, 1], device=device)
    if not torch.equal(first.select(ev.subset(perm), 12), full[perm]):
        raise AssertionError(f"{name}: a shuffled batch changes the patches of its images")
    for bad in (0, ev.num_patches + 1, -1, 2.5, True):
        try:
            first.select(ev, bad)  # type: ignore[arg-type]
        except ConfigError:
            continue
        raise AssertionError(f"{name}: budget {bad!r} was accepted; check it with "
                             "sagebench.strategies.base.check_budget(budget, evidence.num_patches)")
    broken = make_evidence(grid=(3, 5), b=3, device=device)
    broken.attention[0, 2] = float("nan")
    broken.attention[1] = float("inf")
    _check_rows(first.select(broken, 7), broken, 7, f"{name} with NaN/Inf attention")
