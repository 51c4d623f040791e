"""The oracles: references that read evidence only the server has (its attention, its verdict), marked as such."""

from __future__ import annotations

import json
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
import torch
from helpers import tiny_vit

from sagebench.config import load_config
from sagebench.edge.model import EdgeModel
from sagebench.errors import ConfigError
from sagebench.strategies import get_strategy
from sagebench.sweep.evaluate import evaluate
from sagebench.testing import fake_server_judge, make_evidence


def test_the_oracle_sends_the_top_b_patches_of_the_server_attention():
    ev = make_evidence(grid=(3, 4), b=3)
    got = get_strategy("server_attention_oracle").select(ev, 5)
    for row, scores in zip(got.tolist(), ev.server_attention.tolist()):  # slow, obvious reference
        want = sorted(range(12), key=lambda i: (-scores[i], i))[:5]
        assert row == want
    ev.attention = torch.rand_like(ev.attention)  # the edge's attention plays no part
    assert torch.equal(get_strategy("server_attention_oracle").select(ev, 5), got)


def test_the_oracle_declares_what_it_needs_and_is_an_oracle():
    oracle, sage = get_strategy("server_attention_oracle"), get_strategy("sage")
    assert oracle.requires == {"server_attention"} and oracle.oracle
    assert not sage.requires and not sage.oracle


def test_the_server_probe_gives_the_servers_own_logits():
    vit = tiny_vit().eval()
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(EdgeModel(vit)(images, torch.arange(5)).logits, vit(images).float())


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_a_sweep_with_the_oracle_marks_it_and_keeps_every_other_record(random_models_overrides, tmp_path):
    base = [*random_models_overrides, "data.limit=24", "budgets=[4,8]", "gate.name=all", "logger=none"]
    plain = evaluate(load_config(None, [*base, "strategies=[attention_prefix]", f"output_dir={tmp_path / 'a'}"]))
    both = evaluate(load_config(None, [*base, "strategies=[attention_prefix,server_attention_oracle]",
                                       f"output_dir={tmp_path / 'b'}"]))
    entry = {s["label"]: s for s in both["strategies"]}
    assert entry["server_attention_oracle"]["oracle"] is True and "oracle" not in entry["attention_prefix"]
    assert entry["server_attention_oracle"]["requires"] == ["server_attention"]
    # the ceiling and the deployable strategy's figures are those of a run without the oracle
    assert both["ceiling"] == plain["ceiling"]
    rows = lambda res: {(r["strategy"], r["budget"]): r["num_correct"] for r in res["results"]}  # noqa: E731
    assert {k: v for k, v in rows(both).items() if k[0] == "attention_prefix"} == rows(plain)
    json.dumps(both)


@pytest.mark.slow
def test_a_run_with_the_oracle_draws_its_overlays(random_models_overrides, tmp_path, capsys):
    res = evaluate(load_config(None, [*random_models_overrides, "data.limit=12", "budgets=[4]", "gate.name=all",
                                      "strategies=[sage,server_attention_oracle]", f"output_dir={tmp_path / 'r'}"]))
    assert res["report"].get("overlays") and "overlays failed" not in capsys.readouterr().err


# -- best_of_random_oracle: the server's own verdict on K random subsets ------------------------------


def test_best_of_random_sends_the_candidate_the_server_scores_highest():
    ev = make_evidence(grid=(4, 4), b=6)
    oracle = get_strategy("best_of_random_oracle", k=5)
    got = oracle.select(ev, 6)
    first = get_strategy("random").select(ev, 6)  # candidate 0 is what `random` sends
    for i in range(6):  # slow, obvious reference: the first candidate of the highest score
        ids = ev.sample_ids[i:i + 1]
        candidates = [oracle.candidate(ev.seed, ids, 16, 6, j)[0] for j in range(5)]
        assert torch.equal(candidates[0], first[i])
        scores = [float(fake_server_judge(ids, c[None])[0]) for c in candidates]
        assert torch.equal(got[i], candidates[scores.index(max(scores))])
    flat = lambda ids, idx: torch.zeros(len(ids), dtype=torch.float64)  # noqa: E731  (all tied: candidate 0)
    assert torch.equal(oracle.select(replace(ev, server_judge=flat), 6), first)
    assert len({tuple(sorted(r)) for r in got.tolist()}) == 6  # per image, not one subset for all


def test_best_of_random_declares_what_it_needs():
    oracle = get_strategy("best_of_random_oracle")
    assert oracle.requires == {"server_judge"} and oracle.oracle and oracle.k == 16
    assert get_strategy("best_of_random_oracle", k=4).label == "best_of_random_oracle[k=4]"
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        get_strategy("best_of_random_oracle", k=0)
    with pytest.raises(ConfigError, match="server_judge"):
        oracle.select(replace(make_evidence(grid=(3, 3), b=2), server_judge=None), 2)


@pytest.mark.slow
def test_a_sweep_with_best_of_random_keeps_every_other_record(random_models_overrides, tmp_path):
    base = [*random_models_overrides, "data.limit=24", "budgets=[2,8]", "gate.name=all", "logger=none"]
    plain = evaluate(load_config(None, [*base, "strategies=[random,attention_prefix]", f"output_dir={tmp_path / 'a'}"]))
    both = evaluate(load_config(None, [*base, "strategies=[random,best_of_random_oracle,attention_prefix]",
                                       f"output_dir={tmp_path / 'b'}"]))
    entry = {s["label"]: s for s in both["strategies"]}
    assert entry["best_of_random_oracle"]["oracle"] is True and entry["best_of_random_oracle"]["requires"] == [
        "server_judge"]
    assert both["ceiling"] == plain["ceiling"]
    a, b = pq.read_table(tmp_path / "a" / "samples.parquet"), pq.read_table(tmp_path / "b" / "samples.parquet")
    for name in a.column_names:  # every record of the other strategies and the ceiling, bit for bit
        assert a.column(name).equals(b.column(name)), name
    # the oracle's own cells: the server's answers to the subsets it chose
    assert b.column("pred/best_of_random_oracle/B8").to_pylist() != b.column("pred/random/B8").to_pylist()
