"""Two "nodes" on this machine (torchrun --nnodes=2, one process each, rendezvous on the loopback):
every image once, records equal to one process; a node killed mid-run, then resumed, exactly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import SLOW_RUN, small_world  # noqa: F401  (autouse)

pytestmark = pytest.mark.slow

COMMON = ["data.limit=23", "batch_size=4", "budgets=[4,12]", "gate.threshold=1.5", "trainer.accelerator=cpu",
          "strategies=[random,sage]", "logger=none", "progress=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    out = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    out.pop("SAGEBENCH_RUN_ID", None)
    return out


def launch_nodes(args: list[str], *, slow: bool = False) -> list[subprocess.Popen]:
    """``torchrun --nnodes=2 --nproc-per-node=1 --node-rank=R`` twice, as two machines would start it."""
    port = free_port()
    program = ["-c", SLOW_RUN] if slow else ["-m", "sagebench.cli"]
    # torchrun runs a script or a module (-m): the slowed CLI is written to a file for it
    procs = []
    for rank in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
               f"--node-rank={rank}", "--master-addr=127.0.0.1", f"--master-port={port}"]
        if slow:
            script = Path(args[-1].split("=", 1)[1]).parent / "slow_cli.py"
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(SLOW_RUN)
            cmd += [str(script)]
        else:
            cmd += program
        procs.append(subprocess.Popen([*cmd, "eval", *args, "trainer.num_nodes=2", "trainer.devices=1",
                                       "trainer.strategy=ddp"], env=env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, start_new_session=True))
    return procs


def kill_node(rank: int, out: Path) -> None:
    """SIGKILL every process of node ``rank`` of the run writing ``out``: torchrun's agent and its worker (which
    runs in a process group of its own)."""
    marks = (f"--node-rank={rank}".encode(), f"output_dir={out}".encode())
    agents = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if all(m in cmdline for m in marks):
            agents.append(int(proc.name))
    workers = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) in agents]
    for pid in [*workers, *agents]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _parent(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def wait_all(procs: list[subprocess.Popen], timeout: float = 300) -> None:
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err.decode()[-3000:]


def one_process(random_models_overrides, out: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "sagebench.cli", "eval", *random_models_overrides, *COMMON,
                          f"output_dir={out}", "trainer.devices=1"], env=env(), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def test_two_nodes_count_every_image_once_and_equal_one_process(random_models_overrides, tmp_path):
    one_process(random_models_overrides, tmp_path / "one")
    wait_all(launch_nodes([*random_models_overrides, *COMMON, f"output_dir={tmp_path / 'two'}"]))
    res = json.loads((tmp_path / "two" / "results.json").read_text())
    assert res["provenance"]["world_size"] == 2 and res["num_images"] == 23
    assert pq.read_table(tmp_path / "one" / "samples.parquet").equals(pq.read_table(tmp_path / "two" /
                                                                                      "samples.parquet"))


def test_a_node_killed_mid_run_resumes_exactly(random_models_overrides, tmp_path):
    out = tmp_path / "two"
    args = [*random_models_overrides, *COMMON, "batch_size=2", "flush_seconds=0", f"output_dir={out}"]
    procs = launch_nodes(args, slow=True)
    try:
        deadline = time.monotonic() + 240
        while len(list((out / "partial").glob("rank*.npz"))) < 2:
            assert all(p.poll() is None for p in procs), procs[0].communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline, "no partial results appeared"
            time.sleep(0.05)
        kill_node(1, out)  # node 1 dies: its agent and its worker
        time.sleep(0.2)
        kill_node(0, out)  # node 0 is then stuck in a collective: the job is restarted
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(30)
    assert not (out / "results.json").exists()
    wait_all(launch_nodes([*random_models_overrides, *COMMON, "resume=true", f"output_dir={out}"]))
    res = json.loads((out / "results.json").read_text())
    assert res["provenance"]["world_size"] == 2 and res["resume"]["attempts"] == 2
    assert 0 < res["resume"]["images_resumed"] < 23
    one_process(random_models_overrides, tmp_path / "one")
    assert pq.read_table(tmp_path / "one" / "samples.parquet").equals(pq.read_table(out / "samples.parquet"))
