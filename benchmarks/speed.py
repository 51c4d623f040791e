#!/usr/bin/env python
"""Speed benchmark: a whole sagebench sweep vs. the bare model forwards it needs, side by side.

One command, no network, no trained weights (random-init models saved to a temporary folder):

    python benchmarks/speed.py --models embedded --repeats 3
    python benchmarks/speed.py --models deit-tiny,deit --images 128 --repeats 3
    python benchmarks/speed.py --models deit --device cuda --precision bf16-mixed --batch-size 256 --images 4096

For each model pair it prints, measured in one process on the same inputs:

* sweep / bare: ``sagebench.sweep.evaluate`` (config, Trainer, DataLoader, edge with its evidence, gate,
  every strategy's selection, gathers, records, results files) against a plain loop that runs one
  edge forward per image, one ceiling forward, and for each (strategy, budget) one server forward
  on that many tokens (a contiguous slice of the patches: no selection, no gather), on the same
  image tensors, same weights, same batch size, same precision and threads. Target <= 1.10.
  ``sweep`` is ``Trainer.test`` (every per-image cost); ``wall`` adds the fixed costs of a run
  (building models and data set, hashing the data, writing results and plots).
* ceiling throughput: the sweep's ceiling pass (``profile=true`` phase times) against a plain timm
  forward loop over the same batches. Target >= 0.95.
* selection share: SAGE's selection time at the largest budget over the server time of that
  (strategy, budget) cell, and all selections over all server passes. Target < 2 %.
* edge forwards per image (must be 1; 0 on a rerun with ``cache.edge=true``) and the peak memory
  of a sweep over 1x and 4x the images (separate processes; must stay flat).

Medians over ``--repeats`` runs, sweep and bare alternating so that a change in machine load
hits both. Models: ``embedded`` (the Fashion-MNIST benchmark's two ViTs on its own shipped test
images), ``deit-tiny`` (DeiT-Tiny edge and server) and ``deit`` (DeiT-Tiny edge -> DeiT-Base
server, the paper's pair) on random 224x224 images. ``--data memory`` (the default) serves the
sweep the same decoded image tensors the bare loop uses, so that image decoding, which a real data
set pays but which is no model forward (and which the bare loop does not do), stays out of the
comparison; ``--data parquet`` makes the sweep decode them as a normal run does.

``--suite real-gate`` (issue 16) measures the default job (``sagebench eval`` with no arguments: its
strategies, budgets, batch size, gate and shipped weights, read from its config) in one run and one
table: (1) the sweep at its own gate and at gate ``all`` against the bare forwards, (2) the whole
``sagebench eval`` process against ``benchmarks/bare_default_job.py`` (the same work as a bare
script), both as subprocesses, and (3) a rerun of one new strategy (``--rerun-strategy``, default
``kdpp``) from a filled edge cache against a bare loop of that strategy's selections and server
passes over the offloaded images:

    python benchmarks/speed.py --suite real-gate --repeats 3            # all 10,000 images
    python benchmarks/speed.py --suite real-gate --images 1000 --repeats 1   # a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "--suite" in sys.argv:  # the suite measures the default job, which runs with the OpenMP wait policy that
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # `import sagebench` sets before torch loads; so do we

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

PRESETS = {
    "embedded": dict(edge="sagebench_fmnist_edge", server="sagebench_fmnist_server", budgets=[4, 8, 12, 16, 24],
                     data="embedded", images=2000, batch_size=500),
    "cifar10": dict(edge="sagebench_cifar10_edge", server="sagebench_cifar10_server", budgets=[5, 10, 16, 21, 31],
                    data="cifar10", images=2000, batch_size=500),
    "deit-tiny": dict(edge="deit_tiny_patch16_224", server="deit_tiny_patch16_224", budgets=[16, 32, 48, 64, 96],
                      data="random", images=256, batch_size=64),
    "deit": dict(edge="deit_tiny_patch16_224", server="deit_base_patch16_224", budgets=[16, 32, 48, 64, 96],
                 data="random", images=256, batch_size=64),
}
STRATEGIES = ["random", "uniform", "attention_prefix", "sage"]
# dense bf16 tensor-core peaks (no sparsity), TFLOP/s
GPU_BF16_PEAK_TFLOPS = [("H100", "PCIe", 756.0), ("H100", "NVL", 835.0), ("H100", "", 989.4), ("H200", "", 989.4),
                        ("GH200", "", 989.4), ("A100", "", 312.0), ("L40S", "", 362.0), ("L4", "", 121.0),
                        ("A10", "", 125.0)]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Setup: random-init checkpoints, data, the sagebench overrides


def make_checkpoints(folder: Path, edge_name: str, server_name: str) -> tuple[Path, Path]:
    import timm
    from safetensors.torch import save_file

    import sagebench.demo.models  # noqa: F401  (registers the embedded models)

    paths = []
    for seed, (role, name) in enumerate((("edge", edge_name), ("server", server_name))):
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False)
        path = folder / f"{role}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        paths.append(path)
    return paths[0], paths[1]


def make_random_parquet(path: Path, n: int, size: int = 224, classes: int = 1000, mode: str = "RGB") -> Path:
    """``n`` random images (``mode`` "RGB" or "L", ``size`` square) with random labels, as a parquet data set."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    # random (size/4)^2 noise blown up 4x: random content, but PNGs that encode and decode quickly
    shape = (n, size // 4, size // 4) + ((3,) if mode == "RGB" else ())
    small = rng.integers(0, 256, shape, dtype=np.uint8)
    images = [Image.fromarray(np.repeat(np.repeat(im, 4, axis=0), 4, axis=1)) for im in small]  # L or RGB by shape
    labels = [int(x) for x in rng.integers(0, classes, n)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=feats).to_parquet(str(path))
    return path


def sweep_overrides(args, preset: dict, edge_ckpt: Path, server_ckpt: Path, data_path: Path | None, images: int,
                    batch_size: int, out_dir: Path, profile: bool = False, extra: tuple[str, ...] = ()) -> list[str]:
    o = [
        f"benchmark=speed-{args.current}", f"data.limit={images}", f"batch_size={batch_size}",
        f"model.edge.name={preset['edge']}", "model.edge.pretrained=false", f"model.edge.checkpoint={edge_ckpt}",
        f"model.server.name={preset['server']}", "model.server.pretrained=false",
        f"model.server.checkpoint={server_ckpt}",
        f"strategies=[{','.join(preset.get('strategies', STRATEGIES))}]",
        f"budgets=[{','.join(map(str, preset['budgets']))}]",
        f"gate.name={getattr(args, 'gate', 'all')}", f"gate.threshold={getattr(args, 'threshold', 1.0)}",
        # all: every image offloaded, S*K+1 server passes per image; min_entropy: the gate users run
        "progress=false", "logger=none", f"output_dir={out_dir}",
        f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}", "trainer.devices=1",
        f"trainer.precision={args.precision}", f"profile={'true' if profile else 'false'}",
        f"compile={'true' if args.compile else 'false'}",
    ]
    if data_path is not None:
        o += [f"data.path={data_path}", "data.crop_pct=1.0"]  # 224 images, model size: no resize
    if args.threads:
        o.append(f"threads={args.threads}")
    if getattr(args, "server_batch_size", None):
        o.append(f"server_batch_size={args.server_batch_size}")
    if args.num_workers is not None:
        o.append(f"data.num_workers={args.num_workers}")
    return o + list(args.set or []) + list(extra)


class InMemoryImages:
    """Patches ``sagebench.data.images.EvalImages`` to serve already-decoded tensors.

    The tensors are the ones the bare loop uses, made by sagebench's own transform from the same
    data (:func:`load_inputs`), so both sides see identical inputs; everything else in
    ``evaluate`` (data set checks, fingerprint, DataLoader, collation, transfer) is unchanged.
    """

    @staticmethod
    def install(images: torch.Tensor, labels: torch.Tensor) -> None:
        from sagebench import data as data_lib

        base = getattr(data_lib.EvalImages, "_speed_base", data_lib.EvalImages)

        class Decoded(base):  # type: ignore[misc, valid-type]
            _speed_base = base

            def __getitem__(self, index):
                i = int(index)
                if not 0 <= i < min(len(self), len(images)):
                    return super().__getitem__(index)
                return images[i], labels[i], torch.tensor(i, dtype=torch.int64)

        data_lib.EvalImages = Decoded

    @staticmethod
    def uninstall() -> None:
        from sagebench import data as data_lib

        data_lib.EvalImages = getattr(data_lib.EvalImages, "_speed_base", data_lib.EvalImages)


def load_inputs(preset: dict, data_path: Path, images: int, edge_ckpt: Path, server_ckpt: Path):
    """The exact tensors and models the sweep sees: images by sagebench's own transform, the checkpoints."""
    from sagebench import data as data_lib
    from sagebench.models.loading import ModelSpec, create_model

    edge = create_model(ModelSpec(preset["edge"], checkpoint=str(edge_ckpt)))
    server = create_model(ModelSpec(preset["server"], checkpoint=str(server_ckpt)))
    shipped = preset["data"] in ("embedded", "cifar10")
    spec = data_lib.DataSpec(path=str(data_path), split="test" if shipped else "validation",
                             limit=images, crop_pct=None if shipped else 1.0)
    view = data_lib.resolve_data_config(server, spec)
    ds = data_lib.EvalImages(data_lib.load_source(spec), data_lib.build_transform(view), spec, view)
    items = [ds[i] for i in range(len(ds))]
    return edge, server, torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items])


# --------------------------------------------------------------------------------------------
# The bare cost: plain forwards in a plain loop


def _prefix_positions(vit):
    n = vit.patch_embed.num_patches
    out = vit._pos_embed(torch.zeros(1, n, vit.embed_dim, device=vit.pos_embed.device, dtype=vit.pos_embed.dtype))
    p = out.shape[1] - n
    return out[:, :p], out[0, p:]


def bare_server_tokens(vit, flat: torch.Tensor, budget: int, prefix, positions) -> torch.Tensor:
    """One server forward on ``budget`` patch tokens: embed, add positions, prefix, blocks, head."""
    proj = vit.patch_embed.proj
    tok = F.linear(flat[:, :budget], proj.weight.flatten(1), proj.bias)
    tok = vit.patch_embed.norm(tok) + positions[:budget]
    x = torch.cat([prefix.expand(tok.shape[0], -1, -1).to(tok.dtype), tok], dim=1)
    x = vit.norm(vit.blocks(vit.norm_pre(x)))
    return vit.forward_head(x)


def flat_patches(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """``[b, C, H, W]`` -> ``[b, N, C * ph * pw]``: raster-order patches, as the server's projection reads them."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * ph * pw)


def bare_selected_tokens(vit, flat: torch.Tensor, indices: torch.Tensor, prefix, positions) -> torch.Tensor:
    """One server forward on the patches ``indices [b, B]`` of each image: gather, embed, positions, blocks, head."""
    proj = vit.patch_embed.proj
    picked = flat.gather(1, indices.unsqueeze(-1).expand(-1, -1, flat.shape[-1]))
    tok = vit.patch_embed.norm(F.linear(picked, proj.weight.flatten(1), proj.bias)) + positions[indices]
    x = torch.cat([prefix.expand(tok.shape[0], -1, -1).to(tok.dtype), tok], dim=1)
    return vit.forward_head(vit.norm(vit.blocks(vit.norm_pre(x))))


def autocast_ctx(args):
    if args.precision in ("bf16-mixed", "16-mixed"):
        dtype = torch.bfloat16 if args.precision.startswith("bf16") else torch.float16
        return torch.autocast(args.device, dtype=dtype)
    return contextlib.nullcontext()


def sync(args) -> None:
    if args.device == "cuda":
        torch.cuda.synchronize()


def bare_loop(args, edge, server, batches, budgets, num_strategies: int) -> dict[str, float]:
    """Seconds of the whole plain loop, and of its ceiling forwards alone in a separate loop."""
    device = torch.device(args.device)
    prefix, positions = _prefix_positions(server)
    ph, pw = server.patch_embed.patch_size
    from sagebench.runtime.speed import cpu_seconds

    def serve(x: torch.Tensor) -> None:
        server(x)  # ceiling
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * ph * pw)
        for _ in range(num_strategies):
            for budget in budgets:
                bare_server_tokens(server, flat, budget, prefix, positions)

    real_gate = getattr(args, "gate", "all") != "all"
    # the offloaded images go to the server in batches of at least this many, as the sweep's queue does
    server_batch = getattr(args, "server_batch_size", None) or (len(batches[0]) if batches else 1)
    with torch.inference_mode(), autocast_ctx(args):
        sync(args)
        t0, c0 = time.perf_counter(), cpu_seconds()
        in_loop = 0.0  # the ceiling forwards where the sweep runs them, after each edge forward (CPU only)
        waiting: list[torch.Tensor] = []
        for host in batches:
            x = host.to(device, non_blocking=True)
            logits = edge(x)
            if real_gate:  # the offloaded images, served in full batches (server_batch_size, default a data batch)
                p = torch.softmax(logits.float(), dim=-1).amax(dim=-1)
                waiting.append(x[-torch.log2(p) > args.threshold])
                if sum(len(w) for w in waiting) >= server_batch:
                    serve(torch.cat(waiting))
                    waiting = []
                continue
            tc = time.perf_counter()
            server(x)  # ceiling
            in_loop += time.perf_counter() - tc
            b, c, h, w = x.shape
            flat = x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * ph * pw)
            for _ in range(num_strategies):
                for budget in budgets:
                    bare_server_tokens(server, flat, budget, prefix, positions)
        if waiting and sum(len(w) for w in waiting):
            serve(torch.cat(waiting))
        sync(args)
        total, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        t0 = time.perf_counter()
        for host in batches:
            server(host.to(device, non_blocking=True))
        sync(args)
        ceiling = time.perf_counter() - t0
    return {"bare": total, "bare_cpu": cpu, "timm_ceiling": ceiling,
            "bare_ceiling": in_loop if args.device == "cpu" else None}


# --------------------------------------------------------------------------------------------
# FLOPs (for the fraction of the GPU's peak)


def vit_flops(vit, patch_tokens: int) -> float:
    """Multiply-add FLOPs (x2) of one forward on ``patch_tokens`` patches: embed, blocks, head."""
    d = vit.embed_dim
    t = patch_tokens + getattr(vit, "num_prefix_tokens", 1)
    proj = vit.patch_embed.proj
    flops = 2 * patch_tokens * proj.weight[0].numel() * d
    for blk in vit.blocks:
        hidden = blk.mlp.fc1.out_features
        flops += 2 * t * d * 3 * d + 2 * t * d * d + 2 * 2 * t * d * hidden + 2 * 2 * t * t * d
    return flops + 2 * d * vit.num_classes


def sweep_flops_per_image(edge, server, budgets, num_strategies: int) -> float:
    n = server.patch_embed.num_patches
    return vit_flops(edge, n) + vit_flops(server, n) + num_strategies * sum(vit_flops(server, b) for b in budgets)


def gpu_peak_tflops(name: str) -> float | None:
    for model, variant, peak in GPU_BF16_PEAK_TFLOPS:
        if model in name and variant in name:
            return peak
    return None


# --------------------------------------------------------------------------------------------
# Memory probe (a separate process per image count)


def _proc_status_mb(*keys: str) -> dict[str, float] | None:
    """``/proc/self/status`` fields in MB (Linux), or None."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    got = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in lines if line.split(":")[0] in keys}
    return got if len(got) == len(keys) else None


class AnonSampler:
    """Samples the process's own memory (``RssAnon``) and the mapped files (``RssFile``) in a thread.

    /proc has no peak for RssAnon, so one is kept here: :attr:`peak` (MB) since start or since the
    caller last set it; :attr:`file_mb` the latest RssFile. Linux only (both stay as they are elsewhere).
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.peak = 0.0
        self.file_mb: float | None = None
        self._interval = interval_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            got = _proc_status_mb("RssAnon", "RssFile")
            if got:
                self.peak = max(self.peak, got["RssAnon"])
                self.file_mb = got["RssFile"]
            if self._done.wait(self._interval):
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def memory_probe(args) -> None:
    from sagebench.config import load_config
    from sagebench.sweep.evaluate import evaluate

    spec = json.loads(args.memprobe)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):  # Linux: restart the peak here, so that imports do not count
        Path("/proc/self/clear_refs").write_text("5")
    # RSS counts the pages of files mapped into the process too: `datasets` memory-maps the data
    # set's Arrow file, so RSS grows by the bytes of every image read (reclaimable page cache, not
    # process memory). The process's own memory is RssAnon, sampled.
    anon = AnonSampler()
    res = evaluate(load_config(None, spec["overrides"]))
    anon.stop()
    hwm = _proc_status_mb("VmHWM")  # honours the reset above; getrusage's maximum does not
    peak = hwm["VmHWM"] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"peak_rss_mb": peak, "images": res["num_images"]}
    if anon.peak:
        out["peak_anon_mb"], out["file_mapped_mb"] = anon.peak, anon.file_mb
    if args.device == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("MEMPROBE " + json.dumps(out), flush=True)


def memory_key(args, probe: dict) -> str:
    """What "flat" is judged on: GPU memory on a GPU, else the process's own memory (RssAnon) where
    Linux reports it, else RSS."""
    if args.device == "cuda":
        return "cuda_peak_mb"
    return "peak_anon_mb" if "peak_anon_mb" in probe else "peak_rss_mb"


def run_memprobe(args, overrides: list[str]) -> dict:
    """Peak memory of one sweep in a fresh process (images decoded by the DataLoader, none held)."""
    cmd = [sys.executable, __file__, "--device", args.device, "--memprobe", json.dumps({"overrides": overrides})]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("MEMPROBE "):
            return json.loads(line[len("MEMPROBE "):])
    raise RuntimeError(f"memory probe failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


# --------------------------------------------------------------------------------------------
# One model pair


def bench_pair(args, name: str, tmp: Path, preset: dict | None = None, label: str | None = None) -> dict:
    """One model pair (``PRESETS[name]``, or ``preset``), sweep vs bare; ``label`` names its folder."""
    from sagebench.config import load_config
    from sagebench.demo import DATA_FILE
    from sagebench.sweep.evaluate import evaluate

    args.current = name
    preset = dict(preset or PRESETS[name])
    strategies = list(preset.get("strategies", STRATEGIES))
    images = args.images or preset["images"]
    batch_size = args.batch_size or preset["batch_size"]
    folder = tmp / (label or name)
    folder.mkdir()
    if getattr(args, "weights", "random") == "shipped":  # the trained demo weights: the offload share users see
        if preset["data"] not in ("embedded", "cifar10"):
            raise SystemExit(f"--weights shipped: only the embedded presets ship weights, not {name!r}")
        from sagebench import demo

        edge_ckpt, server_ckpt = ((demo.EDGE_WEIGHTS, demo.SERVER_WEIGHTS) if preset["data"] == "embedded"
                                  else (demo.CIFAR10_EDGE_WEIGHTS, demo.CIFAR10_SERVER_WEIGHTS))
    else:
        edge_ckpt, server_ckpt = make_checkpoints(folder, preset["edge"], preset["server"])
    mem_batch = args.mem_batch_size or batch_size
    mem_images = args.mem_images if args.mem_images is not None else 2 * mem_batch
    if 0 < mem_images < 2 * mem_batch:
        log(f"[{name}] note: the 1x memory probe ({mem_images} images) is under 2 batches of {mem_batch}; the "
            "heap reaches its working size over the first batches, so 1x/4x then measures warm-up, not growth")
    if preset["data"] in ("embedded", "cifar10"):  # a shipped test split (read by both sides)
        from sagebench.demo import CIFAR10_FILE

        data_path = Path(DATA_FILE if preset["data"] == "embedded" else CIFAR10_FILE)
        sweep_data = data_path
    else:
        data_path = make_random_parquet(folder / "random.parquet", max(images, 4 * mem_images))
        sweep_data = data_path
    in_memory = args.data != "parquet"
    log(f"[{name}] decoding {images} images for the bare loop ...")
    edge, server, x, labels = load_inputs(preset, data_path, images, edge_ckpt, server_ckpt)
    if in_memory:
        InMemoryImages.install(x, labels)
    else:
        InMemoryImages.uninstall()
    device = torch.device(args.device)
    edge.to(device)
    server.to(device)
    if getattr(args, "gate", "all") != "all" and getattr(args, "offload_share", None):
        # random-init weights are unsure of everything: set eta so that the edge offloads the share asked for
        with torch.inference_mode():
            logits = torch.cat([edge(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])
        entropy = -torch.log2(torch.softmax(logits, dim=-1).amax(dim=-1))
        args.threshold = float(torch.quantile(entropy, 1.0 - float(args.offload_share)))
        log(f"[{name}] threshold eta = {args.threshold:.4f}: offloads {float((entropy > args.threshold).float().mean()):.1%}")
    pin = args.device == "cuda"
    batches = [x[i:i + batch_size].pin_memory() if pin else x[i:i + batch_size].clone()
               for i in range(0, len(x), batch_size)]
    run = [0]

    def sweep(profile: bool = False, n: int = images, extra: tuple[str, ...] = ()) -> tuple[float, dict]:
        run[0] += 1
        o = sweep_overrides(args, preset, edge_ckpt, server_ckpt, sweep_data, n, batch_size,
                            folder / f"run{run[0]}", profile, extra)
        t0 = time.perf_counter()
        res = evaluate(load_config(None, o))
        return time.perf_counter() - t0, res

    log(f"[{name}] warm-up ...")
    sweep(n=min(images, batch_size))
    bare_loop(args, edge, server, batches[:1], preset["budgets"], len(strategies))

    walls, sweeps, bares, timm_ceilings, sweep_cpus, bare_cpus, all_phases = [], [], [], [], [], [], []
    bare_ceilings = []
    last = None
    # On CPU the phase timers cost nothing (no device to synchronise), so every timed sweep records
    # them; on a GPU they synchronise, so each repeat adds a separate profiled sweep.
    cpu_profile = args.device == "cpu"
    for r in range(args.repeats):
        order = ("sweep", "bare") if r % 2 == 0 else ("bare", "sweep")
        for what in order:
            if what == "sweep":
                wall, last = sweep(profile=cpu_profile)
                walls.append(wall)
                sweeps.append(last["timing"]["sweep_seconds"])
                sweep_cpus.append(last["timing"]["sweep_cpu_seconds"])
                if cpu_profile:
                    all_phases.append(last["timing"]["phases"])
            else:
                b = bare_loop(args, edge, server, batches, preset["budgets"], len(strategies))
                bares.append(b["bare"])
                bare_cpus.append(b["bare_cpu"])
                timm_ceilings.append(b["timm_ceiling"])
                bare_ceilings.append(b["bare_ceiling"])
        log(f"[{name}] repeat {r + 1}/{args.repeats}: sweep {sweeps[-1]:.2f} s (cpu {sweep_cpus[-1]:.2f} s, "
            f"evaluate wall {walls[-1]:.2f} s), bare {bares[-1]:.2f} s (cpu {bare_cpus[-1]:.2f} s), "
            f"load {os.getloadavg()[0]:.2f}")

        if not cpu_profile:
            all_phases.append(sweep(profile=True)[1]["timing"]["phases"])
    phases = {k: statistics.median(p[k] for p in all_phases) for k in all_phases[0]}  # medians over repeats
    bmax = max(preset["budgets"])
    select = {k: v for k, v in phases.items() if k.startswith("select/")}
    server_t = {k: v for k, v in phases.items() if k.startswith("server/")}
    sage = f"select/sage/B{bmax}" in phases  # (a preset's strategies may leave sage out)
    sage_share = phases[f"select/sage/B{bmax}"] / phases[f"server/sage/B{bmax}"] if sage else None
    all_share = sum(select.values()) / (sum(server_t.values()) + phases["ceiling"])
    # all of SAGE's budgets: includes the per-batch attention sort and Gram matrix that its first
    # budget computes and the others reuse
    sage_all_share = (sum(v for k, v in select.items() if k.startswith("select/sage/"))
                      / sum(v for k, v in server_t.items() if k.startswith("server/sage/"))) if sage else None
    timm_ceiling = statistics.median(timm_ceilings)
    ceiling_ratio = timm_ceiling / phases["ceiling"]

    out = {
        "models": f"{preset['edge']} -> {preset['server']}", "images": last["num_images"], "batch_size": batch_size,
        "strategies": len(strategies), "budgets": preset["budgets"], "server_passes_per_image": len(strategies) *
        len(preset["budgets"]) + 1, "data": "in-memory tensors" if in_memory else "decoded from parquet",
        "gate": getattr(args, "gate", "all"), "threshold": getattr(args, "threshold", None),
        "offloaded": last["num_offloaded"],
        "sweep_s": sweeps, "wall_s": walls, "bare_s": bares,
        "sweep_median_s": statistics.median(sweeps), "wall_median_s": statistics.median(walls),
        "bare_median_s": statistics.median(bares),
        "sweep_cpu_s": sweep_cpus, "bare_cpu_s": bare_cpus,
        # headline: the median of the ratios of adjacent (sweep, bare) pairs, which share the load
        "ratio_sweep": statistics.median([s / b for s, b in zip(sweeps, bares)]),
        "ratio_of_medians": statistics.median(sweeps) / statistics.median(bares),
        "ratio_sweep_per_repeat": [s / b for s, b in zip(sweeps, bares)],
        "ratio_cpu": statistics.median([s / b for s, b in zip(sweep_cpus, bare_cpus)]),
        "ratio_wall": statistics.median(walls) / statistics.median(bares),
        "images_per_s": last["num_images"] / statistics.median(sweeps),
        "bare_images_per_s": last["num_images"] / statistics.median(bares),
        "ceiling_phase_s": phases["ceiling"], "timm_ceiling_s": timm_ceiling, "ceiling_throughput_ratio": ceiling_ratio,
        "bare_loop_ceiling_s": None if bare_ceilings[0] is None else statistics.median(bare_ceilings),
        "sage_select_share_at_Bmax": sage_share, "sage_select_share_all_budgets": sage_all_share,
        "all_select_share": all_share,
        "edge_phase_s": phases.get("edge"),
        "edge_forwards_per_image": last["timing"]["edge_forwards_per_image"],
        "server_passes": last["timing"]["server_passes"], "threads": last["timing"]["threads"],
    }
    flops = sweep_flops_per_image(edge, server, preset["budgets"], len(strategies))
    out["gflop_per_image"] = flops / 1e9
    out["achieved_tflops"] = flops * out["images_per_s"] / 1e12
    if args.device == "cuda":
        gpu = torch.cuda.get_device_name()
        peak = args.peak_tflops or gpu_peak_tflops(gpu)
        out["gpu"] = gpu
        out["bf16_peak_tflops"] = peak
        out["fraction_of_bf16_peak"] = None if not peak else out["achieved_tflops"] / peak

    if args.cache_check:
        log(f"[{name}] edge cache: a first run fills it, a second reads it ...")
        cache = ("cache.edge=true", f"cache.dir={folder / 'edge-cache'}")
        _, first = sweep(extra=cache)
        _, second = sweep(extra=cache)
        same = first["results"] == second["results"] and first["ceiling"] == second["ceiling"]
        out["cache"] = {"first_edge_forwards_per_image": first["timing"]["edge_forwards_per_image"],
                        "second_edge_forwards_per_image": second["timing"]["edge_forwards_per_image"],
                        "second_sweep_s": second["timing"]["sweep_seconds"], "results_identical": same}

    if mem_images:
        # A run's peak depends a little on where the allocator happened to place its blocks (on CPU,
        # +-3 % between identical runs of 2 batches), so each size is run --mem-runs times and the
        # largest peak kept: the memory a run of that size may need.
        mem = {}
        for factor in (1, 4):
            probes = []
            for rep in range(args.mem_runs):
                log(f"[{name}] peak memory of a sweep over {factor * mem_images} images "
                    f"(separate process, {rep + 1}/{args.mem_runs}) ...")
                o = sweep_overrides(args, preset, edge_ckpt, server_ckpt, sweep_data, factor * mem_images, mem_batch,
                                    folder / f"mem{factor}-{rep}")
                probes.append(run_memprobe(args, o))
            key = memory_key(args, probes[0])
            mem[f"{factor}x"] = dict(max(probes, key=lambda p: p[key]), runs=[p[key] for p in probes])
        out["memory"] = mem
    return out


# --------------------------------------------------------------------------------------------
# The real-gate suite (--suite real-gate, issue 16): the default job, one run, one table

SUITE_TARGETS = {"sweep": 1.05, "process": 1.15, "rerun": 1.20}  # issue 16 (2 CPU cores)


def default_job(args) -> dict:
    """What ``sagebench eval`` with no arguments runs (``load_config(None, [])``), with ``--images`` etc. applied."""
    import pyarrow.parquet as pq

    from sagebench.config import load_config, strategy_entries
    from sagebench.demo import CIFAR10_FILE

    cfg = load_config(None, [])
    entries = strategy_entries(cfg)
    if any(opts for _, opts in entries):
        raise SystemExit("--suite real-gate: the default strategies carry options; only plain names are supported")
    preset = PRESETS["cifar10"]
    if ((cfg.model.edge.name, cfg.model.server.name) != (preset["edge"], preset["server"])
            or Path(cfg.data.path).resolve() != Path(CIFAR10_FILE).resolve()):
        raise SystemExit("--suite real-gate measures the shipped CIFAR-10 default job, but the default config now "
                         f"names {cfg.model.edge.name} -> {cfg.model.server.name} on {cfg.data.path}")
    limit = cfg.data.limit or pq.ParquetFile(cfg.data.path).metadata.num_rows
    batch_size = args.batch_size or int(cfg.batch_size)
    return {"strategies": [name for name, _ in entries], "budgets": [int(b) for b in cfg.budgets],
            "batch_size": batch_size,
            "server_batch_size": args.server_batch_size or int(cfg.server_batch_size or batch_size),
            "gate": str(cfg.gate.name), "threshold": float(cfg.gate.threshold),
            "images": min(args.images, limit) if args.images else int(limit),
            "attention": str(cfg.model.edge.attention), "seed": int(cfg.seed)}


def job_overrides(args, job: dict) -> list[str]:
    """The overrides that make a run the default job at this benchmark's settings (none by default)."""
    o = [f"data.limit={job['images']}"] if args.images else []
    if args.batch_size:
        o.append(f"batch_size={args.batch_size}")
    if args.server_batch_size:
        o.append(f"server_batch_size={args.server_batch_size}")
    if args.threads:
        o.append(f"threads={args.threads}")
    if args.precision != "32-true":
        o.append(f"trainer.precision={args.precision}")
    if args.device == "cpu" and torch.cuda.is_available():
        o.append("trainer.accelerator=cpu")
    return o + list(args.set or [])


def pair_stats(sweep_s: list[float], bare_s: list[float], sweep_cpu: list[float], bare_cpu: list[float]) -> dict:
    """Medians over adjacent (sweep, bare) pairs, wall and CPU seconds."""
    return {"sweep_s": sweep_s, "bare_s": bare_s, "sweep_cpu_s": sweep_cpu, "bare_cpu_s": bare_cpu,
            "sweep_median_s": statistics.median(sweep_s), "bare_median_s": statistics.median(bare_s),
            "ratio_per_pair": [s / b for s, b in zip(sweep_s, bare_s)],
            "ratio_wall": statistics.median([s / b for s, b in zip(sweep_s, bare_s)]),
            "ratio_cpu": statistics.median([s / b for s, b in zip(sweep_cpu, bare_cpu)])}


def suite_sweeps(args, job: dict, tmp: Path) -> list[dict]:
    """Row 1: the default job's sweep at its own gate and at gate ``all``, each against the bare forwards."""
    preset = dict(PRESETS["cifar10"], strategies=job["strategies"], budgets=job["budgets"], images=job["images"],
                  batch_size=job["batch_size"])
    rows = []
    for gate in [job["gate"]] + (["all"] if job["gate"] != "all" else []):
        a = argparse.Namespace(**vars(args))
        a.gate, a.threshold, a.weights, a.offload_share = gate, job["threshold"], "shipped", None
        a.images, a.batch_size, a.server_batch_size = job["images"], job["batch_size"], job["server_batch_size"]
        a.mem_images, a.cache_check = 0, False
        log(f"[real-gate] 1: the default job's sweep at gate {gate} vs bare forwards, {job['images']} images ...")
        rows.append(bench_pair(a, "cifar10", tmp, preset=preset, label=f"gate-{gate}"))
    return rows


def sagebench_command() -> list[str]:
    exe = Path(sys.executable).parent / "sagebench"
    if exe.is_file():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from sagebench.cli import main; sys.exit(main())"]


def child_env() -> dict[str, str]:
    """The environment of both subprocesses of row 2: the OpenMP wait policy ``import sagebench`` gives itself
    (PASSIVE unless set; this process has it too) for the bare script as well, which imports torch first."""
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def run_child(cmd: list[str], log_path: Path, cwd: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds (``getrusage(RUSAGE_CHILDREN)`` delta) of one subprocess, and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=child_env())
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = log_path.read_text(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{out[-4000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out


def suite_process(args, job: dict, tmp: Path) -> dict:
    """Row 2: ``sagebench eval logger=none`` against ``bare_default_job.py``, each a whole process."""
    folder = tmp / "process"
    folder.mkdir()
    n = job["images"]
    bare = [sys.executable, str(Path(__file__).resolve().parent / "bare_default_job.py"), "--images", str(n),
            "--batch-size", str(job["batch_size"]), "--server-batch-size", str(job["server_batch_size"]),
            "--threshold", str(job["threshold"]), "--strategies", str(len(job["strategies"])),
            "--budgets", ",".join(map(str, job["budgets"])), "--device", args.device, "--precision", args.precision,
            *(["--threads", str(args.threads)] if args.threads else [])]

    def sage(tag: str, extra: tuple[str, ...] = ()) -> list[str]:
        return [*sagebench_command(), "eval", "logger=none", f"output_dir={folder / tag}", *job_overrides(args, job),
                *extra]

    log("[real-gate] 2: warm-up (each process once, so that neither pays for a cold file cache) ...")
    warm = min(n, job["batch_size"])
    run_child(sage("warm", (f"data.limit={warm}",)), folder / "warm-eval.log", folder)
    run_child([*bare, "--images", str(warm)], folder / "warm-bare.log", folder)
    evals, eval_cpus, bares, bare_cpus, runs, bare_out = [], [], [], [], [], None
    for r in range(args.repeats):
        for what in (("eval", "bare") if r % 2 == 0 else ("bare", "eval")):
            if what == "eval":
                wall, cpu, _ = run_child(sage(f"eval{r}"), folder / f"eval{r}.log", folder)
                res = json.loads((folder / f"eval{r}" / "results.json").read_text())
                evals.append(wall)
                eval_cpus.append(cpu)
                runs.append(res)
            else:
                wall, cpu, out = run_child(bare, folder / f"bare{r}.log", folder)
                bare_out = json.loads(next(line for line in out.splitlines() if line.startswith("BARE "))[5:])
                bares.append(wall)
                bare_cpus.append(cpu)
        log(f"[real-gate] 2: repeat {r + 1}/{args.repeats}: sagebench eval {evals[-1]:.2f} s (cpu {eval_cpus[-1]:.2f}),"
            f" bare script {bares[-1]:.2f} s (cpu {bare_cpus[-1]:.2f}), load {os.getloadavg()[0]:.2f}")
    last = runs[-1]
    work = {"eval": {"images": last["num_images"], "offloaded": last["num_offloaded"],
                     "edge_accuracy": last["edge_accuracy"],
                     "ceiling_offloaded_accuracy": last["ceiling"]["offloaded_accuracy"]}, "bare": bare_out}
    work["same"] = (work["eval"]["offloaded"] == bare_out["offloaded"] and work["eval"]["images"] == bare_out["images"]
                    and abs(work["eval"]["edge_accuracy"] - bare_out["edge_accuracy"]) < 0.5 / n)
    return {"images": n, "offloaded": last["num_offloaded"], **pair_stats(evals, bares, eval_cpus, bare_cpus),
            "evaluate_wall_s": [x["timing"]["wall_seconds"] for x in runs],
            "evaluate_sweep_s": [x["timing"]["sweep_seconds"] for x in runs],
            "command": " ".join(["sagebench", *sage("<tmp>")[len(sagebench_command()):]]).replace(f"{folder}/", ""),
            "omp_wait_policy": child_env()["OMP_WAIT_POLICY"],
            "bare_command": " ".join(["benchmarks/bare_default_job.py", *bare[2:]]), "work": work}


def rerun_strategy(args, job: dict) -> str:
    """``--rerun-strategy``, or kdpp, or (kdpp being a default) the first built-in the default job does not run."""
    from sagebench.strategies import get_strategy, list_strategies

    if args.rerun_strategy:
        if args.rerun_strategy in job["strategies"]:
            log(f"[real-gate] note: {args.rerun_strategy} is one of the default strategies {job['strategies']}")
        return args.rerun_strategy
    if "kdpp" not in job["strategies"]:
        return "kdpp"
    return next(n for n in list_strategies() if n not in job["strategies"] and not get_strategy(n).oracle)


def offloaded_groups(args, edge, x: torch.Tensor, job: dict) -> list[tuple[torch.Tensor, object]]:
    """The offloaded images' pixels and edge evidence, grouped as the sweep's queue serves them (a server batch
    when at least ``server_batch_size`` are waiting)."""
    from sagebench.edge.evidence import EdgeEvidence
    from sagebench.gates import get_gate

    gate, device, bs = get_gate(job["gate"], threshold=job["threshold"]), torch.device(args.device), job["batch_size"]
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


def bare_selections(args, strategy, server, groups, budgets) -> tuple[float, float]:
    """Seconds (wall, CPU) of the strategy's selection and one server forward per budget, per server batch."""
    from sagebench.runtime.speed import cpu_seconds

    prefix, positions = _prefix_positions(server)
    ph, pw = server.patch_embed.patch_size
    with torch.inference_mode(), autocast_ctx(args):
        sync(args)
        t0, c0 = time.perf_counter(), cpu_seconds()
        for x, evidence in groups:
            flat = flat_patches(x, ph, pw)
            for budget in budgets:
                bare_selected_tokens(server, flat, strategy.select(evidence, budget), prefix, positions)
        sync(args)
        return time.perf_counter() - t0, cpu_seconds() - c0


def folder_size(folder: Path) -> tuple[int, int]:
    files = [f for f in folder.rglob("*") if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files)


def suite_rerun(args, job: dict, tmp: Path) -> dict:
    """Row 3: fill an edge cache with the default job, rerun it with one new strategy, against a bare loop of that
    strategy's selections and server passes over the offloaded images (pixels and evidence in memory)."""
    from sagebench import demo
    from sagebench.config import load_config
    from sagebench.edge.model import EdgeModel
    from sagebench.strategies import get_strategy
    from sagebench.sweep.evaluate import evaluate

    name = rerun_strategy(args, job)
    strategy = get_strategy(name)
    if strategy.oracle:
        raise SystemExit(f"--rerun-strategy {name}: an oracle needs the server's attention; the bare loop has none")
    InMemoryImages.uninstall()  # the rerun reads the data set as a real run does
    folder = tmp / "rerun"
    folder.mkdir()
    base = ["logger=none", "progress=false", "cache.edge=true", f"cache.dir={folder / 'cache'}",
            # phase times: free on a CPU (nothing to synchronise), so on and shown; on a GPU they would sync
            *(["profile=true"] if args.device == "cpu" else []), *job_overrides(args, job)]
    log(f"[real-gate] 3: filling the edge cache (the default job, cache.edge=true, {job['images']} images) ...")
    t0 = time.perf_counter()
    fill = evaluate(load_config(None, [*base, f"output_dir={folder / 'fill'}"]))
    fill_wall = time.perf_counter() - t0
    shards_after_fill = folder_size(folder / "cache")
    run = [0]

    def rerun() -> tuple[float, dict]:
        run[0] += 1
        t0 = time.perf_counter()
        res = evaluate(load_config(None, [*base, f"strategies=[{name}]", f"output_dir={folder / f'rerun{run[0]}'}"]))
        return time.perf_counter() - t0, res

    log("[real-gate] 3: the bare side's inputs (decoded pixels, edge evidence of the offloaded images) ...")
    edge_vit, server, x, _ = load_inputs(PRESETS["cifar10"], demo.CIFAR10_FILE, job["images"],
                                         demo.CIFAR10_EDGE_WEIGHTS, demo.CIFAR10_SERVER_WEIGHTS)
    edge = EdgeModel(edge_vit, attention=job["attention"],
                     with_rollout=getattr(strategy, "importance", None) == "rollout").to(args.device)
    server.to(args.device)
    groups = offloaded_groups(args, edge, x, job)
    del x
    bare_selections(args, strategy, server, groups[:1], job["budgets"])  # warm-up
    reruns, rerun_cpus, walls, bares, bare_cpus, last = [], [], [], [], [], None
    for r in range(args.repeats):
        for what in (("rerun", "bare") if r % 2 == 0 else ("bare", "rerun")):
            if what == "rerun":
                wall, last = rerun()
                walls.append(wall)
                reruns.append(last["timing"]["sweep_seconds"])
                rerun_cpus.append(last["timing"]["sweep_cpu_seconds"])
            else:
                b, c = bare_selections(args, strategy, server, groups, job["budgets"])
                bares.append(b)
                bare_cpus.append(c)
        log(f"[real-gate] 3: repeat {r + 1}/{args.repeats}: rerun {reruns[-1]:.2f} s (cpu {rerun_cpus[-1]:.2f}), "
            f"bare {bares[-1]:.2f} s (cpu {bare_cpus[-1]:.2f}), load {os.getloadavg()[0]:.2f}")
    timing = last["timing"]
    files, size = folder_size(folder / "cache")
    return {"strategy": name, "images": last["num_images"], "offloaded": last["num_offloaded"],
            "bare_offloaded": sum(len(g[0]) for g in groups), "server_batches": len(groups),
            **pair_stats(reruns, bares, rerun_cpus, bare_cpus), "evaluate_wall_s": walls,
            "fill_sweep_s": fill["timing"]["sweep_seconds"], "fill_evaluate_wall_s": fill_wall,
            "fill_edge_forwards_per_image": fill["timing"]["edge_forwards_per_image"],
            "edge_forwards_per_image": timing["edge_forwards_per_image"],
            # whatever the results say about the cache (edge_cache today; more keys as the engine grows)
            "cache_timing": {k: v for k, v in timing.items() if "cache" in k},
            "cache_results": {k: v for k, v in last.items() if "cache" in k and k != "timing"},
            "cache_files": files, "cache_bytes": size, "cache_files_after_fill": shards_after_fill[0],
            "server_passes": timing.get("server_passes"), "phases": timing.get("phases")}


def bench_suite(args, tmp: Path) -> dict:
    job = default_job(args)
    log(f"[real-gate] the default job: {job}")
    rows = {int(r) for r in str(args.rows).split(",") if r.strip()}
    out = {"suite": "real-gate", "job": job, "sweeps": suite_sweeps(args, job, tmp) if 1 in rows else []}
    if 2 in rows:
        out["process"] = suite_process(args, job, tmp)
    if 3 in rows:
        out["rerun"] = suite_rerun(args, job, tmp)
    return out


def fmt_suite(args, suite: dict) -> str:
    job = suite["job"]

    def ok(ratio: float, key: str) -> str:
        return f"<= {SUITE_TARGETS[key]:.2f} " + ("ok" if ratio <= SUITE_TARGETS[key] else "MISSED")

    passes = f"ceiling + {len(job['strategies'])}x{len(job['budgets'])} token passes"
    rows = []
    for r in suite["sweeps"]:
        gate = f"{r['gate']} eta {job['threshold']}" if r["gate"] != "all" else "all"
        rows.append((f"1 default job, gate {gate}", "`Trainer.test` (in-memory images)",
                     f"edge on every image; {passes} on the offloaded", r, r["ratio_sweep"], r["ratio_cpu"], "sweep"))
    p, q = suite.get("process"), suite.get("rerun")
    if p is not None:
        rows.append(("2 whole process", "`sagebench eval logger=none`", "`bare_default_job.py` (decode + same forwards)",
                     p, p["ratio_wall"], p["ratio_cpu"], "process"))
    if q is not None:
        rows.append((f"3 cached rerun, `strategies=[{q['strategy']}]`", "rerun's `Trainer.test`",
                     f"{q['strategy']} selection + 1 server pass per budget on the offloaded", q, q["ratio_wall"],
                     q["ratio_cpu"], "rerun"))
    lines = [env_line(args), "",
             f"default job: {', '.join(job['strategies'])} x budgets {job['budgets']}, batch {job['batch_size']}, "
             f"server batch {job['server_batch_size']}, gate {job['gate']} eta {job['threshold']}; "
             f"{args.repeats} alternating pair(s) per row, medians", "",
             "| row | sweep side | bare side | images (offloaded) | sweep s | bare s | wall ratio | pairs "
             "| CPU s ratio | target |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for what, side, bare, r, wall, cpu, key in rows:
        med_s = r["sweep_median_s"]
        lines.append(f"| {what} | {side} | {bare} | {r['images']} ({r['offloaded']}) | {med_s:.2f} | "
                     f"{r['bare_median_s']:.2f} | **{wall:.3f}** | "
                     f"{' '.join(f'{v:.3f}' for v in r.get('ratio_per_pair', r.get('ratio_sweep_per_repeat', [])))} | "
                     f"{cpu:.3f} | {ok(wall, key)} |")
    lines.append("")
    for r in suite["sweeps"]:
        lines.append(f"* row 1, gate {r['gate']}: evaluate end to end / bare {r['ratio_wall']:.3f}; edge forwards per "
                     f"image {r['edge_forwards_per_image']:.3f}; server passes run / reused "
                     f"{r['server_passes']['images_run']} / {r['server_passes']['images_reused']}")
    if p is None and q is None:
        return "\n".join(lines)
    if p is None:
        return "\n".join(lines + _rerun_notes(q))
    w, e = p["work"]["bare"], p["work"]["eval"]
    lines.append(f"* row 2: `{p['command']}` vs `{p['bare_command']}` (OMP_WAIT_POLICY={p['omp_wait_policy']} for "
                 "both); evaluate() inside the process "
                 f"{statistics.median(p['evaluate_wall_s']):.2f} s (its sweep "
                 f"{statistics.median(p['evaluate_sweep_s']):.2f} s) of {p['sweep_median_s']:.2f} s; same work: "
                 f"{p['work']['same']} (eval / bare: offloaded {e['offloaded']} / {w['offloaded']}, edge accuracy "
                 f"{e['edge_accuracy']:.4f} / {w['edge_accuracy']:.4f}, ceiling on the offloaded "
                 f"{e['ceiling_offloaded_accuracy']:.4f} / {w['ceiling_offloaded_accuracy']:.4f})")
    return "\n".join(lines + ([] if q is None else _rerun_notes(q)))


def _rerun_notes(q: dict) -> list[str]:
    lines: list[str] = []
    lines.append(f"* row 3: fill (default strategies, cache.edge=true) sweep {q['fill_sweep_s']:.2f} s, edge forwards "
                 f"per image {q['fill_edge_forwards_per_image']:.3f}; rerun edge forwards per image "
                 f"{q['edge_forwards_per_image']:.3f} (expected 0); offloaded rerun / bare {q['offloaded']} / "
                 f"{q['bare_offloaded']} in {q['server_batches']} server batches; evaluate end to end "
                 f"{statistics.median(q['evaluate_wall_s']):.2f} s")
    lines.append(f"* row 3, cache: {json.dumps(q['cache_timing'], default=str)}"
                 + (f" {json.dumps(q['cache_results'], default=str)}" if q["cache_results"] else "")
                 + f"; on disk {q['cache_files']} files, {q['cache_bytes'] / 2**20:.1f} MB")
    phases = q.get("phases") or {}
    if phases:
        lines.append("* row 3, rerun phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()
                                                               if not k.startswith(("select/", "server/")))
                     + f", selections {sum(v for k, v in phases.items() if k.startswith('select/')):.2f}"
                     + f", server passes {sum(v for k, v in phases.items() if k.startswith('server/')):.2f}")
    return lines


# --------------------------------------------------------------------------------------------
# Report


def env_line(args) -> str:
    return (f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else
                                       f" ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)") +
            f", precision {args.precision}, torch {torch.__version__}, OMP_WAIT_POLICY="
            f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average at end {os.getloadavg()[0]:.2f}")


def fmt_table(args, results: dict) -> str:
    lines = [env_line(args)]
    for name, r in results.items():
        ok = lambda cond: "ok" if cond else "MISSED"  # noqa: E731
        lines += [
            "",
            f"== {name}: {r['models']}, {r['images']} images ({r['data']}), batch {r['batch_size']}, "
            f"{r['strategies']} strategies x {len(r['budgets'])} budgets {r['budgets']} "
            f"= {r['server_passes_per_image']} server passes/image, {r['threads']} threads",
            f"{'metric':<44} {'value':>22}  target",
            f"{'sweep (Trainer.test), median s':<44} {r['sweep_median_s']:>22.3f}",
            f"{'bare forwards, median s':<44} {r['bare_median_s']:>22.3f}",
            f"{'ratio sweep / bare (median of pairs)':<44} {r['ratio_sweep']:>22.3f}  <= 1.10 "
            f"{ok(r['ratio_sweep'] <= 1.10)}",
            f"{'  per pair':<44} {' '.join(f'{v:.3f}' for v in r['ratio_sweep_per_repeat']):>22}",
            f"{'  ratio of medians':<44} {r['ratio_of_medians']:>22.3f}",
            f"{'ratio of CPU seconds sweep / bare':<44} {r['ratio_cpu']:>22.3f}  (work done, blind to waiting)",
            f"{'ratio wall (evaluate end to end) / bare':<44} {r['ratio_wall']:>22.3f}  (adds fixed per-run costs)",
            f"{'throughput sweep / bare, images/s':<44} {r['images_per_s']:>10.1f} / {r['bare_images_per_s']:<10.1f}",
            f"{'ceiling pass: timm loop s / sweep phase s':<44} "
            f"{r['timm_ceiling_s']:>10.3f} / {r['ceiling_phase_s']:<10.3f}",
            f"{'ceiling throughput vs plain timm loop':<44} {r['ceiling_throughput_ratio']:>22.3f}  >= 0.95 "
            f"{ok(r['ceiling_throughput_ratio'] >= 0.95)}",
            *([f"{'  (same forwards inside the bare loop, s)':<44} {r['bare_loop_ceiling_s']:>22.3f}"]
              if r.get("bare_loop_ceiling_s") is not None else []),
            f"{'SAGE selection / server, largest budget':<44} {100 * r['sage_select_share_at_Bmax']:>21.2f}%  < 2% "
            f"{ok(r['sage_select_share_at_Bmax'] < 0.02)}",
            f"{'  SAGE, all budgets (shared sort + Gram incl.)':<44} {100 * r['sage_select_share_all_budgets']:>21.2f}%",
            f"{'all selections / all server passes':<44} {100 * r['all_select_share']:>21.2f}%",
            f"{'edge forwards per image':<44} {r['edge_forwards_per_image']:>22.3f}  == 1 "
            f"{ok(r['edge_forwards_per_image'] == 1)}",
            f"{'server passes run / reused (dedupe)':<44} "
            f"{str(r['server_passes']['images_run']) + ' / ' + str(r['server_passes']['images_reused']):>22}",
            f"{'model GFLOP per image, achieved TFLOP/s':<44} {r['gflop_per_image']:>10.2f} / {r['achieved_tflops']:<10.3f}",
        ]
        if "fraction_of_bf16_peak" in r:
            frac = r["fraction_of_bf16_peak"]
            lines.append(f"{'fraction of ' + str(r['gpu']) + ' bf16 peak':<44} "
                         f"{'n/a' if frac is None else f'{100 * frac:.1f}%':>22}  (peak {r['bf16_peak_tflops']} TFLOP/s)")
        if "cache" in r:
            c = r["cache"]
            lines.append(f"{'edge cache: edge forwards/image 1st, 2nd run':<44} "
                         f"{c['first_edge_forwards_per_image']:>10.1f} / {c['second_edge_forwards_per_image']:<10.1f}"
                         f"  results identical: {c['results_identical']}")
        if "memory" in r:
            m = r["memory"]
            key = memory_key(args, m["1x"])
            what = {"cuda_peak_mb": "GPU memory", "peak_anon_mb": "process memory (RssAnon)"}.get(key, "RSS")
            a, b = m["1x"][key], m["4x"][key]
            lines.append(f"{'peak ' + what + ' MB, ' + str(m['1x']['images']) + ' vs ' + str(m['4x']['images']) + ' images':<44} "
                         f"{a:>10.0f} / {b:<10.0f}  flat (4x/1x {b / a:.3f}) {ok(b / a < 1.05)}")
            if key != "peak_rss_mb":
                lines.append(f"{'  peak RSS incl. mapped data-set file, MB':<44} "
                             f"{m['1x']['peak_rss_mb']:>10.0f} / {m['4x']['peak_rss_mb']:<10.0f}"
                             + (f"  (file pages at end {m['1x']['file_mapped_mb']:.0f} / {m['4x']['file_mapped_mb']:.0f})"
                                if m["1x"].get("file_mapped_mb") is not None else ""))
            if len(m["1x"]["runs"]) > 1:
                runs = " | ".join(" ".join(f"{v:.0f}" for v in m[f]["runs"]) for f in ("1x", "4x"))
                lines.append(f"{'  (largest of ' + str(len(m['1x']['runs'])) + ' runs each: 1x | 4x)':<44} {runs:>22}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="embedded", help="comma list of: " + ", ".join(PRESETS))
    p.add_argument("--suite", default=None, choices=["real-gate"],
                   help="real-gate: the default job (`sagebench eval`, its own config) at its gate and at gate all, "
                        "as a whole process, and as a cached rerun of one new strategy, in one table (--models, "
                        "--gate, --threshold and --weights do not apply)")
    p.add_argument("--rows", default="1,2,3", help="--suite real-gate: which rows to run (comma list of 1, 2, 3)")
    p.add_argument("--rerun-strategy", default=None, metavar="NAME",
                   help="--suite real-gate: the strategy of the cached rerun (default kdpp, or the first built-in "
                        "the default job does not run)")
    p.add_argument("--gate", default="all", choices=["all", "min_entropy"],
                   help="all: every image offloaded (the worst case); min_entropy: the gate users run, whose bare "
                        "loop serves the offloaded images in full batches")
    p.add_argument("--threshold", type=float, default=1.0, help="min-entropy threshold eta (--gate min_entropy)")
    p.add_argument("--weights", default="random", choices=["random", "shipped"],
                   help="random-init checkpoints (default), or the embedded presets' trained weights (their real gate)")
    p.add_argument("--offload-share", type=float, default=None,
                   help="with --gate min_entropy: choose eta so that this share of the images is offloaded "
                        "(e.g. 0.36, ImageNet's at eta 1.0; for random-init weights)")
    p.add_argument("--images", type=int, default=None,
                   help="images per sweep (default: the preset's; --suite real-gate: all of the default job's)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--server-batch-size", type=int, default=None,
                   help="server_batch_size for the sweep and the bare loop (default: the config's, i.e. batch size)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="32-true", help="trainer.precision: 32-true, bf16-mixed, 16-mixed")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--num-workers", type=int, default=None, help="data.num_workers (default: sagebench's)")
    p.add_argument("--data", default="memory", choices=["memory", "parquet"],
                   help="memory: the sweep reads the decoded tensors the bare loop uses; parquet: it decodes them")
    p.add_argument("--compile", action="store_true", help="compile=true for the sweep")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra config override for every sweep (repeatable), e.g. reuse_host_memory=false")
    p.add_argument("--cache-check", action=argparse.BooleanOptionalAction, default=None,
                   help="also run the sweep twice with cache.edge=true (default: on for embedded only)")
    p.add_argument("--mem-images", type=int, default=None, help="images of the 1x memory probe (0: skip; default 2 batches)")
    p.add_argument("--mem-batch-size", type=int, default=None)
    p.add_argument("--mem-runs", type=int, default=2, help="runs per memory probe size; the largest peak counts")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's bf16 peak, if not in the built-in list")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--memprobe", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from sagebench.cli import _quiet_libraries

    _quiet_libraries()  # as the CLI: Lightning's banners off
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.memprobe:
        memory_probe(args)
        return 0
    if args.suite == "real-gate":
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="sagebench-speed-") as tmp:
            suite = bench_suite(args, Path(tmp))
        table = fmt_suite(args, suite)
        print(table)
        log(f"[real-gate] done in {time.perf_counter() - started:.0f} s")
        if args.json:
            Path(args.json).write_text(json.dumps({"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                                                   "table": table, "results": suite}, indent=1, default=str))
        return 0
    results = {}
    with tempfile.TemporaryDirectory(prefix="sagebench-speed-") as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            if name not in PRESETS:
                p.error(f"unknown --models {name!r}; choose from {', '.join(PRESETS)}")
            a = argparse.Namespace(**vars(args))
            if a.cache_check is None:
                a.cache_check = name == "embedded"
            results[name] = bench_pair(a, name, Path(tmp))
    table = fmt_table(args, results)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                                               "table": table, "results": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
