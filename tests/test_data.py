"""sagebench.data.images: loading, preprocessing and indexing of the evaluation images.

All data is made here, in tmp_path: 7 tiny RGB images with ClassLabel labels 0, 1, 2, 0, 1, 2, 0
(image ``i`` is filled with the value ``10 * i``), as parquet, as a save_to_disk directory and as
an image folder. No network is used.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from sagebench.data import (
    DataSpec,
    EvalImages,
    StreamingEvalImages,
    UnrepeatedSampler,
    build_transform,
    check_labels,
    dataset_fingerprint_fields,
    load_source,
    resolve_data_config,
    to_model_mode,
)
from sagebench.errors import DataError

N = 7
CLASSES = ["cat", "dog", "fox"]
FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})


def make_dataset(n: int = N) -> datasets.Dataset:
    images = [Image.fromarray(np.full((10, 12, 3), 10 * i, np.uint8)) for i in range(n)]
    return datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(n)]}, features=FEATURES)


@pytest.fixture(autouse=True)
def _hf_cache_in_tmp(tmp_path, monkeypatch):
    """Keep datasets' arrow cache out of the home directory."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def parquet_file(tmp_path) -> Path:
    path = tmp_path / "val.parquet"
    make_dataset().to_parquet(str(path))
    return path


@pytest.fixture
def arrow_dir(tmp_path) -> Path:
    path = tmp_path / "arrow"
    datasets.DatasetDict({"train": make_dataset(3), "validation": make_dataset()}).save_to_disk(str(path))
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    root = tmp_path / "folder"
    for i in range(N):
        cls = root / CLASSES[i % 3]
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((10, 12, 3), 10 * i, np.uint8)).save(cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    timm = pytest.importorskip("timm")
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=16, depth=1)


def identity_transform(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


# --- load_source -------------------------------------------------------------------------------


def test_parquet_file_loads_map_style_with_its_features(parquet_file):
    ds = load_source(DataSpec(path=str(parquet_file)))
    assert isinstance(ds, datasets.Dataset)
    assert len(ds) == N
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["label"].names == CLASSES


def test_parquet_glob_and_parquet_directory_load(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    make_dataset().select(range(4)).to_parquet(str(shards / "part-0.parquet"))
    make_dataset().select(range(4, N)).to_parquet(str(shards / "part-1.parquet"))
    assert len(load_source(DataSpec(path=str(shards / "part-*.parquet")))) == N
    assert len(load_source(DataSpec(path=str(shards)))) == N


def test_parquet_directory_with_hub_style_split_files_takes_the_split(tmp_path):
    snapshot = tmp_path / "snapshot" / "data"
    snapshot.mkdir(parents=True)
    make_dataset(3).to_parquet(str(snapshot / "train-00000-of-00001.parquet"))
    make_dataset().to_parquet(str(snapshot / "validation-00000-of-00001.parquet"))
    assert len(load_source(DataSpec(path=str(snapshot.parent), split="validation"))) == N
    assert len(load_source(DataSpec(path=str(snapshot.parent), split="train"))) == 3


def test_arrow_dir_takes_the_requested_split(arrow_dir):
    assert len(load_source(DataSpec(path=str(arrow_dir), split="validation"))) == N
    assert len(load_source(DataSpec(path=str(arrow_dir), split="train"))) == 3
    with pytest.raises(DataError, match="validation"):
        load_source(DataSpec(path=str(arrow_dir), split="test"))


def test_image_folder_labels_come_from_class_subfolders(image_folder):
    ds = load_source(DataSpec(path=str(image_folder)))
    assert len(ds) == N
    assert ds.features["label"].names == CLASSES


def test_path_takes_precedence_over_name(parquet_file):
    assert len(load_source(DataSpec(name="ILSVRC/imagenet-1k", path=str(parquet_file)))) == N


def test_streaming_returns_an_iterable_dataset(parquet_file, arrow_dir):
    for path in (parquet_file, arrow_dir):
        ds = load_source(DataSpec(path=str(path), streaming=True))
        assert isinstance(ds, datasets.IterableDataset)
        assert sum(1 for _ in ds) == N


def test_missing_path_says_how_to_point_data_path(tmp_path):
    missing = tmp_path / "nowhere.parquet"
    with pytest.raises(DataError) as err:
        load_source(DataSpec(path=str(missing)))
    assert str(missing) in str(err.value) and "data.path" in str(err.value)
    assert "parquet" in str(err.value) and "image folder" in str(err.value)


def test_neither_name_nor_path_is_a_data_error():
    with pytest.raises(DataError, match="data.name"):
        load_source(DataSpec())


def test_offline_hub_fails_at_once_with_login_and_local_copy_advice(monkeypatch):
    import huggingface_hub.constants

    # The libraries read these variables when imported; here they are set afterwards, as a
    # launcher or notebook might, and must still make the call fail at once.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_source(DataSpec(name="ILSVRC/imagenet-1k"))
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "huggingface-cli login" in message and "data.path" in message
    assert "https://huggingface.co/datasets/ILSVRC/imagenet-1k" in message
    assert "OfflineModeIsEnabled" in message or "offline" in message.lower()  # the original error
    # The libraries' own offline flags are left as they were.
    assert (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE) == (False, False)


def test_a_zero_row_parquet_is_a_data_error_naming_the_file(tmp_path):
    """A parquet file with no rows made datasets raise 'Instruction train corresponds to no data' (a traceback)."""
    from sagebench.data import DataSpec, load_source

    path = tmp_path / "empty.parquet"
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": [], "label": []}, features=feats).to_parquet(str(path))
    with pytest.raises(DataError, match=f"{path}.*no rows"):
        load_source(DataSpec(path=str(path)))


# --- limit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -3, 2.5, True, "5"])
def test_limit_must_be_a_positive_int(limit):
    with pytest.raises(DataError, match="data.limit"):
        DataSpec(path="x.parquet", limit=limit)
    spec = DataSpec()
    spec.limit = limit  # set after construction: checked again where it is used
    with pytest.raises(DataError, match="data.limit"):
        EvalImages(make_dataset(), identity_transform, spec)


def test_limit_keeps_the_first_images_by_index():
    ds = make_dataset()
    assert len(EvalImages(ds, identity_transform, DataSpec(limit=3))) == 3
    assert len(EvalImages(ds, identity_transform, DataSpec(limit=100))) == N
    limited = EvalImages(ds, identity_transform, DataSpec(limit=3))
    assert [int(limited[i][2]) for i in range(3)] == [0, 1, 2]
    with pytest.raises(IndexError):
        limited[3]


# --- EvalImages ------------------------------------------------------------------------------------


def test_eval_images_yields_image_label_and_sample_id(parquet_file):
    images = EvalImages(load_source(DataSpec(path=str(parquet_file))), identity_transform)
    assert len(images) == N
    for i in range(N):
        x, label, sample_id = images[i]
        assert x.shape == (3, 10, 12) and int(x.max()) == 10 * i
        assert label.dtype == torch.int64 and int(label) == i % 3
        assert sample_id.dtype == torch.int64 and int(sample_id) == i


def test_eval_images_works_in_a_dataloader(image_folder):
    images = EvalImages(load_source(DataSpec(path=str(image_folder))), identity_transform)
    ids = torch.cat([batch[2] for batch in torch.utils.data.DataLoader(images, batch_size=3)])
    assert ids.tolist() == list(range(N))


def test_eval_images_decodes_lazily():
    rows = {"image": [{"bytes": b"not an image", "path": None}] * 2, "label": [0, 1]}
    ds = datasets.Dataset.from_dict(rows, features=FEATURES)
    images = EvalImages(ds, identity_transform)  # constructing decodes nothing
    with pytest.raises(DataError, match="Image 1"):
        images[1]


def test_missing_columns_are_named_at_construction():
    ds = make_dataset().rename_column("label", "fine_label")
    with pytest.raises(DataError) as err:
        EvalImages(ds, identity_transform)
    assert "'label'" in str(err.value) and "fine_label" in str(err.value) and "data.label_column" in str(err.value)
    with pytest.raises(DataError, match="'img'"):
        EvalImages(make_dataset(), identity_transform, DataSpec(image_column="img"))
    assert len(EvalImages(ds, identity_transform, DataSpec(label_column="fine_label"))) == N


def test_string_labels_are_rejected_at_construction():
    ds = make_dataset().cast_column("label", datasets.Value("string"))
    with pytest.raises(DataError, match="integer"):
        EvalImages(ds, identity_transform)


def test_check_labels_flags_labels_outside_the_model_classes():
    ds = make_dataset()
    check_labels(ds, 3)
    with pytest.raises(DataError, match=r"outside \[0, 2\)"):
        check_labels(ds, 2)
    check_labels(EvalImages(ds, identity_transform, DataSpec(limit=2)), 2)  # only the evaluated images
    with pytest.raises(DataError, match="-1"):
        check_labels(torch.tensor([0, -1, 1]), 3)
    check_labels([0, 1, 2], 3)
    with pytest.raises(TypeError, match="stream"):  # labels of a stream cannot be read up front
        check_labels(StreamingEvalImages(_stream(), identity_transform), 3)


# --- to_model_mode ----------------------------------------------------------------------------------


def _img(mode: str, value) -> Image.Image:
    return Image.new(mode, (4, 3), value)


@pytest.mark.parametrize(
    ("img", "rgb", "gray"),
    [
        (_img("RGB", (200, 100, 0)), (200, 100, 0), 118),
        (_img("L", 77), (77, 77, 77), 77),
        (_img("1", 1), (255, 255, 255), 255),
        (_img("LA", (200, 255)), (200, 200, 200), 200),
        (_img("LA", (200, 0)), (0, 0, 0), 0),  # transparent -> black
        (_img("RGBA", (255, 0, 0, 0)), (0, 0, 0), 0),  # transparent red -> black
        (_img("RGBA", (200, 100, 0, 255)), (200, 100, 0), 118),
        (_img("CMYK", (0, 0, 0, 0)), (255, 255, 255), 255),
        (_img("CMYK", (0, 0, 0, 255)), (0, 0, 0), 0),
        (Image.fromarray(np.full((3, 4), 65535, np.uint16)), (255, 255, 255), 255),  # "I;16"
        (Image.fromarray(np.full((3, 4), 257 * 100, np.uint16)), (100, 100, 100), 100),
        (Image.fromarray(np.full((3, 4), 65535, np.int32)), (255, 255, 255), 255),  # "I"
    ],
    ids=lambda v: getattr(v, "mode", None),
)
def test_to_model_mode_converts_every_mode(img, rgb, gray):
    out = to_model_mode(img, 3)
    assert out.mode == "RGB" and np.asarray(out).shape == (3, 4, 3)
    assert tuple(np.asarray(out)[0, 0]) == rgb
    out = to_model_mode(img, 1)
    assert out.mode == "L" and np.asarray(out).shape == (3, 4)
    assert int(np.asarray(out)[0, 0]) == pytest.approx(gray, abs=1)


def test_to_model_mode_makes_transparent_palette_pixels_black():
    img = Image.new("P", (2, 1), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 0  # palette entry 0 (red) is transparent
    assert np.asarray(to_model_mode(img, 3)).tolist() == [[[0, 0, 0], [0, 255, 0]]]


def test_a_float_image_is_read_as_0_to_1_intensities_not_as_an_all_black_image():
    """Mode "F" (a float TIFF) of 0..1 values became all black through Pillow's conversion, and was counted."""
    img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert img.mode == "F"
    assert np.asarray(to_model_mode(img, 1)).tolist() == [[0, 128, 255]]
    assert np.asarray(to_model_mode(img, 3))[0, 1].tolist() == [128, 128, 128]
    wide = Image.fromarray(np.array([[0.0, 77.0, 255.0]], np.float32))  # already on the 8-bit scale
    assert np.asarray(to_model_mode(wide, 1)).tolist() == [[0, 77, 255]]


@pytest.mark.parametrize("values", [[-1.0, 0.5], [0.0, 300.0], [float("nan"), 0.5]])
def test_a_float_image_without_an_8_bit_reading_is_refused(values):
    with pytest.raises(DataError, match="mode 'F'"):
        to_model_mode(Image.fromarray(np.array([values], np.float32)), 3)


def test_sixteen_bit_values_are_scaled_not_clipped():
    img = Image.fromarray(np.array([[0, 255, 256 * 128, 65535]], np.uint16))
    assert np.asarray(to_model_mode(img, 1)).tolist() == [[0, 0, 128, 255]]


# --- distributed indexing ------------------------------------------------------------------------


def test_unrepeated_sampler_covers_each_index_once():
    parts = [list(UnrepeatedSampler(N, num_replicas=2, rank=r)) for r in range(2)]
    assert parts == [[0, 2, 4, 6], [1, 3, 5]]
    assert [len(UnrepeatedSampler(list(range(N)), num_replicas=2, rank=r)) for r in range(2)] == [4, 3]
    assert list(UnrepeatedSampler(N)) == list(range(N))  # no process group: rank 0 of 1


def _stream(n: int = N) -> datasets.IterableDataset:
    return make_dataset(n).to_iterable_dataset(num_shards=2)


def _ids(stream: StreamingEvalImages) -> list[int]:
    return [int(sample_id) for _, _, sample_id in stream]


def test_streaming_eval_images_splits_among_ranks_without_repeats():
    parts = [_ids(StreamingEvalImages(_stream(), identity_transform, rank=r, world_size=2)) for r in range(2)]
    assert parts == [[0, 2, 4, 6], [1, 3, 5]]
    x, label, sample_id = next(iter(StreamingEvalImages(_stream(), identity_transform, rank=1, world_size=2)))
    assert x.shape == (3, 10, 12) and int(x.max()) == 10 and int(label) == 1 and int(sample_id) == 1


def test_streaming_eval_images_stops_at_limit_and_splits_among_workers(monkeypatch):
    from types import SimpleNamespace

    seen = []
    for worker in range(2):
        info = SimpleNamespace(id=worker, num_workers=2, seed=0, dataset=None)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        for rank in range(2):
            stream = StreamingEvalImages(_stream(), identity_transform, DataSpec(limit=6), rank=rank, world_size=2)
            seen += _ids(stream)
    assert sorted(seen) == list(range(6))


def test_streaming_eval_images_checks_columns_at_construction():
    with pytest.raises(DataError, match="fine_label"):
        StreamingEvalImages(_stream(), identity_transform, DataSpec(label_column="fine_label"))


# --- data config and transform ----------------------------------------------------------------------


def test_resolve_data_config_applies_the_overrides(tiny_model):
    base = resolve_data_config(tiny_model, DataSpec())
    assert base["input_size"] == (3, 224, 224)
    spec = DataSpec(
        crop_pct=1.0, interpolation="bilinear", mean=[0.1, 0.2, 0.3], std=[0.4, 0.5, 0.6], input_size=[3, 32, 32]
    )
    config = resolve_data_config(tiny_model, spec)
    assert config["crop_pct"] == 1.0 and config["interpolation"] == "bilinear"
    assert config["mean"] == (0.1, 0.2, 0.3) and config["std"] == (0.4, 0.5, 0.6)
    assert config["input_size"] == (3, 32, 32)
    x = build_transform(config)(Image.new("RGB", (50, 40), (10, 20, 30)))
    assert tuple(x.shape) == (3, 32, 32)


def test_grayscale_input_size_needs_one_mean_and_std(tiny_model):
    with pytest.raises(DataError, match="data.mean"):
        resolve_data_config(tiny_model, DataSpec(input_size=(1, 24, 24)))
    config = resolve_data_config(tiny_model, DataSpec(input_size=(1, 24, 24), mean=(0.5,), std=(0.5,)))
    images = EvalImages(make_dataset(), build_transform(config), DataSpec(), config)
    assert tuple(images[0][0].shape) == (1, 24, 24)
    stream = StreamingEvalImages(_stream(), build_transform(config), DataSpec(), config)
    assert tuple(next(iter(stream))[0].shape) == (1, 24, 24)


def test_bad_overrides_are_data_errors(tiny_model):
    with pytest.raises(DataError, match="interpolation"):
        resolve_data_config(tiny_model, DataSpec(interpolation="cubic-ish"))
    with pytest.raises(DataError, match="crop_pct"):
        resolve_data_config(tiny_model, DataSpec(crop_pct=1.5))


# --- fingerprint ----------------------------------------------------------------------------------------


def test_fingerprint_of_a_parquet_file_hashes_its_bytes(parquet_file):
    fields = dataset_fingerprint_fields(DataSpec(path=str(parquet_file), limit=5), 5)
    assert fields["name"] == "val.parquet" and fields["split"] == "validation" and fields["num_images"] == 5
    assert fields["size_bytes"] == parquet_file.stat().st_size
    assert fields["content_hash"] == "sha256:" + hashlib.sha256(parquet_file.read_bytes()).hexdigest()
    make_dataset(3).to_parquet(str(parquet_file))
    assert dataset_fingerprint_fields(DataSpec(path=str(parquet_file)), 5)["content_hash"] != fields["content_hash"]


def test_fingerprint_of_a_directory_lists_names_and_sizes(image_folder, arrow_dir):
    first = dataset_fingerprint_fields(DataSpec(path=str(image_folder)), N)
    assert first["name"] == "folder" and first["content_hash"].startswith("listing-sha256:")
    assert first == dataset_fingerprint_fields(DataSpec(path=str(image_folder)), N)
    (image_folder / "cat" / "extra.png").write_bytes((image_folder / "cat" / "0.png").read_bytes())
    assert dataset_fingerprint_fields(DataSpec(path=str(image_folder)), N)["content_hash"] != first["content_hash"]
    assert dataset_fingerprint_fields(DataSpec(path=str(arrow_dir)), N)["name"] == "arrow"


def test_fingerprint_of_a_hub_data_set_is_its_name_split_and_revision():
    fields = dataset_fingerprint_fields(DataSpec(name="ILSVRC/imagenet-1k", revision="abc"), 50000)
    assert fields == {
        "name": "ILSVRC/imagenet-1k", "split": "validation", "revision": "abc", "num_images": 50000,
        "size_bytes": None, "content_hash": None,
    }


def test_hub_loading_passes_the_subset_data_files_and_a_token_from_the_environment(monkeypatch):
    """data.config_name, data.data_files and data.token_env reach datasets.load_dataset; the token is read
    from the environment and appears in no fingerprint field (so never in results.json)."""
    import datasets

    from sagebench.data import dataset_fingerprint_fields

    seen = {}

    def fake(path, **kwargs):
        seen.update(path=path, **kwargs)
        return "loaded"

    monkeypatch.setattr(datasets, "load_dataset", fake)
    monkeypatch.setenv("MY_HF_TOKEN", "hf_secret")
    spec = DataSpec(name="org/set", split="test", config_name="mini", data_files={"test": ["a.parquet"]},
                    token_env="MY_HF_TOKEN")
    assert load_source(spec) == "loaded"
    assert seen["path"] == "org/set" and seen["name"] == "mini"  # load_dataset(path, name=<configuration>)
    assert seen["data_files"] == {"test": ["a.parquet"]} and seen["token"] == "hf_secret"
    fields = dataset_fingerprint_fields(spec, 10)
    assert fields["config_name"] == "mini" and "hf_secret" not in str(fields)
    monkeypatch.delenv("MY_HF_TOKEN")
    with pytest.raises(DataError, match="MY_HF_TOKEN"):
        load_source(spec)


def test_a_local_image_folder_is_read_without_hub_wording(tmp_path, capfd):
    """A local folder printed datasets' "Downloading data" bar (its download manager reads local files too);
    now one sagebench line says what is read, and datasets' bars are on again afterwards."""
    for c in CLASSES[:2]:
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(40):  # enough files for datasets to show its bar
            Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    datasets.enable_progress_bars()
    ds = load_source(DataSpec(path=str(tmp_path / "imgs"), split="validation"))
    assert len(ds) == 80
    err = capfd.readouterr().err
    assert "Downloading" not in err and "Generating" not in err
    assert f"sagebench: info: Reading local images from {(tmp_path / 'imgs').resolve()}" in err
    assert datasets.is_progress_bar_enabled()
