"""What sagebench needs to know about a timm ViT, in one place.

Both edge and server are timm ``VisionTransformer``-like models: ``patch_embed`` (a conv with
kernel = stride = patch size), ``_pos_embed``, ``norm_pre``, ``blocks``, ``norm`` and
``forward_head``. Distilled DeiT (two prefix tokens), register tokens and ``no_embed_class``
models are covered because positions come from the model's own ``_pos_embed``.
"""

from __future__ import annotations

import torch
from torch import nn

from sagebench.errors import ModelLoadError

_REQUIRED = ("patch_embed", "_pos_embed", "norm_pre", "blocks", "norm", "forward_head")


def model_name(model: nn.Module) -> str:
    """The timm name of ``model`` (its pretrained config's architecture), else its class name."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture") if isinstance(cfg, dict) else None
    return str(name or type(model).__name__)


def check_vit(model: nn.Module, role: str) -> None:
    """Refuse models that are not timm ViTs with a plain patch grid and a classifier head."""
    missing = [a for a in _REQUIRED if not hasattr(model, a)]
    if missing:
        raise ModelLoadError(f"The {role} model {type(model).__name__} is not a timm VisionTransformer "
                             f"(missing {', '.join(missing)}); sagebench composes ViT patch tokens.")
    if getattr(model, "dynamic_img_size", False):
        raise ModelLoadError(f"The {role} model uses dynamic_img_size, which sagebench does not support; "
                             "create it without dynamic_img_size.")
    if getattr(model, "num_classes", None) == 0:
        raise ModelLoadError(f"The {role} model {model_name(model)!r} has no classifier head (num_classes=0): "
                             "sagebench compares its class predictions. Use a classification model, or give the "
                             f"head's size with model.{role}.kwargs.num_classes=N.")


def check_class_token(model: nn.Module, role: str) -> None:
    """Refuse a ViT that does not classify from a class token (the edge's attention is that token's)."""
    has_token = getattr(model, "cls_token", None) is not None and num_prefix_tokens(model) > 0
    pool = getattr(model, "global_pool", "token")
    if has_token and pool == "token":
        return
    why = ("has no class token (num_prefix_tokens=0)" if not has_token
           else f"pools its output with global_pool={pool!r} instead of reading its class token")
    raise ModelLoadError(f"The {role} model {model_name(model)!r} {why}: the {role} attention sagebench ranks "
                         "patches by is the class token's attention over the patches, so the model must classify "
                         "from its class token (global_pool='token'), as ViT and DeiT do (e.g. deit_tiny_patch16_224).")


def patch_size(model: nn.Module) -> tuple[int, int]:
    return tuple(int(p) for p in model.patch_embed.patch_size)  # type: ignore[return-value]


def grid_size(model: nn.Module) -> tuple[int, int]:
    return tuple(int(g) for g in model.patch_embed.grid_size)  # type: ignore[return-value]


def num_prefix_tokens(model: nn.Module) -> int:
    return int(getattr(model, "num_prefix_tokens", 1))


def prefix_and_positions(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's prefix tokens (with their positions, if any) ``[1, P, D]`` and patch positions ``[N, D]``.

    Obtained by running ``_pos_embed`` on all-zero patch tokens: whatever the model's layout
    (class token, distillation token, register tokens, ``no_embed_class``), the output's prefix
    is exactly what the model prepends and the rest is exactly what it adds to each patch.
    """
    n = grid_size(model)[0] * grid_size(model)[1]
    dim = model.embed_dim
    ref = next(model.parameters())
    was_training = model.training
    model.eval()  # no dropout on positions
    with torch.no_grad():
        out = model._pos_embed(torch.zeros(1, n, dim, device=ref.device, dtype=ref.dtype))
    model.train(was_training)
    p = out.shape[1] - n
    if p != num_prefix_tokens(model):
        raise ModelLoadError(f"unexpected token layout in {type(model).__name__}: {p} prefix tokens, "
                             f"num_prefix_tokens={num_prefix_tokens(model)}")
    return out[:, :p].clone(), out[0, p:].clone()


def head_mean_cls_attention(attn: nn.Module, x: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """CLS -> patch attention ``[b, N]`` of one timm ``Attention`` module on input ``x``, head-averaged.

    Computed explicitly from the ``qkv`` projection because fused attention does not return
    its weights. Renormalised over the patches so each row sums to 1.
    """
    b, t, c = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(b, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    q, k = attn.q_norm(q), attn.k_norm(k)
    logits = (q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)  # [b, h, 1, t]
    probs = logits.float().softmax(dim=-1).mean(dim=1)[:, 0]  # [b, t]
    patch = probs[:, num_prefix:]
    return patch / patch.sum(dim=-1, keepdim=True)


def head_attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """All-token attention ``[b, heads, t, t]`` of one block, per head, in float32 (for rollout)."""
    b, t, c = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(b, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return ((q * attn.scale) @ k.transpose(-2, -1)).float().softmax(dim=-1)


def full_attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """All-token attention ``[b, t, t]`` of one block, averaged over heads (for rollout)."""
    return head_attention(attn, x).mean(dim=1)
