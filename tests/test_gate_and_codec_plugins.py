"""A gate or a codec is one class: its options reach the config, the help, the run's identity and the CLI.

Each test below adds a gate (or a codec) with an option in ONE place -- its class, registered by
name -- and follows that option everywhere a user meets it. The built-ins' identities are pinned
to the values every shipped result and leaderboard was fingerprinted with.
"""

from __future__ import annotations

import io
import json
from typing import Annotated

import pytest
import torch

from sagebench.cli import main
from sagebench.config import config_reference, load_config
from sagebench.errors import ConfigError
from sagebench.gates import Gate, get_gate, register_gate
from sagebench.plugins import CODECS, GATES
from sagebench.testing import make_evidence
from sagebench.transmission.codecs import Codec, get_codec, register_codec


@pytest.fixture()
def margin_gate():
    """A gate with one option, defined here and nowhere else."""

    @register_gate("test_top2_margin")
    class Top2Margin(Gate):
        """Offload when the edge's two most likely classes are closer than a margin."""

        def __init__(self, margin: Annotated[float, "offload when p1 - p2 < margin"] = 0.2) -> None:
            if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0.0 <= margin <= 1.0:
                raise ConfigError(f"gate.margin must be a number in [0, 1], got {margin!r}.")
            self.margin = float(margin)

        def offload(self, evidence):
            top2 = torch.softmax(evidence.logits.float(), dim=-1).topk(2, dim=-1).values
            return (top2[:, 0] - top2[:, 1]) < self.margin

    yield Top2Margin
    GATES.unregister("test_top2_margin")


@pytest.fixture()
def subsampled_jpeg():
    """A codec with two options, defined here and nowhere else."""

    @register_codec("test_jpeg_chroma")
    class ChromaJpeg(Codec):
        """JPEG with a chosen chroma subsampling."""

        def __init__(self, level: Annotated[int, "JPEG quality 1..100"] = 60,
                     subsampling: Annotated[int, "0: 4:4:4, 1: 4:2:2, 2: 4:2:0"] = 0) -> None:
            if subsampling not in (0, 1, 2):
                raise ConfigError(f"codec.subsampling must be 0, 1 or 2, got {subsampling!r}.")
            self.level, self.subsampling = int(level), int(subsampling)

        def encode(self, image):
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=self.level, subsampling=self.subsampling)
            return buf.getvalue()

    yield ChromaJpeg
    CODECS.unregister("test_jpeg_chroma")


def _plan(gate: Gate, codec: Codec):
    """A run plan with this gate and codec: its projections are the run's identities."""
    from test_plan import a_plan

    return a_plan(gate=gate.identity(), codec=codec.describe())


# --------------------------------------------------------------------------- the built-ins' identity is unchanged


def test_the_builtin_gates_and_codecs_identify_themselves_as_before():
    """These dicts are hashed into every shipped fingerprint and run key: they must not change."""
    assert get_gate("min_entropy").identity() == {"gate": "min_entropy", "threshold": 1.0}
    assert get_gate("min_entropy", threshold=0.5).identity() == {"gate": "min_entropy", "threshold": 0.5}
    assert get_gate("all").identity() == get_gate("all", threshold=0.5).identity() == {"gate": "all", "threshold": None}
    assert get_codec("raw").describe() == {"name": "raw"} and get_codec("png", quality=50).describe() == {"name": "png"}
    assert get_codec("jpeg").describe() == {"name": "jpeg", "quality": 75}
    assert get_codec("webp", quality=80).describe() == {"name": "webp", "quality": 80}
    fields = _plan(get_gate("all"), get_codec("raw")).benchmark_fields(10)
    assert (fields["gate"], fields["threshold"]) == ("all", None) and "codec" not in fields
    key = _plan(get_gate("min_entropy"), get_codec("raw")).run_key()
    assert (key["gate"], key["threshold"]) == ("min_entropy", 1.0) and "codec" not in key


def test_old_configs_with_options_the_chosen_builtin_ignores_still_load():
    cfg = load_config(None, ["gate.name=all", "gate.threshold=0.5", "codec.name=png", "codec.quality=50"])
    assert cfg.gate.threshold == 0.5 and cfg.codec.quality == 50  # kept as written, ignored by the classes
    cfg = load_config()
    assert dict(cfg.gate) == {"name": "min_entropy", "threshold": 1.0} and dict(cfg.codec) == {"name": "raw"}


# --------------------------------------------------------------------------- a gate with an option


def test_a_gate_option_reaches_the_config(margin_gate):
    cfg = load_config(None, ["gate.name=test_top2_margin", "gate.margin=0.3"])
    assert dict(cfg.gate) == {"name": "test_top2_margin", "margin": 0.3}
    assert load_config(None, ["gate.name=test_top2_margin"]).gate.margin == 0.2  # the class's default, written out
    with pytest.raises(ConfigError, match="gate 'test_top2_margin' has no option 'margn'. Did you mean 'margin'?"):
        load_config(None, ["gate.name=test_top2_margin", "gate.margn=0.3"])
    with pytest.raises(ConfigError, match="has no option 'threshold'. Its options: margin"):
        load_config(None, ["gate.name=test_top2_margin", "gate.threshold=1.0"])
    with pytest.raises(ConfigError, match=r"gate.margin must be a number in \[0, 1\]"):
        load_config(None, ["gate.name=test_top2_margin", "gate.margin=2.0"])


def test_a_gate_option_reaches_the_help_and_the_cli_listing(margin_gate, capsys):
    help_lines = [line for line in config_reference().splitlines() if line.strip().startswith("gate.margin ")]
    assert len(help_lines) == 1 and "= 0.2 " in help_lines[0]
    assert help_lines[0].endswith("offload when p1 - p2 < margin (test_top2_margin)")
    assert main(["gates", "test_*"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "test_top2_margin  Offload when the edge's two most likely classes are closer than a margin.",
        "                    margin: float = 0.2  offload when p1 - p2 < margin"]


def test_a_gate_option_reaches_the_run_identity_and_decides_from_the_evidence(margin_gate):
    gate = get_gate("test_top2_margin", margin=0.3)
    assert gate.identity() == {"gate": "test_top2_margin", "threshold": None, "margin": 0.3}
    fields = _plan(gate, get_codec("raw")).benchmark_fields(10)
    assert {k: fields[k] for k in ("gate", "threshold", "margin")} == gate.identity()
    assert _plan(gate, get_codec("raw")).run_key()["margin"] == 0.3
    assert _plan(gate, get_codec("raw")).offload_cache_key()["margin"] == 0.3
    ev = make_evidence(b=6)
    p = torch.softmax(ev.logits, -1).topk(2, -1).values
    assert torch.equal(gate.decide(ev), (p[:, 0] - p[:, 1]) < 0.3)


def test_a_gate_that_returns_a_wrong_mask_is_named():
    class Broken(Gate):
        name = "broken"

        def offload(self, evidence):
            return torch.ones(evidence.batch_size)  # float, not bool

    with pytest.raises(TypeError, match=r"gate 'broken': offload\(\) must return a bool tensor of shape \(4,\)"):
        Broken().decide(make_evidence(b=4))


# --------------------------------------------------------------------------- a codec with options


def test_codec_options_reach_the_config_help_cli_and_identity(subsampled_jpeg, capsys):
    cfg = load_config(None, ["codec.name=test_jpeg_chroma", "codec.subsampling=2"])
    assert dict(cfg.codec) == {"name": "test_jpeg_chroma", "subsampling": 2, "level": 60}
    with pytest.raises(ConfigError, match="Did you mean 'subsampling'"):
        load_config(None, ["codec.name=test_jpeg_chroma", "codec.subsampleing=2"])
    with pytest.raises(ConfigError, match="codec.subsampling must be 0, 1 or 2"):
        load_config(None, ["codec.name=test_jpeg_chroma", "codec.subsampling=3"])
    assert any(line.strip().startswith("codec.subsampling ") and line.endswith("4:2:0 (test_jpeg_chroma)")
               for line in config_reference().splitlines())
    assert main(["codecs", "test_*"]) == 0
    out = capsys.readouterr().out
    assert "JPEG with a chosen chroma subsampling." in out and "subsampling: int = 0  0: 4:4:4" in out
    codec = get_codec("test_jpeg_chroma", subsampling=2)
    assert codec.describe() == {"name": "test_jpeg_chroma", "level": 60, "subsampling": 2}
    assert _plan(get_gate("all"), codec).benchmark_fields(10)["codec"] == codec.describe()
    assert _plan(get_gate("all"), codec).run_key()["codec"] == codec.describe()


def test_a_codec_plugin_transmits_real_bytes(subsampled_jpeg):
    torch.manual_seed(0)
    patches = torch.rand(2, 4, 3, 16, 16)  # pixels in [0, 1]: normalisation mean 0, std 1
    full = get_codec("test_jpeg_chroma", subsampling=0)
    decoded, sizes_444 = full.transmit(patches, 64)
    _, sizes_420 = get_codec("test_jpeg_chroma", subsampling=2).transmit(patches, 64)
    assert decoded.shape == patches.shape and (sizes_420 < sizes_444).all()  # less chroma, fewer bytes


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_run_with_a_plugin_gate_and_codec_records_their_options(margin_gate, subsampled_jpeg,
                                                                   random_models_overrides, tmp_path):
    from sagebench.sweep.evaluate import evaluate

    res = evaluate(load_config(None, [*random_models_overrides, "data.limit=40", "budgets=[4]",
                                      "strategies=[attention_prefix]", "gate.name=test_top2_margin",
                                      "gate.margin=0.5", "codec.name=test_jpeg_chroma", f"output_dir={tmp_path}"]))
    bench = json.loads((tmp_path / "results.json").read_text())["benchmark"]
    assert (bench["gate"], bench["threshold"], bench["margin"]) == ("test_top2_margin", None, 0.5)
    assert bench["codec"] == {"name": "test_jpeg_chroma", "level": 60, "subsampling": 0}
    assert 0 < res["num_offloaded"] <= 40
    assert "margin: 0.5" in (tmp_path / "config.yaml").read_text()
