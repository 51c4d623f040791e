"""The sweep end to end: exact counts, one edge pass per image, batch-size and process-count invariance."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from sagebench.config import load_config
from sagebench.sweep.evaluate import evaluate

METRICS = ("offloaded_accuracy", "ceiling_ratio", "overall_accuracy", "coverage", "units_sent", "bytes_sent")


def _run(overrides, out_dir, extra=()):
    cfg = load_config(None, [*overrides, f"output_dir={out_dir}", *extra])
    return evaluate(cfg)


def _comparable(results):
    return ([(r["strategy"], r["budget"], *(r[m] for m in METRICS)) for r in results["results"]],
            results["num_images"], results["num_offloaded"], results["edge_accuracy"], results["ceiling"])


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_a_sweep_writes_results_with_every_metric_and_per_sample_records(random_models_overrides, tmp_path):
    res = _run(random_models_overrides, tmp_path, ["data.limit=37", "budgets=[4,49]", "gate.name=all"])
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["num_images"] == 37 and on_disk["num_offloaded"] == 37
    for key in ("schema_version", "benchmark", "config", "provenance", "edge_accuracy", "ceiling", "results"):
        assert key in on_disk
    assert len(on_disk["benchmark"]["fingerprint"]) == 16
    assert on_disk["timing"]["edge_forwards_per_image"] == 1.0
    assert {(r["strategy"], r["budget"]) for r in on_disk["results"]} == {
        (s, b) for s in ("random", "uniform", "attention_prefix", "sage") for b in (4, 49)}
    for r in on_disk["results"]:
        assert r["units_sent"] == r["budget"] and r["bytes_sent"] == r["budget"] * 16  # 1 channel, 4x4 pixels
        if r["budget"] == 49:  # every patch sent: the ceiling exactly, whatever the order
            assert r["offloaded_accuracy"] == on_disk["ceiling"]["offloaded_accuracy"]
            assert r["coverage"] == 1.0
    table = pq.read_table(tmp_path / "samples.parquet").to_pandas() if False else pq.read_table(tmp_path / "samples.parquet")
    ids = table.column("sample_id").to_pylist()
    assert ids == list(range(37))
    assert "pred/sage/B4" in table.column_names and "coverage/uniform/B49" in table.column_names
    assert res["results"] == on_disk["results"]


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_results_do_not_depend_on_batch_size(random_models_overrides, tmp_path):
    a = _run(random_models_overrides, tmp_path / "a", ["data.limit=29", "batch_size=29", "gate.threshold=1.5"])
    b = _run(random_models_overrides, tmp_path / "b", ["data.limit=29", "batch_size=4", "gate.threshold=1.5"])
    assert _comparable(a) == _comparable(b)
    sa = pq.read_table(tmp_path / "a" / "samples.parquet")
    sb = pq.read_table(tmp_path / "b" / "samples.parquet")
    assert sa.equals(sb)



@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_an_in_memory_dataset_is_served_instead_of_the_config_data(random_models_overrides, tmp_path):
    """``evaluate(cfg, dataset=...)`` (the seam benchmarks/speed.py uses): the same images in memory give the
    same per-sample records, and the sweep reads them from the given data set, every image."""
    import torch

    from sagebench.sweep.build import build

    overrides = [*random_models_overrides, "data.limit=13", "budgets=[4,8]", "gate.threshold=1.5"]
    from_file = _run(overrides, tmp_path / "file")
    cfg = load_config(None, [*overrides, f"output_dir={tmp_path / 'memory'}"])
    decoded = build(cfg).dataset  # the config's images, decoded once
    items = [decoded[i] for i in range(13)]

    class InMemory(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.read: list[int] = []

        def __len__(self) -> int:
            return len(items)

        def __getitem__(self, i: int):
            self.read.append(int(i))
            return items[i]

    memory = InMemory()
    from_memory = evaluate(cfg, dataset=memory)
    assert sorted(set(memory.read)) == list(range(13))
    assert _comparable(from_memory) == _comparable(from_file)
    assert pq.read_table(tmp_path / "memory" / "samples.parquet").equals(pq.read_table(tmp_path / "file" /
                                                                                       "samples.parquet"))


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_same_seed_same_result_and_the_seed_moves_random_only(random_models_overrides, tmp_path):
    a = _run(random_models_overrides, tmp_path / "a", ["data.limit=23", "gate.name=all", "seed=3"])
    b = _run(random_models_overrides, tmp_path / "b", ["data.limit=23", "gate.name=all", "seed=3"])
    assert _comparable(a) == _comparable(b)
    sa = pq.read_table(tmp_path / "a" / "samples.parquet")
    c = _run(random_models_overrides, tmp_path / "c", ["data.limit=23", "gate.name=all", "seed=4"])
    sc = pq.read_table(tmp_path / "c" / "samples.parquet")
    assert sa.column("pred/sage/B8").equals(sc.column("pred/sage/B8"))
    assert a["benchmark"]["fingerprint"] == c["benchmark"]["fingerprint"]


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_the_gate_decides_who_goes_to_the_server(random_models_overrides, tmp_path):
    res = _run(random_models_overrides, tmp_path, ["data.limit=31", "gate.threshold=0.0", "budgets=[8]"])
    samples = pq.read_table(tmp_path / "samples.parquet")
    off = np.array(samples.column("offloaded").to_pylist())
    assert res["num_offloaded"] == int(off.sum())
    kept_server = np.array(samples.column("ceiling_pred").to_pylist())[~off]
    assert (kept_server == -1).all()  # the server never ran on kept images
    edge_ok = np.array(samples.column("edge_pred").to_pylist()) == np.array(samples.column("label").to_pylist())
    assert res["edge_accuracy"] == pytest.approx(edge_ok.mean())


@pytest.mark.slow
def test_two_process_ddp_on_an_odd_count_equals_one_process(random_models_overrides, tmp_path):
    """2 CPU processes (gloo) on 41 images: each image once, same numbers as a single process."""
    common = [*random_models_overrides, "data.limit=41", "batch_size=8", "budgets=[4,12]",
              "gate.threshold=1.5", "trainer.accelerator=cpu"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SAGEBENCH_RUN_ID", None)
    cmd = [sys.executable, "-m", "sagebench.cli", "eval"]
    one = subprocess.run(cmd + common + [f"output_dir={tmp_path / 'one'}", "trainer.devices=1"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(cmd + common + [f"output_dir={tmp_path / 'two'}", "trainer.devices=2", "server_batch_size=5",
                                         "trainer.strategy=ddp"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())
    assert r2["provenance"]["world_size"] == 2 and r2["num_images"] == 41
    assert _comparable(r1) == _comparable(r2)
    assert r2["timing"]["edge_forwards_per_image"] == 1.0
    s1 = pq.read_table(tmp_path / "one" / "samples.parquet")
    s2 = pq.read_table(tmp_path / "two" / "samples.parquet")
    assert s1.equals(s2)


def test_class_names_and_per_class_accuracy_reach_the_results_and_the_samples(small_run):
    """The data set's ClassLabel names: in results.json, in samples.parquet's metadata, with per-class
    offloaded accuracy that adds up to the overall figure."""
    run_dir, res = small_run
    names = res["class_names"]
    assert names[:2] == ["T-shirt/top", "Trouser"] and len(names) == 10
    meta = pq.read_schema(run_dir / "samples.parquet").metadata
    assert json.loads(meta[b"sagebench.class_names"]) == names
    per_class = res["per_class"]
    assert sum(c["num_offloaded"] for c in per_class) == res["num_offloaded"]
    row = res["results"][0]
    key = f"{row['strategy']}/B{row['budget']}"
    right = sum(round(c["offloaded_accuracy"][key] * c["num_offloaded"]) for c in per_class if c["num_offloaded"])
    assert right == row["num_correct"]
