"""``EdgeEvidence.memo``: the explicit home of values strategies derive from the evidence and share."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sagebench.edge.cache import _tensor_fields
from sagebench.edge.evidence import EdgeEvidence, Memo
from sagebench.strategies import get_strategy
from sagebench.strategies.importance import importance_order
from sagebench.strategies.sage import ranked_gram
from sagebench.testing import make_evidence


def test_memo_computes_once_per_inputs_and_again_when_an_input_is_replaced():
    memo, calls = Memo(), []
    a, b = torch.zeros(2), torch.ones(2)

    def compute(value):
        calls.append(value)
        return value

    assert memo.get_or_compute(("x", 1), (a,), lambda: compute("first")) == "first"
    assert memo.get_or_compute(("x", 1), (a,), lambda: compute("again")) == "first"  # same input object
    assert memo.get_or_compute(("x", 2), (a,), lambda: compute("other key")) == "other key"
    assert memo.get_or_compute(("x", 1), (a.clone(),), lambda: compute("new input")) == "new input"  # equal, not same
    assert memo.get_or_compute(("x", 1), (a, b), lambda: compute("more inputs")) == "more inputs"
    assert calls == ["first", "other key", "new input", "more inputs"]
    assert ("x", 1) in memo and ("y",) not in memo and len(memo) == 2


def test_strategies_share_one_ranking_and_one_gram_matrix_per_evidence():
    ev = make_evidence(grid=(7, 7), b=3)
    for budget in (3, 10):
        get_strategy("sage").choose(ev, budget)
        get_strategy("diversity_only").choose(ev, budget)
        get_strategy("attention_prefix").choose(ev, budget)
    assert ("importance_order", "last_layer") in ev.memo and ("ranked_gram", "last_layer") in ev.memo
    assert len(ev.memo) == 2
    order = importance_order(ev)
    assert importance_order(ev) is order and ranked_gram(ev)[1] is ranked_gram(ev)[1]
    ev.attention = ev.attention.flip(1)  # replaced: the ranking and the Gram matrix follow the new tensor
    assert importance_order(ev) is not order
    assert torch.equal(importance_order(ev), torch.sort(ev.attention, dim=1, descending=True, stable=True).indices)
    assert torch.equal(get_strategy("sage").choose(ev, 5).indices,
                       get_strategy("sage").choose(_rebuilt(ev), 5).indices)


def _rebuilt(ev: EdgeEvidence) -> EdgeEvidence:
    return EdgeEvidence(logits=ev.logits.clone(), attention=ev.attention.clone(), embeddings=ev.embeddings.clone(),
                        grid=ev.grid, sample_ids=ev.sample_ids.clone(), seed=ev.seed, rollout=ev.rollout,
                        server_attention=ev.server_attention)


def test_memo_is_not_part_of_the_evidence():
    ev = make_evidence(grid=(3, 3), b=4)
    get_strategy("sage").choose(ev, 4)
    assert len(ev.memo) == 2
    memo_field = {f.name: f for f in dataclasses.fields(EdgeEvidence)}["memo"]
    assert not memo_field.init and not memo_field.compare and not memo_field.repr
    with pytest.raises(TypeError):
        EdgeEvidence(logits=ev.logits, attention=ev.attention, embeddings=ev.embeddings, grid=ev.grid,
                     sample_ids=ev.sample_ids, memo=ev.memo)  # type: ignore[call-arg]
    assert "memo" not in repr(ev)
    assert len(ev.subset(torch.tensor([0, 1])).memo) == 0  # a new evidence object: a fresh memo
    assert len(EdgeEvidence.cat([ev.subset(torch.tensor([0])), ev.subset(torch.tensor([1]))]).memo) == 0
    assert len(dataclasses.replace(ev).memo) == 0
    stored = _tensor_fields(ev)  # what the edge cache writes: the evidence's tensors, never the memo
    assert "memo" not in stored and {"logits", "attention", "embeddings"} <= set(stored)


def test_choices_are_the_same_with_a_warm_memo_and_a_cold_one():
    ev = make_evidence(grid=(14, 14), b=4)
    names = ("sage", "diversity_only", "attention_prefix", "tome", "attention_cumsum")
    warm = {(n, b): get_strategy(n).choose(ev, b).indices for b in (1, 20, 98, 196) for n in names}
    for (name, budget), indices in warm.items():
        cold = make_evidence(grid=(14, 14), b=4)
        assert torch.equal(get_strategy(name).choose(cold, budget).indices, indices), (name, budget)
