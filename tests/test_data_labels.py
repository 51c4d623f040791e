"""Labels by name (``sagebench.data.labels``): a data set's class names become the model's indices.

A folder or parquet whose classes are named is evaluated under the model's indices of those names
(the mapping is part of the benchmark's identity when it is not the identity); names the model does
not have, or a model whose classes are unknown, are refused with what to set. Image folders are
labelled by their outer folder. Data and models are made here (random-init demo architectures).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from helpers import small_world  # noqa: F401  (autouse: one thread, tmp datasets cache)
from PIL import Image

from sagebench.cli import main
from sagebench.errors import DataError

QUIET = ["logger=none", "progress=false", "data.num_workers=0"]


def cli(args, capsys):
    code = main(["eval", *args])
    out, err = capsys.readouterr()
    return code, out, err


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


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
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
