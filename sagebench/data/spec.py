"""What data a run reads: :class:`DataSpec`, every ``data.*`` value checked once, here."""

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from sagebench.errors import DataError

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


ON_ERROR_POLICIES = ("fail", "skip")


@dataclass
class DataSpec:
    """Which images to evaluate and how to preprocess them: the ``data`` config section itself.

    One type for both jobs: OmegaConf builds the ``data`` section from this dataclass (so the
    keys, types and defaults are declared once), and :meth:`from_config` turns the merged
    section into a checked instance (``__post_init__`` checks every value once, at this
    boundary; list values become tuples). Annotations use ``typing.Optional``/``list`` because
    OmegaConf reads them.

    Give either ``name`` (a hub data set) or ``path`` (a local copy); ``path`` wins when both
    are set. The preprocessing fields override the model's timm data config when not ``None``.
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

    @classmethod
    def from_config(cls, node) -> "DataSpec":
        """The checked spec of a merged ``data`` config section (a DictConfig or a dict)."""
        from omegaconf import DictConfig, OmegaConf

        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
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
