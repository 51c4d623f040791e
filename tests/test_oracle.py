"""The server-attention oracle: a reference that reads evidence only the server has, marked as such."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_vit

from sagebench.config import load_config
from sagebench.edge.model import EdgeModel
from sagebench.strategies import get_strategy
from sagebench.sweep.evaluate import evaluate
from sagebench.testing import make_evidence


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
