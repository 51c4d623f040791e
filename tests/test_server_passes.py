"""One server forward per budget across the strategies (issue 26): the same records as a forward per cell.

Why: concatenating the distinct patch sets of every strategy at a budget into one batch changes
which rows sit beside each other in the server's matmuls, never a row's own tokens; these tests
hold the records (predictions, request bytes) to bit equality against the per-cell path
(:meth:`ServerPasses.send`), with and without dedupe, and count the forwards of a run.
"""

from __future__ import annotations

import pytest
import timm
import torch

import sagebench.demo.models  # noqa: F401
from sagebench.server.model import ServerModel
from sagebench.server.passes import ServerPasses
from sagebench.sweep.records import predictions
from sagebench.transmission.patches import patchify


def _server(name: str, **kwargs) -> ServerModel:
    torch.manual_seed(3)
    return ServerModel(timm.create_model(name, pretrained=False, **kwargs).eval())


def _selections(n: int, num_patches: int, budget: int, cells: int) -> list[torch.Tensor]:
    """Random selections, with sets repeated across cells (other orders of the same set included)."""
    g = torch.Generator().manual_seed(0)
    out = [torch.stack([torch.randperm(num_patches, generator=g)[:budget] for _ in range(n)]) for _ in range(cells)]
    out[1][::2] = out[0][::2].flip(1)  # every other image: cell 1 sends cell 0's set, in another order
    out[3] = out[2].clone()  # cell 3 sends cell 2's sets for every image
    return out


@pytest.mark.parametrize("name,kwargs,size", [("sagebench_fmnist_server", {}, 28),
                                              ("deit_tiny_patch16_224", {"img_size": 64, "depth": 2}, 64)])
@pytest.mark.parametrize("dedupe", [True, False])
def test_one_forward_per_budget_gives_the_per_cell_predictions_bit_for_bit(name, kwargs, size, dedupe):
    server = _server(name, **kwargs)
    channels = server.vit.patch_embed.proj.in_channels
    images = torch.randn(9, channels, size, size, generator=torch.Generator().manual_seed(1))
    patches = patchify(images, server.patch_size)
    num_patches = server.grid[0] * server.grid[1]
    with torch.inference_mode():
        for budget in (1, 3, num_patches):
            cells = _selections(images.shape[0], num_patches, budget, 5)
            per_cell = ServerPasses(server, patches, dedupe=dedupe, predict=predictions)
            expected = [per_cell.send(ix) for ix in cells]
            batched = ServerPasses(server, patches, dedupe=dedupe, predict=predictions)
            got = batched.send_cells(cells)
            for (p, s), (q, t) in zip(expected, got):
                assert torch.equal(p, q) and torch.equal(s, t)
            # the raw logits of a row: equal up to the last bits (the BLAS kernel for a matmul of few rows may sum
            # in another order for another row count: docs/performance.md, "One server forward per budget")
            canon = torch.cat([torch.sort(ix, dim=1).values for ix in cells])
            rows = torch.arange(images.shape[0]).repeat(len(cells))
            together = batched.forward(canon, rows)
            for k, ix in enumerate(cells):
                alone = batched.forward(ix)
                assert torch.allclose(together[k * images.shape[0]:(k + 1) * images.shape[0]], alone, atol=1e-5,
                                      rtol=0)
            assert batched.forwards == 1 and per_cell.forwards == (1 if dedupe and budget == num_patches else 4 + (not dedupe))
            assert batched.images_run + batched.images_reused == len(cells) * images.shape[0]
            assert (batched.images_run, batched.images_reused) == (per_cell.images_run, per_cell.images_reused)
            if dedupe:  # cell 3 repeats cell 2, cell 1 repeats cell 0 on every other image (and chance repeats)
                assert batched.images_reused >= images.shape[0] + (images.shape[0] + 1) // 2


@pytest.mark.usefixtures("no_figures")
def test_a_run_sends_one_server_forward_per_budget(tmp_path):
    from sagebench.config import load_config
    from sagebench.sweep.evaluate import evaluate

    res = evaluate(load_config("fmnist", ["data.limit=40", "batch_size=40", "gate.name=all", "budgets=[4,8,12]",
                                          "strategies=[random,uniform,attention_prefix,sage]", "logger=none",
                                          "progress=false", "data.num_workers=0", "profile=true",
                                          f"output_dir={tmp_path / 'r'}"]))
    passes = res["timing"]["server_passes"]
    assert passes["forwards"] == 3  # one server batch (40 images), three budgets, four strategies each
    assert passes["images_run"] + passes["images_reused"] == 40 * 4 * 3
    assert {"server/B4", "server/B8", "server/B12"} <= set(res["timing"]["phases"])
