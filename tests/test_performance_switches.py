"""The speed switches change nothing but speed: dedupe, the edge cache, compile, threads, fast SAGE.

No timings here (benchmarks/speed.py measures); every test checks results or counts.
"""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from sagebench.config import load_config
from sagebench.edge.cache import EdgeCache, EdgeSource
from sagebench.edge.model import EdgeModel
from sagebench.runtime import speed as perf
from sagebench.server.model import ServerModel
from sagebench.server.passes import ServerPasses
from sagebench.strategies.sage import farthest_point_order, similarity_keys
from sagebench.sweep.evaluate import evaluate
from sagebench.transmission.patches import patchify, transmit

QUIET = ["logger=none", "gate.name=all"]


def _run(overrides, out_dir, *extra):
    return evaluate(load_config(None, [*overrides, *QUIET, f"output_dir={out_dir}", *extra]))


def _records(out_dir):
    return pq.read_table(out_dir / "samples.parquet")


# ---------------------------------------------------------------------------------------------
# one server pass per distinct selection


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_dedupe_reuses_passes_for_identical_sets_and_changes_no_result(random_models_overrides, tmp_path):
    # sage with prefilter=1 chooses the same *set* as attention_prefix (in another order), and at
    # B = N every strategy sends every patch: those cells must reuse one pass
    sweep = ["data.limit=24", "batch_size=10", "budgets=[4,49]",
             "strategies=[attention_prefix,{name: sage, prefilter: 1.0},uniform]"]
    on = _run(random_models_overrides, tmp_path / "on", *sweep, "dedupe=true")
    off = _run(random_models_overrides, tmp_path / "off", *sweep, "dedupe=false")
    assert _records(tmp_path / "on").equals(_records(tmp_path / "off"))
    assert on["results"] == off["results"] and on["ceiling"] == off["ceiling"]
    passes_on, passes_off = on["timing"]["server_passes"], off["timing"]["server_passes"]
    assert passes_off["images_reused"] == 0 and passes_off["images_run"] == 24 * 6
    # B=4: sage[prefilter=1] reuses attention_prefix for all 24 images; B=49: two of three cells reused
    assert passes_on["images_reused"] >= 24 + 2 * 24
    assert passes_on["images_run"] + passes_on["images_reused"] == 24 * 6


def test_order_only_differences_share_a_pass_and_give_the_same_prediction():
    torch.manual_seed(0)
    vit = __import__("timm").create_model("sagebench_fmnist_server", pretrained=False).eval()
    server = ServerModel(vit)
    images = torch.randn(6, 1, 28, 28)
    patches = patchify(images, server.patch_size)
    chosen = torch.stack([torch.randperm(49)[:9] for _ in range(6)])
    shuffled = torch.stack([row[torch.randperm(9)] for row in chosen])
    other = chosen.clone()
    for row in (0, 2, 4):  # one patch swapped for one not chosen: a new set
        other[row, 0] = next(i for i in range(49) if i not in chosen[row].tolist())
    with torch.inference_mode():
        passes = ServerPasses(server, patches, dedupe=True)
        a = passes.predict(chosen)
        b = passes.predict(shuffled)
        c = passes.predict(other)
        direct = server(transmit(patches, chosen.sort(1).values, server.grid)).argmax(-1).double()
    assert torch.equal(a, b) and torch.equal(a, direct)
    assert passes.forwards == 2 and passes.images_reused == 6 + 3 and passes.images_run == 6 + 3
    for row in range(1, 6, 2):  # unchanged rows of `other` were answered by the first pass
        assert c[row] == a[row]


# ---------------------------------------------------------------------------------------------
# edge evidence cache


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_the_edge_cache_skips_the_edge_and_changes_no_result(random_models_overrides, tmp_path):
    sweep = ["data.limit=21", "batch_size=8", "budgets=[4,12]", f"cache.dir={tmp_path / 'cache'}"]
    plain = _run(random_models_overrides, tmp_path / "plain", *sweep, "cache.edge=false")
    first = _run(random_models_overrides, tmp_path / "first", *sweep, "cache.edge=true")
    # the second run asks for another batch size and a strategy the first did not run: still all cached
    second = _run(random_models_overrides, tmp_path / "second", "data.limit=21", "batch_size=5", "budgets=[4,12]",
                  f"cache.dir={tmp_path / 'cache'}", "cache.edge=true")
    assert plain["timing"]["edge_forwards_per_image"] == 1.0 and plain["timing"]["edge_cache"] == {"used": False}
    assert first["timing"]["edge_forwards_per_image"] == 1.0
    assert first["timing"]["edge_cache"]["misses"] == 21 and first["timing"]["edge_cache"]["hits"] == 0
    assert second["timing"]["edge_forwards_per_image"] == 0.0
    assert second["timing"]["edge_cache"]["hits"] == 21 and second["timing"]["edge_cache"]["misses"] == 0
    for run in ("first", "second"):
        assert _records(tmp_path / run).equals(_records(tmp_path / "plain"))
    assert plain["results"] == first["results"] == second["results"]
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one folder: same data, same edge


def test_a_full_cache_never_calls_the_edge_and_returns_what_it_stored(tmp_path):
    from helpers import tiny_vit

    edge = EdgeModel(tiny_vit(seed=3), with_rollout=True, with_rollout_per_head=True)
    images = torch.randn(7, 3, 32, 32)
    ids = torch.tensor([5, 1, 9, 2, 8, 0, 4])
    with torch.inference_mode():
        expected = edge(images, ids, seed=2)
    key = {"test": 1}
    writer = EdgeSource(edge, EdgeCache(tmp_path, key))
    with torch.inference_mode():
        writer(images[:4], ids[:4], 2)
        writer(images[4:], ids[4:], 2)

    class NoEdge(torch.nn.Module):
        grid = edge.grid

        def forward(self, *args):
            raise AssertionError("the edge ran although every image is cached")

    reader = EdgeSource(NoEdge(), EdgeCache(tmp_path, key))
    order = torch.tensor([3, 0, 6, 1, 5, 2, 4])  # another batch layout than the one stored
    got, through_edge = reader(images[order], ids[order], 2)
    assert through_edge == 0
    for name in ("logits", "attention", "embeddings", "rollout", "rollout_per_head"):
        assert torch.equal(getattr(got, name), getattr(expected, name)[order]), name
    assert torch.equal(got.sample_ids, ids[order]) and got.seed == 2 and got.grid == edge.grid
    with pytest.raises(Exception, match="other data or another edge"):
        EdgeCache(tmp_path, {"test": 2})


# ---------------------------------------------------------------------------------------------
# compile, threads


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_compile_wraps_the_server_blocks_and_evaluate_wires_it(random_models_overrides, tmp_path, monkeypatch):
    from helpers import tiny_vit

    compiled = []

    def fake_compile(module, **kwargs):  # no real compilation in CI: only the wiring is checked
        compiled.append(kwargs)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    server = ServerModel(tiny_vit())
    perf.compile_server(server)
    assert compiled == [{"dynamic": True}]
    calls = []
    monkeypatch.setattr(perf, "compile_server", lambda s: calls.append(s) or s)
    _run(random_models_overrides, tmp_path / "c", "data.limit=3", "budgets=[4]", "compile=true")
    assert len(calls) == 1 and isinstance(calls[0], ServerModel)
    assert load_config(None, []).compile is False  # off by default


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_threads_are_applied_and_profile_records_phase_times(random_models_overrides, tmp_path):
    before = torch.get_num_threads()
    try:
        res = _run(random_models_overrides, tmp_path, "data.limit=5", "budgets=[4]", "threads=1", "profile=true")
        assert res["timing"]["threads"] == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    phases = res["timing"]["phases"]
    assert {"edge", "ceiling", "select/sage/B4", "server/B4"} <= set(phases)  # one server forward per budget
    assert all(v >= 0 for v in phases.values())
    assert res["timing"]["sweep_cpu_seconds"] > 0 and res["timing"]["sweep_seconds"] > 0
    with pytest.raises(Exception, match="threads"):
        load_config(None, ["threads=0"])


# ---------------------------------------------------------------------------------------------
# SAGE's farthest-point order: the fast path equals the plain definition, ties and NaN included


def _reference_order(emb, budget):
    b, k, _ = emb.shape
    # the definition on exact cosines: float64, rounded to 12 decimals, so that mathematically equal
    # cosines (ties: duplicated embeddings, u . u = 1) are equal and attention order breaks them
    unit = F.normalize(emb.double(), dim=-1, eps=1e-12)
    gram = torch.round(torch.bmm(unit, unit.transpose(1, 2)), decimals=12)
    rows = torch.arange(b)
    picks = torch.zeros(b, budget, dtype=torch.int64)
    max_sim = torch.full((b, k), -math.inf)
    taken = torch.zeros(b, k, dtype=torch.bool)
    current = torch.zeros(b, dtype=torch.int64)
    for step in range(budget):
        picks[:, step] = current
        taken[rows, current] = True
        if step + 1 == budget:
            break
        max_sim = torch.maximum(max_sim, gram[rows, current])
        current = torch.argmin(max_sim.masked_fill(taken, math.inf), dim=1)
    return picks


@pytest.mark.parametrize("kind", ["gaussian", "ties", "nan", "zeros"])
def test_fast_farthest_point_order_matches_the_definition(kind):
    g = torch.Generator().manual_seed(7)
    for _ in range(25):
        b, k, d = (int(torch.randint(1, n, (1,), generator=g)) for n in (12, 20, 7))
        budget = int(torch.randint(1, k + 1, (1,), generator=g))
        if kind == "gaussian":
            emb = torch.randn(b, k, d, generator=g)
        elif kind == "ties":
            emb = torch.randint(-1, 2, (b, k, d), generator=g).float()
        elif kind == "nan":
            emb = torch.randn(b, k, d, generator=g)
            emb[torch.rand(b, k, generator=g) < 0.2] = float("nan")
        else:
            emb = torch.randint(0, 2, (b, k, d), generator=g).float()
            emb[:, ::3] = 0
        got = farthest_point_order(emb, budget)
        assert torch.equal(got, _reference_order(emb, budget))
        assert all(len(set(row)) == budget for row in got.tolist())


def test_similarity_keys_order_like_the_floats_they_stand_for():
    """FPS runs on int32 keys instead of float similarities: every comparison must agree, ties included."""
    g = torch.Generator().manual_seed(3)
    special = torch.tensor([0.0, -0.0, 1e-45, -1e-45, 1e-38, -1e-38, 1.0, -1.0, 1.0000001, -0.9999999,
                            math.inf, -math.inf, 3.4e38, -3.4e38])
    x = torch.cat([special, torch.randn(500, generator=g), torch.randn(200, generator=g) * 1e-30,
                   torch.randint(-3, 4, (100,), generator=g).float() / 3])
    keys = similarity_keys(x)
    assert keys.dtype == torch.int32
    a, b = x.unsqueeze(1), x.unsqueeze(0)
    ka, kb = keys.unsqueeze(1), keys.unsqueeze(0)
    assert torch.equal(a < b, ka < kb) and torch.equal(a == b, ka == kb)
    assert int(similarity_keys(torch.tensor([-0.0]))) == int(similarity_keys(torch.tensor([0.0])))
    rows = x[:800].reshape(16, 50)
    assert torch.equal(torch.argmin(rows, 1), torch.argmin(similarity_keys(rows), 1))  # first minimum on ties


def test_dataloader_workers_default_to_where_they_pay(monkeypatch):
    import os
    from types import SimpleNamespace

    class CUDAAccelerator:
        pass

    class CPUAccelerator:
        pass

    gpu = SimpleNamespace(accelerator=CUDAAccelerator(), num_devices=1)
    cpu = SimpleNamespace(accelerator=CPUAccelerator(), num_devices=1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert (perf.num_workers(None, gpu), perf.num_workers(None, cpu)) == (8, 4)
    assert perf.num_workers(None, SimpleNamespace(accelerator=CUDAAccelerator(), num_devices=4)) == 3
    assert perf.num_workers(5, cpu) == 5 and perf.num_workers(0, gpu) == 0  # an explicit number wins
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert (perf.num_workers(None, gpu), perf.num_workers(None, cpu)) == (1, 0)


@pytest.mark.parametrize("n_side,dim", [(7, 48), (14, 192)])
def test_one_shared_gram_per_batch_gives_the_same_sets_as_computing_it_per_budget(n_side, dim):
    """sage and diversity_only read one attention-ordered Gram matrix per evidence object (every
    budget reuses it); the result must equal FPS on the candidates' own embeddings, budget by budget."""
    from sagebench.edge.evidence import EdgeEvidence
    from sagebench.strategies import get_strategy
    from sagebench.strategies.importance import attention_order
    from sagebench.strategies.sage import num_candidates

    g = torch.Generator().manual_seed(n_side)
    b, n = 9, n_side * n_side
    emb = torch.randn(b, n, dim, generator=g)
    emb[:, 10:20] = emb[:, 0:10]  # exact duplicates: ties must resolve the same way
    shared = EdgeEvidence(logits=torch.randn(b, 10, generator=g), attention=torch.softmax(torch.randn(b, n, generator=g), -1),
                          embeddings=emb, grid=(n_side, n_side), sample_ids=torch.arange(b))
    order = attention_order(shared.attention)
    for budget in (1, 4, n // 4, n // 2, n):
        for prefilter in (1.0, 2.0, 3.0):
            k = num_candidates(prefilter, budget, n)
            cand = order[:, :k]
            direct = torch.gather(cand, 1, farthest_point_order(
                torch.gather(emb, 1, cand.unsqueeze(-1).expand(-1, -1, dim)), budget))
            assert torch.equal(get_strategy("sage", prefilter=prefilter).select(shared, budget), direct)
        full = torch.gather(order, 1, farthest_point_order(torch.gather(emb, 1, order.unsqueeze(-1).expand(-1, -1, dim)), budget))
        assert torch.equal(get_strategy("diversity_only").select(shared, budget), full)
    assert ("ranked_gram", "last_layer") in shared.memo  # computed once, kept on the evidence


def test_dedupe_never_matches_an_image_that_an_earlier_cell_did_not_send():
    """Byte budgets send different images at different unit counts; an empty selection (0 units)
    of one image must not be answered from an earlier cell in which that image was not sent."""
    import timm

    import sagebench.demo.models  # noqa: F401
    from sagebench.server.passes import ServerPasses

    torch.manual_seed(0)
    server = ServerModel(timm.create_model("sagebench_fmnist_server", pretrained=False).eval())
    patches = patchify(torch.randn(4, 1, 28, 28), server.patch_size)
    first_logit = lambda logits: logits[:, 0].double()  # noqa: E731  (a value no zero-fill can fake)
    empty = torch.zeros(2, 0, dtype=torch.long)
    with torch.inference_mode():
        fresh = ServerPasses(server, patches, dedupe=False, predict=first_logit)
        want = fresh.send(empty, rows=torch.tensor([2, 3]))[0]
        shared = ServerPasses(server, patches, dedupe=True, predict=first_logit)
        shared.send(empty, rows=torch.tensor([0, 1]))  # an earlier cell: images 0 and 1 sent nothing
        got, sizes = shared.send(empty, rows=torch.tensor([2, 3]))
    assert torch.equal(got, want) and sizes.tolist() == [0, 0]
    assert shared.images_run == 4  # images 2 and 3 were not in the earlier cell: run, not reused
