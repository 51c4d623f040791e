"""Full server batches at the real gate: offloaded images wait in a queue across data batches.

The queue changes when the server runs, never what it computes: per-sample records are the same
for any server batch size, and a run killed while images wait in the queue resumes to the same
records (the waiting rows were never saved half-filled, so they are simply evaluated again).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import sigkill_after_chunks

from sagebench.config import load_config
from sagebench.sweep import resume
from sagebench.sweep.evaluate import evaluate

FMNIST = ["--config", "fmnist"]
BASE = ["data.limit=400", "batch_size=50", "budgets=[4,12]", "strategies=[random,attention_prefix,sage]",
        "logger=none", "progress=false", "data.num_workers=0"]


def _records(tmp_path, name, *extra):
    res = evaluate(load_config("fmnist", [*BASE, *extra, f"output_dir={tmp_path / name}"]))
    return res, pq.read_table(tmp_path / name / "samples.parquet")


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_records_do_not_depend_on_the_server_batch_size(tmp_path):
    base, table = _records(tmp_path, "default")  # server_batch_size = batch_size: served across data batches
    assert 0 < base["num_offloaded"] < 400  # the real gate: a share of each data batch is offloaded
    forwards = {}
    for size in (1, 10_000):  # every data batch served at once / one pass at the end
        res, other = _records(tmp_path, f"s{size}", f"server_batch_size={size}")
        assert other.equals(table), f"server_batch_size={size} changed a record"
        forwards[size] = res["timing"]["server_passes"]["forwards"]
    assert forwards[10_000] < forwards[1]  # full server batches: far fewer forwards


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_the_queue_is_bounded_by_the_server_batch_size(monkeypatch, tmp_path):
    import sagebench.sweep.module as m

    seen = []
    drain = m.SageBenchModule._drain

    def watch(self):
        seen.append(self._queued)
        return drain(self)

    monkeypatch.setattr(m.SageBenchModule, "_drain", watch)
    evaluate(load_config("fmnist", [*BASE, "gate.threshold=0.3", "server_batch_size=16", f"output_dir={tmp_path / 'r'}"]))
    assert seen and max(seen) < 16 + 50  # at most one data batch beyond the threshold waits




@pytest.mark.slow
def test_a_kill_while_images_wait_in_the_queue_resumes_to_the_same_records(tmp_path):
    common = ["--config", "fmnist", "data.limit=300", "batch_size=10", "budgets=[4]", "gate.threshold=0.5",
              "strategies=[random,sage]", "server_batch_size=25", "logger=none", "progress=false",
              "data.num_workers=0"]
    out_dir = tmp_path / "killed"
    sigkill_after_chunks(common, out_dir, chunks=4)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("SAGEBENCH_RUN_ID", None)
    state = resume.inspect_run(out_dir)
    assert state.unfinished
    done = sum(int(np.load(c)["rows"].shape[0]) for c in state.chunks)
    assert 0 < done < 300
    resumed = subprocess.run([sys.executable, "-m", "sagebench.cli", "eval", *common, "resume=true",
                              f"output_dir={out_dir}"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    clean = subprocess.run([sys.executable, "-m", "sagebench.cli", "eval", *common,
                            f"output_dir={tmp_path / 'clean'}"], env=env, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert pq.read_table(out_dir / "samples.parquet").equals(pq.read_table(tmp_path / "clean" / "samples.parquet"))
