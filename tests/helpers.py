"""Small builders shared by tests."""

import pytest
import timm
import torch


def tiny_vit(name: str = "vit_tiny_patch16_224", seed: int = 0, **kwargs) -> torch.nn.Module:
    """A small random ViT on 32x32 images, patch 8 (a 4x4 grid)."""
    torch.manual_seed(seed)
    args = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2, num_classes=10)
    args.update(kwargs)
    return timm.create_model(name, pretrained=False, **args).eval()


@pytest.fixture(scope="module")
def one_cpu_thread():
    """The tensors in strategy tests are tiny: intra-op threads only add synchronisation (very slow
    on a busy CPU). Use with ``pytestmark = pytest.mark.usefixtures("one_cpu_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def draw_no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs draw no figures (curves.png, latency.png, overlays.png); see the ``no_figures`` fixture (conftest)."""
    from sagebench.reporting import report

    monkeypatch.setattr(report, "draw_all", lambda jobs, guard: {})


try:
    import lightning as _L

    class RecordingCallback(_L.Callback):
        """A callback a config names by class path (tests.helpers is importable as ``helpers``)."""

        def __init__(self, tag: str = "") -> None:
            self.tag = tag
            self.batches = 0

        def on_test_batch_end(self, *args, **kwargs) -> None:
            self.batches += 1

    class NeedsAMissingPackage(_L.Callback):
        """A callback whose constructor fails, as RichProgressBar does without ``rich``."""

        def __init__(self) -> None:
            raise ModuleNotFoundError("`rich` is not installed: pip install rich")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(autouse=True)
def small_world(tmp_path, monkeypatch):
    """One CPU thread (tiny tensors), datasets' cache in tmp, no run id inherited from another test.
    Autouse in every module that imports it (``from helpers import small_world``)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("SAGEBENCH_RUN_ID", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# `python -c SLOW_RUN eval ...`: the CLI with every test step slowed down, so a test can kill it mid-sweep
SLOW_RUN = """
import sys, time
import sagebench.sweep.module as m
step = m.SageBenchModule.test_step
def slow(self, batch, batch_idx):
    rows = step(self, batch, batch_idx)
    time.sleep(0.3)
    return rows
m.SageBenchModule.test_step = slow
from sagebench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def sigkill_after_chunks(args: list[str], out_dir, chunks: int, timeout: float = 180.0) -> None:
    """Run ``sagebench eval ARGS`` (slowed, saving after every batch) and SIGKILL it once ``chunks``
    partial-results chunks are on disk."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("SAGEBENCH_RUN_ID", None)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, "eval", *args, "flush_seconds=0",
                             f"output_dir={out_dir}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while len(list((Path(out_dir) / "partial").glob("rank*.npz"))) < chunks:
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline, "no partial results appeared"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
