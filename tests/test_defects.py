"""Regression tests for the defects of issue #13 (one section per item).

Every test fails on the code before the fix; its docstring says what it checks. New names are
imported inside the tests, so that each one fails on its own on older code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import timm
import torch
from helpers import small_world  # noqa: E402,F401  (autouse: one thread, tmp datasets cache)
from PIL import Image

from sagebench.cli import main
from sagebench.errors import ConfigError, DataError, ModelLoadError

QUIET = ["logger=none", "progress=false", "data.num_workers=0"]
REPO = Path(__file__).resolve().parents[1]


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


def image_folder(root: Path, layout: dict[str, int], nested: bool = False) -> Path:
    """``root/<class>/<i>.png`` (or ``root/<class>/sub<i>/<i>.png`` when ``nested``), 28x28 grayscale."""
    k = 0
    for cls, n in layout.items():
        for i in range(n):
            folder = root / cls / (f"sub{i % 2}" if nested else "")
            folder.mkdir(parents=True, exist_ok=True)
            gray(k).save(folder / f"{k}.png")
            k += 1
    return root


def fmnist_labels():
    from sagebench.data.labels import model_label_names

    return model_label_names(timm.create_model("sagebench_fmnist_server", pretrained=False), "sagebench_fmnist_server")


# --------------------------------------------------------------------------- 1. labels by name


@pytest.mark.slow
def test_image_folder_subset_is_labelled_with_the_model_indices_of_its_class_names(tmp_path, random_models_overrides,
                                                                                     capsys):
    """A folder holding 3 of Fashion-MNIST's classes (datasets numbers them 0, 1, 2 in sorted order) is evaluated
    with the model's indices of those names (Bag 8, Sandal 5, Trouser 1), and results.json records the mapping
    (benchmark.label_map, hence the fingerprint) because it is not the identity."""
    folder = image_folder(tmp_path / "subset", {"Trouser": 2, "Sandal": 2, "Bag": 2})
    out = tmp_path / "run"
    code, _, err = cli([*random_models_overrides, *QUIET, f"data.path={folder}", "data.split=train", "gate.name=all",
                        "budgets=[4]", f"output_dir={out}"], capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["benchmark"]["label_map"] == {"Bag": 8, "Sandal": 5, "Trouser": 1}
    import pyarrow.parquet as pq

    labels = sorted(pq.read_table(out / "samples.parquet").column("label").to_pylist())
    assert labels == [1, 1, 5, 5, 8, 8]
    # what the reports name the (now model-index) labels with: the model's classes
    from sagebench.data import DataSpec, load_source
    from sagebench.data.images import EvalImages
    from sagebench.data.labels import class_names, data_label_names, resolve_label_map

    source = load_source(DataSpec(path=str(folder), split="train"))
    mapping = resolve_label_map(data_label_names(source.features["label"]), fmnist_labels(), 10)
    images = EvalImages(source, lambda img: torch.zeros(1), label_map=mapping)
    assert class_names(images)[8] == "Bag" and len(class_names(images)) == 10
    assert images.label_array().tolist() == [8, 8, 5, 5, 1, 1] and int(images[0][1]) == 8


def test_labels_in_the_model_order_need_no_mapping_and_keep_the_fingerprint(tmp_path):
    """Data whose names are the model's classes in its order (the embedded parquet, ImageNet's synsets or
    descriptions, duplicates such as 'crane' included) maps to None: labels untouched, no label_map field."""
    from sagebench.data.labels import model_label_names, resolve_label_map
    from sagebench.demo.models import FMNIST_CLASSES

    assert resolve_label_map(list(FMNIST_CLASSES), fmnist_labels(), 10, model_name="sagebench_fmnist_server") is None
    imagenet = model_label_names(timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32,
                                                   patch_size=16, depth=1))
    info = timm.data.ImageNetInfo()
    assert resolve_label_map(info.label_names(), imagenet, 1000) is None
    assert resolve_label_map(info.label_descriptions(), imagenet, 1000) is None
    # a subset of synsets (an image folder of ImageNet val) maps to their indices
    subset = resolve_label_map(["n01484850", "n01491361"], imagenet, 1000)
    assert subset.lookup.tolist() == [2, 3] and subset.describe() == {"n01484850": 2, "n01491361": 3}


def test_label_names_the_model_does_not_have_are_refused_naming_both_sides():
    """Data names that are not all among the model's classes: DataError naming the missing data names and
    some of the model's classes (before: evaluated under the wrong labels)."""
    from sagebench.data.labels import resolve_label_map

    with pytest.raises(DataError) as info:
        resolve_label_map(["cat", "dog", "Bag"], fmnist_labels(), 10, model_name="sagebench_fmnist_server")
    message = str(info.value)
    assert "'cat', 'dog'" in message and "'T-shirt/top'" in message and "sagebench_fmnist_server" in message
    assert "data.label_map" in message


def test_named_data_and_a_model_without_known_classes_is_refused_unless_mapped_explicitly():
    """Named data with a trained model whose classes are unknown is refused (which output is 'cat'?);
    data.label_map (names or indices) or data.label_map=identity says it; plain int labels are taken as they are."""
    from sagebench.data.labels import resolve_label_map
    from sagebench.data.spec import DataSpec

    with pytest.raises(DataError, match="data.label_map=identity"):
        resolve_label_map(["cat", "dog"], None, 10, model_name="my_vit")
    assert resolve_label_map(["cat", "dog"], None, 10, explicit="identity") is None
    by_name = resolve_label_map(["cat", "dog"], None, 10, explicit={"cat": 3, "dog": 5})
    assert by_name.apply(np.array([0, 1, 1])).tolist() == [3, 5, 5]
    by_index = resolve_label_map(None, None, 10, explicit={0: 7, 1: 2})
    assert by_index.apply(np.array([1, 0])).tolist() == [2, 7]
    with pytest.raises(DataError, match="no entry in data.label_map"):
        by_index.apply(np.array([0, 4]))
    with pytest.raises(DataError, match="gives no model index"):
        resolve_label_map(["cat", "dog"], None, 10, explicit={"cat": 3})
    assert resolve_label_map(None, None, 10) is None  # plain ints: today's behaviour
    assert DataSpec(label_map={"cat": 3}).label_map == {"cat": 3}
    with pytest.raises(DataError):
        DataSpec(label_map={"cat": -1})


def test_nested_image_folders_take_the_outer_folder_name(tmp_path):
    """cat/sub0/x.png is labelled 'cat' (datasets alone labels it 'sub0', or gives no label at all when the
    depths differ); a stream of such a folder is refused."""
    from sagebench.data import DataSpec, load_source

    root = image_folder(tmp_path / "nested", {"cat": 3, "dog": 2}, nested=True)
    ds = load_source(DataSpec(path=str(root)))
    assert ds.features["label"].names == ["cat", "dog"]
    assert sorted(ds["label"]) == [0, 0, 0, 1, 1]
    gray(99).save(root / "dog" / "flat.png")  # mixed depths
    ds = load_source(DataSpec(path=str(root)))
    assert ds.features["label"].names == ["cat", "dog"] and sorted(ds["label"]) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(DataError, match="nested below their class folders"):
        load_source(DataSpec(path=str(root), streaming=True))


# --------------------------------------------------------------------------- 2. data.name and data.path


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


def test_benchmark_dataset_names_what_was_read(tmp_path):
    """benchmark.dataset is the local file's name when a path was read (before: the name, even when the
    path was what load_source read)."""
    from types import SimpleNamespace

    from sagebench.data import DataSpec
    from sagebench.sweep.build import benchmark_fields

    path = tmp_path / "local.parquet"
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": [gray(0)], "label": [0]}, features=feats).to_parquet(str(path))
    sweep = SimpleNamespace(
        data=DataSpec(name="ILSVRC/imagenet-1k", path=str(path)), num_patches=49, server=SimpleNamespace(grid=(7, 7)),
        edge_spec=SimpleNamespace(name="e"), server_spec=SimpleNamespace(name="s"), edge_weights="w",
        server_weights="w", cfg=SimpleNamespace(model=SimpleNamespace(edge=SimpleNamespace(attention="last_layer")),
                                                gate=SimpleNamespace(name="all")),
        preprocessing={}, threshold=None, codec=SimpleNamespace(is_raw=True), budget_unit="patches", label_map=None)
    assert benchmark_fields(sweep, 1, 0)["dataset"] == "local.parquet"


# --------------------------------------------------------------------------- 3. no class token


def test_an_edge_vit_without_a_class_token_is_refused_naming_it():
    """A ViT without a class token (num_prefix_tokens 0, global_pool avg) or one pooling instead of reading
    it: ModelLoadError naming the model and why (the edge attention is the class token's)."""
    from timm.models.vision_transformer import VisionTransformer

    from sagebench.edge.model import EdgeModel

    gap = timm.create_model("vit_medium_patch16_gap_256", pretrained=False)
    with pytest.raises(ModelLoadError, match="'vit_medium_patch16_gap_256' has no class token"):
        EdgeModel(gap)
    tiny = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=10,
                             class_token=False, global_pool="avg")
    with pytest.raises(ModelLoadError, match="class token"):
        EdgeModel(tiny)
    pooled = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=10,
                               global_pool="avg")
    with pytest.raises(ModelLoadError, match="global_pool='avg'"):
        EdgeModel(pooled)


# --------------------------------------------------------------------------- 4. non-finite numbers


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_gate_threshold_is_refused(value):
    """gate.threshold=nan/inf was accepted (a NaN threshold offloads nothing); now a ConfigError."""
    from sagebench.config import load_config

    with pytest.raises(ConfigError, match="gate.threshold must be a finite number"):
        load_config(None, [f"gate.threshold={value}"])


def test_a_channel_with_non_finite_numbers_is_refused(tmp_path):
    """uplink_kbps / rtt_ms of .nan or .inf (in a channel file, or a Channel built directly) is refused."""
    from sagebench.transmission.channels import Channel, load_channel

    for rate, rtt in ((".nan", "20"), (".inf", "20"), ("1000", ".nan"), ("1000", ".inf")):
        path = tmp_path / "odd.yaml"
        path.write_text(f"name: odd\nuplink_kbps: {rate}\nrtt_ms: {rtt}\nsource: test\n")
        with pytest.raises(ConfigError, match="finite"):
            load_channel(str(path))
    with pytest.raises(ConfigError, match="finite"):
        Channel("x", "x", uplink_kbps=float("inf"), rtt_ms=10.0, source="test")


# --------------------------------------------------------------------------- 5. SIGTERM


@pytest.mark.slow
def test_sigterm_keeps_the_finished_images_and_exits_143(tmp_path):
    """`timeout -s TERM` used to end a run with status 0 and no results; now the finished images are flushed
    to partial/, the exit status is 143 and the message says to resume with resume=true."""
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("SAGEBENCH_RUN_ID", None)
    proc = subprocess.Popen([sys.executable, "-m", "sagebench.cli", "eval", "data.limit=3000", "batch_size=100",
                             "flush_seconds=0", f"output_dir={out}", *QUIET], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list((out / "partial").glob("rank*.npz")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no chunk written in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "resume=true" in err, err
    assert list((out / "partial").glob("rank*.npz"))
    assert not (out / "results.json").exists()


def test_sigint_and_sigterm_map_to_130_and_143(monkeypatch, capsys):
    """main() exits 143 on SIGTERM and 130 on SIGINT, also when Lightning turns the interrupt into sys.exit(1)
    (before: a SIGTERM inside Trainer.test ended as status 0, Ctrl-C inside it as status 1)."""
    import sagebench.cli as cli_module

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return 0

    def interrupted_inside_lightning(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            sys.exit(1)  # what Lightning's _call_and_handle_interrupt does
        return 0

    class NoHandler(Exception):
        pass

    def fallback(signum, frame):  # reached only when main() installs no handler of its own
        raise NoHandler(signum)

    before = signal.signal(signal.SIGTERM, fallback)
    try:
        for func, status in ((terminated, 143), (interrupted_inside_lightning, 130)):
            monkeypatch.setattr(cli_module, "_cmd_strategies", func)
            assert main(["strategies"]) == status
        assert signal.getsignal(signal.SIGTERM) is fallback  # handlers restored
    finally:
        signal.signal(signal.SIGTERM, before)
    assert "resume=true" not in capsys.readouterr().err  # only eval runs are resumable


# --------------------------------------------------------------------------- 6. a live run in the folder


def test_a_folder_a_live_run_is_writing_is_refused_before_any_model_work(tmp_path):
    """precheck refuses a folder whose partial/.lock is held by another run, naming its pid (before: found
    only once the sweep's callback tried the lock, after the models were built)."""
    from sagebench.runtime.files import FileLock
    from sagebench.sweep import resume

    out = tmp_path / "run"
    lock = FileLock(out / "partial" / ".lock", timeout=0).acquire()
    try:
        with pytest.raises(ConfigError, match=rf"Another sagebench run \(pid {os.getpid()}\) is writing to"):
            resume.precheck(out, resume=True)
    finally:
        lock.release()
    resume.precheck(out, resume=True)  # free again


def test_results_json_of_another_run_is_never_replaced(tmp_path):
    """write_run refuses when results.json appeared while this run ran, or its lock is no longer held,
    and leaves the other run's results.json as it was."""
    from sagebench.runtime.files import FileLock
    from sagebench.sweep.evaluate import write_run
    from sagebench.sweep.partial import PartialResults

    out = tmp_path / "run"
    partial = PartialResults(out, {}, resume=False, flush_seconds=0, num_columns=3)
    partial._lock = FileLock(out / "partial" / ".lock", timeout=0).acquire()
    try:
        assert partial.holds_lock()
        (out / "results.json").write_text('{"other": true}')
        with pytest.raises(ConfigError, match="never replaces another run's results"):
            write_run(out, None, None, {}, partial)
        assert json.loads((out / "results.json").read_text()) == {"other": True}
        (out / "results.json").unlink()
        (out / "partial" / ".lock").unlink()  # the folder was taken over: the lock file is not ours any more
        (out / "partial" / ".lock").write_text("")
        assert not partial.holds_lock()
        with pytest.raises(ConfigError, match="no longer this run's"):
            write_run(out, None, None, {}, partial)
        assert not (out / "results.json").exists()
    finally:
        partial.release()


# --------------------------------------------------------------------------- 7. trainer options


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


# --------------------------------------------------------------------------- 8. shapes found up front


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


def test_a_model_without_a_classifier_head_is_refused():
    """num_classes=0 (a feature extractor) is refused naming the model (before: argmax over features)."""
    from sagebench.server.model import ServerModel

    with pytest.raises(ModelLoadError, match="no classifier head"):
        ServerModel(timm.create_model("sagebench_fmnist_server", pretrained=False, num_classes=0))


# --------------------------------------------------------------------------- 9. small things


@pytest.mark.parametrize("seed", ["-5", str(2**32)])
def test_a_seed_outside_the_generators_range_is_a_config_error(seed):
    """seed=-5 or seed>=2**32 raised a ValueError from seed_everything (a traceback); now a ConfigError."""
    from sagebench.config import load_config

    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 2\*\*32 - 1\]"):
        load_config(None, [f"seed={seed}"])


def test_a_zero_row_parquet_is_a_data_error_naming_the_file(tmp_path):
    """A parquet file with no rows made datasets raise 'Instruction train corresponds to no data' (a traceback)."""
    from sagebench.data import DataSpec, load_source

    path = tmp_path / "empty.parquet"
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": [], "label": []}, features=feats).to_parquet(str(path))
    with pytest.raises(DataError, match=f"{path}.*no rows"):
        load_source(DataSpec(path=str(path)))


def test_a_file_named_partial_in_the_output_folder_is_a_config_error(tmp_path):
    """A file named partial where the finished images go is refused by precheck, saying what it is."""
    from sagebench.sweep import resume

    (tmp_path / "partial").write_text("mine")
    with pytest.raises(ConfigError, match="partial is a file"):
        resume.precheck(tmp_path, resume=False)


def test_a_checkpoint_directory_and_a_wrong_shape_checkpoint_say_what_is_wrong(tmp_path, random_demo_checkpoints):
    """A directory as checkpoint said 'does not exist'; a wrong-shape tensor gave only torch's first line. Now:
    'is a directory, not a weights file', and the tensor's name with both shapes."""
    from safetensors.torch import load_file, save_file

    from sagebench.models.loading import ModelSpec, create_model, read_state_dict

    with pytest.raises(ModelLoadError, match="is a directory, not a weights file"):
        read_state_dict(tmp_path)
    state = load_file(random_demo_checkpoints["server"])
    state["head.weight"] = state["head.weight"][:5].contiguous()
    state["head.bias"] = state["head.bias"][:5].contiguous()
    path = tmp_path / "wrong.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelLoadError) as info:
        create_model(ModelSpec("sagebench_fmnist_server", checkpoint=str(path)))
    message = str(info.value)
    assert "does not fit model 'sagebench_fmnist_server'" in message
    assert "head.weight: checkpoint [5, 64] vs model [10, 64]" in message and "head.bias" in message


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


def test_a_changed_strategy_option_is_named_in_the_resume_message():
    """key_differences cut the whole strategies list at 120 characters, hiding the option that changed; now
    the differing sub-key is its own line."""
    from sagebench.sweep.resume import key_differences

    def key(prefilter):
        return {"strategies": [{"label": name, "options": {"importance": "last_layer", "seed_offset": 0}}
                               for name in ("random", "uniform", "attention_prefix")]
                + [{"label": "sage", "options": {"prefilter": prefilter, "importance": "last_layer"}}],
                "budgets": [4, 8]}

    diff = key_differences(key(2.0), key(3.0))
    assert diff == ["strategies[3].options.prefilter: 2.0 before, 3.0 now"]
    assert key_differences({"budgets": [4, 12]}, {"budgets": [4, 16]}) == ["budgets: [4, 12] before, [4, 16] now"]


def test_a_leftover_results_temp_file_is_removed_when_the_folder_is_used_again(tmp_path):
    """A crash in the middle of writing results.json leaves .results.json.*.tmp; the next run removes it."""
    from sagebench.sweep import resume

    leftover = tmp_path / ".results.json.abc123.tmp"
    leftover.write_text("{half")
    other = tmp_path / "notes.txt"
    other.write_text("keep")
    resume.precheck(tmp_path, resume=False)
    assert not leftover.exists() and other.exists()


@pytest.mark.slow
def test_resume_after_a_crash_between_results_and_partial_removal_removes_partial(tmp_path, random_models_overrides,
                                                                                   capsys):
    """A finished run whose partial/ survived (crash after results.json): resume=true returns the stored
    results and removes partial/ (before: partial/ stayed for ever)."""
    out = tmp_path / "run"
    args = [*random_models_overrides, *QUIET, "data.limit=6", "budgets=[4]", "gate.name=all", f"output_dir={out}"]
    code, _, err = cli(args, capsys)
    assert code == 0, err
    (out / "partial").mkdir()
    (out / "partial" / "manifest.json").write_text("{}")
    (out / "partial" / "rank0-x-000000.npz").write_bytes(b"left over")
    for name in ("curves.png", "latency.png"):  # the crash came before the plots were drawn
        (out / name).unlink()
    code, _, err = cli([*args, "resume=true"], capsys)
    assert code == 0, err
    assert not (out / "partial").exists()
    assert (out / "results.json").is_file()
    assert (out / "curves.png").is_file() and (out / "latency.png").is_file()  # redrawn from results.json
