"""The research loop: with ``cache.edge=true`` a rerun with a new strategy reads only the offloaded images.

Spec (issue 16): the cache keeps, beside the edge evidence, every image's gate decision and the offloaded
images' exact 8-bit crops and ceiling predictions; a rerun that it covers decodes nothing, runs no edge and
no ceiling pass, and gives records identical to a run without the cache; a change of gate (or server,
data, models, preprocessing) is another cache folder, never a stale answer; its size is reported and
bounded by ``cache.max_gb``.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from sagebench.config import load_config
from sagebench.sweep.evaluate import evaluate

# the default benchmark (CIFAR-10, shipped weights, min-entropy gate at eta 1.0: about 30% offloaded)
BASE = ["logger=none", "data.limit=160", "batch_size=64", "budgets=[4,16]"]


def _run(tmp_path, name, *overrides):
    res = evaluate(load_config(None, [*BASE, f"output_dir={tmp_path / name}", *overrides]))
    return res, pq.read_table(tmp_path / name / "samples.parquet")


@pytest.fixture
def counters(monkeypatch):
    """How many images were decoded and how many full-image server/edge forwards ran (batches of >1 image:
    the one-image dry run that checks the input size before a sweep is not counted)."""
    import timm.models.vision_transformer as vt

    from sagebench.data import images

    seen = {"decoded": 0, "full_forwards": 0}
    decode, forward = images._decode_image, vt.VisionTransformer.forward

    def counting_decode(*args, **kwargs):
        seen["decoded"] += 1
        return decode(*args, **kwargs)

    def counting_forward(self, x, *args, **kwargs):
        seen["full_forwards"] += int(x.shape[0] > 1)
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(images, "_decode_image", counting_decode)
    monkeypatch.setattr(vt.VisionTransformer, "forward", counting_forward)
    return seen


@pytest.mark.usefixtures("no_figures")
def test_a_tiny_cached_rerun_reads_only_the_offloaded_images_and_gives_the_same_records(tmp_path, counters):
    """The fast lane's version of the test below: 24 Fashion-MNIST images (shipped weights, min-entropy gate at
    0.05: 9 kept, 15 offloaded), the same strategy twice; the rerun is served from the cache."""
    cache = f"cache.dir={tmp_path / 'cache'}"

    def run(name):
        res = evaluate(load_config("fmnist", ["logger=none", "progress=false", "data.num_workers=0", "data.limit=24",
                                           "batch_size=8", "budgets=[4]", "strategies=[sage]", "gate.threshold=0.05",
                                           "cache.edge=true", cache, f"output_dir={tmp_path / name}"]))
        return res, pq.read_table(tmp_path / name / "samples.parquet")

    first, first_rows = run("first")
    assert not first["timing"]["edge_cache"]["offload"]["served_from_cache"]
    assert 0 < first["num_offloaded"] < first["num_images"]
    counters.update(decoded=0, full_forwards=0)
    rerun, rerun_rows = run("rerun")
    offload = rerun["timing"]["edge_cache"]["offload"]
    assert offload["served_from_cache"] and offload["offloaded_images_read"] == rerun["num_offloaded"]
    assert counters == {"decoded": 0, "full_forwards": 0} and rerun["timing"]["edge_forwards_per_image"] == 0
    assert rerun_rows.equals(first_rows) and rerun["results"] == first["results"]


@pytest.mark.slow
def test_a_new_strategy_reruns_from_the_cache_reading_only_the_offloaded_images(tmp_path, counters):
    cache = f"cache.dir={tmp_path / 'cache'}"
    first, _ = _run(tmp_path, "first", "cache.edge=true", cache, "strategies=[random,uniform]")
    assert not first["timing"]["edge_cache"]["offload"]["served_from_cache"]
    assert 0 < first["num_offloaded"] < first["num_images"]  # the real gate: some kept, some offloaded

    counters.update(decoded=0, full_forwards=0)
    rerun, rerun_rows = _run(tmp_path, "rerun", "cache.edge=true", cache, "strategies=[sage]")
    offload = rerun["timing"]["edge_cache"]["offload"]
    assert offload["served_from_cache"] and offload["offloaded_images_read"] == rerun["num_offloaded"]
    assert counters == {"decoded": 0, "full_forwards": 0}  # no decode, no edge forward, no ceiling pass
    assert rerun["timing"]["edge_forwards_per_image"] == 0

    plain, plain_rows = _run(tmp_path, "plain", "cache.edge=false", "strategies=[sage]")
    assert counters["decoded"] >= plain["num_images"] and counters["full_forwards"] > 0  # the counters count
    assert rerun_rows.equals(plain_rows)  # per-sample records bit-identical
    assert rerun["results"] == plain["results"] and rerun["ceiling"] == plain["ceiling"]
    assert (tmp_path / "rerun" / "overlays.png").is_file()  # drawn from what the sweep kept, nothing decoded


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_another_gate_is_another_cache_never_a_stale_answer(tmp_path):
    cache = f"cache.dir={tmp_path / 'cache'}"
    _run(tmp_path, "first", "cache.edge=true", cache, "strategies=[random]")
    other, rows = _run(tmp_path, "other", "cache.edge=true", cache, "strategies=[random]", "gate.threshold=0.5")
    assert other["timing"]["edge_cache"]["hits"] == other["num_images"]  # the edge evidence still applies
    assert not other["timing"]["edge_cache"]["offload"]["served_from_cache"]  # but not the gate's decisions
    _, plain_rows = _run(tmp_path, "plain", "strategies=[random]", "gate.threshold=0.5")
    assert rows.equals(plain_rows)
    folders = sorted(p.name for p in next((tmp_path / "cache").iterdir()).glob("offload-*"))
    assert len(folders) == 2  # one per gate threshold


def test_pixels_are_kept_as_the_exact_8_bit_crop_or_as_floats_when_that_is_not_exact():
    import numpy as np
    from PIL import Image

    from sagebench.data import build_transform
    from sagebench.sweep.offload_cache import normalise, pixel_stats, to_uint8

    view = {"input_size": (3, 32, 32), "interpolation": "bicubic", "mean": (0.49, 0.48, 0.45),
            "std": (0.25, 0.24, 0.26), "crop_pct": 1.0, "crop_mode": "center"}
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 36, 3), dtype=np.uint8))
    x = build_transform(view)(img)
    mean, std = pixel_stats(view, 3)
    u8 = to_uint8(x[None], mean, std)
    assert u8 is not None and u8.dtype == torch.uint8
    assert torch.equal(normalise(u8, mean, std)[0], x)  # bit for bit what the transform gave
    assert to_uint8((x + 1e-3)[None], mean, std) is None  # not an 8-bit image: stored as floats instead


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_the_cache_size_is_reported_and_bounded_by_cache_max_gb(tmp_path, capsys):
    cache = f"cache.dir={tmp_path / 'cache'}"
    res, rows = _run(tmp_path, "tiny", "cache.edge=true", cache, "cache.max_gb=1e-6", "strategies=[random]")
    report = res["timing"]["edge_cache"]
    assert report["max_bytes"] == 1000 and report["bytes_written"] == 0 and report["writes_refused"] > 0
    assert "cache.max_gb" in capsys.readouterr().err  # one warning says what to do
    assert sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*.safetensors")) == 0
    roomy, roomy_rows = _run(tmp_path, "roomy", "cache.edge=true", cache, "strategies=[random]")
    written = sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*.safetensors"))
    assert roomy["timing"]["edge_cache"]["bytes_written"] == written > 0
    assert rows.equals(roomy_rows)  # the bound changes what is cached, never the results
    json.dumps(report)  # plain JSON in results.json


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_a_cached_rerun_killed_half_way_resumes_to_the_same_records(tmp_path):
    """SIGKILL while a cached rerun is reading the offloaded images, then resume=true: the records equal those
    of a run without the cache (the kept images' records, served from the cache, are neither lost nor doubled)."""
    import os
    import subprocess
    import sys

    from helpers import sigkill_after_chunks

    from sagebench.sweep import resume

    cache = f"cache.dir={tmp_path / 'cache'}"
    _run(tmp_path, "fill", "cache.edge=true", cache, "strategies=[random]")
    common = [*BASE, "batch_size=8", "server_batch_size=8", "strategies=[sage]", "progress=false",
              "data.num_workers=0"]
    out_dir = tmp_path / "killed"
    sigkill_after_chunks([*common, "cache.edge=true", cache], out_dir, chunks=2)
    assert resume.inspect_run(out_dir).unfinished
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("SAGEBENCH_RUN_ID", None)
    done = subprocess.run([sys.executable, "-m", "sagebench.cli", "eval", *common, "cache.edge=true", cache,
                           "resume=true", f"output_dir={out_dir}"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = json.loads((out_dir / "results.json").read_text())
    assert resumed["timing"]["edge_cache"]["offload"]["served_from_cache"]
    _, plain_rows = _run(tmp_path, "plain", "batch_size=8", "strategies=[sage]")
    assert pq.read_table(out_dir / "samples.parquet").equals(plain_rows)
