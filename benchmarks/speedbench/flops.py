"""Model FLOPs of a sweep and the GPU's peak, for the fraction of the peak a sweep reaches."""

from __future__ import annotations

from typing import Any

#: dense bf16 tensor-core peaks (no sparsity), TFLOP/s: (model, variant, peak)
GPU_BF16_PEAK_TFLOPS = [("H100", "PCIe", 756.0), ("H100", "NVL", 835.0), ("H100", "", 989.4), ("H200", "", 989.4),
                        ("GH200", "", 989.4), ("A100", "", 312.0), ("L40S", "", 362.0), ("L4", "", 121.0),
                        ("A10", "", 125.0)]


def vit_flops(vit: Any, patch_tokens: int) -> float:
    """Multiply-add FLOPs (x2) of one forward on ``patch_tokens`` patches: embed, blocks, head."""
    d = vit.embed_dim
    t = patch_tokens + getattr(vit, "num_prefix_tokens", 1)
    proj = vit.patch_embed.proj
    flops = 2 * patch_tokens * proj.weight[0].numel() * d
    for blk in vit.blocks:
        hidden = blk.mlp.fc1.out_features
        flops += 2 * t * d * 3 * d + 2 * t * d * d + 2 * 2 * t * d * hidden + 2 * 2 * t * t * d
    return flops + 2 * d * vit.num_classes


def sweep_flops_per_image(edge: Any, server: Any, budgets: list[int], num_strategies: int) -> float:
    """Edge and ceiling forwards on all patches, plus one server forward per (strategy, budget)."""
    n = server.patch_embed.num_patches
    return vit_flops(edge, n) + vit_flops(server, n) + num_strategies * sum(vit_flops(server, b) for b in budgets)


def gpu_peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of the GPU named ``name`` (``torch.cuda.get_device_name()``), if known."""
    for model, variant, peak in GPU_BF16_PEAK_TFLOPS:
        if model in name and variant in name:
            return peak
    return None
