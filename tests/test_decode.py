"""data.decode: the tensor decoders against PIL (the reference), their data flow and their identity.

Agreement is measured on synthetic photos of ImageNet's sizes (sagebench.data.synthetic): pixel error
after normalisation and the top-1 agreement of a random-init ViT-Tiny at 224x224 fed either path.
The CUDA decoder (nvJPEG) is tested where CUDA is (marked ``gpu``); its data flow (workers leave the
JPEG encoded, the batch is decoded when moved to the device) is tested here on the CPU.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from sagebench.data.decode import (
    EncodedBatch,
    EncodedCollate,
    TensorTransform,
    collate_for,
    decode_batch,
    decode_device,
    decoder_of,
    pil_to_uint8,
)
from sagebench.data.synthetic import jpeg_bytes, photo
from sagebench.errors import DataError

VIEW = {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": "center"}
#: one 8-bit level after normalisation, at the smallest std
LEVEL = 1 / 255 / min(VIEW["std"])


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    rng = np.random.default_rng(7)
    return [jpeg_bytes(rng) for _ in range(16)]


@pytest.fixture(scope="module")
def pil_transform():
    from sagebench.data.transforms import build_transform

    return build_transform(VIEW)


def pil_input(pil_transform, raw: bytes) -> torch.Tensor:
    """What data.decode=pil yields for an encoded row (datasets' decoder, then timm's transform)."""
    import datasets

    from sagebench.data.transforms import to_model_mode

    return pil_transform(to_model_mode(datasets.Image().decode_example({"bytes": raw, "path": None}), 3))


def test_the_synthetic_photos_have_imagenet_shapes(jpegs):
    sizes = [Image.open(io.BytesIO(raw)).size for raw in jpegs]
    assert all(240 <= min(s) <= 500 and max(s) / min(s) <= 16 / 9 + 0.01 for s in sizes)
    assert len(set(sizes)) == len(sizes)
    assert any(w < h for w, h in sizes) and any(w > h for w, h in sizes)


def test_torchvision_decodes_jpegs_bit_identically_to_pil_on_the_cpu(jpegs):
    """Both are libjpeg-turbo with the same IDCT and upsampling: the CPU decode itself changes nothing."""
    from torchvision.io import ImageReadMode, decode_jpeg

    for raw in jpegs:
        ours = decode_jpeg(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=ImageReadMode.RGB)
        assert torch.equal(ours, pil_to_uint8(Image.open(io.BytesIO(raw)).convert("RGB")))


def agreement(a: list[torch.Tensor], b: list[torch.Tensor]) -> dict[str, float]:
    """Pixel error after normalisation and top-1 agreement of a random-init ViT-Tiny (224, 1000 classes)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=4).eval()
    x, y = torch.stack(a), torch.stack(b)
    with torch.no_grad():
        top_x, top_y = model(x).argmax(1), model(y).argmax(1)
    diff = (x - y).abs()
    return {"max": float(diff.max()), "mean": float(diff.mean()), "changed": float((diff > 0).float().mean()),
            "top1": float((top_x == top_y).float().mean())}


def test_the_cpu_tensor_path_agrees_with_pil_to_a_level_on_few_pixels(jpegs, pil_transform):
    """Measured (docs/performance.md): the only difference is the resize's rounding (torch's uint8
    antialiased bicubic against PIL's), one level on well under 1 % of the pixels, two at most."""
    tensor = TensorTransform(VIEW)
    ours = [tensor.decode({"bytes": raw, "path": None}, "x") for raw in jpegs]
    ref = [pil_input(pil_transform, raw) for raw in jpegs]
    got = agreement(ours, ref)
    assert 0 < got["max"] <= 2 * LEVEL + 1e-6
    assert got["changed"] < 0.01 and got["mean"] < 0.01 * LEVEL
    assert got["top1"] == 1.0


def test_everything_but_an_rgb_or_gray_jpeg_is_decoded_by_pil_as_before(pil_transform):
    """PNG (with alpha: composited on black by to_model_mode), CMYK JPEG, an image the data set already
    decoded: PIL decodes them; the tensor transform only resizes."""
    from sagebench.data.images import _decode_item, _model_input
    from sagebench.data.transforms import to_model_mode

    rng = np.random.default_rng(1)
    rgba = Image.fromarray(rng.integers(0, 256, (300, 260, 4), dtype=np.uint8), "RGBA")
    png, cmyk = io.BytesIO(), io.BytesIO()
    rgba.save(png, "PNG")
    photo(rng, 260, 300).convert("CMYK").save(cmyk, "JPEG")
    tensor = TensorTransform(VIEW)
    for value in ({"bytes": png.getvalue(), "path": None}, {"bytes": cmyk.getvalue(), "path": None}, rgba):
        assert tensor.decode(value, "x") is None  # not for torchvision's decoder
        img = _decode_item(tensor, value, None, "x")
        assert isinstance(img, Image.Image)
        expected = tensor.view.finish(pil_to_uint8(to_model_mode(img, 3)))
        assert torch.equal(_model_input(tensor, img, 3), expected)
    composited = _model_input(tensor, _decode_item(tensor, {"bytes": png.getvalue(), "path": None}, None, "x"), 3)
    assert (composited - pil_transform(to_model_mode(rgba, 3))).abs().max() <= 2 * LEVEL + 1e-6


def test_an_image_feature_with_its_own_mode_is_decoded_by_pil_as_the_data_set_would():
    """datasets.Image(mode="L") converts on decode: the tensor decoder does not skip that conversion."""
    import datasets

    from sagebench.data.images import _decode_item

    raw = jpeg_bytes(np.random.default_rng(6))
    tensor = TensorTransform(VIEW)
    assert isinstance(_decode_item(tensor, {"bytes": raw, "path": None}, datasets.Image(), "x"), torch.Tensor)
    img = _decode_item(tensor, {"bytes": raw, "path": None}, datasets.Image(mode="L"), "x")
    assert isinstance(img, Image.Image) and img.mode == "L"


def test_a_grayscale_jpeg_becomes_three_equal_channels_as_pils_conversion_makes_it(pil_transform):
    buf = io.BytesIO()
    photo(np.random.default_rng(2), 300, 400, gray=True).save(buf, "JPEG", quality=90)
    ours = TensorTransform(VIEW).decode({"bytes": buf.getvalue(), "path": None}, "x")
    pixels = ours * torch.tensor(VIEW["std"]).view(3, 1, 1) + torch.tensor(VIEW["mean"]).view(3, 1, 1)
    assert torch.allclose(pixels[0], pixels[1], atol=1e-5) and torch.allclose(pixels[1], pixels[2], atol=1e-5)
    assert (ours - pil_input(pil_transform, buf.getvalue())).abs().max() <= 2 * LEVEL + 1e-6


def test_a_row_turned_by_exif_is_turned_as_the_data_sets_decoder_turns_it(pil_transform):
    """datasets' Image feature applies the EXIF orientation of {"bytes", "path"} rows; so does the tensor path."""
    img = photo(np.random.default_rng(3), 300, 500)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    raw = buf.getvalue()
    ref = pil_input(pil_transform, raw)
    for on_device in (False, True):  # on device too: a turned JPEG is decoded in the worker
        ours = TensorTransform(VIEW, on_device=on_device).decode({"bytes": raw, "path": None}, "x")
        assert ours.shape == (3, 224, 224)
        assert (ours - ref).abs().max() <= 2 * LEVEL + 1e-6
    unturned = TensorTransform(VIEW).decode(raw, "x")  # raw bytes rows: PIL reads them unturned, so do we
    assert (unturned - ref).abs().max() > 10 * LEVEL


def test_a_corrupt_jpeg_is_a_data_error_naming_the_image():
    raw = jpeg_bytes(np.random.default_rng(4))
    broken = raw[:200] + bytes(len(raw) - 200)
    with pytest.raises(DataError, match="Image 5"):
        TensorTransform(VIEW).decode({"bytes": broken, "path": None}, "Image 5 (column 'image')")


def test_on_device_the_workers_leave_jpegs_encoded_and_the_move_decodes_them(jpegs):
    """The data flow of a CUDA run, on the CPU: workers yield the bytes, a list collate keeps them, the
    transfer decodes (here with torchvision's CPU decoder): the same input as decoding in the workers."""
    worker_side = TensorTransform(VIEW, on_device=True)
    reference = TensorTransform(VIEW)
    items = [(worker_side.decode({"bytes": raw, "path": None}, "x"), torch.tensor(k), torch.tensor(k))
             for k, raw in enumerate(jpegs[:6])]
    assert all(item[0].dim() == 1 and item[0].dtype == torch.uint8 for item in items)

    class Rows:
        transform = worker_side
        on_error = "fail"

    collate = collate_for(Rows())
    batch = collate(items)
    assert isinstance(batch[0], EncodedBatch) and len(batch[0]) == 6
    images, labels, ids = decode_batch(batch, "cpu")
    expected = torch.stack([reference.decode({"bytes": raw, "path": None}, "x") for raw in jpegs[:6]])
    assert torch.equal(images, expected)
    assert labels.tolist() == ids.tolist() == list(range(6))
    assert decode_batch((images, labels, ids), "cpu")[0] is images  # decoded batches pass through


def test_a_corrupt_jpeg_on_device_fails_or_is_skipped_as_data_on_error_says(jpegs):
    from sagebench.data.images import skipped_sample_id

    broken = torch.frombuffer(bytearray(jpegs[0][:300] + bytes(64)), dtype=torch.uint8)
    good = torch.frombuffer(bytearray(jpegs[1]), dtype=torch.uint8)
    view = TensorTransform(VIEW).view
    batch = [good, broken]
    with pytest.raises(DataError, match="Image 11"):
        decode_batch((EncodedBatch(batch, view, "fail"), torch.tensor([3, 4]), torch.tensor([10, 11])), "cpu")
    images, labels, ids = decode_batch((EncodedBatch(batch, view, "skip"), torch.tensor([3, 4]),
                                        torch.tensor([10, 11])), "cpu")
    assert labels.tolist() == [3, -1] and ids.tolist() == [10, skipped_sample_id(11)]
    assert torch.equal(images[1], torch.zeros(3, 224, 224))


def test_the_data_set_yields_tensor_decoded_rows_and_names_its_decoder(tmp_path):
    from sagebench.data.spec import DataSpec
    from sagebench.data.synthetic import jpeg_parquet
    from sagebench.sweep.build import build_dataset

    path = jpeg_parquet(tmp_path / "photos.parquet", 5, seed=3, num_classes=10)
    spec = DataSpec(path=str(path), decode="tensor")
    view = {**VIEW}
    cpu, n = build_dataset(spec, view, 10, trained=False, device_type="cpu")
    assert n == 5 and decoder_of(cpu) == "tensor:cpu"
    cuda, _ = build_dataset(spec, view, 10, trained=False, device_type="cuda")
    assert decoder_of(cuda) == "tensor:cuda" and cuda[0][0].dim() == 1  # left encoded for the device
    pil, _ = build_dataset(DataSpec(path=str(path)), view, 10, trained=False)
    assert decoder_of(pil) == "pil"
    assert (cpu[2][0] - pil[2][0]).abs().max() <= 2 * LEVEL + 1e-6
    assert cpu[2][1] == pil[2][1] and int(cpu[2][2]) == 2


@pytest.mark.parametrize("decode, device, where", [
    ("pil", "cpu", None), ("pil", "cuda", None), ("auto", "cpu", None), ("auto", "mps", None),
    ("auto", "cuda", "cuda"), ("tensor", "cpu", "cpu"), ("tensor", "cuda", "cuda")])
def test_where_each_setting_decodes(decode, device, where):
    assert decode_device(decode, device) == where


def test_a_misspelt_decoder_is_refused_with_the_choices():
    from sagebench.data.spec import DataSpec

    with pytest.raises(DataError, match="pil, tensor, auto"):
        DataSpec(decode="nvjpeg")


def test_a_view_the_tensor_path_cannot_reproduce_is_refused():
    with pytest.raises(DataError, match="data.decode=pil"):
        TensorTransform({**VIEW, "interpolation": "lanczos"})
    with pytest.raises(DataError, match="data.decode=pil"):
        TensorTransform({**VIEW, "crop_mode": "squash"})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvJPEG)")
def test_nvjpeg_agrees_with_pil_to_a_few_levels(jpegs, pil_transform):
    """The GPU decoder's IDCT and chroma upsampling differ from libjpeg-turbo's: a few levels, top-1 kept
    on nearly every image (bounds to be confirmed by the first GPU session; benchmarks/gpu_check.sh reports them)."""
    worker_side = TensorTransform(VIEW, on_device=True)
    items = [(worker_side.decode({"bytes": raw, "path": None}, "x"), torch.tensor(0), torch.tensor(k))
             for k, raw in enumerate(jpegs)]
    images, _, _ = decode_batch(EncodedCollate(worker_side.view)(items), "cuda")
    assert images.device.type == "cuda"
    got = agreement(list(images.cpu()), [pil_input(pil_transform, raw) for raw in jpegs])
    assert got["max"] <= 16 * LEVEL and got["mean"] <= 1.0 * LEVEL
    assert got["top1"] >= 0.9



@pytest.mark.slow
def test_a_sweep_records_its_decoder_and_the_device_flow_gives_the_worker_flows_records(tmp_path, monkeypatch,
                                                                                       no_figures):
    """Three runs of one sweep on synthetic JPEGs: pil, tensor decoded in the workers, and tensor left encoded
    by the workers and decoded in Lightning's move to the device (the CUDA data flow, run here on the CPU by
    declaring the device CUDA to the data set, so the decoder is torchvision's CPU one). The last two decode
    with the same decoder: their records are identical, bit for bit; each run is its own benchmark."""
    import pyarrow.parquet as pq

    from sagebench.config import load_config
    from sagebench.data.synthetic import jpeg_parquet
    from sagebench.sweep import datamodule, plan
    from sagebench.sweep.evaluate import evaluate

    data = jpeg_parquet(tmp_path / "photos.parquet", 10, seed=5)
    common = [f"data.path={data}", "data.name=null", "model.edge.name=deit_tiny_patch16_224",
              "model.edge.pretrained=false", "model.server.name=deit_tiny_patch16_224",
              "model.server.pretrained=false", "strategies=[sage]", "budgets=[32]", "gate.name=all", "batch_size=4",
              "data.num_workers=0", "logger=none", "progress=false", "trainer.accelerator=cpu"]
    runs = {}
    for name, decode in (("pil", "pil"), ("tensor", "tensor"), ("encoded", "tensor")):
        if name == "encoded":
            monkeypatch.setattr(datamodule, "device_type", lambda trainer: "cuda")
            monkeypatch.setattr(plan, "device_type", lambda trainer: "cuda")
        cfg = load_config("imagenet_deit", [*common, f"data.decode={decode}", f"output_dir={tmp_path / name}"])
        runs[name] = (evaluate(cfg), pq.read_table(tmp_path / name / "samples.parquet"))
    # resume=true on the finished run: its plan, made without a data module, names the same decoder
    again = evaluate(load_config("imagenet_deit", [*common, "data.decode=tensor", f"output_dir={tmp_path / 'encoded'}",
                                                   "resume=true"]))
    assert again["benchmark"] == runs["encoded"][0]["benchmark"]
    assert "decoder" not in runs["pil"][0]["benchmark"]
    assert runs["tensor"][0]["benchmark"]["decoder"] == "tensor:cpu"
    assert runs["encoded"][0]["benchmark"]["decoder"] == "tensor:cuda"
    assert runs["encoded"][0]["resume"]["key"]["decoder"] == "tensor:cuda"
    assert len({r[0]["benchmark"]["fingerprint"] for r in runs.values()}) == 3
    assert runs["tensor"][1].equals(runs["encoded"][1])
    # random-init logits are nearly flat: the rare one-level pixel differences flip a prediction now and then
    same = np.equal(runs["pil"][1].column("edge_pred").to_numpy(), runs["tensor"][1].column("edge_pred").to_numpy())
    assert same.mean() >= 0.8


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvJPEG, bf16)")
def test_on_cuda_the_imagenet_policy_runs_bf16_and_nvjpeg_and_says_so(tmp_path, no_figures):
    """imagenet_deit on CUDA: precision auto -> bf16-mixed, decode auto -> tensor:cuda, both in the benchmark;
    the edge predictions mostly agree with a pil run's (random-init logits are nearly flat)."""
    import pyarrow.parquet as pq

    from sagebench.config import load_config
    from sagebench.data.synthetic import jpeg_parquet
    from sagebench.sweep.evaluate import evaluate

    data = jpeg_parquet(tmp_path / "photos.parquet", 32, seed=9)
    common = [f"data.path={data}", "data.name=null", "model.edge.name=deit_tiny_patch16_224",
              "model.edge.pretrained=false", "model.server.name=deit_base_patch16_224",
              "model.server.pretrained=false", "strategies=[sage]", "budgets=[32]", "gate.name=all", "batch_size=16", "logger=none", "progress=false"]
    gpu = evaluate(load_config("imagenet_deit", [*common, f"output_dir={tmp_path / 'gpu'}"]))
    assert gpu["benchmark"]["decoder"] == "tensor:cuda" and gpu["benchmark"]["precision"] == "bf16-mixed"
    ref = evaluate(load_config("imagenet_deit", [*common, "data.decode=pil", f"output_dir={tmp_path / 'pil'}"]))
    assert "decoder" not in ref["benchmark"]
    a, b = (pq.read_table(tmp_path / n / "samples.parquet").column("edge_pred").to_numpy() for n in ("gpu", "pil"))
    assert np.mean(a == b) >= 0.8
