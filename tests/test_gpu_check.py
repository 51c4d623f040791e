"""benchmarks/gpu_check.sh works before a GPU is lent: its CPU dry run, tiny, writes a sane JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_dry_run_on_the_cpu_writes_every_figure(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "DEVICE": "cpu", "IMAGES": "8",
           "BATCH": "4", "SERVER": "deit_tiny_patch16_224", "OUT": str(tmp_path), "LIMIT_S": "900"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--set", "strategies=[random,sage]",
                           "--set", "budgets=[16,96]", "--folder", str(tmp_path / "work")],
                          env=env, capture_output=True, text=True, timeout=1000)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())

    assert report["device"] == "cpu" and report["images"] == 8 and report["gpu_memory_mb"] is None
    assert report["decode"]["pil"]["decoder"] == "pil" and report["decode"]["tensor"]["decoder"] == "tensor:cpu"
    assert all(report["decode"][d]["images_per_s"] > 0 for d in ("pil", "tensor"))
    agreement = report["agreement"]
    assert agreement["images"] == 8 and agreement["max_abs"] <= 2 * agreement["one_level"] + 1e-5
    assert 0 <= agreement["top1_agreement_edge"] <= 1 and 0 <= agreement["top1_agreement_server"] <= 1

    sweep = report["sweep"]
    assert sweep["precision"] == "32-true" and sweep["decoder"] == "pil"  # the ImageNet policy (auto) off CUDA
    assert sweep["strategies"] == ["random", "sage"] and sweep["budgets"] == [16, 96] and sweep["cells"] == 4
    assert 0 < sweep["offloaded"] < 8  # the gate set to offload about 36%
    rates = sweep["images_per_s"]
    assert all(rates[k] > 0 for k in ("sweep", "edge", "ceiling", "server_all_cells", "server_per_cell"))
    assert rates["server_per_cell"] == pytest.approx(rates["server_all_cells"] * 4, rel=0.05)
    projected = report["projected_full_sweep_s"]
    assert projected["at_measured_share"] == pytest.approx(sweep["sweep_seconds"] / 8 * 50_000, rel=0.01)
    assert projected["at_paper_share_0.359"] > 0 and projected["fixed_seconds"] >= 0
    assert report["host_peak_rss_mb"] > 0 and report["wall_seconds"] > 0
