"""The strategies added for the comparison with prior work, and the importance option they share.

``attention_threshold`` / ``attention_cumsum`` (Im et al.'s rules under a hard budget),
``diversity_only`` (sage without its prefilter), ``tome`` (ToMe's bipartite soft matching),
``bat`` (BAT's attentive + DPC-KNN-diverse split); the ``importance`` option (last-layer
attention or attention rollout) of every attention-based strategy; the counters the rules
report; the sage prefilter ablation through the config; and one real sweep with all of them.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_vit
from hypothesis import given, settings
from hypothesis import strategies as st
from test_strategies import (
    GRIDS,
    assert_valid,
    budgets_for,
    evidence_cases,
    make_evidence,
)

from sagebench.edge.model import EdgeModel
from sagebench.errors import ConfigError
from sagebench.strategies import describe, get_strategy, list_strategies
from sagebench.strategies.bat import dpc_knn_scores, num_attentive
from sagebench.strategies.importance import attention_order, importance
from sagebench.strategies.sage import farthest_point_order
from sagebench.strategies.tome import bipartite_merge, merges_per_round
from sagebench.sweep.strategy_stats import StrategyStats

NEW = ["attention_threshold", "attention_cumsum", "diversity_only", "tome", "bat"]
ATTENTION_BASED = ["attention_prefix", "sage", *NEW]
# every new strategy with non-default options too (and sage's ablation settings)
VARIANTS = [(n, {}) for n in NEW] + [
    ("attention_threshold", {"delta": 0.0}), ("attention_threshold", {"delta": 1.0}),
    ("attention_cumsum", {"delta": 0.5}), ("attention_cumsum", {"delta": 1.0}),
    ("tome", {"rate": 0.25}), ("bat", {"alpha": 0.0, "neighbors": 1}), ("bat", {"alpha": 1.0}),
    ("bat", {"alpha": 0.3, "neighbors": 100}),
    ("sage", {"prefilter": 1.0}), ("sage", {"prefilter": 3.0}),
]
VARIANT_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}" for n, o in VARIANTS]


from helpers import one_cpu_thread  # noqa: F401,E402  (fixture)

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tiny tensors: one intra-op thread (tests/helpers.py)


def with_rollout(ev, rollout):
    ev.rollout = rollout
    return ev


def clustered_embeddings(cluster: torch.Tensor, dim: int = 16, seed: int = 0, noise: float = 0.01) -> torch.Tensor:
    """``[1, N, dim]`` embeddings: orthogonal cluster centres (norm 5) plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    k = int(cluster.max()) + 1
    size = max(dim, k)
    centres = torch.linalg.qr(torch.randn(size, size, generator=g))[0][:k, :dim] * 5.0
    return (centres[cluster] + noise * torch.randn(len(cluster), dim, generator=g)).unsqueeze(0)


# --------------------------------------------------------------------------- the common contract


def test_new_strategies_are_registered_with_descriptions():
    assert set(NEW) <= set(list_strategies())
    for name in NEW:
        assert describe(name)


@pytest.mark.parametrize("name,options", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
def test_returns_exactly_b_distinct_in_range_indices(name, options, grid):
    n = grid[0] * grid[1]
    ev = make_evidence(grid=grid, b=3)
    strategy = get_strategy(name, **options)
    for budget in budgets_for(n):
        assert_valid(strategy.select(ev, budget), 3, budget, n)


@pytest.mark.parametrize("name,options", VARIANTS, ids=VARIANT_IDS)
def test_deterministic_and_batch_rows_independent(name, options):
    ev = make_evidence(grid=(7, 7), b=5)
    twin = make_evidence(grid=(7, 7), b=5)
    strategy = get_strategy(name, **options)
    full = strategy.select(ev, 12)
    assert torch.equal(full, strategy.select(ev, 12))
    assert torch.equal(full, get_strategy(name, **options).select(twin, 12))
    for i in range(5):
        assert torch.equal(strategy.select(ev.subset(torch.tensor([i])), 12)[0], full[i])
    perm = torch.tensor([3, 0, 4, 2, 1])
    assert torch.equal(strategy.select(ev.subset(perm), 12), full[perm])


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("bad", [0, 50, 2.5, None, True])
def test_bad_budget_is_a_config_error(name, bad):
    with pytest.raises(ConfigError, match="budget"):
        get_strategy(name).choose(make_evidence(grid=(7, 7), b=2), bad)


@pytest.mark.parametrize("name,options", [
    ("attention_threshold", {"delta": -0.1}), ("attention_threshold", {"delta": 1.5}),
    ("attention_threshold", {"delta": "x"}), ("attention_cumsum", {"delta": math.nan}),
    ("attention_cumsum", {"delta": True}), ("tome", {"rate": 0.0}), ("tome", {"rate": 1.5}),
    ("bat", {"alpha": -0.5}), ("bat", {"alpha": 2.0}), ("bat", {"neighbors": 0}), ("bat", {"neighbors": 2.5}),
    ("bat", {"unknown": 1}),
])
def test_bad_options_are_config_errors(name, options):
    with pytest.raises(ConfigError, match=name):
        get_strategy(name, **options)


def test_half_precision_zero_and_duplicate_embeddings():
    emb = torch.zeros(2, 9, 4)
    emb[:, 4:] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    ev = make_evidence(grid=(3, 3), attention=torch.full((2, 9), 1 / 9), embeddings=emb.half())
    for name in NEW:
        for budget in range(1, 10):
            assert_valid(get_strategy(name).select(ev, budget), 2, budget, 9)


# --------------------------------------------------------------------------- importance: last layer or rollout


@pytest.mark.parametrize("name", ATTENTION_BASED)
def test_importance_rollout_ranks_by_rollout(name):
    ev = make_evidence(grid=(7, 7), b=3)
    roll = torch.softmax(torch.randn(3, 49, generator=torch.Generator().manual_seed(7)) * 3, dim=1)
    swapped = make_evidence(grid=(7, 7), b=3, attention=roll, embeddings=ev.embeddings)
    with_rollout(ev, roll)
    by_rollout = get_strategy(name, importance="rollout").select(ev, 10)
    # importance="rollout" is the same strategy run with the rollout as its attention ...
    assert torch.equal(by_rollout, get_strategy(name).select(swapped, 10))
    # ... which here differs from ranking by the last layer's attention
    assert not torch.equal(by_rollout, get_strategy(name).select(ev, 10))
    assert get_strategy(name, importance="rollout").label == f"{name}[importance=rollout]"


@pytest.mark.parametrize("name", ATTENTION_BASED)
def test_importance_rollout_without_rollout_in_the_evidence_is_a_config_error(name):
    ev = make_evidence(grid=(7, 7), b=2)
    assert ev.rollout is None
    with pytest.raises(ConfigError, match="with_rollout=True"):
        get_strategy(name, importance="rollout").select(ev, 5)


@pytest.mark.parametrize("name", ATTENTION_BASED)
@pytest.mark.parametrize("bad", ["Rollout", "mean", 1, None])
def test_unknown_importance_is_a_config_error(name, bad):
    with pytest.raises(ConfigError, match="importance must be one of last_layer, rollout"):
        get_strategy(name, importance=bad)


def test_importance_helper_and_subset_carry_the_rollout():
    ev = make_evidence(grid=(2, 3), b=4)
    roll = torch.softmax(torch.randn(4, 6), dim=1)
    with_rollout(ev, roll)
    assert importance(ev, "last_layer") is ev.attention
    assert importance(ev, "rollout") is roll
    sub = ev.subset(torch.tensor([2, 0]))
    assert torch.equal(sub.rollout, roll[[2, 0]])
    assert make_evidence(grid=(2, 3), b=2).subset(torch.tensor([1])).rollout is None
    with pytest.raises(ConfigError):
        importance(ev, "other")


def test_edge_with_rollout_fills_both_signals_in_one_forward():
    vit = tiny_vit(depth=3)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(2)
    plain = EdgeModel(vit)(images, ids)
    rollout_only = EdgeModel(vit, attention="rollout")(images, ids)
    calls = []
    hooks = [blk.register_forward_hook(lambda *_: calls.append(1)) for blk in vit.blocks]
    try:
        both = EdgeModel(vit, with_rollout=True)(images, ids)
    finally:
        for h in hooks:
            h.remove()
    assert len(calls) == len(vit.blocks)  # each block ran once: one edge forward
    assert plain.rollout is None
    assert torch.equal(both.attention, plain.attention)
    assert torch.allclose(both.rollout, rollout_only.attention, atol=1e-6)
    assert torch.allclose(both.rollout.sum(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.equal(both.rollout, both.attention)
    assert torch.equal(both.logits, plain.logits) and torch.equal(both.embeddings, plain.embeddings)
    # an edge whose main signal is the rollout also offers it to importance="rollout"
    assert torch.equal(rollout_only.rollout, rollout_only.attention)


def _timm_attention_probabilities(vit, images):
    """Each block's ``[b, heads, t, t]`` attention probabilities as timm itself computes them (its
    unfused path, captured at the attention dropout), independently of sagebench's code."""
    probs, hooks, fused = [], [], [blk.attn.fused_attn for blk in vit.blocks]
    for blk in vit.blocks:
        blk.attn.fused_attn = False
        hooks.append(blk.attn.attn_drop.register_forward_hook(lambda m, args, out: probs.append(args[0].detach())))
    try:
        with torch.no_grad():
            vit(images)
    finally:
        for blk, f, h in zip(vit.blocks, fused, hooks):
            blk.attn.fused_attn = f
            h.remove()
    return probs


def test_rollout_per_head_follows_im_et_al_and_rollout_abnar_zuidema_on_a_hand_written_reference():
    """2 blocks, 2 heads, by hand. Im et al.'s code: per head (A2 + I)(A1 + I), not renormalised, heads
    averaged at the end, CLS row over the patches renormalised. Abnar & Zuidema: per block the
    head mean plus I, rows renormalised, then the product (issue 25: 7)."""
    vit = tiny_vit()
    assert len(vit.blocks) == 2 and vit.blocks[0].attn.num_heads == 2 and vit.num_prefix_tokens == 1
    with torch.no_grad():  # peaked, head-specific attention (random init is nearly uniform: both rollouts agree)
        for blk in vit.blocks:
            blk.attn.qkv.weight.mul_(6.0)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    a1, a2 = _timm_attention_probabilities(vit, images)
    t = a1.shape[-1]
    eye = torch.eye(t)
    per_head, abnar = [], []
    for i in range(images.shape[0]):
        head0 = (a2[i, 0] + eye) @ (a1[i, 0] + eye)
        head1 = (a2[i, 1] + eye) @ (a1[i, 1] + eye)
        cls = (head0[0, 1:] + head1[0, 1:]) / 2
        per_head.append(cls / cls.sum())
        m1 = (a1[i, 0] + a1[i, 1]) / 2 + eye
        m2 = (a2[i, 0] + a2[i, 1]) / 2 + eye
        joint = (m2 / m2.sum(dim=1, keepdim=True)) @ (m1 / m1.sum(dim=1, keepdim=True))
        abnar.append(joint[0, 1:] / joint[0, 1:].sum())
    ids = torch.arange(3)
    both = EdgeModel(vit, with_rollout=True, with_rollout_per_head=True)(images, ids)
    torch.testing.assert_close(both.rollout_per_head, torch.stack(per_head), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(both.rollout, torch.stack(abnar), atol=1e-6, rtol=1e-5)
    assert (both.rollout_per_head - both.rollout).abs().max() > 1e-3  # the two orders are not the same signal
    # each is computed only on request, and asking for the other changes nothing of the first
    only_old = EdgeModel(vit, with_rollout=True)(images, ids)
    assert only_old.rollout_per_head is None and torch.equal(only_old.rollout, both.rollout)
    only_new = EdgeModel(vit, with_rollout_per_head=True)(images, ids)
    assert only_new.rollout is None and torch.equal(only_new.rollout_per_head, both.rollout_per_head)
    assert torch.equal(only_new.attention, EdgeModel(vit)(images, ids).attention)


@pytest.mark.parametrize("name", ATTENTION_BASED)
def test_importance_rollout_per_head_ranks_by_its_own_evidence_and_requires_it(name):
    ev = make_evidence(grid=(4, 4), b=3)
    strategy = get_strategy(name, importance="rollout_per_head")
    assert strategy.requires == {"rollout_per_head"} and not strategy.oracle
    assert strategy.label == f"{name}[importance=rollout_per_head]"
    with pytest.raises(ConfigError, match="with_rollout_per_head=True"):
        strategy.select(ev, 5)
    roll = torch.softmax(torch.randn(3, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    ev.rollout_per_head = roll
    as_attention = make_evidence(grid=(4, 4), b=3, attention=roll, embeddings=ev.embeddings)
    assert torch.equal(strategy.select(ev, 5), get_strategy(name).select(as_attention, 5))
    assert importance(ev, "rollout_per_head") is roll


# --------------------------------------------------------------------------- Im et al.'s rules


def _att(values):
    t = torch.tensor(values, dtype=torch.float32)
    return (t / t.sum(dim=-1, keepdim=True)) if t.ndim == 2 else t


@pytest.mark.parametrize("grid,times_uniform", [((14, 14), "1.96x"), ((8, 8), "0.64x"), ((7, 7), "0.49x")])
def test_threshold_default_delta_is_what_its_docstring_says_on_each_grid(grid, times_uniform):
    """The default delta is absolute: twice uniform on 14x14, below uniform on 8x8 and 7x7 (issue 25: 10)."""
    from sagebench.strategies import strategy_class

    cls = strategy_class("attention_threshold")
    strategy = get_strategy("attention_threshold")
    n = grid[0] * grid[1]
    ratio = strategy.delta / (1 / n)
    assert f"{ratio:.2f}x" == times_uniform and f"{times_uniform} uniform" in " ".join(cls.__doc__.split())
    # flat attention: every patch at 1/N passes the rule exactly when delta is below uniform
    flat = make_evidence(grid=grid, attention=torch.full((2, n), 1 / n), embeddings=torch.randn(2, n, 4))
    _, stats = strategy.select_with_stats(flat, 4)
    assert int(stats["rule_patches"]) == (2 * n if ratio < 1 else 0)


def test_threshold_sends_the_patches_above_delta_then_pads_by_attention_order():
    # 1x6 grid; attention already sums to 1
    att = torch.tensor([[0.05, 0.30, 0.10, 0.25, 0.20, 0.10]])
    ev = make_evidence(grid=(1, 6), attention=att, embeddings=torch.randn(1, 6, 4))
    s = get_strategy("attention_threshold", delta=0.2)
    # rule set: patches 1, 3, 4 (>= 0.2, 4 exactly on the threshold), most attended first
    idx, stats = s.select_with_stats(ev, 3)
    assert idx.tolist() == [[1, 3, 4]]
    assert {k: int(v) for k, v in stats.items()} == {"cut_by_budget": 0, "padded": 0, "rule_patches": 3}
    # budget 5: padded with the next most attended (2 and 5 tie at 0.1: lower index first)
    idx, stats = s.select_with_stats(ev, 5)
    assert idx.tolist() == [[1, 3, 4, 2, 5]]
    assert int(stats["padded"]) == 1 and int(stats["cut_by_budget"]) == 0
    # budget 2: cut to the two most attended
    idx, stats = s.select_with_stats(ev, 2)
    assert idx.tolist() == [[1, 3]]
    assert int(stats["cut_by_budget"]) == 1 and int(stats["padded"]) == 0
    assert torch.equal(s.select(ev, 2), idx)


def test_cumsum_sends_the_sorted_prefix_with_cumulative_attention_up_to_delta():
    att = torch.tensor([[0.05, 0.40, 0.10, 0.30, 0.15, 0.00],
                        [0.90, 0.02, 0.02, 0.02, 0.02, 0.02]])
    ev = make_evidence(grid=(2, 3), attention=att, embeddings=torch.randn(2, 6, 4))
    s = get_strategy("attention_cumsum", delta=0.85)
    # row 0: sorted 0.40, 0.30, 0.15 (cum 0.85 <= 0.85), then 0.10 (0.95 > 0.85): rule set {1, 3, 4}
    # row 1: 0.90 alone exceeds 0.85: empty rule set, everything is padding
    idx, stats = s.select_with_stats(ev, 3)
    assert idx[0].tolist() == [1, 3, 4]
    assert idx[1].tolist() == [0, 1, 2]
    assert {k: int(v) for k, v in stats.items()} == {"cut_by_budget": 0, "padded": 1, "rule_patches": 3}
    idx, stats = s.select_with_stats(ev, 2)
    assert idx.tolist() == [[1, 3], [0, 1]]
    assert int(stats["cut_by_budget"]) == 1 and int(stats["padded"]) == 1
    assert get_strategy("attention_cumsum").delta == 0.97


@pytest.mark.parametrize("name,options", [("attention_threshold", {"delta": 0.02}),
                                          ("attention_cumsum", {}), ("attention_cumsum", {"delta": 0.3})])
def test_rules_under_a_hard_budget_send_the_attention_prefix(name, options):
    # both rule sets are prefixes of the attention order, so after truncation / padding the
    # patches are attention_prefix's; what differs is the record of cuts and padding
    ev = make_evidence(grid=(14, 14), b=4)
    for budget in (1, 10, 50, 196):
        assert torch.equal(get_strategy(name, **options).select(ev, budget),
                           get_strategy("attention_prefix").select(ev, budget))


def test_rule_counters_add_up_to_the_images():
    ev = make_evidence(grid=(7, 7), b=6)
    s = get_strategy("attention_threshold", delta=1 / 49)
    size = (ev.attention >= 1 / 49).sum(dim=1)
    for budget in (1, 10, 20, 49):
        _, stats = s.select_with_stats(ev, budget)
        assert int(stats["cut_by_budget"]) == int((size > budget).sum())
        assert int(stats["padded"]) == int((size < budget).sum())
        assert int(stats["rule_patches"]) == int(size.sum())
    assert s.stat_names == ("cut_by_budget", "padded", "rule_patches")
    assert get_strategy("sage").stat_names == ()
    idx, stats = get_strategy("sage").select_with_stats(ev, 5)  # default: no counters
    assert stats == {} and torch.equal(idx, get_strategy("sage").select(ev, 5))


def test_strategy_stats_metric_sums_counters_per_cell():
    cells = [("attention_threshold", 4), ("attention_threshold", 8), ("sage", 4)]
    names = [("cut_by_budget", "padded"), ("cut_by_budget", "padded"), ()]
    m = StrategyStats(cells, names)
    assert m.active and not StrategyStats([("sage", 4)], [()]).active
    m.update(0, 5, {"cut_by_budget": torch.tensor(2), "padded": torch.tensor(1)})
    m.update(0, 3, {"cut_by_budget": torch.tensor(1), "padded": torch.tensor(0)})
    m.update(1, 8, {"cut_by_budget": torch.tensor(0), "padded": torch.tensor(4)})
    assert m.totals() == [
        {"strategy": "attention_threshold", "budget": 4, "images": 8, "cut_by_budget": 3, "padded": 1},
        {"strategy": "attention_threshold", "budget": 8, "images": 8, "cut_by_budget": 0, "padded": 4},
    ]
    with pytest.raises(ValueError, match="undeclared"):
        m.update(2, 1, {"cut_by_budget": torch.tensor(1)})


# --------------------------------------------------------------------------- diversity_only and the sage ablation


def test_diversity_only_is_farthest_point_sampling_over_all_patches_from_the_most_attended():
    ev = make_evidence(grid=(7, 7), b=4)
    got = get_strategy("diversity_only").select(ev, 15)
    order = attention_order(ev.attention)
    emb = torch.gather(ev.embeddings, 1, order.unsqueeze(-1).expand(-1, -1, 16))
    assert torch.equal(got, torch.gather(order, 1, farthest_point_order(emb, 15)))
    assert torch.equal(got[:, 0], ev.attention.argmax(dim=1))
    assert torch.equal(got, get_strategy("sage", prefilter=math.inf).select(ev, 15))


def test_diversity_only_ignores_attention_beyond_the_start():
    # 1x8 grid; patches 0..6 identical, patch 7 orthogonal and the least attended: sent second
    emb = torch.zeros(1, 8, 3)
    emb[0, :, 0] = 1.0
    emb[0, 7] = torch.tensor([0.0, 0.0, 1.0])
    att = _att([[8.0, 7, 6, 5, 4, 3, 2, 1]])
    ev = make_evidence(grid=(1, 8), attention=att, embeddings=emb)
    assert get_strategy("diversity_only").select(ev, 2).tolist() == [[0, 7]]
    assert get_strategy("sage").select(ev, 2).tolist() == [[0, 1]]  # the prefilter keeps 7 out


def _exact_farthest_points(proto_sim: torch.Tensor, proto: torch.Tensor, order: torch.Tensor, k: int,
                           budget: int) -> torch.Tensor:
    """Farthest-point sampling over the candidates ``order[:, :k]`` when patch ``i`` is a copy of
    prototype ``proto[i]``: every similarity is read from the prototypes' own ``proto_sim``
    (self-similarity exactly 1), so equal similarities are equal by construction."""
    b = proto.shape[0]
    rows = torch.arange(b)
    cand = torch.gather(proto, 1, order[:, :k])  # [b, k] prototype of each candidate
    sim = proto_sim[rows.view(b, 1, 1), cand.unsqueeze(2), cand.unsqueeze(1)]  # [b, k, k]
    picks = [torch.zeros(b, dtype=torch.int64)]
    taken = torch.zeros(b, k, dtype=torch.bool)
    max_sim = torch.full((b, k), -math.inf, dtype=sim.dtype)
    for _ in range(1, budget):
        taken[rows, picks[-1]] = True
        max_sim = torch.maximum(max_sim, sim[rows, picks[-1]])
        picks.append(torch.argmin(max_sim.masked_fill(taken, math.inf), dim=1))  # first minimum
    return torch.gather(order[:, :k], 1, torch.stack(picks, dim=1))


@pytest.mark.parametrize("name,options", [("sage", {}), ("sage", {"prefilter": 3.0}), ("diversity_only", {})])
def test_ties_between_duplicated_embeddings_go_to_the_more_attended_candidate(name, options):
    """Equal similarities tie exactly, so the more attended candidate wins, never float rounding (issue 25: 9).

    2,560 random sequences (40 batches of 64 images, 8x8 grid, 192 dims as the embedded edge):
    each image's 64 patches are copies of 12 random embeddings, so ties are everywhere: between
    copies of one embedding, and once each embedding has a copy picked, between all the rest (all
    at similarity 1 to the picked set). The picks must equal farthest-point sampling on exact
    similarities (read from the 12 embeddings' own Gram matrix, self-similarity exactly 1). With
    float32 similarities ``u . u`` is 1 only up to rounding that depends on ``u``, and that decided.
    """
    strategy = get_strategy(name, **options)
    prefilter = strategy.options().get("prefilter", math.inf)
    g = torch.Generator().manual_seed(25)
    b, n, m, dim = 64, 64, 12, 192
    differ = 0
    for _ in range(40):
        protos = torch.randn(b, m, dim, generator=g)
        proto = torch.randint(0, m, (b, n), generator=g)
        emb = torch.gather(protos, 1, proto.unsqueeze(-1).expand(-1, -1, dim))  # exact copies
        unit = F.normalize(protos.double(), dim=-1)
        proto_sim = torch.bmm(unit, unit.transpose(1, 2))
        proto_sim.diagonal(dim1=1, dim2=2).fill_(1.0)
        att = torch.softmax(torch.randn(b, n, generator=g) * 3, dim=1)
        ev = make_evidence(grid=(8, 8), attention=att, embeddings=emb)
        order = attention_order(att)
        for budget in (4, 12, 24, 40):
            k = n if prefilter * budget >= n else math.ceil(prefilter * budget)
            want = _exact_farthest_points(proto_sim, proto, order, k, budget)
            differ += int((strategy.select(ev, budget) != want).any(dim=1).sum())
    assert differ == 0, f"{differ} of {40 * 4 * b} sequences broke a tie against attention"


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("importance_kind", ["last_layer", "rollout"])
def test_sage_with_prefilter_1_sends_exactly_attention_prefix_set(grid, importance_kind):
    n = grid[0] * grid[1]
    ev = with_rollout(make_evidence(grid=grid, b=4), torch.softmax(torch.randn(4, n), dim=1))
    for budget in budgets_for(n):
        sage = get_strategy("sage", prefilter=1, importance=importance_kind).select(ev, budget)
        prefix = get_strategy("attention_prefix", importance=importance_kind).select(ev, budget)
        assert [set(r) for r in sage.tolist()] == [set(r) for r in prefix.tolist()]


def test_sage_prefilter_ablation_through_the_config_gets_distinct_labels():
    from sagebench.config import load_config, strategy_entries

    cfg = load_config(None, ["strategies=[{name: sage, prefilter: 1.0}, {name: sage, prefilter: 2.0}, "
                             "{name: sage, prefilter: 3.0}, {name: sage, importance: rollout}, attention_prefix]"])
    strategies = [get_strategy(name, **opts) for name, opts in strategy_entries(cfg)]
    assert [s.label for s in strategies] == ["sage[prefilter=1.0]", "sage", "sage[prefilter=3.0]",
                                             "sage[importance=rollout]", "attention_prefix"]
    assert strategies[2].options() == {"prefilter": 3.0, "importance": "last_layer"}


# --------------------------------------------------------------------------- tome


@pytest.mark.parametrize("grid,cluster_of", [
    ((7, 7), lambda r, c: r),                   # 7 row clusters
    ((14, 14), lambda r, c: r),                 # 14 row clusters
    ((14, 14), lambda r, c: (r // 2) * 7 + c // 2),  # 49 clusters of 2x2 blocks
    ((4, 6), lambda r, c: r * 3 + c // 2),      # 12 horizontal pairs
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tome_with_b_clear_clusters_sends_the_most_attended_patch_of_each(grid, cluster_of, seed):
    rows, cols = grid
    n = rows * cols
    cluster = torch.tensor([cluster_of(i // cols, i % cols) for i in range(n)])
    k = int(cluster.max()) + 1
    att = torch.softmax(torch.randn(1, n, generator=torch.Generator().manual_seed(100 + seed)) * 2, dim=1)
    ev = make_evidence(grid=grid, attention=att, embeddings=clustered_embeddings(cluster, seed=seed))
    got = get_strategy("tome").select(ev, k)[0]
    assert sorted(cluster[got].tolist()) == list(range(k))  # one patch per cluster
    best = [int(torch.nonzero(cluster == c).squeeze(1)[att[0, cluster == c].argmax()]) for c in range(k)]
    assert sorted(got.tolist()) == sorted(best)  # ... the most attended of its cluster
    assert got.tolist() == sorted(best, key=lambda i: -float(att[0, i]))  # most attended group first


def test_tome_budget_n_is_the_attention_order_and_budget_1_the_most_attended_patch():
    ev = make_evidence(grid=(3, 5), b=3)
    for rate in (1.0, 0.25):
        tome = get_strategy("tome", rate=rate)
        assert torch.equal(tome.select(ev, 15), attention_order(ev.attention))
        assert torch.equal(tome.select(ev, 1)[:, 0], ev.attention.argmax(dim=1))


def test_tome_merges_the_most_similar_pairs_first():
    # 1x4 grid: A = {0, 2}, B = {1, 3}; 0 ~ 1 (near-duplicates), 2 ~ 3 weaker. B = 3 merges only 0 into 1.
    emb = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.05, 0.0], [0.0, 1.0, 0.0], [0.0, 0.7, 0.7]]])
    att = _att([[0.4, 0.1, 0.2, 0.3]])
    ev = make_evidence(grid=(1, 4), attention=att, embeddings=emb)
    # groups {0, 1}, {2}, {3}: sent 0 (most attended of its group), 3, 2 by attention
    assert get_strategy("tome").select(ev, 3).tolist() == [[0, 3, 2]]


def test_tome_rate_1_merges_at_most_floor_t_over_2_per_round_as_tome_does():
    """ToMe caps a round at floor(t/2) merges (tome/merge.py); sagebench merged ceil(t/2) on an odd t.

    1x5 grid: A = {0, 2, 4}, B = {1, 3}. 0 duplicates 1, 2 duplicates 3, 4 is unlike both. Merging
    ceil(5/2) = 3 in one round forced 4 into a group; ToMe's cap merges 2, keeps 4 (the least
    similar edge) and merges the two B groups (cosine 0.6, against 0 for 4) in a second round.
    """
    e1, e2, e3 = [1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]
    emb = torch.tensor([[e1, e1, e2, e2, e3]])
    ev = make_evidence(grid=(1, 5), attention=_att([[0.1, 0.3, 0.15, 0.25, 0.2]]), embeddings=emb)
    owner, survivors = bipartite_merge(emb, 2)
    assert sorted(survivors[0].tolist()) == [1, 4]
    assert owner[0].tolist() == [1, 1, 1, 1, 4]  # groups {0, 1, 2, 3} and {4}
    assert get_strategy("tome").select(ev, 2).tolist() == [[1, 4]]
    for t in range(2, 60):
        for groups in range(1, t):
            for rate in (1.0, 0.75, 0.5, 0.25, 0.01):
                r = merges_per_round(t, groups, rate)
                assert 1 <= r <= min(t // 2, t - groups), (t, groups, rate)
            assert merges_per_round(t, groups, 1.0) == min(t // 2, t - groups)


# --------------------------------------------------------------------------- bat


def test_bat_attentive_part_is_the_top_k_by_attention():
    ev = make_evidence(grid=(14, 14), b=4)
    for alpha, budget in ((0.5, 16), (0.25, 10), (0.0, 7), (1.0, 9)):
        k = num_attentive(alpha, budget)
        assert k == math.ceil(alpha * budget)
        got = get_strategy("bat", alpha=alpha).select(ev, budget)
        assert torch.equal(got[:, :k], attention_order(ev.attention)[:, :k])
    assert num_attentive(0.1, 10) == 1  # not 2 from float noise
    assert torch.equal(get_strategy("bat", alpha=1.0).select(ev, 9), get_strategy("attention_prefix").select(ev, 9))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bat_representatives_come_from_distinct_clusters_of_the_inattentive_patches(seed):
    # 7x7: the 4 most attended patches are the attentive part; the other 45 form 6 clusters
    n, k_att, m = 49, 4, 6
    g = torch.Generator().manual_seed(seed)
    att = torch.rand(1, n, generator=g) * 0.5
    top = torch.randperm(n, generator=g)[:k_att]
    att[0, top] += 10.0
    att = att / att.sum()
    rest = torch.tensor([i for i in range(n) if i not in set(top.tolist())])
    cluster = torch.full((n,), -1, dtype=torch.int64)
    cluster[rest] = torch.randint(0, m, (len(rest),), generator=g)
    cluster[rest[:m]] = torch.arange(m)  # every cluster non-empty
    labels = cluster.clone()
    labels[top] = m  # the attentive patches get their own direction
    ev = make_evidence(grid=(7, 7), attention=att, embeddings=clustered_embeddings(labels, seed=seed))
    got = get_strategy("bat", alpha=0.4).select(ev, 10)[0].tolist()  # k = ceil(0.4 * 10) = 4
    assert set(got[:k_att]) == set(top.tolist())
    assert sorted(cluster[got[k_att:]].tolist()) == list(range(m))  # one representative per cluster


def test_dpc_knn_scores_pick_density_peaks():
    # two tight clusters far apart plus one outlier: the peaks of the clusters score highest,
    # and an exact duplicate of a denser token scores lowest (its delta is 0)
    pts = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [0.05, 0.05],
                        [10.0, 10.0], [10.1, 10.0], [10.0, 10.1], [10.1, 10.1], [10.05, 10.05],
                        [0.05, 0.05]]).unsqueeze(0)
    scores = dpc_knn_scores(pts, neighbors=3)[0]
    top2 = set(torch.topk(scores, 2).indices.tolist())
    assert top2 == {4, 9}  # the cluster centres
    assert scores[10] == -math.inf  # the duplicate of the (earlier, so denser) token 4


# --------------------------------------------------------------------------- properties


@settings(max_examples=30, deadline=None, derandomize=True)  # the same examples on every CI run
@given(evidence_cases(), st.sampled_from([0.0, 0.3, 0.5, 1.0]), st.sampled_from([0.0, 0.02, 0.5, 0.97, 1.0]),
       st.sampled_from([0.1, 0.25, 1.0]), st.integers(1, 8))
def test_property_every_new_strategy_returns_exactly_b_distinct_valid_indices(case, alpha, delta, rate, neighbors):
    ev, budget, prefilter = case
    n = ev.num_patches
    with_rollout(ev, torch.flip(ev.attention, dims=[1]).contiguous())
    strategies = [
        get_strategy("attention_threshold", delta=delta), get_strategy("attention_cumsum", delta=delta),
        get_strategy("diversity_only"), get_strategy("tome", rate=rate),
        get_strategy("bat", alpha=alpha, neighbors=neighbors),
        get_strategy("tome", importance="rollout"), get_strategy("bat", importance="rollout"),
        get_strategy("attention_cumsum", importance="rollout"),
    ]
    prefix = get_strategy("attention_prefix").select(ev, budget)
    for strategy in strategies:
        got, stats = strategy.select_with_stats(ev, budget)
        assert_valid(got, ev.batch_size, budget, n)
        assert torch.equal(got, strategy.select(ev, budget)), f"{strategy.label} is not deterministic"
        for value in stats.values():
            assert 0 <= int(value) <= ev.batch_size * n
    for strategy in strategies[:2]:
        assert torch.equal(strategy.select(ev, budget), prefix)
    k = num_attentive(alpha, budget)
    assert torch.equal(strategies[4].select(ev, budget)[:, :k], prefix[:, :k])
    # sage with prefilter 1 sends exactly attention_prefix's set
    for a, b in zip(get_strategy("sage", prefilter=1.0).select(ev, budget).tolist(), prefix.tolist()):
        assert set(a) == set(b)


# --------------------------------------------------------------------------- a real sweep


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_a_sweep_with_every_new_strategy_and_rollout_importance(random_models_overrides, tmp_path):
    import json

    from sagebench.config import SageBenchConfig, load_config
    from sagebench.sweep.evaluate import evaluate

    strategies = ("[attention_threshold, attention_cumsum, diversity_only, tome, bat, "
                  "{name: sage, prefilter: 1.0}, {name: sage, prefilter: 3.0}, "
                  "{name: attention_cumsum, importance: rollout}, {name: bat, importance: rollout}]")
    extra = ["logger=none"] if "logger" in SageBenchConfig.__dataclass_fields__ else []
    cfg = load_config(None, [*random_models_overrides, "data.limit=40", "budgets=[4,8]", "gate.name=all",
                             f"strategies={strategies}", f"output_dir={tmp_path}", *extra])
    res = evaluate(cfg)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    labels = ["attention_threshold", "attention_cumsum", "diversity_only", "tome", "bat", "sage[prefilter=1.0]",
              "sage[prefilter=3.0]", "attention_cumsum[importance=rollout]", "bat[importance=rollout]"]
    assert [s["label"] for s in on_disk["strategies"]] == labels
    assert {(r["strategy"], r["budget"]) for r in on_disk["results"]} == {(s, b) for s in labels for b in (4, 8)}
    assert on_disk["num_images"] == 40 and on_disk["num_offloaded"] == 40
    assert on_disk["timing"]["edge_forwards_per_image"] == 1.0
    for r in on_disk["results"]:
        assert r["units_sent"] == r["budget"]
    stats = {(s["strategy"], s["budget"]): s for s in on_disk["strategy_stats"]}
    assert set(stats) == {(s, b) for s in ("attention_threshold", "attention_cumsum",
                                           "attention_cumsum[importance=rollout]") for b in (4, 8)}
    for s in stats.values():
        assert s["images"] == 40
        assert 0 <= s["cut_by_budget"] + s["padded"] <= 40
        assert 0 <= s["rule_patches"] <= 40 * 49
    # the rules send attention_prefix's patches, so they score alike at each budget
    by = {(r["strategy"], r["budget"]): r for r in on_disk["results"]}
    for b in (4, 8):
        assert by[("attention_threshold", b)]["num_correct"] == by[("attention_cumsum", b)]["num_correct"]
    assert res["strategy_stats"] == on_disk["strategy_stats"]


# --------------------------------------------------------------------------- device


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NEW)
def test_gpu_gives_the_same_patches_as_cpu(name):
    cpu = make_evidence(grid=(14, 14), b=8, dim=64)
    gpu = make_evidence(grid=(14, 14), b=8, dim=64, device="cuda")
    for budget in (1, 20, 196):
        got = get_strategy(name).select(gpu, budget)
        assert got.device.type == "cuda"
        assert torch.equal(got.cpu(), get_strategy(name).select(cpu, budget))
    if get_strategy(name).stat_names:
        _, stats = get_strategy(name).select_with_stats(gpu, 20)
        assert all(v.device.type == "cuda" for v in stats.values())
