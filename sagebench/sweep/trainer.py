"""The Lightning Trainer of a sweep, with device and accelerator mistakes turned into clear errors."""

from __future__ import annotations

import os
from typing import Any

import torch

from sagebench.errors import ConfigError
from sagebench.trainer_options import check_trainer_options, resolve_precision


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

    ``precision="auto"`` is resolved first (:func:`sagebench.trainer_options.auto_precision`).

    Lightning accepts any number of CPU "devices" (one process each); more processes than CPU
    cores is refused here too, as it is almost always a GPU count given on a machine without one.
    """
    import lightning as L

    try:
        from lightning.fabric.utilities.exceptions import MisconfigurationException
    except ImportError:  # pragma: no cover
        MisconfigurationException = ValueError  # type: ignore[misc,assignment]
    check_trainer_options(kwargs)
    kwargs = resolve_precision(kwargs)  # trainer.precision: auto -> bf16-mixed on CUDA, 32-true elsewhere
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


def instantiate(spec: Any, what: str, base: type | None = None) -> Any:
    """A Lightning object from a LightningCLI-style ``{class_path: ..., init_args: {...}}`` entry.

    Objects pass through; a plain string is a class path with no arguments. ``base`` (e.g.
    ``lightning.pytorch.Callback``) is checked, so a typo is a clear ConfigError, not an
    AttributeError deep inside the Trainer.
    """
    import importlib

    if spec is None or isinstance(spec, bool) or not isinstance(spec, (str, dict)):
        return spec
    path, args = (spec, {}) if isinstance(spec, str) else (spec.get("class_path"), spec.get("init_args") or {})
    if not isinstance(path, str) or "." not in path:
        raise ConfigError(f"{what}: expected {{class_path: package.module.Class, init_args: {{...}}}}, got {spec!r}.")
    module_name, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{what}: cannot import {path!r} ({type(exc).__name__}: {exc}); give the full class "
                          "path, e.g. lightning.pytorch.loggers.CSVLogger.") from exc
    if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{what}: {path} is not a {base.__module__}.{base.__name__}.")
    try:
        return cls(**dict(args))
    except Exception as exc:  # e.g. RichProgressBar without `rich`: the class's own message, no traceback
        detail = " ".join(str(exc).split())[:500]
        raise ConfigError(f"{what}: {path}(**init_args) failed ({type(exc).__name__}: {detail}). Fix its init_args "
                          "or install what it needs, or remove the entry.") from exc


def lightning_objects(trainer_kwargs: dict[str, Any], callbacks: Any = None, logger: Any = None) -> dict[str, Any]:
    """``trainer.callbacks`` / ``trainer.logger`` entries (class_path dicts, strings or objects) as objects,
    plus those given from Python (``evaluate(cfg, callbacks=[...], logger=...)``)."""
    from lightning.pytorch import Callback
    from lightning.pytorch.loggers import Logger

    out = dict(trainer_kwargs)
    listed = out.get("callbacks") or []
    listed = listed if isinstance(listed, (list, tuple)) else [listed]
    made = [instantiate(c, "trainer.callbacks", Callback) for c in listed]
    out["callbacks"] = [*made, *(callbacks or [])]
    cfg_logger = out.get("logger", False)
    if isinstance(cfg_logger, (list, tuple)):
        cfg_logger = [instantiate(x, "trainer.logger", Logger) for x in cfg_logger]
    else:
        cfg_logger = instantiate(cfg_logger, "trainer.logger", Logger)
    if logger is not None:
        cfg_logger = logger
    out["logger"] = cfg_logger
    return out


def log_results(loggers: Any, results: Any) -> None:
    """Give every Lightning logger the run's config as hyperparameters and its exact summary, once.

    Called by ``evaluate`` on global rank 0 after the results are assembled, with Python floats straight
    to ``logger.log_metrics`` (the keys of :func:`sagebench.metrics.flat_summary`, interval ends included):
    ``LightningModule.log`` would have turned each figure into a float32 tensor (0.3958333432674408 for
    19/48), and the intervals and the config would have been missing. Lightning finalised the loggers when
    ``Trainer.test`` ended, so each is saved and finalised again here.
    """
    from sagebench.metrics import flat_summary

    if not loggers:
        return
    metrics = flat_summary(results, intervals=True)
    for logger in loggers:
        logger.log_hyperparams(results.get("config") or {})
        logger.log_metrics(metrics)
        logger.save()
        logger.finalize("success")
