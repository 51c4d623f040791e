"""Edge evidence and the server's token-subset forward, on tiny random timm ViTs."""

from __future__ import annotations

import time

import pytest
import timm
import torch
from helpers import tiny_vit
from safetensors.torch import save_file

from sagebench.edge.model import EdgeModel
from sagebench.errors import ModelLoadError
from sagebench.server.model import ServerModel
from sagebench.transmission.patches import patchify, transmit
from sagebench.vit.loading import ModelSpec, create_model, read_state_dict

VARIANTS = {
    "deit (cls token)": ("vit_tiny_patch16_224", {}),
    "distilled deit (2 prefix tokens)": ("deit_tiny_distilled_patch16_224", {}),
    "no_embed_class + registers": ("vit_small_patch14_reg4_dinov2", {"patch_size": 8}),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_sending_all_patches_in_any_order_reproduces_the_plain_forward(variant):
    name, kw = VARIANTS[variant]
    vit = tiny_vit(name, **kw)
    server = ServerModel(vit)
    images = torch.randn(3, 3, 32, 32)
    patches = patchify(images, server.patch_size)
    n = patches.shape[1]
    for order in (torch.arange(n).expand(3, n), torch.stack([torch.randperm(n) for _ in range(3)])):
        with torch.no_grad():
            got = server(transmit(patches, order, server.grid))
            want = vit(images)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_server_never_sees_pixels_that_were_not_sent():
    vit = tiny_vit()
    server = ServerModel(vit)
    images = torch.randn(2, 3, 32, 32)
    chosen = torch.tensor([[0, 5, 10], [15, 3, 6]])
    changed = images.clone()
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[0, chosen[0]] = False
    mask[1, chosen[1]] = False
    p = patchify(changed, server.patch_size)
    p[mask] = torch.randn_like(p[mask]) * 100  # scramble every patch that is not sent
    with torch.no_grad():
        a = server(transmit(patchify(images, server.patch_size), chosen, server.grid))
        b = server(transmit(p, chosen, server.grid))
    torch.testing.assert_close(a, b)
    assert transmit(p, chosen, server.grid).patches.shape == (2, 3, 3, 8, 8)


def test_transmission_counts_raw_bytes_of_the_sent_patches():
    p = patchify(torch.zeros(1, 3, 32, 32), (8, 8))
    tx = transmit(p, torch.tensor([[1, 2, 3, 4, 5]]), (4, 4))
    assert tx.units == 5 and tx.raw_bytes_per_image == 5 * 3 * 8 * 8


def _reference_cls_attention(vit, images):
    """Last block's CLS attention from timm's own unfused path (attn_drop sees the probabilities)."""
    captured = {}
    attn = vit.blocks[-1].attn
    attn.fused_attn = False
    handle = attn.attn_drop.register_forward_hook(lambda m, i, o: captured.setdefault("p", o))
    with torch.no_grad():
        vit(images)
    handle.remove()
    attn.fused_attn = True
    return captured["p"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_edge_attention_is_the_last_blocks_head_mean_cls_attention(variant):
    name, kw = VARIANTS[variant]
    vit = tiny_vit(name, **kw)
    edge = EdgeModel(vit)
    images = torch.randn(4, 3, 32, 32)
    ev = edge(images, torch.arange(4))
    probs = _reference_cls_attention(vit, images)  # [b, h, t, t]
    p = vit.num_prefix_tokens
    want = probs.mean(1)[:, 0, p:]
    want = want / want.sum(-1, keepdim=True)
    torch.testing.assert_close(ev.attention, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ev.attention.sum(-1), torch.ones(4))
    with torch.no_grad():
        torch.testing.assert_close(ev.logits, vit(images))
        feats = vit.forward_features(images)
    torch.testing.assert_close(ev.embeddings, feats[:, p:])
    assert ev.grid == (4, 4) and ev.embeddings.shape == (4, 16, 32)


def test_rollout_attention_is_a_distribution_and_differs_from_last_layer():
    vit = tiny_vit(depth=3)
    images = torch.randn(2, 3, 32, 32)
    last = EdgeModel(vit, attention="last_layer")(images, torch.arange(2)).attention
    roll = EdgeModel(vit, attention="rollout")(images, torch.arange(2)).attention
    torch.testing.assert_close(roll.sum(-1), torch.ones(2))
    assert (roll >= 0).all() and not torch.allclose(roll, last)


def test_rollout_of_one_block_is_half_attention_plus_identity_renormalised():
    vit = tiny_vit(depth=1)
    images = torch.randn(2, 3, 32, 32)
    roll = EdgeModel(vit, attention="rollout")(images, torch.arange(2)).attention
    last = EdgeModel(vit, attention="last_layer")(images, torch.arange(2)).attention
    # with one block, CLS row of (A + I) over patches is A's CLS row over patches: same after renormalising
    torch.testing.assert_close(roll, last, atol=1e-6, rtol=1e-5)


def test_checkpoint_loads_strictly_from_safetensors_and_state_dict(tmp_path):
    vit = tiny_vit(seed=1)
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(st))
    pth = tmp_path / "w.pth"
    torch.save({"state_dict": vit.state_dict()}, pth)
    kwargs = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2, num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    for path in (st, pth):
        loaded = create_model(ModelSpec("vit_tiny_patch16_224", checkpoint=str(path), kwargs=kwargs))
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), vit(x))
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_wrong_architecture_missing_and_truncated_checkpoints_are_refused(tmp_path):
    vit = tiny_vit()
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(st))
    wrong = dict(img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2, num_classes=10)
    with pytest.raises(ModelLoadError, match="does not fit"):
        create_model(ModelSpec("vit_tiny_patch16_224", checkpoint=str(st), kwargs=wrong))
    with pytest.raises(ModelLoadError, match="does not exist"):
        create_model(ModelSpec("vit_tiny_patch16_224", checkpoint=str(tmp_path / "nope.pth")))
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(st.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="could not be read"):
        read_state_dict(truncated)


class _Evil:
    pass


def test_a_checkpoint_that_needs_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": _Evil()}, path)
    with pytest.raises(ModelLoadError, match="pickle"):
        read_state_dict(path)


def test_pretrained_offline_without_cache_fails_fast_with_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-sagebench-cache")
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        create_model(ModelSpec("deit_tiny_patch16_224.fb_in1k", pretrained=True))
    assert time.monotonic() - t0 < 10
    assert "checkpoint=PATH" in str(err.value) and "deit_tiny_patch16_224" in str(err.value)


def test_unknown_timm_model_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="Unknown timm model"):
        create_model(ModelSpec("deit_tinyy_patch16_224"))


def test_shipped_demo_models_load_through_timm_pretrained_config():
    import timm

    edge = create_model(ModelSpec("sagebench_fmnist_edge", pretrained=True))
    server = create_model(ModelSpec("sagebench_fmnist_server", pretrained=True))
    assert EdgeModel(edge).grid == ServerModel(server).grid == (7, 7)
    cfg = timm.data.resolve_data_config({}, model=server)
    assert cfg["input_size"] == (1, 28, 28)


def test_edge_and_server_with_other_normalisations_see_the_same_crop(tmp_path):
    """A pair whose mean/std differ is accepted: the edge renormalises the server-normalised crop to its own
    statistics (equal to normalising the pixels directly), and real geometry differences are still refused."""
    from sagebench.data.spec import DataSpec
    from sagebench.errors import ConfigError
    from sagebench.sweep.build import check_same_view, edge_input_map, resolve_view

    edge_vit = tiny_vit(seed=1)
    server_vit = tiny_vit(seed=2)
    edge_vit.pretrained_cfg = {**edge_vit.pretrained_cfg, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    server_vit.pretrained_cfg = {**server_vit.pretrained_cfg, "mean": (0.485, 0.456, 0.406),
                                 "std": (0.229, 0.224, 0.225)}
    edge, server = EdgeModel(edge_vit), ServerModel(server_vit)
    spec = DataSpec()
    view = resolve_view(spec, edge, server)
    mapped = edge_input_map(spec, edge, view)
    assert mapped.input_map is not None
    pixels = torch.rand(3, 3, 32, 32)
    server_in = (pixels - torch.tensor(view["mean"]).view(1, 3, 1, 1)) / torch.tensor(view["std"]).view(1, 3, 1, 1)
    edge_in = (pixels - 0.5) / 0.5
    got = mapped(server_in, torch.arange(3)).logits
    want = EdgeModel(edge_vit)(edge_in, torch.arange(3)).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert edge_input_map(spec, edge, resolve_view(spec, edge, EdgeModel(edge_vit))) is edge  # same stats: as is
    with pytest.raises(ConfigError, match="different crops"):
        check_same_view({"crop_pct": 0.875}, {"crop_pct": 1.0}, edge, server)


def test_timm_forms_of_weights_work_offline(tmp_path, monkeypatch):
    """``pretrained_cfg_overlay={'file': PATH}`` loads a local file with no network; an ``hf-hub:`` name is a
    timm model name (offline and uncached it says how to get the weights, not 'Unknown timm model')."""
    from safetensors.torch import save_file

    from sagebench.errors import ModelLoadError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    arch = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2, num_classes=10)
    source = tiny_vit(seed=5, **{k: v for k, v in arch.items()})
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = create_model(ModelSpec("vit_tiny_patch16_224", pretrained=True,
                                   kwargs={**arch, "pretrained_cfg_overlay": {"file": str(path), "num_classes": 10}}))
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    with pytest.raises(ModelLoadError, match="not in the local cache"):
        create_model(ModelSpec("hf-hub:timm/deit_tiny_patch16_224.fb_in1k", pretrained=True))
    with pytest.raises(ModelLoadError, match="does not exist"):
        create_model(ModelSpec("vit_tiny_patch16_224", pretrained=True,
                               kwargs={**arch, "pretrained_cfg_overlay": {"file": str(tmp_path / "none.safetensors")}}))


# -- models that cannot serve, and checkpoints that do not fit ------------------------------------


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


def test_a_model_without_a_classifier_head_is_refused():
    """num_classes=0 (a feature extractor) is refused naming the model (before: argmax over features)."""
    from sagebench.server.model import ServerModel

    with pytest.raises(ModelLoadError, match="no classifier head"):
        ServerModel(timm.create_model("sagebench_fmnist_server", pretrained=False, num_classes=0))


def test_a_checkpoint_directory_and_a_wrong_shape_checkpoint_say_what_is_wrong(tmp_path, random_demo_checkpoints):
    """A directory as checkpoint said 'does not exist'; a wrong-shape tensor gave only torch's first line. Now:
    'is a directory, not a weights file', and the tensor's name with both shapes."""
    from safetensors.torch import load_file, save_file

    from sagebench.vit.loading import ModelSpec, create_model, read_state_dict

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


def test_the_edge_package_resolves_its_names_on_first_use():
    """``sagebench.edge.EdgeModel`` etc. load their module when first read (importing a strategy does not
    build the model stack); an unknown name is an AttributeError naming it."""
    import sagebench.edge as edge
    from sagebench.edge.evidence import EdgeEvidence

    assert edge.EdgeModel is EdgeModel and edge.EdgeEvidence is EdgeEvidence
    assert set(edge.__all__) == {"ATTENTION_KINDS", "EdgeEvidence", "EdgeModel", "ROLLOUT_KINDS"}
    with pytest.raises(AttributeError, match="'sagebench.edge' has no attribute 'EdgeModle'"):
        edge.EdgeModle

