"""Which timm ViT families sagebench runs, tested, and the README's table kept equal to this test.

Each family is built with ``pretrained=False`` at a tiny size (32x32 RGB, 2 blocks). A family that
works gives edge evidence and a server whose all-patch transmission reproduces ``model(images)``;
one that does not is refused with a clear sagebench error before any sweep.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sagebench.edge.model import EdgeModel
from sagebench.errors import SageBenchError
from sagebench.server.model import ServerModel
from sagebench.transmission.patches import patchify, transmit
from sagebench.vit.loading import ModelSpec, create_model

TINY = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2, num_classes=10)
# family -> (timm name, kwargs, works?)
FAMILIES = {
    "DeiT": ("deit_tiny_patch16_224", TINY, True),
    "distilled DeiT (2 prefix tokens)": ("deit_tiny_distilled_patch16_224", TINY, True),
    "DeiT-3": ("deit3_small_patch16_224", TINY, True),
    "AugReg ViT": ("vit_tiny_patch16_224", TINY, True),
    "CLIP ViT (pre-norm)": ("vit_base_patch16_clip_224", TINY, True),
    "ViT-B/32": ("vit_base_patch32_224", {**TINY, "patch_size": 16}, True),
    "registers + class token (DINOv2 with a head)": ("vit_small_patch14_reg4_dinov2", TINY, True),
    "non-square input": ("vit_tiny_patch16_224", {**TINY, "img_size": (32, 48)}, True),
    "DINOv2 with registers as shipped (no head)": ("vit_small_patch14_reg4_dinov2", {**TINY, "num_classes": 0}, False),
    "class-token-free ViT (global average pool)": ("vit_medium_patch16_gap_256", TINY, False),
    "EVA-02": ("eva02_tiny_patch14_224", {"img_size": 28, "patch_size": 14, "depth": 2, "num_classes": 10}, False),
    "Swin": ("swin_tiny_patch4_window7_224", {"num_classes": 10}, False),
}
README = Path(__file__).resolve().parents[1] / "README.md"


def _build(name: str, kwargs: dict) -> tuple[EdgeModel, ServerModel, torch.nn.Module]:
    torch.manual_seed(0)
    vit = create_model(ModelSpec(name, pretrained=False, kwargs=dict(kwargs)))
    return EdgeModel(vit), ServerModel(vit), vit


@pytest.mark.parametrize("family", [f for f, (_, _, ok) in FAMILIES.items() if ok])
def test_a_supported_family_gives_evidence_and_an_exact_all_patch_server(family):
    name, kwargs, _ = FAMILIES[family]
    edge, server, vit = _build(name, kwargs)
    h, w = (kwargs["img_size"], kwargs["img_size"]) if isinstance(kwargs["img_size"], int) else kwargs["img_size"]
    images = torch.randn(2, 3, h, w)
    with torch.no_grad():
        ev = edge(images, torch.arange(2))
        assert ev.attention.shape == (2, ev.num_patches) and torch.allclose(ev.attention.sum(-1), torch.ones(2))
        patches = patchify(images, server.patch_size)
        order = torch.stack([torch.randperm(patches.shape[1]) for _ in range(2)])
        torch.testing.assert_close(server(transmit(patches, order, server.grid)), vit(images), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", [f for f, (_, _, ok) in FAMILIES.items() if not ok])
def test_an_unsupported_family_is_refused_clearly(family):
    name, kwargs, _ = FAMILIES[family]
    with pytest.raises(SageBenchError) as info:
        _build(name, kwargs)
    assert name.split("_")[0] in str(info.value) or "model" in str(info.value)


def test_the_readme_table_says_what_this_test_finds():
    text = README.read_text()
    for family, (name, _, ok) in FAMILIES.items():
        row = f"| {family} | `{name}` | {'yes' if ok else 'no'} |"
        assert row in text, f"README family table lacks: {row}"
