"""A run's identity has one owner: every field of RunPlan reaches exactly the keys it declares."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from sagebench.sweep.plan import (
    BENCHMARK,
    EDGE_CACHE,
    IDENTITIES,
    OFFLOAD_CACHE,
    RECORDS,
    RunPlan,
    dataset_label,
    digest,
    resolved_precision,
)

ROOT = Path(__file__).resolve().parents[1]


def a_plan(**changes) -> RunPlan:
    plan = RunPlan(
        data={"name": "cifar10", "split": "test", "revision": None, "num_images": 100, "size_bytes": 10,
              "content_hash": "sha256:abc"},
        dataset="cifar10_test.parquet", label_map=None,
        preprocessing={"input_size": [3, 32, 32], "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3,
                       "crop_pct": 1.0, "crop_mode": "center"},
        grid=(8, 8), edge_name="edge", edge_kwargs={}, edge_weights="sha256:e", edge_weights_sha256="e" * 8,
        edge_attention="last_layer", edge_rollouts=(), server_name="server", server_kwargs={},
        server_weights="sha256:s", server_weights_sha256="s" * 8, gate={"gate": "min_entropy", "threshold": 1.0},
        codec={"name": "raw"}, budget_unit="patches", budgets=(4, 8), seed=0,
        strategies=({"label": "sage", "options": {"prefilter": 2.0}},), precision="32-true", device_type="cpu",
        torch_version="2.x", compiled=False)
    return dataclasses.replace(plan, **changes)


#: a change of each field that a key must notice (defaults that are left out of a layout are changed to a non-default)
CHANGED = {
    "data": {"content_hash": "sha256:other"}, "dataset": "other.parquet", "label_map": {"cat": 3},
    "preprocessing": {"crop_pct": 0.875}, "grid": (8, 9), "edge_name": "edge2", "edge_kwargs": {"img_size": 64},
    "edge_weights": "sha256:e2", "edge_weights_sha256": "f" * 8, "edge_attention": "rollout", "edge_rollouts": ("rollout",),
    "server_name": "server2", "server_kwargs": {"img_size": 64}, "server_weights": "sha256:s2",
    "server_weights_sha256": "t" * 8, "gate": {"gate": "min_entropy", "threshold": 0.5}, "codec": {"name": "png"},
    "budget_unit": "bytes", "budgets": (4, 16), "seed": 1, "strategies": ({"label": "random", "options": {}},),
    "precision": "bf16-mixed", "device_type": "cuda", "torch_version": "3.x", "compiled": True,
    "decoder": "tensor:cuda", "matmul_precision": "high",
    "gate_thresholds": (0.5, 1.0),
}


def keys(plan: RunPlan) -> dict[str, str]:
    return {RECORDS: digest(plan.run_key()), BENCHMARK: digest(plan.benchmark_fields(100)),
            EDGE_CACHE: digest(plan.edge_cache_key()), OFFLOAD_CACHE: digest(plan.offload_cache_key())}


def test_every_field_says_which_identities_it_belongs_to_and_the_test_changes_each():
    fields = [f.name for f in dataclasses.fields(RunPlan)]
    assert sorted(CHANGED) == sorted(fields)
    for f in dataclasses.fields(RunPlan):
        assert f.metadata["identity"], f"{f.name} belongs to no identity"


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_a_field_changes_exactly_the_keys_it_declares(name):
    before, after = keys(a_plan()), keys(a_plan(**{name: CHANGED[name]}))
    declared = dict(dataclasses.fields(RunPlan)[[f.name for f in dataclasses.fields(RunPlan)].index(name)].metadata)
    expected = set(declared["identity"])
    if EDGE_CACHE in expected:  # the offload cache's folder lives in (and names) the edge cache's
        expected.add(OFFLOAD_CACHE)
    changed = {kind for kind in IDENTITIES if before[kind] != after[kind]}
    assert changed == expected, f"{name}: changes {sorted(changed)}, declares {sorted(expected)}"


def test_the_edge_cache_key_names_the_rollouts_and_keeps_the_historical_folders():
    """``edge_rollouts`` was a bool (``with_rollout``): without the per-head rollout the key is the old
    one byte for byte (digests of this very plan before the change), so existing cache folders stay
    valid; every set of rollouts gets its own folder."""
    assert digest(a_plan(edge_rollouts=()).edge_cache_key()) == "794660895b990c79"
    assert digest(a_plan(edge_rollouts=("rollout",)).edge_cache_key()) == "efdd910061f055be"
    variants = [(), ("rollout",), ("rollout_per_head",), ("rollout", "rollout_per_head")]
    edges = [a_plan(edge_rollouts=v).edge_cache_key()["edge"] for v in variants]
    assert [e["with_rollout"] for e in edges] == [False, True, False, True]
    assert [e.get("rollouts") for e in edges] == [None, None, ["rollout_per_head"], ["rollout", "rollout_per_head"]]
    assert len({digest(a_plan(edge_rollouts=v).edge_cache_key()) for v in variants}) == len(variants)


def test_the_plan_says_which_rollouts_the_edge_computes():
    from helpers import tiny_vit

    from sagebench.edge.model import EdgeModel, rollout_options

    assert EdgeModel(tiny_vit()).rollouts == ()
    for required, rollouts in [({"rollout"}, ("rollout",)), ({"rollout_per_head", "server_attention"},
                                                             ("rollout_per_head",)),
                               ({"rollout_per_head", "rollout"}, ("rollout", "rollout_per_head"))]:
        assert EdgeModel(tiny_vit(), **rollout_options(required)).rollouts == rollouts


def test_the_edge_cache_does_not_depend_on_how_many_images_are_evaluated():
    few = a_plan(data={**a_plan().data, "num_images": 3})
    assert keys(few)[EDGE_CACHE] == keys(a_plan())[EDGE_CACHE]
    assert keys(few)[RECORDS] != keys(a_plan())[RECORDS]


def test_full_precision_runs_keep_the_historical_fingerprint_of_the_shipped_board():
    """The projection reproduces the stored benchmark of the shipped CIFAR-10 entry byte for byte."""
    from sagebench.results import fingerprint

    entry = json.loads((ROOT / "leaderboards/cifar10-embedded/entries/every-strategy-seed0.json").read_text())
    stored = {k: v for k, v in entry["benchmark"].items() if k not in ("name", "fingerprint")}
    plan = a_plan(data={k: stored[k] for k in ("split", "revision", "size_bytes", "content_hash")}
                  | {"name": stored["dataset"], "num_images": stored["num_images"]},
                  dataset=stored["dataset"], preprocessing=stored["preprocessing"], grid=tuple(stored["grid"]),
                  edge_name=stored["edge"]["name"], edge_weights=stored["edge"]["weights"],
                  edge_attention=stored["edge"]["attention"], server_name=stored["server"]["name"],
                  server_weights=stored["server"]["weights"],
                  gate={"gate": stored["gate"], "threshold": stored["threshold"]})
    fields = plan.benchmark_fields(stored["num_images"])
    assert fields == stored
    assert fingerprint(fields) == entry["benchmark"]["fingerprint"]


def test_reduced_precision_is_its_own_benchmark():
    assert "precision" not in a_plan().benchmark_fields(100)
    assert a_plan(precision="bf16-mixed").benchmark_fields(100)["precision"] == "bf16-mixed"


def test_another_decoder_or_tf32_is_its_own_benchmark_and_the_defaults_keep_old_keys():
    """data.decode and torch's float32 matmul precision change the pixels / logits: named in every key that
    records decides, and only when they are not the defaults (pil, highest), so earlier keys stay valid."""
    plain = a_plan()
    assert plain.decoder == "pil" and plain.matmul_precision == "highest"
    for key in (plain.run_key(), plain.benchmark_fields(100), plain.edge_cache_key()):
        assert "decoder" not in key and "matmul_precision" not in key
    for name, value in (("decoder", "tensor:cuda"), ("decoder", "tensor:cpu"), ("matmul_precision", "high")):
        changed = a_plan(**{name: value})
        assert changed.benchmark_fields(100)[name] == changed.run_key()[name] == value
    assert len({digest(a_plan(decoder=d).benchmark_fields(100)) for d in ("pil", "tensor:cpu", "tensor:cuda")}) == 3


def test_precision_auto_is_fp32_off_cuda_and_the_plan_records_what_ran():
    """The ImageNet experiments' policy (trainer.precision: auto): bf16-mixed on a CUDA GPU with bf16, else
    32-true; the Trainer gets the resolved value, so the plan (and the fingerprint) say what ran."""
    from sagebench.sweep.trainer import build_trainer
    from sagebench.trainer_options import auto_precision

    assert auto_precision("cpu") == "32-true"
    trainer = build_trainer(accelerator="cpu", devices=1, precision="auto", logger=False, enable_progress_bar=False,
                            enable_checkpointing=False, enable_model_summary=False)
    assert resolved_precision(trainer) == "32-true"


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()), reason="needs a CUDA GPU with bf16")
def test_precision_auto_is_bf16_mixed_on_a_cuda_gpu():
    from sagebench.sweep.trainer import build_trainer

    trainer = build_trainer(accelerator="auto", devices=1, precision="auto", logger=False, enable_progress_bar=False,
                            enable_checkpointing=False, enable_model_summary=False)
    assert resolved_precision(trainer) == "bf16-mixed"


def test_the_plan_records_the_precision_lightning_runs_not_the_one_asked():
    """``16-mixed`` on CPU runs bf16 autocast: the plan (and so every key) says bf16-mixed."""
    import lightning as L

    trainer = L.Trainer(accelerator="cpu", devices=1, precision="16-mixed", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    assert resolved_precision(trainer) == "bf16-mixed"


def test_a_local_path_names_the_data_set_over_a_hub_name(tmp_path):
    assert dataset_label(str(tmp_path / "local.parquet"), "ILSVRC/imagenet-1k") == "local.parquet"
    assert dataset_label(None, "ILSVRC/imagenet-1k") == "ILSVRC/imagenet-1k"
    assert dataset_label(None, None) == "unknown"


def test_the_weight_hash_of_the_cache_keys_depends_on_the_weights_themselves():
    from helpers import tiny_vit

    from sagebench.edge.cache import weights_hash

    assert weights_hash(tiny_vit(seed=0)) == weights_hash(tiny_vit(seed=0)) != weights_hash(tiny_vit(seed=1))


@pytest.mark.slow
def test_a_16_mixed_run_on_cpu_records_bf16_and_is_another_benchmark(random_models_overrides, tmp_path):
    """Before: results.json said 16-mixed (Lightning ran bf16-mixed) and shared the fp32 fingerprint, so its rows
    were ranked beside fp32 rows on one board although its records differ."""
    from sagebench.config import load_config
    from sagebench.sweep.evaluate import evaluate

    common = [*random_models_overrides, "data.limit=12", "budgets=[4]", "strategies=[sage]", "gate.name=all"]
    fp32 = evaluate(load_config(None, [*common, f"output_dir={tmp_path / 'fp32'}"]))
    mixed = evaluate(load_config(None, [*common, f"output_dir={tmp_path / 'mixed'}", "trainer.precision=16-mixed"]))
    assert fp32["provenance"]["precision"] == "32-true" and "precision" not in fp32["benchmark"]
    assert mixed["provenance"]["precision"] == mixed["benchmark"]["precision"] == "bf16-mixed"
    assert mixed["resume"]["key"]["precision"] == "bf16-mixed"
    assert mixed["benchmark"]["fingerprint"] != fp32["benchmark"]["fingerprint"]
