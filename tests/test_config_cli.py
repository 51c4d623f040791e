"""Configuration and command-line errors: a clear message, exit status 2, no traceback."""

from __future__ import annotations

import pytest

from sagebench.cli import main
from sagebench.config import load_config, strategy_entries
from sagebench.errors import ConfigError


def test_defaults_are_the_embedded_benchmark():
    cfg = load_config()
    assert cfg.benchmark == "cifar10-embedded"
    assert list(cfg.budgets) == [5, 10, 16, 21, 31]  # ~8, 16, 24, 33, 49 % of 64 units
    assert [n for n, _ in strategy_entries(cfg)] == ["random", "uniform", "attention_prefix", "sage"]
    assert cfg.gate.name == "min_entropy" and cfg.gate.threshold == 1.0
    assert cfg.data.path.endswith("cifar10_test.parquet")
    assert cfg.model.edge.name == "sagebench_cifar10_edge" and cfg.model.server.name == "sagebench_cifar10_server"
    fm = load_config("fmnist")
    assert fm.benchmark == "fmnist-embedded" and fm.data.path.endswith("fashion_mnist_test.parquet")
    assert list(fm.budgets) == [4, 8, 12, 16, 24]


def test_overrides_and_strategy_options():
    cfg = load_config(None, ["budgets=[8,16]", "gate.name=all", "strategies=[{name: sage, prefilter: 3.0}, random]",
                             "trainer.precision=bf16-mixed", "model.edge.kwargs.drop_rate=0.0"])
    assert list(cfg.budgets) == [8, 16] and cfg.gate.name == "all"
    assert strategy_entries(cfg) == [("sage", {"prefilter": 3.0}), ("random", {})]
    assert cfg.trainer.precision == "bf16-mixed"


def test_the_paper_experiment_ships_with_its_setting():
    cfg = load_config("imagenet_deit")
    assert cfg.data.name == "ILSVRC/imagenet-1k" and cfg.data.split == "validation"
    assert cfg.model.edge.name.startswith("deit_tiny_patch16_224")
    assert cfg.model.server.name.startswith("deit_base_patch16_224")
    assert list(cfg.budgets) == [16, 32, 48, 64, 96] and cfg.gate.threshold == 1.0
    assert cfg.data.crop_pct == 0.875 and cfg.data.interpolation == "bicubic"


@pytest.mark.parametrize("override, message", [
    ("budgetz=[4]", "Did you mean 'budgets'"),
    ("data.pth=x", "Did you mean 'data.path'"),
    ("trainer.devicez=2", "Did you mean 'trainer.devices'"),
    ("strategies=[sagee]", "Did you mean 'sage'"),
    ("budgets=[]", "non-empty"),
    ("budgets=[0]", "not a positive integer"),
    ("budgets=[2.5]", "not a positive integer"),
    ("budgets=[4,4]", "duplicates"),
    ("gate.name=entropy", "Known gates"),
    ("batch_size=abc", "could not be converted"),
    ("budgets", "KEY=VALUE"),
    ("budgets=[1,", "Could not parse"),
])
def test_bad_config_is_refused_with_a_clear_message(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(None, [override])


def test_malformed_yaml_file_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("budgets: [1, 2\nseed: 0\n")
    with pytest.raises(ConfigError, match="Could not parse"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="Did you mean .imagenet_deit.*Shipped experiments: .*imagenet_deit"):
        load_config("imagenet_deti")


@pytest.mark.parametrize("args, message", [
    (["eval", "strategies=[sagee]"], "Unknown strategy 'sagee'. Did you mean 'sage'? Known strategies:"),
    (["eval", "budgets=[0]"], "not a positive integer"),
    (["eval", "budgets=[999]"], "between 1 and the number of patches (64)"),
    (["eval", "nonsense_key=1"], "Unknown config key 'nonsense_key'"),
])
def test_cli_reports_user_errors_without_traceback(args, message, capsys):
    assert main(args + ["progress=false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sagebench: error:") and message in err and "Traceback" not in err


def _listed(out: str) -> dict[str, str]:
    """``{name: description}`` of a listing command's output (option lines are indented below their name)."""
    return dict(line.split(None, 1) for line in out.splitlines() if line and not line[0].isspace())


def test_cli_lists_strategies_with_descriptions(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    names = list(_listed(out))
    assert names == sorted(names)
    assert {"attention_prefix", "random", "sage", "uniform"} <= set(names)
    assert all(_listed(out).values())
    assert "    prefilter: float = 2.0" in out  # sage's option, read from its __init__
    assert main(["strategies", "att*"]) == 0
    listed = list(_listed(capsys.readouterr().out))
    assert "attention_prefix" in listed and all(n.startswith("att") for n in listed)


@pytest.mark.slow
def test_help_and_config_mistakes_answer_without_importing_torch():
    """`sagebench --help`, `eval --help` and an unknown key never load torch (seconds saved per mistake)."""
    import subprocess
    import sys

    code = ("import sys, sagebench.cli as c\n"
            "c.build_parser()\n"
            "from sagebench.config import load_config\n"
            "from sagebench.errors import ConfigError\n"
            "try:\n    load_config(None, ['budgetz=[4]'])\nexcept ConfigError as e:\n    assert 'budgets' in str(e)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_version_print_config_and_keys_in_help(capsys):
    from sagebench import __version__

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"sagebench {__version__}"
    assert main(["eval", "budgets=[4,8]", "--print-config", "seed=3"]) == 0  # overrides on both sides
    out = capsys.readouterr().out
    assert "budgets:\n- 4\n- 8\n" in out and "seed: 3" in out
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "gate.threshold" in text and "offload when -log2(max softmax) > threshold" in text


@pytest.mark.slow
def test_sagebench_strategies_lists_every_strategy_without_importing_torch():
    """`sagebench strategies` reads the built-ins' source (no torch: well under a second) and prints the same
    names and descriptions as the imported registry. Compared on the built-ins only: an installed third-party
    plug-in is listed too, but must not make the project's own tests fail."""
    import subprocess
    import sys

    from sagebench.plugins import STRATEGIES
    from sagebench.strategies import describe

    code = ("import sys, sagebench.cli as c\n"
            "assert c.main(['strategies']) == 0\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = _listed(done.stdout)
    builtins = STRATEGIES.names(builtin_only=True)
    assert {n: printed.get(n) for n in builtins} == {name: describe(name) for name in builtins}


@pytest.mark.parametrize("override", ["a" + ".a" * 3000 + "=1", "budgets=" + "[" * 3000 + "]" * 3000])
def test_a_very_deep_override_is_a_short_error(override):
    """A 3,000-deep override gave a 12 KB "maximum recursion depth" message."""
    with pytest.raises(ConfigError, match="levels deep") as info:
        load_config(None, [override])
    assert len(str(info.value)) < 300 and "recursion" not in str(info.value)



# -- values a config must not hold (each refused by load_config, before any model) ----------------


def test_a_hub_name_with_the_default_local_path_is_refused():
    """data.name=ILSVRC/imagenet-1k over the default data.path used to evaluate the local file under the
    hub name; now ConfigError saying to set data.path=null (experiments that set name set path: null)."""
    from sagebench.config import load_config

    with pytest.raises(ConfigError, match="data.path=null"):
        load_config(None, ["data.name=ILSVRC/imagenet-1k"])
    for experiment in ("imagenet_deit", "paper_table3"):
        cfg = load_config(experiment, [])
        assert cfg.data.name == "ILSVRC/imagenet-1k" and cfg.data.path is None
    assert load_config(None, ["data.name=ILSVRC/imagenet-1k", "data.path=null"]).data.path is None


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_gate_threshold_is_refused(value):
    """gate.threshold=nan/inf was accepted (a NaN threshold offloads nothing); now a ConfigError."""
    from sagebench.config import load_config

    with pytest.raises(ConfigError, match="gate.threshold must be a finite number"):
        load_config(None, [f"gate.threshold={value}"])


@pytest.mark.parametrize("override, message", [
    ("trainer.strategy=ddp_spawn", "trainer.strategy=ddp"),
    ("trainer.strategy=ddp_notebook", "trainer.strategy=ddp"),
    ("trainer.strategy=ddp_fork", "trainer.strategy=ddp"),
    ("trainer.limit_test_batches=0.5", "data.limit"),
    ("trainer.limit_val_batches=3", "data.limit"),
    ("trainer.fast_dev_run=true", "data.limit"),
    ("trainer.overfit_batches=2", "data.limit"),
])
def test_trainer_options_a_sweep_cannot_honour_are_refused_up_front(override, message):
    """Spawned DDP strategies and batch limits are refused by load_config (before any model), pointing to
    trainer.strategy=ddp / data.limit; their defaults are still accepted."""
    from sagebench.config import load_config

    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
    load_config(None, ["trainer.limit_test_batches=1.0", "trainer.fast_dev_run=false"])


@pytest.mark.parametrize("seed", ["-5", str(2**32)])
def test_a_seed_outside_the_generators_range_is_a_config_error(seed):
    """seed=-5 or seed>=2**32 raised a ValueError from seed_everything (a traceback); now a ConfigError."""
    from sagebench.config import load_config

    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 2\*\*32 - 1\]"):
        load_config(None, [f"seed={seed}"])


def test_a_bogus_precision_lists_the_valid_ones():
    """trainer.precision=bogus said to fix trainer.accelerator / trainer.devices; now the valid precisions."""
    from sagebench.config import load_config

    with pytest.raises(ConfigError) as info:
        load_config(None, ["trainer.precision=bogus"])
    message = str(info.value)
    assert "valid precisions" in message and "32-true" in message and "bf16-mixed" in message
    assert "accelerator" not in message and "devices" not in message


def test_a_scalar_budget_says_budgets_must_be_a_list():
    """budgets=4 gave OmegaConf's 'AnyNode is not a ListConfig'; now 'budgets must be a list, e.g. budgets=[4]'."""
    from sagebench.config import load_config

    with pytest.raises(ConfigError, match=r"budgets must be a list, e\.g\. budgets=\[4\]"):
        load_config(None, ["budgets=4"])


def test_a_listing_piped_into_a_reader_that_leaves_early_is_no_traceback():
    """`sagebench strategies | head -6` printed a BrokenPipeError traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "sagebench.cli", "strategies"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the listing is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_the_imagenet_data_config_takes_its_worker_count_from_the_machine():
    """conf/data/imagenet_val.yaml hard-coded num_workers: 8 (eight warnings on 2 cores)."""
    from sagebench.runtime.speed import num_workers

    cfg = load_config("imagenet_deit", [])
    assert cfg.data.num_workers is None
    assert num_workers(None) == num_workers(cfg.data.num_workers) <= 8


def test_own_data_under_a_shipped_experiment_gets_its_own_benchmark_name(tmp_path):
    """`--config imagenet_deit data.path=<my folder>` kept the name imagenet1k-val-deit: the run of a custom
    data set looked like (and could be submitted as) the official benchmark's."""
    from sagebench.config import official_benchmarks

    own = ["data.name=null", f"data.path={tmp_path / 'my-photos'}"]
    name = load_config("imagenet_deit", own).benchmark
    assert name == "my-photos-deit_tiny_patch16_224.fb_in1k-deit_base_patch16_224.fb_in1k"
    assert name not in official_benchmarks() and "imagenet1k-val-deit" in official_benchmarks()
    assert load_config("imagenet_deit", [*own, "benchmark=mine"]).benchmark == "mine"  # the user's choice stands
    assert load_config(None, [f"data.path={tmp_path / 'val.parquet'}"]).benchmark.startswith("val-sagebench_cifar10")
    assert load_config(None, [f"data.path={tmp_path}/shards/*.parquet"]).benchmark.startswith("shards-")
    # the shipped data (also when named again) keeps the shipped name
    assert load_config("imagenet_deit", []).benchmark == "imagenet1k-val-deit"
    assert load_config(None, ["data.path=${asset:demo/cifar10_test.parquet}"]).benchmark == "cifar10-embedded"
    # names that would spell an official board's name: never that name
    clash = load_config("paper_table3", ["data.name=null", f"data.path={tmp_path}/imagenet1k",
                                         "model.edge.name=val", "model.server.name=deit"])
    assert clash.benchmark == "imagenet1k-val-deit-local"
    user_file = tmp_path / "mine.yaml"
    user_file.write_text(f"defaults: [experiment/imagenet_deit]\nbenchmark: my-bench\ndata:\n  name: null\n"
                         f"  path: {tmp_path / 'x'}\n")
    assert load_config(str(user_file)).benchmark == "my-bench"
