"""timm registrations of the embedded benchmark's edge and server ViTs.

Both are plain timm ``VisionTransformer``s (the code path DeiT uses), patch size 4 on 28x28
grayscale images: a 7x7 grid of 49 evidence units. Registering them with timm gives them a
pretrained config like any timm model: ``timm.create_model("sagebench_fmnist_server",
pretrained=True)`` loads the weights shipped inside the package, and ``resolve_data_config``
returns the Fashion-MNIST preprocessing (no resize, no crop, the data set's mean/std).
"""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from sagebench.demo import (
    CIFAR10_EDGE_WEIGHTS,
    CIFAR10_SERVER_WEIGHTS,
    EDGE_WEIGHTS,
    SERVER_WEIGHTS,
)
from sagebench.demo.cifar10 import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD  # noqa: F401

FMNIST_MEAN = (0.2860,)
FMNIST_STD = (0.3530,)
FMNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

EDGE_ARCH = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=48, depth=4, num_heads=3)
SERVER_ARCH = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=6, num_heads=4)
# CIFAR-10: patch size 4 on 32x32 RGB, an 8x8 grid of 64 evidence units. Why 4: a 2x2 grid of
# 16-pixel patches would leave no choice to make; 4-pixel patches keep the unit a small local
# region (1/64 of the image, as a 16-pixel patch is 1/196 of a 224 crop) at a CPU-trainable cost.
CIFAR10_EDGE_ARCH = dict(img_size=32, patch_size=4, in_chans=3, num_classes=10,
                         embed_dim=96, depth=4, num_heads=3, mlp_ratio=2.0)
CIFAR10_SERVER_ARCH = dict(img_size=32, patch_size=4, in_chans=3, num_classes=10,
                           embed_dim=192, depth=6, num_heads=3, mlp_ratio=2.0)


def _cfg(weights_file: str, input_size: tuple[int, int, int] = (1, 28, 28),
         mean: tuple[float, ...] = FMNIST_MEAN, std: tuple[float, ...] = FMNIST_STD) -> dict[str, Any]:
    return dict(
        file=weights_file,
        num_classes=10,
        input_size=input_size,
        pool_size=None,
        crop_pct=1.0,
        crop_mode="center",
        interpolation="bilinear",
        mean=mean,
        std=std,
        first_conv="patch_embed.proj",
        classifier="head",
        license="apache-2.0",
    )


default_cfgs = generate_default_cfgs({
    "sagebench_fmnist_edge.fmnist": _cfg(str(EDGE_WEIGHTS)),
    "sagebench_fmnist_server.fmnist": _cfg(str(SERVER_WEIGHTS)),
    "sagebench_cifar10_edge.cifar10": _cfg(str(CIFAR10_EDGE_WEIGHTS), (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD),
    "sagebench_cifar10_server.cifar10": _cfg(str(CIFAR10_SERVER_WEIGHTS), (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD),
})


def _create(variant: str, arch: dict[str, Any], pretrained: bool, **kwargs: Any) -> VisionTransformer:
    return build_model_with_cfg(
        VisionTransformer, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        **dict(arch, **kwargs),
    )


@register_model
def sagebench_fmnist_edge(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """Edge ViT of the embedded benchmark (48-dim, 4 blocks, 3 heads, ~117k parameters)."""
    return _create("sagebench_fmnist_edge", EDGE_ARCH, pretrained, **kwargs)


@register_model
def sagebench_fmnist_server(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """Server ViT of the embedded benchmark (64-dim, 6 blocks, 4 heads, ~305k parameters)."""
    return _create("sagebench_fmnist_server", SERVER_ARCH, pretrained, **kwargs)


@register_model
def sagebench_cifar10_edge(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """Edge ViT of the CIFAR-10 benchmark (96-dim, 4 blocks, 3 heads, MLP ratio 2, ~0.31M parameters)."""
    return _create("sagebench_cifar10_edge", CIFAR10_EDGE_ARCH, pretrained, **kwargs)


@register_model
def sagebench_cifar10_server(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """Server ViT of the CIFAR-10 benchmark (192-dim, 6 blocks, 3 heads, MLP ratio 2, ~1.8M parameters)."""
    return _create("sagebench_cifar10_server", CIFAR10_SERVER_ARCH, pretrained, **kwargs)
