"""Building a sweep from a config (``sagebench.sweep.build``): what is checked before any image is evaluated.

The benchmark's fields name what was read; an input size the models cannot take, or fewer images
than processes, is a clear error before the sweep (nothing is written); the one-image dry forward
that finds it changes no random state and no module mode.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from helpers import small_world  # noqa: F401  (autouse: one thread, tmp datasets cache)
from PIL import Image

from sagebench.cli import main
from sagebench.errors import ConfigError

QUIET = ["logger=none", "progress=false", "data.num_workers=0"]


def cli(args, capsys):
    code = main(["eval", *args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, message):
    assert code == 2, err
    assert "sagebench: error:" in err, err
    assert message in err, err
    assert "Traceback" not in err, err


def gray(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L")


def test_fewer_images_than_processes_is_refused_before_spawning(random_models_overrides, tmp_path, capsys):
    """data.limit=1 with 2 DDP processes (one would get no image) is a clear ConfigError before any process
    is started (before: a crash or hang in the spawned processes)."""
    from sagebench.sweep.trainer import cpu_cores

    if cpu_cores() < 2:
        pytest.skip("needs 2 CPU cores for trainer.devices=2")
    code, _, err = cli([*random_models_overrides, *QUIET, "data.limit=1", "trainer.devices=2",
                        "trainer.accelerator=cpu", "trainer.strategy=ddp", "gate.name=all", "budgets=[4]",
                        f"output_dir={tmp_path / 'run'}"], capsys)
    assert_user_error(code, err, "every process needs at least one image")


def test_an_input_size_the_models_cannot_take_is_a_config_error_before_the_sweep(random_models_overrides, tmp_path,
                                                                                   capsys):
    """data.input_size=[1,32,32] for 28x28 models failed in the middle of the sweep; now a ConfigError naming
    the model, the input size and what to set, and nothing is evaluated."""
    out = tmp_path / "run"
    code, _, err = cli([*random_models_overrides, *QUIET, "data.limit=4", "data.input_size=[1,32,32]",
                        f"output_dir={out}"], capsys)
    assert_user_error(code, err, "cannot classify images of the input size [1, 32, 32]")
    assert "sagebench_fmnist_edge" in err and "data.input_size" in err and "kwargs.img_size" in err
    assert not (out / "partial").exists()


def test_the_dry_forward_changes_no_random_state_and_no_mode():
    """dry_forward runs both models once and leaves the RNG state and the modules' train/eval flags as they were."""
    from sagebench.edge.model import EdgeModel
    from sagebench.server.model import ServerModel
    from sagebench.sweep.build import dry_forward

    torch.manual_seed(3)
    edge = EdgeModel(timm.create_model("sagebench_fmnist_edge", pretrained=False).eval())
    server = ServerModel(timm.create_model("sagebench_fmnist_server", pretrained=False).eval())
    server.vit.blocks[0].train()  # a mixed state, to see that every flag is put back
    state = torch.get_rng_state()
    modes = [m.training for m in (*edge.modules(), *server.modules())]
    dry_forward(edge, server, {"input_size": (1, 28, 28)}, "e", "s")
    assert torch.equal(state, torch.get_rng_state())
    assert modes == [m.training for m in (*edge.modules(), *server.modules())]
    with pytest.raises(ConfigError, match="model.server.kwargs.img_size"):
        dry_forward(edge, ServerModel(timm.create_model("sagebench_fmnist_server", pretrained=False, img_size=32)),
                    {"input_size": (1, 28, 28)}, "e", "sagebench_fmnist_server")


def test_the_cli_prints_the_results_before_it_draws_the_plots(random_models_overrides, tmp_path, capsys,
                                                               monkeypatch):
    """The table is printed once results.json is on disk, before the plots and W&B (seconds, tens with W&B)."""
    from sagebench.reporting import report as report_lib

    seen = {}

    def report_run(config, results, out_dir, ctx=None):
        seen["printed"] = capsys.readouterr().out
        seen["on_disk"] = (out_dir / "results.json").is_file()
        return {"curves": str(out_dir / "curves.png")}

    monkeypatch.setattr(report_lib, "report_run", report_run)
    code, out, err = cli([*random_models_overrides, *QUIET, "data.limit=8", "budgets=[4]", "gate.name=all",
                          f"output_dir={tmp_path / 'run'}"], capsys)
    assert code == 0, err
    assert seen["on_disk"] and "offloaded accuracy" in seen["printed"] and "results: " in seen["printed"]
    assert "offloaded accuracy" not in out and out.strip() == f"plots: {tmp_path / 'run' / 'curves.png'}"
