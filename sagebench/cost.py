"""The edge's cost of choosing: an analytic operation count and a pinned single-thread timing per strategy.

Why both: a strategy that is one point better but spends ten milliseconds more on the edge device may
be the worse choice, and neither number alone says so. The operation count (multiply-accumulates,
MACs) is the same on every machine, so boards can compare it; the wall time is what the selection
costs on *this* CPU with one thread (an edge device has few cores), so it is recorded with the
hardware and marked machine-dependent.

Counting convention (as fvcore and ptflops count MACs): the multiply-accumulates of matrix and dot
products; element-wise operations, softmax, norms' square roots, sorting, comparisons and integer
hashing are not counted (their cost is in the measured time). :meth:`Strategy.selection_macs
<sagebench.strategies.base.Strategy.selection_macs>` gives a strategy's count (selection plus any
evidence beyond the edge's usual forward that it needs, e.g. attention rollout), None where no
derivation is given; :func:`edge_forward_macs` the edge ViT's own forward, for reference.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import torch

#: What results.json says the figures are.
METHOD = ("select_ms / encode_ms: median over images of the median over repeats of one image's Strategy.choose "
          "(a fresh evidence object each call: nothing shared between strategies or budgets, as on a device "
          "that sends one budget) / of packing its chosen patches into the request (8-bit pixels, plus the "
          "codec's encoding), on the CPU with torch.set_num_threads(1): machine-dependent. selection_macs: "
          "multiply-accumulates of matrix and dot products of the selection and of any evidence beyond the edge's "
          "forward that it needs (e.g. rollout); element-wise ops, sorts and comparisons are not counted: "
          "comparable across machines. null: no derivation given for that strategy.")


@dataclass(frozen=True)
class EdgeDims:
    """The edge ViT's dimensions that operation counts depend on."""

    num_patches: int  # N
    dim: int  # D, embedding width
    depth: int  # L, transformer blocks
    heads: int  # H
    num_prefix: int = 1  # class token (+ distillation, registers)
    patch_pixels: int = 0  # C * ph * pw: inputs of the patch embedding
    mlp_hidden: int = 0  # hidden width of each block's MLP (default 4 D)
    num_classes: int = 0

    @property
    def tokens(self) -> int:
        """T = N + prefix tokens."""
        return self.num_patches + self.num_prefix

    @classmethod
    def of(cls, vit: torch.nn.Module) -> EdgeDims:
        """The dimensions of a timm ``VisionTransformer``."""
        from sagebench.vit.internals import grid_size, num_prefix_tokens, patch_size

        rows, cols = grid_size(vit)
        ph, pw = patch_size(vit)
        block = vit.blocks[0]
        fc1 = getattr(getattr(block, "mlp", None), "fc1", None)
        return cls(num_patches=rows * cols, dim=int(vit.embed_dim), depth=len(vit.blocks),
                   heads=int(block.attn.num_heads), num_prefix=int(num_prefix_tokens(vit)),
                   patch_pixels=int(vit.patch_embed.proj.in_channels) * ph * pw,
                   mlp_hidden=int(fc1.out_features) if fc1 is not None else 4 * int(vit.embed_dim),
                   num_classes=int(getattr(vit, "num_classes", 0) or 0))


def edge_forward_macs(d: EdgeDims) -> int:
    """MACs of one image through the edge ViT: patch embedding, L blocks, the class head.

    Per block, with T tokens of width D and an MLP of width M: ``qkv 3TD^2 + scores T^2 D + attention x values
    T^2 D + projection TD^2 + MLP 2TDM``; the patch embedding ``N (C ph pw) D``; the head ``D x classes``.
    """
    t, dim = d.tokens, d.dim
    hidden = d.mlp_hidden or 4 * dim
    block = 3 * t * dim * dim + 2 * t * t * dim + t * dim * dim + 2 * t * dim * hidden
    return d.num_patches * d.patch_pixels * dim + d.depth * block + dim * d.num_classes


def importance_macs(kind: str, d: EdgeDims) -> int:
    """MACs of the importance map beyond the edge's forward.

    ``last_layer``: 0 (the last block's CLS attention is computed by the forward; the head mean is element-wise).
    ``rollout``: the CLS row of ``A_L ... A_1`` (heads averaged, identity added, rows renormalised: element-wise),
    carried as a row vector through the L-1 products: ``(L-1) T^2``. ``rollout_per_head``: one such chain per
    head, ``H (L-1) T^2``. (sagebench's edge computes the full matrices, T times more: the count is what the
    selection needs, not how this implementation gets it.)
    """
    chain = max(0, d.depth - 1) * d.tokens * d.tokens
    return {"last_layer": 0, "rollout": chain, "rollout_per_head": d.heads * chain}[kind]


def farthest_point_macs(budget: int, candidates: int, dim: int) -> int:
    """Cosine farthest-point sampling of ``budget`` of ``candidates`` D-dim embeddings: ``B K D``.

    The K squared norms (K D), then for each of the B-1 picks after the first its dot products with the K
    candidates ((B-1) K D): only the picks' rows of the Gram matrix are needed.
    """
    return budget * candidates * dim


def safe_macs(strategy: Any, budget: int, dims: EdgeDims) -> int | None:
    """``strategy.selection_macs``, or None when it fails (a plug-in's count never fails a run)."""
    try:
        macs = strategy.selection_macs(int(budget), dims)
    except Exception:
        return None
    return None if macs is None else int(macs)


# ------------------------------------------------------------------------------------ measuring


def hardware() -> dict[str, Any]:
    """What the timings ran on: CPU model, cores, the torch threads used."""
    import torch

    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model or platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": 1,
            "torch": torch.__version__, "machine_dependent": True}


def _cpu(evidence: Any) -> Any:
    """The evidence with every tensor on the CPU (timings are of the edge device's CPU)."""
    import dataclasses

    import torch

    moved = {}
    for f in dataclasses.fields(evidence):
        if f.init:
            value = getattr(evidence, f.name)
            moved[f.name] = value.cpu() if isinstance(value, torch.Tensor) else value
    return type(evidence)(**moved)


def _median_ms(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def measure_edge_cost(strategies: Sequence[Any], budgets: Sequence[int], evidence: Any, images: torch.Tensor,
                      patch_size: tuple[int, int], codec: Any, dims: EdgeDims, *, repeats: int = 5,
                      max_seconds: float = 20.0, budget_unit: str = "patches") -> dict[str, Any]:
    """The ``edge_cost`` block: per (strategy, budget), the median wall time of one image's selection and of
    packing its request, and the analytic MACs, beside the edge forward's.

    ``evidence``: the edge evidence of a few offloaded images (any device; timed on the CPU), ``images``
    their model input. Oracles are not timed (they need the server). Timing stops when ``max_seconds`` are
    spent; the cells left are reported with ``select_ms: null``. Byte budgets are timed at no count (their
    unit count differs per image).
    """
    import torch

    from sagebench.transmission.patches import patchify

    evidence = _cpu(evidence)
    images = images.detach().cpu()
    patches = patchify(images, patch_size)
    edge_macs = edge_forward_macs(dims)
    threads = torch.get_num_threads()
    deadline = time.perf_counter() + max_seconds
    rows, truncated = [], False
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for strategy in strategies:
                for budget in budgets:
                    macs = safe_macs(strategy, budget, dims) if budget_unit == "patches" else None
                    row = {"strategy": strategy.label, "budget": budget, "budget_unit": budget_unit,
                           "selection_macs": None if macs is None else int(macs),
                           "selection_macs_per_edge_forward": None if macs is None else macs / edge_macs,
                           "select_ms": None, "encode_ms": None}
                    if strategy.oracle:
                        row["note"] = "oracle: uses the server's evidence, not run on the edge"
                    elif budget_unit == "patches" and time.perf_counter() < deadline:
                        select, encode = [], []
                        for i in range(evidence.batch_size):
                            one = torch.tensor([i])
                            chosen = strategy.choose(evidence.subset(one), budget).indices

                            def run(i: int = i) -> None:
                                strategy.choose(evidence.subset(torch.tensor([i])), budget)

                            def pack(chosen: torch.Tensor = chosen, i: int = i) -> None:
                                sent = patches[i:i + 1, torch.sort(chosen[0]).values]  # raster order, as sent
                                if codec.is_raw:  # the request is the 8-bit pixels themselves
                                    codec.to_uint8(sent)
                                else:  # 8-bit pixels, then the codec's encoding of the mosaic
                                    codec.payload_bytes(sent, dims.num_patches)

                            select.append(_median_ms(run, repeats))
                            encode.append(_median_ms(pack, repeats))
                        row["select_ms"] = round(statistics.median(select), 4)
                        row["encode_ms"] = round(statistics.median(encode), 4)
                    elif budget_unit == "patches":
                        truncated = True
                    rows.append(row)
    finally:
        torch.set_num_threads(threads)
    return {"method": METHOD, "hardware": hardware(), "images": int(evidence.batch_size), "repeats": int(repeats),
            "truncated": truncated, "edge_model": {"macs": edge_macs, "dims": dims.__dict__.copy()},
            "cells": rows}


def offloaded_evidence(edge: Any, dataset: Any, sample_ids: Sequence[int], seed: int) -> tuple[Any, torch.Tensor]:
    """The edge evidence and model input of these images, read again from ``dataset`` (item ``i`` is
    ``(image, label, sample_id=i)``, as :class:`~sagebench.data.images.EvalImages` gives)."""
    import torch

    items = [dataset[int(i)] for i in sample_ids]
    if any(int(item[2]) != int(i) for item, i in zip(items, sample_ids)):
        raise ValueError("the data set's items are not indexed by sample id")
    images = torch.stack([item[0] for item in items])
    device = next(edge.parameters()).device
    with torch.inference_mode():
        evidence = edge(images.to(device), torch.tensor([int(i) for i in sample_ids], device=device), seed)
    return evidence, images


def edge_forward_ms(edge: Any, images: torch.Tensor, seed: int, repeats: int) -> float | None:
    """Median wall ms of the edge's forward on one image, on the CPU with one thread (None when the edge is
    not on the CPU: its time would not be the device's)."""
    import torch

    if next(edge.parameters()).device.type != "cpu":
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            one, ids = images[:1], torch.zeros(1, dtype=torch.int64)
            return round(_median_ms(lambda: edge(one, ids, seed), repeats), 4)
    finally:
        torch.set_num_threads(threads)


def add_e2e_latency(results: list[dict[str, Any]], edge_cost: dict[str, Any] | None) -> None:
    """Give each cell of ``edge_cost`` ``e2e_latency_ms: {channel: latency_ms + select_ms + encode_ms}``.

    The channel's request latency of that (strategy, budget) (its results row's ``latency_ms``,
    :func:`sagebench.transmission.channels.add_latency`) plus the edge's measured selection and encoding time;
    None where either is unknown (an oracle, a cell the timing did not reach). The edge forward and the server
    are the same for every strategy, so they are left out: the figure is what the *choice of strategy* adds.
    Kept in the ``edge_cost`` block, beside the times it is made of, not in the results rows: those hold only
    what the records determine, the same on every machine.
    """
    rows = {(r["strategy"], r["budget"]): r for r in results}
    for cell in (edge_cost or {}).get("cells") or []:
        edge_ms = (None if cell.get("select_ms") is None or cell.get("encode_ms") is None
                   else cell["select_ms"] + cell["encode_ms"])
        latency = (rows.get((cell["strategy"], cell["budget"])) or {}).get("latency_ms") or {}
        cell["e2e_latency_ms"] = {name: (None if ms is None or edge_ms is None else round(ms + edge_ms, 3))
                                  for name, ms in latency.items()}


#: The suffixes :func:`macs_text` writes, and what they multiply by (the board page sorts by them).
MAC_SUFFIXES: dict[str, float] = {"G": 1e9, "M": 1e6, "k": 1e3}


def macs_text(n: int | None) -> str:
    """``49.2k``, ``32M``: a count of MACs for a table (``?`` when unknown)."""
    if n is None:
        return "?"
    for suffix, scale in MAC_SUFFIXES.items():
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(int(n))


def format_edge_cost(results: dict[str, Any]) -> str:
    """Terminal lines: per strategy and budget, the selection's MACs and its single-thread ms, then the end-to-end
    latency on one channel (LTE when reported, else the first)."""
    block = results["edge_cost"]
    edge = block.get("edge_model") or {}
    hw = block.get("hardware") or {}
    forward = edge.get("forward_ms")
    lines = [f"edge cost of choosing per image: selection MACs (comparable) / select + encode ms on 1 CPU thread "
             f"(machine-dependent: {hw.get('cpu', '?')}); edge forward {macs_text(edge.get('macs'))} MACs"
             + ("" if forward is None else f", {forward:.2f} ms")
             + (f"; not timed: {block['skipped']}" if block.get("skipped") else "")]
    by: dict[str, list[str]] = {}
    for c in block.get("cells") or []:
        ms = "-" if c.get("select_ms") is None else f"{c['select_ms']:.2f}+{c['encode_ms']:.2f}ms"
        by.setdefault(c["strategy"], []).append(f"B={c['budget']}: {macs_text(c.get('selection_macs'))}/{ms}")
    lines += [f"{label}: " + "; ".join(cells) for label, cells in by.items()]
    channels = [name for c in block.get("cells") or [] for name in (c.get("e2e_latency_ms") or {})]
    if channels:
        channel = "lte" if "lte" in channels else channels[0]
        e2e: dict[str, list[str]] = {}
        for c in block["cells"]:
            ms = (c.get("e2e_latency_ms") or {}).get(channel)
            e2e.setdefault(c["strategy"], []).append(f"{'-' if ms is None else f'{ms:.1f}'}")
        lines.append(f"end-to-end latency ms on {channel} (request + selection + encoding), per budget: "
                     + "; ".join(f"{label}: {' '.join(v)}" for label, v in e2e.items()))
    return "\n".join(lines)
