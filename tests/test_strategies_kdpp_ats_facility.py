"""``kdpp``, ``ats`` and ``facility_location``: each against a slow, obviously correct reference.

The references below are plain Python loops over one image at a time, written from the
definitions in the strategies' docstrings (kdpp: the log det of every candidate set, directly,
with ``torch.linalg.slogdet`` in float64), not from the batched code. The strategies must return
the reference's patches in the reference's order, for every budget; and, like every strategy,
``[b, B]`` int64 distinct in-range indices, deterministically, each image independent of the batch.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import one_cpu_thread  # noqa: F401  (fixture)
from hypothesis import given, settings
from test_strategies import assert_valid, evidence_cases

from sagebench.edge.evidence import EdgeEvidence
from sagebench.errors import ConfigError
from sagebench.strategies import describe, get_strategy, list_strategies
from sagebench.strategies.importance import attention_order

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tiny tensors: one intra-op thread (tests/helpers.py)

NAMES = ["kdpp", "ats", "facility_location"]
VARIANTS = [("kdpp", {}), ("kdpp", {"alpha": 0.0}), ("kdpp", {"alpha": 0.5}), ("kdpp", {"alpha": 2.0, "eps": 1e-3}),
            ("ats", {}), ("facility_location", {}), ("facility_location", {"weights": "uniform"})]
VARIANT_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}" for n, o in VARIANTS]
CASES = [((3, 4), 4), ((4, 4), 8), ((4, 5), 6), ((2, 10), 4), ((3, 5), 5)]  # (grid, D): N = 12..20, D < N


def make_ev(grid=(4, 4), dim=6, b=3, seed=0, dtype=torch.float32, attention=None, embeddings=None,
            rollout=None, device="cpu") -> EdgeEvidence:
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1]
    if attention is None:
        attention = torch.softmax(2.0 * torch.randn(b, n, generator=g, dtype=torch.float64), dim=1).to(dtype)
    if embeddings is None:
        embeddings = torch.randn(b, n, dim, generator=g, dtype=torch.float64).to(dtype)
    b = attention.shape[0]
    return EdgeEvidence(logits=torch.zeros(b, 10, device=device), attention=attention.to(device),
                        embeddings=embeddings.to(device), grid=grid,
                        sample_ids=torch.arange(b, dtype=torch.int64, device=device) + 500,
                        rollout=None if rollout is None else rollout.to(device))


# --------------------------------------------------------------------------- the references (one image, loops)


def ref_weights(scores: torch.Tensor) -> list[float]:
    return [x if math.isfinite(x) and x > 0 else 0.0 for x in scores.double().tolist()]


def ref_cosine(emb: torch.Tensor) -> list[list[float]]:
    """Cosines of the L2-normalised rows, snapped to multiples of 2**-32; bad rows are zero vectors."""
    units, valid = [], []
    for v in emb.double().tolist():
        norm = math.sqrt(sum(t * t for t in v))
        ok = math.isfinite(norm) and norm > 0
        units.append([t / norm for t in v] if ok else [0.0] * len(v))
        valid.append(ok)
    n = len(units)
    return [[(1.0 if valid[i] else 0.0) if i == j else round(sum(a * c for a, c in zip(units[i], units[j])) * 2**32) / 2**32
             for j in range(n)] for i in range(n)]


def ref_kdpp(att: torch.Tensor, emb: torch.Tensor, budget: int, alpha: float = 1.0, eps: float = 1e-4) -> list[int]:
    cos, a = ref_cosine(emb), ref_weights(att)
    n, top = len(a), max(a)
    q = [1.0 if alpha == 0 else ((x / top) ** alpha if top > 0 else 0.0) for x in a]
    kernel = torch.tensor([[q[i] * q[j] * cos[i][j] + (eps if i == j else 0.0) for j in range(n)] for i in range(n)],
                          dtype=torch.float64)
    picked: list[int] = []
    for _ in range(budget):
        best, best_logdet = None, -math.inf
        for i in range(n):
            if i in picked:
                continue
            sub = kernel[picked + [i]][:, picked + [i]]
            sign, logdet = torch.linalg.slogdet(sub)
            assert sign.item() == 1.0  # L is positive definite
            if best is None or logdet.item() > best_logdet:  # strict: ties keep the lower index
                best, best_logdet = i, logdet.item()
        picked.append(best)
    return picked


def ref_ats(att: torch.Tensor, budget: int) -> list[int]:
    s = ref_weights(att)
    n = len(s)
    order = sorted(range(n), key=lambda i: (-s[i], i))
    cum, running = [], 0.0
    for i in order:
        running += s[i]
        cum.append(running)
    cdf = [c / cum[-1] for c in cum] if cum[-1] > 0 else [(m + 1) / n for m in range(n)]
    chosen: list[int] = []
    for k in range(budget):
        quantile = (k + 0.5) / budget
        p = next(m for m in range(n) if cdf[m] >= quantile)
        while p in chosen:  # taken: the next untaken patch in score order
            p += 1
        assert p < n
        chosen.append(p)
    return [order[p] for p in chosen]


def ref_facility_location(att: torch.Tensor, emb: torch.Tensor, budget: int, weights: str = "attention") -> list[int]:
    cos = ref_cosine(emb)
    n = len(cos)
    w = ref_weights(att) if weights == "attention" else [1.0] * n
    sim = [[(1.0 + cos[i][j]) / 2.0 for j in range(n)] for i in range(n)]
    cur, picked = [0.0] * n, []
    for _ in range(budget):
        best, best_gain = None, -math.inf
        for j in range(n):
            if j in picked:
                continue
            gain = sum(w[i] * max(0.0, sim[i][j] - cur[i]) for i in range(n))
            if best is None or gain > best_gain:
                best, best_gain = j, gain
        picked.append(best)
        cur = [max(cur[i], sim[i][best]) for i in range(n)]
    return picked


def reference(name: str, options: dict, ev: EdgeEvidence, row: int, budget: int) -> list[int]:
    att, emb = ev.attention[row].cpu(), ev.embeddings[row].cpu()
    if name == "kdpp":
        return ref_kdpp(att, emb, budget, **options)
    if name == "ats":
        return ref_ats(att, budget)
    return ref_facility_location(att, emb, budget, **options)


# --------------------------------------------------------------------------- equal to the reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("grid,dim", CASES, ids=[f"{g[0]}x{g[1]}-D{d}" for g, d in CASES])
@pytest.mark.parametrize("name,options", VARIANTS, ids=VARIANT_IDS)
def test_equals_the_reference_for_every_budget(name, options, grid, dim, dtype):
    ev = make_ev(grid=grid, dim=dim, dtype=dtype, seed=dim + grid[1])
    n, strategy = ev.num_patches, get_strategy(name, **options)
    greedy = name != "ats"  # greedy picks for budget B are the first B of budget N's
    full = [reference(name, options, ev, r, n) for r in range(3)] if greedy else None
    for budget in range(1, n + 1):
        got = strategy.select(ev, budget)
        assert_valid(got, 3, budget, n)
        want = [f[:budget] for f in full] if greedy else [reference(name, options, ev, r, budget) for r in range(3)]
        assert got.tolist() == want, f"{name} {options} budget {budget}"


def test_the_reference_is_not_trivial():
    # the three strategies and the variants disagree with each other (the reference test has teeth)
    ev = make_ev(grid=(4, 5), dim=4, seed=3)
    picks = {i: get_strategy(n, **o).select(ev, 6).tolist() for i, (n, o) in enumerate(VARIANTS)}
    assert len({str(p) for p in picks.values()}) == len(VARIANTS)
    assert picks[4] != attention_order(ev.attention)[:, :6].tolist()


# --------------------------------------------------------------------------- the contract


def awkward_evidence() -> list[EdgeEvidence]:
    """Duplicate, zero, NaN and Inf embeddings; tied, zero, NaN attention; half precision."""
    cases = []
    base = make_ev(grid=(3, 5), dim=4, b=4, seed=1)
    emb, att = base.embeddings.clone(), base.attention.clone()
    emb[0] = emb[0, :1]  # all one embedding
    emb[1, ::2] = 0.0
    emb[1, 1::3] = emb[1, :1]
    emb[2, 3] = math.nan
    emb[2, 5, 1] = math.inf
    att[1] = 1 / 15
    att[2, 4] = math.nan
    att[3] = torch.randint(0, 3, (15,), generator=torch.Generator().manual_seed(0)).float() / 15
    cases.append(make_ev(grid=(3, 5), attention=att, embeddings=emb))
    cases.append(make_ev(grid=(3, 5), attention=torch.zeros(2, 15), embeddings=torch.zeros(2, 15, 3)))
    cases.append(make_ev(grid=(3, 5), attention=torch.full((2, 15), math.nan), embeddings=torch.full((2, 15, 3), math.nan)))
    cases.append(make_ev(grid=(3, 3), dim=4, b=2, seed=5, dtype=torch.float16))
    cases.append(make_ev(grid=(1, 1), dim=3, b=2))
    return cases


@pytest.mark.parametrize("name,options", VARIANTS, ids=VARIANT_IDS)
def test_distinct_int64_deterministic_and_each_row_independent_of_the_batch(name, options):
    strategy = get_strategy(name, **options)
    for ev in [make_ev(grid=(4, 5), dim=6, b=5, seed=9), *awkward_evidence()]:
        n, b = ev.num_patches, ev.batch_size
        perm = torch.arange(b - 1, -1, -1)
        for budget in sorted({min(x, n) for x in (1, 2, n // 2 or 1, n - 1 or 1, n)}):
            full = strategy.select(ev, budget)
            assert_valid(full, b, budget, n)
            assert torch.equal(full, strategy.select(ev, budget))
            assert torch.equal(strategy.select(ev.subset(perm), budget), full[perm])
            for i in range(b):
                assert torch.equal(strategy.select(ev.subset(torch.tensor([i])), budget)[0], full[i])


@pytest.mark.slow  # 18 s; the fast lane checks the same properties of these three (test_reliability.py)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(evidence_cases())
def test_property_valid_and_batch_independent_on_the_shared_evidence_generator(case):
    # the generator of tests/test_reliability.py's batch-independence property (duplicates, zeros, ties)
    ev, budget, _ = case
    perm = torch.arange(ev.batch_size - 1, -1, -1)
    for name in NAMES:
        strategy = get_strategy(name)
        full = strategy.select(ev, budget)
        assert_valid(full, ev.batch_size, budget, ev.num_patches)
        assert torch.equal(strategy.select(ev.subset(perm), budget), full[perm]), name
        for i in range(ev.batch_size):
            assert torch.equal(strategy.select(ev.subset(torch.tensor([i])), budget)[0], full[i]), name


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_evidence_counts_as_no_evidence(name):
    ev = make_ev(grid=(4, 4), dim=5, seed=2)
    bad_emb, zero_emb = ev.embeddings.clone(), ev.embeddings.clone()
    bad_emb[0, 3], bad_emb[1, 7, 2], bad_emb[2, 0, 0] = math.nan, math.inf, -math.inf
    zero_emb[0, 3], zero_emb[1, 7], zero_emb[2, 0] = 0.0, 0.0, 0.0
    bad_att, zero_att = ev.attention.clone(), ev.attention.clone()
    bad_att[0, 5], bad_att[1, 2], bad_att[2, 9] = math.nan, math.inf, -1.0
    zero_att[0, 5], zero_att[1, 2], zero_att[2, 9] = 0.0, 0.0, 0.0
    strategy = get_strategy(name)
    for budget in (1, 5, 16):
        assert torch.equal(strategy.select(make_ev(grid=(4, 4), attention=bad_att, embeddings=bad_emb), budget),
                           strategy.select(make_ev(grid=(4, 4), attention=zero_att, embeddings=zero_emb), budget))


# --------------------------------------------------------------------------- what each one is for


def clustered(cluster: list[int], dim: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0][: max(cluster) + 1] * 5.0
    return (centres[torch.tensor(cluster)] + 0.01 * torch.randn(len(cluster), dim, generator=g)).unsqueeze(0)


@pytest.mark.parametrize("name,options", [("kdpp", {"alpha": 0.0}), ("kdpp", {}),
                                          ("facility_location", {"weights": "uniform"}), ("facility_location", {})])
def test_diversity_strategies_send_one_patch_per_cluster(name, options):
    cluster = [0, 0, 1, 1, 1, 2, 0, 2, 3, 3, 1, 2]
    ev = make_ev(grid=(3, 4), attention=torch.full((1, 12), 1 / 12), embeddings=clustered(cluster))
    picks = get_strategy(name, **options).select(ev, 4)[0].tolist()
    assert sorted(cluster[p] for p in picks) == [0, 1, 2, 3]


def test_kdpp_alpha_0_ignores_attention_and_alpha_positive_starts_at_the_most_attended():
    ev = make_ev(grid=(4, 5), dim=4, seed=4)
    other = make_ev(grid=(4, 5), attention=torch.softmax(torch.randn(3, 20) * 3, dim=1), embeddings=ev.embeddings)
    for budget in (1, 7, 20):
        assert torch.equal(get_strategy("kdpp", alpha=0.0).select(ev, budget),
                           get_strategy("kdpp", alpha=0.0).select(other, budget))
    assert not torch.equal(get_strategy("kdpp").select(ev, 7), get_strategy("kdpp").select(other, 7))
    for alpha in (0.5, 1.0, 3.0):
        assert torch.equal(get_strategy("kdpp", alpha=alpha).select(ev, 1)[:, 0], ev.attention.argmax(dim=1))


def test_facility_location_uniform_weights_ignore_attention():
    ev = make_ev(grid=(4, 5), dim=4, seed=4)
    other = make_ev(grid=(4, 5), attention=torch.softmax(torch.randn(3, 20) * 3, dim=1), embeddings=ev.embeddings)
    strategy = get_strategy("facility_location", weights="uniform")
    assert torch.equal(strategy.select(ev, 6), strategy.select(other, 6))


def test_ats_quantiles_on_flat_and_peaked_attention():
    flat = make_ev(grid=(3, 4), attention=torch.full((1, 12), 1 / 12), embeddings=torch.randn(1, 12, 4))
    # quantiles 1/8, 3/8, 5/8, 7/8 of a uniform CDF (m + 1) / 12: positions 1, 4, 7, 10 (ties: index order)
    assert get_strategy("ats").select(flat, 4).tolist() == [[1, 4, 7, 10]]
    assert get_strategy("ats").select(flat, 12).tolist() == [list(range(12))]
    att = torch.tensor([[0.01] * 6 + [0.9] + [0.01] * 4 + [0.0]])
    peaked = make_ev(grid=(3, 4), attention=att, embeddings=torch.randn(1, 12, 4))
    # every quantile below 0.9 hits the top patch: the duplicates are the next patches in score order
    assert get_strategy("ats").select(peaked, 5).tolist() == [[6, 0, 1, 2, 3]]
    assert get_strategy("ats").select(peaked, 12).tolist() == attention_order(att).tolist()


@pytest.mark.parametrize("name", NAMES)
def test_importance_rollout_ranks_by_rollout(name):
    ev = make_ev(grid=(4, 4), dim=5, seed=6)
    roll = torch.softmax(torch.randn(3, 16, generator=torch.Generator().manual_seed(7)) * 3, dim=1)
    with_roll = make_ev(grid=(4, 4), attention=ev.attention, embeddings=ev.embeddings, rollout=roll)
    as_att = make_ev(grid=(4, 4), attention=roll, embeddings=ev.embeddings)
    assert torch.equal(get_strategy(name, importance="rollout").select(with_roll, 6), get_strategy(name).select(as_att, 6))
    with pytest.raises(ConfigError, match="rollout"):
        get_strategy(name, importance="rollout").select(ev, 6)


# --------------------------------------------------------------------------- registry and options


def test_registered_with_descriptions_options_and_labels():
    assert set(NAMES) <= set(list_strategies())
    for name in NAMES:
        assert get_strategy(name).name == name and describe(name)
    assert get_strategy("kdpp").options() == {"alpha": 1.0, "eps": 1e-4, "importance": "last_layer"}
    assert get_strategy("ats").options() == {"score": "attention", "importance": "last_layer"}
    assert get_strategy("facility_location").options() == {"weights": "attention", "importance": "last_layer"}
    assert get_strategy("kdpp", alpha=0.0).label == "kdpp[alpha=0.0]"
    assert get_strategy("facility_location", weights="uniform").label == "facility_location[weights=uniform]"


@pytest.mark.parametrize("name,options", [
    ("kdpp", {"alpha": -1.0}), ("kdpp", {"alpha": math.nan}), ("kdpp", {"alpha": "1"}), ("kdpp", {"eps": 0.0}),
    ("kdpp", {"eps": -1e-3}), ("kdpp", {"eps": math.inf}), ("kdpp", {"importance": "cls"}),
    ("ats", {"score": "attention_value_norm"}), ("ats", {"score": 1}), ("ats", {"importance": "x"}),
    ("facility_location", {"weights": "softmax"}), ("facility_location", {"importance": None}),
    ("kdpp", {"unknown": 1}),
])
def test_bad_options_are_config_errors(name, options):
    with pytest.raises(ConfigError, match=name):
        get_strategy(name, **options)


def test_ats_value_norm_score_says_why_it_is_missing():
    with pytest.raises(ConfigError, match="value vectors"):
        get_strategy("ats", score="attention_value_norm")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [0, 17, 2.0, True])
def test_bad_budget_is_a_config_error(name, bad):
    with pytest.raises(ConfigError):
        get_strategy(name).choose(make_ev(grid=(4, 4)), bad)


# --------------------------------------------------------------------------- device


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name,options", VARIANTS, ids=VARIANT_IDS)
def test_gpu_gives_the_same_patches_as_cpu(name, options):
    cpu = make_ev(grid=(14, 14), dim=64, b=8, seed=11)
    gpu = make_ev(grid=(14, 14), dim=64, b=8, seed=11, device="cuda")
    strategy = get_strategy(name, **options)
    for budget in (1, 20, 98, 196):
        got = strategy.select(gpu, budget)
        assert got.device.type == "cuda"
        assert torch.equal(got.cpu(), strategy.select(cpu, budget))
