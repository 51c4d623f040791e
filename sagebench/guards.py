"""Checks that turn bad input into a clear message, and bad numbers into reported ones.

Why a module of its own: each check is small, but each is where a user would otherwise meet a
traceback after an hour of compute (an output folder that cannot be written, a device count the
machine does not have) or, worse, a silently wrong number (NaN logits counted as an ordinary
wrong prediction, a corrupt image quietly missing from the denominator).

Record conventions (see :mod:`sagebench.metrics`): a prediction column holds
:data:`NONFINITE` (-2) when the model's logits for that image were NaN/Inf (the image counts as
wrong, in the same denominators as every other image, and is reported in ``results.nonfinite``);
a row whose ``label`` is :data:`SKIPPED_LABEL` (-1) is a corrupt image skipped under
``data.on_error=skip`` (it is reported in ``results.skipped`` and excluded from every metric).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sagebench.errors import ConfigError, SageBenchError
from sagebench.metrics import NOT_OFFLOADED, SweepLayout

NONFINITE = -2  # prediction stored when the logits were NaN or infinite
SKIPPED_LABEL = -1  # label stored in the record of a skipped (corrupt) image


def warn(message: str) -> None:
    """One line on stderr, as the CLI prints errors (also visible in notebooks)."""
    print(f"sagebench: warning: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Records


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """``argmax`` per row as float64, :data:`NONFINITE` where a row holds NaN or +-Inf.

    (``argmax`` alone would return the position of a NaN, a made-up class.)
    """
    pred = logits.argmax(-1).double()
    bad = ~torch.isfinite(logits).all(-1)
    return torch.where(bad, torch.full_like(pred, float(NONFINITE)), pred)


def skipped_rows(indices: torch.Tensor, layout: SweepLayout) -> torch.Tensor:
    """Records of skipped images: their data set index, label :data:`SKIPPED_LABEL`, -1 elsewhere."""
    rows = torch.full((indices.shape[0], layout.num_columns), float(NOT_OFFLOADED), dtype=torch.float64,
                      device=indices.device)
    rows[:, layout.column("sample_id")] = indices.double()
    rows[:, layout.column("label")] = float(SKIPPED_LABEL)
    rows[:, layout.column("offloaded")] = 0.0
    return rows


def split_skipped(rows: np.ndarray, layout: SweepLayout) -> tuple[np.ndarray, list[int]]:
    """``(evaluated rows, sorted ids of the skipped images)``."""
    skipped = rows[:, layout.column("label")] == SKIPPED_LABEL
    ids = sorted(int(i) for i in rows[skipped, layout.column("sample_id")])
    return rows[~skipped], ids


def nonfinite_counts(rows: np.ndarray, layout: SweepLayout) -> dict[str, Any]:
    """How many images got NaN/Inf logits: from the edge, the server on all patches, each (strategy, budget)."""
    col = layout.column
    cells = [{"strategy": s, "budget": b, "count": int((rows[:, col("pred", j)] == NONFINITE).sum())}
             for j, (s, b) in enumerate(layout.cells)]
    return {
        "edge": int((rows[:, col("edge_pred")] == NONFINITE).sum()),
        "ceiling": int((rows[:, col("ceiling_pred")] == NONFINITE).sum()),
        "cells": cells,
        "total": int((rows[:, col("edge_pred")] == NONFINITE).sum() + (rows[:, col("ceiling_pred")] == NONFINITE).sum()
                     + sum(c["count"] for c in cells)),
    }


def nonfinite_warnings(counts: dict[str, Any], num_images: int) -> list[str]:
    out = []
    if counts["edge"]:
        out.append(f"the edge model gave NaN/Inf logits for {counts['edge']} of {num_images} image(s): they count "
                   "as wrong edge predictions and, unless the gate offloads them, as wrong answers "
                   "(results.nonfinite.edge).")
    if counts["ceiling"]:
        out.append(f"the server model gave NaN/Inf logits for {counts['ceiling']} offloaded image(s) with all "
                   "patches: counted as wrong (results.nonfinite.ceiling).")
    bad = [c for c in counts["cells"] if c["count"]]
    if bad:
        worst = ", ".join(f"{c['strategy']}@B{c['budget']}: {c['count']}" for c in bad[:6])
        out.append(f"the server model gave NaN/Inf logits in {len(bad)} (strategy, budget) cell(s) ({worst}"
                   f"{', ...' if len(bad) > 6 else ''}): counted as wrong (results.nonfinite.cells). "
                   "Check the weights and trainer.precision (fp16 overflows).")
    return out


# --------------------------------------------------------------------------------------------
# Output folder


def check_writable(out_dir: Path) -> None:
    """Raise a :class:`SageBenchError` now, not after the sweep, when ``out_dir`` cannot be written.

    Creates nothing: probes the folder, or the nearest existing folder above it, with a
    temporary file that is removed at once.
    """
    out_dir = Path(out_dir)
    probe = out_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    hint = "Set output_dir=PATH to a writable folder."
    if probe.exists() and not probe.is_dir():
        raise SageBenchError(f"Cannot write results to {out_dir}: {probe} is a file, not a folder. {hint}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".sagebench-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise SageBenchError(f"Cannot write results to {out_dir}: {probe} is not writable "
                             f"({exc.strerror or exc}). {hint}") from exc


# --------------------------------------------------------------------------------------------
# Devices


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def available_devices() -> str:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"this machine has {gpus} CUDA GPU(s) and {cpu_cores()} CPU core(s)"


def build_trainer(**kwargs: Any) -> Any:
    """``lightning.Trainer(**kwargs)``, with device/accelerator mistakes as a :class:`ConfigError`.

    Lightning accepts any number of CPU "devices" (one process each); more processes than CPU
    cores is refused here too, as it is almost always a GPU count given on a machine without one.
    """
    import lightning as L

    try:
        from lightning.fabric.utilities.exceptions import MisconfigurationException
    except ImportError:  # pragma: no cover
        MisconfigurationException = ValueError  # type: ignore[misc,assignment]
    settings = ", ".join(f"trainer.{k}={kwargs[k]!r}" for k in ("accelerator", "devices", "strategy", "num_nodes",
                                                                  "precision") if k in kwargs)
    try:
        trainer = L.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"The trainer settings ({settings or 'defaults'}) cannot be used: {detail} "
                          f"({available_devices()}). Fix trainer.accelerator / trainer.devices, e.g. "
                          "trainer.devices=1 or trainer.accelerator=cpu.") from exc
    from lightning.pytorch.accelerators import CPUAccelerator

    if isinstance(trainer.accelerator, CPUAccelerator) and trainer.num_devices > cpu_cores():
        raise ConfigError(f"trainer.devices={kwargs.get('devices')!r} asks for {trainer.num_devices} CPU processes, "
                          f"but {available_devices()}. Set trainer.devices to at most {cpu_cores()} "
                          "(or 1), or run on a machine with that many GPUs.")
    return trainer
