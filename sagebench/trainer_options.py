"""What ``trainer.*`` may hold: the Trainer's own keywords, less the settings a sweep cannot honour.

Its own module, below both the config loader (which refuses a bad ``trainer.*`` key while reading
the config, before any model is built) and :mod:`sagebench.sweep.trainer` (which builds the
Trainer and checks the options it is given from Python). Lightning is imported only inside the
functions that need its signature or precision list, so loading a config stays cheap.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Iterable
from typing import Any

from sagebench.errors import ConfigError

#: strategies whose worker processes are started by the parent (spawn / fork): their records stay in the children
SPAWNING_STRATEGIES = ("ddp_spawn", "ddp_notebook", "ddp_fork")
#: Trainer options that evaluate a subset of the batches (or a made-up loop): data.limit is the way here
SUBSET_OPTIONS = {"limit_test_batches": (1.0, None), "limit_val_batches": (1.0, None),
                  "fast_dev_run": (False, 0, None), "overfit_batches": (0, 0.0, None)}


#: ``trainer.precision: auto``: the precision policy of the ImageNet experiments (docs/performance.md)
AUTO_PRECISION = "auto"


def auto_precision(accelerator: Any) -> str:
    """What ``trainer.precision: auto`` runs: ``bf16-mixed`` where the run is on a CUDA GPU with bf16
    (Ampere and later), ``32-true`` elsewhere (CPU, MPS, older GPUs).

    Why: on an H100 an fp32 ViT forward runs at a fraction of its bf16 tensor-core rate, while on a CPU
    bf16 autocast is slower than fp32 unless the cores have bf16 units. The resolved value is what the
    run's identity records (:func:`sagebench.sweep.plan.resolved_precision`), so fp32 and bf16 runs are
    never the same benchmark; ``trainer.precision=32-true`` keeps fp32 on a GPU.
    """
    import torch

    name = accelerator.lower() if isinstance(accelerator, str) else type(accelerator).__name__.lower()
    on_cuda = name in ("auto", "gpu", "cuda", "nonetype") or "cuda" in name
    if on_cuda and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def resolve_precision(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``precision: auto`` replaced by :func:`auto_precision` of its accelerator."""
    if str(options.get("precision")) != AUTO_PRECISION:
        return options
    return {**options, "precision": auto_precision(options.get("accelerator", "auto"))}


def check_trainer_keys(keys: Iterable[str]) -> None:
    """Refuse a ``trainer.*`` key that ``lightning.Trainer`` does not take, with the closest one as a hint."""
    import lightning as L

    allowed = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    unknown = sorted(set(keys) - allowed)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(allowed), n=1)
        hint = f" Did you mean 'trainer.{close[0]}'?" if close else ""
        raise ConfigError(f"Unknown trainer option(s) {unknown}: trainer.* keys are passed to lightning.Trainer.{hint}")


def valid_precisions() -> list[str]:
    """The values Lightning accepts for ``trainer.precision``, as strings."""
    try:
        from lightning.fabric.connector import _PRECISION_INPUT
    except ImportError:  # pragma: no cover
        return ["64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "32", "16", "bf16"]

    def flat(t: Any) -> list[Any]:
        out: list[Any] = []
        for a in typing.get_args(t):
            out += flat(a) if typing.get_args(a) else [a]
        return out

    seen: list[str] = []
    for value in flat(_PRECISION_INPUT):
        if str(value) not in seen:
            seen.append(str(value))
    return seen


def check_trainer_options(options: Any) -> None:
    """Refuse, before any model is built, ``trainer.*`` settings a sweep cannot honour.

    Spawned DDP processes (``ddp_spawn``, ``ddp_notebook``, ``ddp_fork``) keep the records they
    gather: only the launching process's copy of the module would reach the results. Batch limits
    (``limit_test_batches``, ``fast_dev_run`` ...) would evaluate an arbitrary share of each process's
    images under a benchmark's name; ``data.limit`` evaluates the first N images instead.
    """
    options = dict(options or {})
    strategy = options.get("strategy")
    if isinstance(strategy, str) and strategy.startswith(SPAWNING_STRATEGIES):
        raise ConfigError(f"trainer.strategy={strategy!r} is not supported: its processes are spawned by the parent "
                          "and do not return their per-image records to it here. Use trainer.strategy=ddp (each "
                          "process is a copy of the command, e.g. trainer.strategy=ddp trainer.devices=2).")
    for key, defaults in SUBSET_OPTIONS.items():
        if key in options and not any(options[key] == d and type(options[key]) is type(d) for d in defaults):
            raise ConfigError(f"trainer.{key}={options[key]!r} is not supported: it would evaluate an arbitrary "
                              "share of the images under this benchmark's name. Use data.limit=N to evaluate the "
                              "first N images (e.g. data.limit=1000).")
    if "precision" in options and options["precision"] is not None:
        allowed = [*valid_precisions(), AUTO_PRECISION]
        if str(options["precision"]) not in allowed:
            raise ConfigError(f"trainer.precision={options['precision']!r} is not a precision Lightning knows; "
                              f"valid precisions: {', '.join(allowed)} (e.g. trainer.precision=32-true).")
