"""What data a run reads: :class:`DataSpec`, every ``data.*`` value checked once, here."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from sagebench.errors import ConfigError, DataError

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


ON_ERROR_POLICIES = ("fail", "skip")
#: data.decode's values (sagebench.data.decode, which imports torch: the config loader reads this module)
DECODERS = ("pil", "tensor", "auto")


@dataclass
class DataSpec:
    """Which images to evaluate and how to preprocess them: the ``data`` config section itself.

    One type for both jobs: OmegaConf builds the ``data`` section from this dataclass (so the
    keys, types and defaults are declared once), and :meth:`from_config` turns the merged
    section into a checked instance (``__post_init__`` checks every value once, at this
    boundary; list values become tuples). Annotations use ``typing.Optional``/``list`` because
    OmegaConf reads them.

    Give either ``name`` (a hub data set) or ``path`` (a local copy); a config that sets both is
    refused (:meth:`from_config`; built directly, ``path`` wins). The preprocessing fields override
    the model's timm data config when not ``None``.

    ``label_map``: which model output each data label is, when the data's label indices are not
    the model's: ``{data label name: model index}`` or ``{data label index: model index}``, or
    ``"identity"`` (the data's indices are the model's). ``None``: by name when the data's labels
    and the model's classes are named (see :mod:`sagebench.data.labels`).
    """

    name: Optional[str] = None
    split: str = "validation"
    path: Optional[str] = None
    revision: Optional[str] = None
    streaming: bool = False
    limit: Optional[int] = None
    image_column: str = "image"
    label_column: str = "label"
    crop_pct: Optional[float] = None
    interpolation: Optional[str] = None
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    input_size: Optional[list[int]] = None
    on_error: str = "fail"  # a corrupt image: "fail" (stop, naming it) or "skip" (count and report it)
    num_workers: Optional[int] = None  # DataLoader workers; null: where they pay (GPU: up to 8; CPU: 0 below 8 cores)
    config_name: Optional[str] = None  # the hub data set's configuration / subset (load_dataset(name, config_name))
    data_files: Optional[Any] = None  # load_dataset's data_files (a path, a list, or {split: paths})
    token_env: Optional[str] = None  # environment variable holding a hub token (read at load time, never written)
    label_map: Any = None  # {data name or index: model index} | "identity" | null (by name, when both sides are named)
    decode: str = "pil"  # pil | tensor (torchvision; nvJPEG on a CUDA run) | auto (tensor on CUDA, else pil)

    @classmethod
    def from_config(cls, node) -> "DataSpec":
        """The checked spec of a merged ``data`` config section (a DictConfig or a dict)."""
        from omegaconf import DictConfig, OmegaConf

        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        check_name_or_path(values.get("name"), values.get("path"))
        return cls(**values)

    def __post_init__(self) -> None:
        _check_limit(self.limit)
        if self.on_error not in ON_ERROR_POLICIES:
            raise DataError(f"data.on_error must be one of {', '.join(ON_ERROR_POLICIES)}; got {self.on_error!r}.")
        if self.path is not None:
            self.path = os.fspath(self.path)
        # Config loaders hand over lists (or OmegaConf ListConfigs); keep tuples.
        if self.mean is not None:
            self.mean = _float_tuple(self.mean, "data.mean")
        if self.std is not None:
            self.std = _float_tuple(self.std, "data.std")
        if self.input_size is not None:
            self.input_size = _input_size(self.input_size)  # type: ignore[assignment]
        if self.num_workers is not None and (isinstance(self.num_workers, bool) or int(self.num_workers) < 0):
            raise DataError(f"data.num_workers must be >= 0 (or null: chosen for the device), got {self.num_workers}.")
        self.label_map = _label_map(self.label_map)
        check_decode(self.decode)


def check_decode(value: object) -> str:
    """``value`` if it is one of :data:`DECODERS` (``data.decode``), else a :class:`DataError` naming them."""
    if value not in DECODERS:
        raise DataError(f"data.decode must be one of {', '.join(DECODERS)}; got {value!r}. pil: PIL in the "
                        "DataLoader workers (the reference); tensor: torchvision's JPEG decoder, on the GPU on a "
                        "CUDA run; auto: tensor on CUDA, pil elsewhere.")
    return str(value)


def check_name_or_path(name: object, path: object) -> None:
    """Refuse a data section that names a hub data set and a local path at once (which one was meant?)."""
    if name and path:
        raise ConfigError(
            f"data.name={name!r} and data.path={str(path)!r} are both set: which data to read is ambiguous. "
            "Set data.path=null to use the hub data set, or drop data.name (data.name=null) to read the local copy."
        )


def _label_map(value: object) -> Any:
    """``None``, ``"identity"`` or ``{str | int: int}`` (model indices), checked."""
    if value is None:
        return None
    if isinstance(value, str):
        if value == "identity":
            return value
        raise DataError(f"data.label_map must be a mapping {{data label name or index: model index}} (e.g. "
                        f"data.label_map={{cat: 281, dog: 207}}) or identity; got {value!r}.")
    if not isinstance(value, Mapping) or not value:
        raise DataError(f"data.label_map must be a non-empty mapping {{data label name or index: model index}} "
                        f"(e.g. data.label_map={{cat: 281, dog: 207}}) or identity; got {value!r}.")
    out: dict[Any, int] = {}
    for key, index in value.items():
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise DataError(f"data.label_map keys are data label names or indices; got {key!r}.")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise DataError(f"data.label_map[{key!r}] must be a model class index (an integer >= 0); got {index!r}.")
        out[key] = int(index)
    return out


def _check_limit(limit: object) -> None:
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise DataError(
            f"data.limit must be a positive integer (the number of images to evaluate) or null "
            f"for the whole split; got {limit!r}."
        )


def _float_tuple(values: object, what: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be a list of numbers, one per channel; got {values!r}.") from exc
    if not out:
        raise DataError(f"{what} must have one value per channel; got an empty list.")
    return out


def _input_size(values: object) -> tuple[int, int, int]:
    try:
        out = tuple(int(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise DataError(f"data.input_size must be [channels, height, width]; got {values!r}.") from exc
    if len(out) != 3 or min(out) < 1:
        raise DataError(f"data.input_size must be [channels, height, width] of positive ints; got {values!r}.")
    if out[0] not in (1, 3):
        raise DataError(f"data.input_size has {out[0]} channels; only 1 (grayscale) or 3 (RGB) are supported.")
    return out  # type: ignore[return-value]
