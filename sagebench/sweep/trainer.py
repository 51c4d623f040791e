"""The Lightning Trainer of a sweep, with device and accelerator mistakes turned into clear errors."""

from __future__ import annotations

import os
from typing import Any

import torch

from sagebench.errors import ConfigError


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
