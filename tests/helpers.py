"""Small builders shared by tests."""

import pytest
import timm
import torch


def tiny_vit(name: str = "vit_tiny_patch16_224", seed: int = 0, **kwargs) -> torch.nn.Module:
    """A small random ViT on 32x32 images, patch 8 (a 4x4 grid)."""
    torch.manual_seed(seed)
    args = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2, num_classes=10)
    args.update(kwargs)
    return timm.create_model(name, pretrained=False, **args).eval()


@pytest.fixture(scope="module")
def one_cpu_thread():
    """The tensors in strategy tests are tiny: intra-op threads only add synchronisation (very slow
    on a busy CPU). Use with ``pytestmark = pytest.mark.usefixtures("one_cpu_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


try:
    import lightning as _L

    class RecordingCallback(_L.Callback):
        """A callback a config names by class path (tests.helpers is importable as ``helpers``)."""

        def __init__(self, tag: str = "") -> None:
            self.tag = tag
            self.batches = 0

        def on_test_batch_end(self, *args, **kwargs) -> None:
            self.batches += 1
except ImportError:  # pragma: no cover
    pass
