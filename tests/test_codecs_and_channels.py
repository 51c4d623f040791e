"""Real bytes on a real channel: codecs, byte budgets and uplink latency.

The spec: a codec packs the chosen patches as one mosaic plus an index map, the server
classifies the *decoded* pixels, ``bytes_sent`` is the real payload; a byte budget sends, per
image, as many patches as fit; each channel turns bytes into request latency.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from sagebench.config import load_config
from sagebench.edge.evidence import EdgeEvidence
from sagebench.errors import ConfigError
from sagebench.plugins import CHANNELS, load_channel
from sagebench.strategies import get_strategy
from sagebench.sweep.evaluate import evaluate
from sagebench.transmission.byte_budget import fill_byte_budget
from sagebench.transmission.channels import Channel
from sagebench.transmission.codecs import Codec, get_codec, index_map_bytes, mosaic_shape

MEAN, STD = (0.286,), (0.353,)


def _pixels_to_patches(pixels: np.ndarray) -> torch.Tensor:
    """uint8 ``[n, B, 1, ph, pw]`` -> model-ready (normalised) patches, as the pipeline holds them."""
    return (torch.from_numpy(pixels).float() / 255.0 - MEAN[0]) / STD[0]


def _smooth_pixels(n: int, units: int, size: int = 8, seed: int = 0) -> np.ndarray:
    """Patches of a smooth image (compressible, like a photo) in uint8."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (n, units, 1, 1, 1))
    ramp = np.add.outer(np.arange(size), np.arange(size))[None, None, None] * 3
    return np.clip(base + ramp + rng.integers(0, 6, (n, units, 1, size, size)), 0, 255).astype(np.uint8)


# -- the index map and the mosaic ------------------------------------------------------------------

def test_the_index_map_is_a_bitmap_or_a_list_whichever_is_smaller():
    assert index_map_bytes(0, 196) == 0               # nothing sent, nothing to locate
    assert index_map_bytes(1, 196) == 1               # one 8-bit position
    assert index_map_bytes(3, 196) == 3               # 3 x 8 bits
    assert index_map_bytes(96, 196) == 25             # a 196-bit bitmap beats 96 positions
    assert index_map_bytes(5, 49) == math.ceil(5 * 6 / 8)  # 6 bits per position on a 7x7 grid
    assert mosaic_shape(1) == (1, 1) and mosaic_shape(5) == (2, 3) and mosaic_shape(96) == (10, 10)


def test_raw_counts_8_bit_pixels_and_leaves_the_patches_untouched():
    patches = torch.randn(3, 5, 3, 16, 16)
    out, sizes = get_codec("raw").transmit(patches, 196)
    assert out is patches
    assert sizes.tolist() == [5 * 3 * 16 * 16] * 3


def test_png_is_lossless_on_8_bit_pixels_and_its_size_is_the_encoded_file_plus_the_index_map():
    pixels = _smooth_pixels(2, 7)
    patches = _pixels_to_patches(pixels)
    codec = get_codec("png", mean=MEAN, std=STD)
    decoded, sizes = codec.transmit(patches, 49)
    assert torch.equal(torch.from_numpy(codec.to_uint8(decoded)), torch.from_numpy(pixels))
    # the size is what Pillow writes for the mosaic, computed here independently, plus the index map
    rows, cols = mosaic_shape(7)
    canvas = np.zeros((rows * 8, cols * 8), dtype=np.uint8)
    for k in range(7):
        r, q = divmod(k, cols)
        canvas[r * 8:(r + 1) * 8, q * 8:(q + 1) * 8] = pixels[0, k, 0]
    buf = io.BytesIO()
    Image.fromarray(canvas, mode="L").save(buf, format="PNG", optimize=False)
    assert sizes[0] == len(buf.getvalue()) + index_map_bytes(7, 49)


def test_jpeg_is_lossy_and_lower_quality_sends_fewer_bytes():
    pixels = _smooth_pixels(4, 16, size=16)
    patches = _pixels_to_patches(pixels)
    high, low = get_codec("jpeg", quality=95, mean=MEAN, std=STD), get_codec("jpeg", quality=20, mean=MEAN, std=STD)
    decoded_high, bytes_high = high.transmit(patches, 196)
    decoded_low, bytes_low = low.transmit(patches, 196)
    assert (bytes_low < bytes_high).all()
    err_high = (decoded_high - patches).abs().mean()
    err_low = (decoded_low - patches).abs().mean()
    assert 0 < err_high < err_low
    assert torch.equal(high.payload_bytes(patches, 196), bytes_high)  # sizing == what transmit sends


def test_webp_round_trips_rgb_patches():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (2, 4, 3, 16, 16), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    patches = (torch.from_numpy(pixels).float() / 255 - torch.tensor(mean).view(1, 1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 1, 3, 1, 1)
    decoded, sizes = get_codec("webp", quality=80, mean=mean, std=std).transmit(patches, 196)
    assert decoded.shape == patches.shape and (sizes > index_map_bytes(4, 196)).all()


def test_unknown_codec_or_quality_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="Known codecs: jpeg, png, raw, webp"):
        get_codec("jpeg2000")
    with pytest.raises(ConfigError, match="between 1 and 100"):
        get_codec("jpeg", quality=0)


# -- byte budgets ------------------------------------------------------------------------------------

def _evidence(n: int = 6, grid=(7, 7), seed: int = 0) -> EdgeEvidence:
    g = torch.Generator().manual_seed(seed)
    num = grid[0] * grid[1]
    return EdgeEvidence(logits=torch.randn(n, 10, generator=g),
                        attention=torch.softmax(torch.randn(n, num, generator=g), -1),
                        embeddings=torch.randn(n, num, 12, generator=g), grid=grid,
                        sample_ids=torch.arange(n), seed=0)


def _payload_fn(codec: Codec, patches: torch.Tensor):
    def payload(rows, indices):
        canon = torch.sort(indices, dim=1).values
        idx = canon.reshape(*canon.shape, 1, 1, 1).expand(-1, -1, *patches.shape[2:])
        return codec.payload_bytes(torch.gather(patches[rows], 1, idx), patches.shape[1])
    return payload


@pytest.mark.parametrize("name", ["attention_prefix", "sage", "uniform", "random"])
def test_a_byte_budget_sends_the_most_patches_that_fit_and_one_more_would_not(name):
    ev = _evidence()
    patches = _pixels_to_patches(_smooth_pixels(6, 49, size=4, seed=3))
    codec = get_codec("jpeg", quality=60, mean=MEAN, std=STD)
    payload = _payload_fn(codec, patches)
    strategy = get_strategy(name)
    budget = 420
    groups = fill_byte_budget(strategy, ev, budget, payload)
    seen = sorted(int(r) for rows, _ in groups.values() for r in rows)
    assert seen == list(range(6))  # every image decided exactly once
    for units, (rows, indices) in groups.items():
        for k, r in enumerate(rows.tolist()):
            row = torch.tensor([r])
            if units:
                assert payload(row, indices[k:k + 1]).item() <= budget
                assert torch.equal(indices[k], strategy.select(ev.subset(row), units)[0])
            if units < 49:
                assert payload(row, strategy.select(ev.subset(row), units + 1)).item() > budget


def test_with_raw_bytes_a_byte_budget_is_a_fixed_patch_count_and_fills_the_priority_order():
    ev = _evidence()
    patches = torch.randn(6, 49, 1, 4, 4)
    groups = fill_byte_budget(get_strategy("attention_prefix"), ev, 16 * 10 + 15, _payload_fn(get_codec("raw"), patches))
    assert list(groups) == [10]
    rows, indices = groups[10]
    assert torch.equal(indices, torch.argsort(ev.attention[rows], dim=1, descending=True, stable=True)[:, :10])


def test_an_image_whose_first_patch_does_not_fit_sends_nothing():
    ev = _evidence(n=2)
    groups = fill_byte_budget(get_strategy("sage"), ev, 15, _payload_fn(get_codec("raw"), torch.randn(2, 49, 1, 4, 4)))
    assert list(groups) == [0] and groups[0][1].shape == (2, 0)


# -- channels --------------------------------------------------------------------------------------

def test_every_shipped_channel_has_a_rate_a_round_trip_and_a_cited_source():
    assert set(CHANNELS.names()) >= {"nb_iot", "lte_m", "lte", "nr_5g", "wifi"}
    for name in CHANNELS.names():
        ch = load_channel(name)
        assert ch.uplink_kbps > 0 and ch.rtt_ms >= 0 and len(ch.source) > 40


def test_latency_is_a_round_trip_plus_the_serialisation_time():
    ch = Channel("x", "x", uplink_kbps=1000.0, rtt_ms=15.0, source="test")
    assert ch.latency_ms(0) == 15.0
    assert ch.latency_ms(1250) == pytest.approx(15.0 + 10.0)  # 10,000 bits at 1 Mbit/s = 10 ms


def test_an_unknown_channel_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match="Did you mean 'lte_m'.*Known channels: lte, lte_m, nb_iot, nr_5g, wifi"):
        load_channel("lte-m")


def test_a_channel_with_non_finite_numbers_is_refused(tmp_path):
    """uplink_kbps / rtt_ms of .nan or .inf (in a channel file, or a Channel built directly) is refused."""
    from sagebench.plugins import load_channel
    from sagebench.transmission.channels import Channel

    for rate, rtt in ((".nan", "20"), (".inf", "20"), ("1000", ".nan"), ("1000", ".inf")):
        path = tmp_path / "odd.yaml"
        path.write_text(f"name: odd\nuplink_kbps: {rate}\nrtt_ms: {rtt}\nsource: test\n")
        with pytest.raises(ConfigError, match="finite"):
            load_channel(str(path))
    with pytest.raises(ConfigError, match="finite"):
        Channel("x", "x", uplink_kbps=float("inf"), rtt_ms=10.0, source="test")


# -- end to end on the embedded benchmark ---------------------------------------------------------

def _eval(overrides, out, extra):
    return evaluate(load_config(None, [*overrides, f"output_dir={out}", *extra]))


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_png_with_every_patch_reproduces_the_ceiling_on_8_bit_data(random_models_overrides, tmp_path):
    # Fashion-MNIST pixels are 8-bit and not resized: a lossless codec gives the server the same input
    res = _eval(random_models_overrides, tmp_path, ["data.limit=24", "gate.name=all", "budgets=[4,49]",
                                                    "strategies=[sage]", "codec.name=png"])
    table = pq.read_table(tmp_path / "samples.parquet")
    assert table.column("pred/sage/B49").to_pylist() == table.column("ceiling_pred").to_pylist()
    r4 = next(r for r in res["results"] if r["budget"] == 4)
    assert r4["bytes_sent"] != 4 * 16  # real PNG files, not the raw pixel count
    assert res["benchmark"]["codec"] == {"name": "png"}


@pytest.mark.slow
def test_a_jpeg_byte_budget_sweep_reports_units_bytes_and_latency(random_models_overrides, tmp_path):
    res = _eval(random_models_overrides, tmp_path / "a",
                ["data.limit=30", "gate.name=all", "codec.name=jpeg", "codec.quality=50",
                 "budget_bytes=[150,400,700]", "strategies=[attention_prefix,sage]", "batch_size=30"])
    assert res["transmission"]["budget_unit"] == "bytes"
    channels = {c["name"]: c for c in res["transmission"]["channels"]}
    table = pq.read_table(tmp_path / "a" / "samples.parquet")
    for r in res["results"]:
        assert r["budget_unit"] == "bytes"
        sent = np.array(table.column(f"bytes/{r['strategy']}/bytes{r['budget']}").to_pylist())
        units = np.array(table.column(f"units/{r['strategy']}/bytes{r['budget']}").to_pylist())
        assert (sent <= r["budget"]).all() and ((units == 0) == (sent == 0)).all()
        assert r["bytes_sent"] == pytest.approx(sent.mean()) and r["units_sent"] == pytest.approx(units.mean())
        for name, ms in r["latency_ms"].items():
            ch = channels[name]
            assert ms == pytest.approx(ch["rtt_ms"] + 8 * r["bytes_sent"] / ch["uplink_kbps"], abs=1e-3)
    by_budget = {r["budget"]: r["units_sent"] for r in res["results"] if r["strategy"] == "sage"}
    assert by_budget[150] <= by_budget[400] <= by_budget[700] and by_budget[700] > 0
    assert (tmp_path / "a" / "latency.png").stat().st_size > 0
    # per-image decisions: another batch size gives the same records
    _eval(random_models_overrides, tmp_path / "b",
          ["data.limit=30", "gate.name=all", "codec.name=jpeg", "codec.quality=50",
           "budget_bytes=[150,400,700]", "strategies=[attention_prefix,sage]", "batch_size=7"])
    assert table.equals(pq.read_table(tmp_path / "b" / "samples.parquet"))
    raw = json.loads((tmp_path / "a" / "results.json").read_text())["benchmark"]
    assert raw["budget_unit"] == "bytes" and raw["codec"] == {"name": "jpeg", "quality": 50}


def test_bad_byte_budgets_and_codecs_are_refused_at_the_config():
    with pytest.raises(ConfigError, match="not a positive integer number of bytes"):
        load_config(None, ["budget_bytes=[0]"])
    with pytest.raises(ConfigError, match="Known codecs"):
        load_config(None, ["codec.name=gif"])
    with pytest.raises(ConfigError, match="Known channels"):
        load_config(None, ["channels=[carrier_pigeon]"])
