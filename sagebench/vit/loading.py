"""Building timm models with their weights: hub, a local checkpoint, or random init.

Why the care: a user offline must learn within seconds what to do (not after a 45 s hub
timeout), a checkpoint that needs pickle must be refused, and a checkpoint of the wrong
architecture must fail loudly instead of loading half its tensors.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from sagebench.errors import ModelLoadError


def _timm() -> Any:
    """timm, with the embedded benchmark's models registered in it.

    Why on first use: importing timm takes seconds; a config check, ``import sagebench.sweep.evaluate``
    or ``sagebench --help`` needs none of it. And why W&B is hidden while timm loads: timm imports W&B
    when it is installed, only for its training scripts' ``timm.utils.update_summary(log_wandb=True)``,
    which sagebench never calls; that import cost 0.3 s on an idle core and 1-3 s on a busy machine, in
    every run, ``logger=none`` included. W&B imports as usual afterwards (``logger=wandb``); only that timm
    helper, in a process where sagebench loaded timm first, cannot log to W&B.
    """
    if "timm" not in sys.modules and "wandb" not in sys.modules:
        sys.modules["wandb"] = None  # type: ignore[assignment]  # `import wandb` raises ImportError meanwhile
        try:
            import timm
        finally:
            if sys.modules.get("wandb", 0) is None:
                del sys.modules["wandb"]
    import timm

    import sagebench.demo.models  # noqa: F401  (registers the embedded benchmark's models with timm)

    return timm


@dataclass
class ModelSpec:
    """How to build one model: ``name`` for ``timm.create_model`` and where its weights come from."""

    name: str
    pretrained: bool = False
    checkpoint: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_weights_cached(model_name: str) -> bool:
    """True when the pretrained weights of ``model_name`` are already in the local HF cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from timm.models import get_pretrained_cfg

        if model_name.startswith("hf-hub:"):
            hub_id = model_name[len("hf-hub:"):]
        else:
            cfg = get_pretrained_cfg(model_name)
            hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not hub_id:
            return False
        repo_id, _, revision = hub_id.partition("@")
        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(repo_id, filename, revision=revision or None)
            if isinstance(hit, str):
                return True
    except Exception:
        return False
    return False


def _needs_hub(model_name: str) -> bool:
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(model_name)
    except Exception:
        return True
    if cfg is None:
        return True
    if getattr(cfg, "file", None) and Path(cfg.file).is_file():
        return False
    return True


def _check_shipped_file(model_name: str) -> None:
    """Models whose pretrained config names a local file (the embedded benchmark's) need that file."""
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(model_name)
    except Exception:
        return
    file = getattr(cfg, "file", None) if cfg is not None else None
    if file and not getattr(cfg, "hf_hub_id", None) and not Path(file).is_file():
        raise ModelLoadError(f"The weights file of {model_name!r} is missing ({file}). Reinstall sagebench, or "
                             "train them with `sagebench train-demo`.")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely: safetensors, or ``torch.load(weights_only=True)``.

    Common wrappers (``state_dict``, ``model``, ``state_dict_ema``) and Lightning's ``model.``
    prefix are unwrapped. Anything that needs pickle to load is refused.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelLoadError(f"Checkpoint {str(path)!r} is a directory, not a weights file: point "
                             "model.*.checkpoint at the .safetensors (or state-dict .pth) file inside it.")
    if not path.is_file():
        raise ModelLoadError(f"Checkpoint {str(path)!r} does not exist. Check model.*.checkpoint.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ModelLoadError(
                f"Checkpoint {str(path)!r} needs pickle to load, which sagebench refuses (it can run code). "
                "Re-save it as plain tensors (safetensors, or torch.save(model.state_dict()))."
            ) from exc
        raise ModelLoadError(f"Checkpoint {str(path)!r} could not be read ({type(exc).__name__}: {exc}); "
                             "is it truncated or not a checkpoint?") from exc
    if isinstance(obj, dict):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"Checkpoint {str(path)!r} does not hold a state dict of tensors.")
    prefix = "model."
    if obj and all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def state_dict_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor], shown: int = 4) -> str:
    """What keeps ``state`` from loading strictly into ``model``, naming tensors and shapes ("" when it fits)."""
    own = model.state_dict()
    parts = []
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if shapes:
        listed = "; ".join(f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}"
                           for k in shapes[:shown])
        parts.append(f"{len(shapes)} tensor(s) of another shape ({listed}{'; ...' if len(shapes) > shown else ''})")
    missing = [k for k in own if k not in state]
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing from the checkpoint ({', '.join(missing[:shown])}"
                     f"{', ...' if len(missing) > shown else ''})")
    unexpected = [k for k in state if k not in own]
    if unexpected:
        parts.append(f"{len(unexpected)} tensor(s) the model does not have ({', '.join(unexpected[:shown])}"
                     f"{', ...' if len(unexpected) > shown else ''})")
    return "; ".join(parts)


def create_model(spec: ModelSpec) -> torch.nn.Module:
    """Build ``spec`` with its weights, frozen and in eval mode.

    ``checkpoint`` wins over ``pretrained``: the model is built by timm without hub access and
    the file is loaded strictly (every tensor must match). ``pretrained`` uses timm's own loading
    (the hub for real models, the shipped file for the embedded benchmark's models).
    """
    timm = _timm()
    kwargs = dict(spec.kwargs or {})
    hub_name = spec.name.startswith(("hf-hub:", "local-dir:"))  # timm's own forms: a hub repo or a local folder
    if not hub_name and spec.name not in timm.list_models() and spec.name not in timm.list_models(pretrained=True):
        close = timm.list_models(f"*{spec.name.split('.')[0][:12]}*")[:5]
        hint = f" Similar timm models: {', '.join(close)}." if close else ""
        raise ModelLoadError(f"Unknown timm model {spec.name!r}.{hint}")
    if spec.checkpoint:
        state = read_state_dict(spec.checkpoint)
        model = _build(spec.name, pretrained=False, **kwargs)
        mismatch = state_dict_mismatch(model, state)
        if mismatch:
            raise ModelLoadError(f"Checkpoint {spec.checkpoint!r} does not fit model {spec.name!r} "
                                 f"(wrong architecture or model.*.kwargs?): {mismatch}.")
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(
                f"Checkpoint {spec.checkpoint!r} does not fit model {spec.name!r} "
                f"(wrong architecture or model.*.kwargs?): {str(exc).splitlines()[0]} ..."
            ) from exc
    elif spec.pretrained:
        overlay = kwargs.get("pretrained_cfg_overlay") or {}
        local = overlay.get("file") if isinstance(overlay, dict) else None
        if local and not Path(local).is_file():
            raise ModelLoadError(f"model.*.kwargs.pretrained_cfg_overlay.file {local!r} does not exist.")
        if not local and not spec.name.startswith("local-dir:"):
            _check_shipped_file(spec.name)
        if (not local and not spec.name.startswith("local-dir:") and _needs_hub(spec.name)
                and not _hub_weights_cached(spec.name) and not _hub_reachable()):
            raise ModelLoadError(
                f"Pretrained weights for {spec.name!r} are not in the local cache and the Hugging Face Hub "
                "cannot be reached (offline, or HF_HUB_OFFLINE=1). Either run once with internet access "
                "to fill the cache (~/.cache/huggingface), or download the weights elsewhere and set "
                "model.<edge|server>.checkpoint=PATH (a .safetensors or state-dict .pth file)."
            )
        model = _build(spec.name, pretrained=True, **kwargs)
    else:
        model = _build(spec.name, pretrained=False, **kwargs)
    model.eval()
    model.requires_grad_(False)
    return model


def _build(name: str, pretrained: bool, **kwargs: Any) -> torch.nn.Module:
    try:
        return _timm().create_model(name, pretrained=pretrained, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"timm could not build {name!r} with kwargs {kwargs}: {exc}") from exc
    except OSError as exc:  # hub / file errors
        raise ModelLoadError(f"Weights for {name!r} could not be loaded: {exc}. "
                             "Set model.<edge|server>.checkpoint=PATH to use a local file.") from exc
