"""The bare cost: the model forwards a sweep needs, in a plain loop (no selection, no records, no Lightning)."""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .common import autocast_ctx, sync


def prefix_positions(vit: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The ViT's prefix tokens (CLS, ...) with their positions added, and the ``[N, d]`` patch positions."""
    n = vit.patch_embed.num_patches
    out = vit._pos_embed(torch.zeros(1, n, vit.embed_dim, device=vit.pos_embed.device, dtype=vit.pos_embed.dtype))
    p = out.shape[1] - n
    return out[:, :p], out[0, p:]


def flat_patches(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """``[b, C, H, W]`` -> ``[b, N, C * ph * pw]``: raster-order patches, as the server's projection reads them."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * ph * pw)


def bare_server_tokens(vit: Any, flat: torch.Tensor, budget: int, prefix: torch.Tensor,
                       positions: torch.Tensor) -> torch.Tensor:
    """One server forward on ``budget`` patch tokens: embed, add positions, prefix, blocks, head."""
    proj = vit.patch_embed.proj
    tok = F.linear(flat[:, :budget], proj.weight.flatten(1), proj.bias)
    tok = vit.patch_embed.norm(tok) + positions[:budget]
    x = torch.cat([prefix.expand(tok.shape[0], -1, -1).to(tok.dtype), tok], dim=1)
    x = vit.norm(vit.blocks(vit.norm_pre(x)))
    return vit.forward_head(x)


def bare_selected_tokens(vit: Any, flat: torch.Tensor, indices: torch.Tensor, prefix: torch.Tensor,
                         positions: torch.Tensor) -> torch.Tensor:
    """One server forward on the patches ``indices [b, B]`` of each image: gather, embed, positions, blocks, head."""
    proj = vit.patch_embed.proj
    picked = flat.gather(1, indices.unsqueeze(-1).expand(-1, -1, flat.shape[-1]))
    tok = vit.patch_embed.norm(F.linear(picked, proj.weight.flatten(1), proj.bias)) + positions[indices]
    x = torch.cat([prefix.expand(tok.shape[0], -1, -1).to(tok.dtype), tok], dim=1)
    return vit.forward_head(vit.norm(vit.blocks(vit.norm_pre(x))))


def token_passes(server: Any, budgets: list[int], num_strategies: int) -> Callable[[torch.Tensor], None]:
    """``run(x)``: one server forward per (strategy, budget) on that many of ``x``'s patches (a contiguous slice)."""
    prefix, positions = prefix_positions(server)
    ph, pw = server.patch_embed.patch_size

    def run(x: torch.Tensor) -> None:
        flat = flat_patches(x, ph, pw)
        for _ in range(num_strategies):
            for budget in budgets:
                bare_server_tokens(server, flat, budget, prefix, positions)

    return run


def every_image(edge: Any, server: Any, batches: list[torch.Tensor], device: torch.device,
                passes: Callable[[torch.Tensor], None]) -> float:
    """Gate ``all``: edge, ceiling and token passes on every image; returns the seconds of the ceiling forwards."""
    in_loop = 0.0
    for host in batches:
        x = host.to(device, non_blocking=True)
        edge(x)
        tc = time.perf_counter()
        server(x)  # ceiling
        in_loop += time.perf_counter() - tc
        passes(x)
    return in_loop


def offloaded_only(edge: Any, server: Any, batches: list[torch.Tensor], device: torch.device,
                   passes: Callable[[torch.Tensor], None], threshold: float, server_batch: int) -> None:
    """Gate ``min_entropy``: the offloaded images' ceiling and token passes, in batches of at least
    ``server_batch`` images, as the sweep's queue serves them."""
    waiting: list[torch.Tensor] = []

    def serve() -> None:
        x = torch.cat(waiting)
        server(x)  # ceiling
        passes(x)

    for host in batches:
        x = host.to(device, non_blocking=True)
        p = torch.softmax(edge(x).float(), dim=-1).amax(dim=-1)
        waiting.append(x[-torch.log2(p) > threshold])
        if sum(len(w) for w in waiting) >= server_batch:
            serve()
            waiting = []
    if waiting and sum(len(w) for w in waiting):
        serve()


def bare_loop(args: argparse.Namespace, edge: Any, server: Any, batches: list[torch.Tensor], budgets: list[int],
              num_strategies: int) -> dict[str, float | None]:
    """Seconds of the whole plain loop, and of its ceiling forwards alone in a separate loop."""
    from sagebench.runtime.speed import cpu_seconds

    device = torch.device(args.device)
    passes = token_passes(server, budgets, num_strategies)
    # the offloaded images go to the server in batches of at least this many, as the sweep's queue does
    server_batch = getattr(args, "server_batch_size", None) or (len(batches[0]) if batches else 1)
    with torch.inference_mode(), autocast_ctx(args):
        sync(args)
        t0, c0 = time.perf_counter(), cpu_seconds()
        in_loop = 0.0  # the ceiling forwards where the sweep runs them, after each edge forward (gate all)
        if getattr(args, "gate", "all") == "all":
            in_loop = every_image(edge, server, batches, device, passes)
        else:
            offloaded_only(edge, server, batches, device, passes, args.threshold, server_batch)
        sync(args)
        total, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        t0 = time.perf_counter()
        for host in batches:
            server(host.to(device, non_blocking=True))
        sync(args)
        ceiling = time.perf_counter() - t0
    return {"bare": total, "bare_cpu": cpu, "timm_ceiling": ceiling,
            "bare_ceiling": in_loop if args.device == "cpu" else None}


def offloaded_groups(args: argparse.Namespace, edge: Any, x: torch.Tensor, job: dict) -> list[tuple[torch.Tensor, Any]]:
    """The offloaded images' pixels and edge evidence, grouped as the sweep's queue serves them (a server batch
    when at least ``server_batch_size`` are waiting)."""
    from sagebench.edge.evidence import EdgeEvidence
    from sagebench.gates import get_gate

    gate_options = {} if job["threshold"] is None else {"threshold": job["threshold"]}
    gate, device, bs = get_gate(job["gate"], **gate_options), torch.device(args.device), job["batch_size"]
    groups, waiting, queued = [], [], 0
    with torch.inference_mode(), autocast_ctx(args):
        for i in range(0, len(x), bs):
            xb = x[i:i + bs].to(device)
            evidence = edge(xb, torch.arange(i, i + len(xb), device=device), job["seed"])
            sent = gate.decide(evidence).nonzero().squeeze(1)
            if sent.numel():
                waiting.append((xb[sent], evidence.subset(sent)))
                queued += sent.numel()
            if waiting and (queued >= job["server_batch_size"] or i + bs >= len(x)):
                groups.append((torch.cat([w[0] for w in waiting]), EdgeEvidence.cat([w[1] for w in waiting])))
                waiting, queued = [], 0
    return groups


def bare_selections(args: argparse.Namespace, strategy: Any, server: Any, groups: list[tuple[torch.Tensor, Any]],
                    budgets: list[int]) -> tuple[float, float]:
    """Seconds (wall, CPU) of the strategy's selection and one server forward per budget, per server batch."""
    from sagebench.runtime.speed import cpu_seconds

    prefix, positions = prefix_positions(server)
    ph, pw = server.patch_embed.patch_size
    with torch.inference_mode(), autocast_ctx(args):
        sync(args)
        t0, c0 = time.perf_counter(), cpu_seconds()
        for x, evidence in groups:
            flat = flat_patches(x, ph, pw)
            for budget in budgets:
                bare_selected_tokens(server, flat, strategy.choose(evidence, budget).indices, prefix, positions)
        sync(args)
        return time.perf_counter() - t0, cpu_seconds() - c0
