"""The data set and its transforms: one job.

Where the images come from (:func:`load_source`: the Hugging Face hub or a local parquet file,
parquet glob/directory, ``save_to_disk`` directory or image folder), how they become model input
(:func:`resolve_data_config`, :func:`build_transform`, :func:`to_model_mode`), how they are
indexed for evaluation (:class:`EvalImages`, :class:`StreamingEvalImages`,
:class:`UnrepeatedSampler`: every image is evaluated exactly once, under its data set index) and
what makes two runs' data the same (:func:`dataset_fingerprint_fields`).

Everything is lazy: images are decoded one at a time, when a worker asks for them.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import inspect
import io
import os
from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.data
from PIL import Image

from sagebench.errors import DataError

__all__ = [
    "DataSpec",
    "EvalImages",
    "StreamingEvalImages",
    "UnrepeatedSampler",
    "build_transform",
    "check_labels",
    "dataset_fingerprint_fields",
    "load_source",
    "resolve_data_config",
    "to_model_mode",
]

Transform = Callable[[Image.Image], torch.Tensor]

_WHERE_TO_POINT = (
    "Point data.path at a parquet file (or a glob such as 'dir/*.parquet', or a directory of "
    "parquet files), a directory written by datasets' save_to_disk, or an image folder with one "
    "subfolder per class."
)
_IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
    ".jfif", ".jpe",
}
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}
ON_ERROR_POLICIES = ("fail", "skip")


def skipped_sample_id(index: int) -> int:
    """The sample id an evaluation data set yields for image ``index`` skipped by ``data.on_error=skip``.

    Real ids are data set indices (>= 0); a skipped image is signalled by ``-(index + 1)`` (and a
    blank image, label -1), so the batch keeps its shape and the module can record and drop it.
    """
    return -(int(index) + 1)


def skipped_index(sample_id: Any) -> Any:
    """Inverse of :func:`skipped_sample_id` (works on ints, arrays and tensors)."""
    return -sample_id - 1


# --------------------------------------------------------------------------------------------
# The spec


@dataclass
class DataSpec:
    """Which images to evaluate and how to preprocess them (the ``data`` config section).

    Give either ``name`` (a hub data set) or ``path`` (a local copy); ``path`` wins when both
    are set. The last five fields override the model's timm data config when not ``None``.
    """

    name: str | None = None
    split: str = "validation"
    path: str | None = None
    revision: str | None = None
    streaming: bool = False
    limit: int | None = None
    image_column: str = "image"
    label_column: str = "label"
    crop_pct: float | None = None
    interpolation: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, int, int] | None = None
    on_error: str = "fail"  # a corrupt image: "fail" (stop, naming it) or "skip" (count and report it)

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


# --------------------------------------------------------------------------------------------
# Loading


def load_source(spec: DataSpec) -> Any:
    """Load the data set named by ``spec``, without decoding any image.

    Returns a map-style ``datasets.Dataset``, or a ``datasets.IterableDataset`` when
    ``spec.streaming``. ``spec.path`` takes precedence over ``spec.name``. Raises
    :class:`DataError` for a missing path, an unreadable local copy, an unknown split, or a hub
    data set that cannot be reached (offline, no network, not logged in, gated).
    """
    _check_limit(spec.limit)
    if spec.path:
        return _load_local(spec)
    if spec.name:
        return _load_hub(spec)
    raise DataError(
        "No data set given: set data.name to a Hugging Face hub data set (e.g. "
        "'ILSVRC/imagenet-1k') or data.path to a local copy. " + _WHERE_TO_POINT
    )


def _has_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _resolve_local(path: str) -> tuple[str, Path, list[Path]]:
    """``(kind, path, files)`` of a local source; kind is parquet, parquet_dir, arrow or imagefolder.

    ``files`` lists the parquet files for ``parquet`` (one file or a glob's matches), else is empty.
    """
    raw = os.path.expanduser(path)
    if _has_glob(raw):
        files = sorted(Path(p) for p in glob.glob(raw, recursive=True) if os.path.isfile(p))
        if not files:
            raise DataError(f"data.path {path!r} matches no files. {_WHERE_TO_POINT}")
        not_parquet = [f.name for f in files if f.suffix != ".parquet"]
        if not_parquet:
            raise DataError(
                f"data.path {path!r} matches files that are not parquet ({', '.join(not_parquet[:3])}); "
                "a glob must match parquet files only."
            )
        return "parquet", Path(raw), files
    target = Path(raw).resolve()
    if not target.exists():
        raise DataError(f"data.path {path!r} does not exist ({target}). {_WHERE_TO_POINT}")
    if target.is_file():
        if target.suffix != ".parquet":
            raise DataError(f"data.path {path!r} is a file but not a .parquet file. {_WHERE_TO_POINT}")
        return "parquet", target, [target]
    if (target / "dataset_dict.json").is_file() or (target / "state.json").is_file():
        return "arrow", target, []
    if next(target.rglob("*.parquet"), None) is not None:
        return "parquet_dir", target, []
    if any(p.suffix.lower() in _IMAGE_SUFFIXES for p in target.rglob("*") if p.is_file()):
        return "imagefolder", target, []
    raise DataError(f"data.path {path!r} is a directory with no parquet, arrow or image files. {_WHERE_TO_POINT}")


def _pick_split(splits: Any, split: str, where: str, *, strict: bool) -> Any:
    """One split of a (Iterable)DatasetDict; when not ``strict`` a lone split is taken whatever its name."""
    names = list(splits.keys())
    if split in splits:
        return splits[split]
    if not strict and len(names) == 1:
        return splits[names[0]]
    raise DataError(f"{where} has the splits {names}, not {split!r}: set data.split to one of them.")


def _load_local(spec: DataSpec) -> Any:
    import datasets
    import pyarrow as pa

    kind, target, files = _resolve_local(spec.path)  # type: ignore[arg-type]
    where = f"data.path {spec.path!r}"
    try:
        if kind == "parquet":
            return datasets.load_dataset(
                "parquet", data_files=[str(f) for f in files], split="train", streaming=spec.streaming
            )
        if kind == "arrow":
            loaded = datasets.load_from_disk(str(target))
            if isinstance(loaded, datasets.DatasetDict):
                loaded = _pick_split(loaded, spec.split, where, strict=True)
            return loaded.to_iterable_dataset() if spec.streaming else loaded
        # A directory: datasets infers the splits from file/folder names (train-*, validation/, ...);
        # one without such names holds a single split, "train".
        builder = "parquet" if kind == "parquet_dir" else "imagefolder"
        loaded = datasets.load_dataset(builder, data_dir=str(target), streaming=spec.streaming)
        return _pick_split(loaded, spec.split, where, strict=False)
    except DataError:
        raise
    except (OSError, pa.ArrowException, datasets.exceptions.DatasetsError) as exc:
        raise DataError(
            f"Could not read {where} as {kind.replace('_', ' ')} ({type(exc).__name__}: {exc}). "
            f"Check that the files are complete. {_WHERE_TO_POINT}"
        ) from exc


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the hub could not (or may not) be reached", not a bug."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    with contextlib.suppress(ImportError):
        from datasets.exceptions import DatasetNotFoundError

        errors.append(DatasetNotFoundError)
    with contextlib.suppress(ImportError):
        from huggingface_hub import errors as hub_errors

        for name in ("HfHubHTTPError", "LocalEntryNotFoundError", "EntryNotFoundError", "LocalTokenNotFoundError"):
            if isinstance(getattr(hub_errors, name, None), type):
                errors.append(getattr(hub_errors, name))
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        with contextlib.suppress(ImportError):
            cls = getattr(__import__(module), name, None)
            if isinstance(cls, type):
                errors.append(cls)
    return tuple(errors)


def _truthy(value: str | None) -> bool:
    return value is not None and value.upper() in _TRUE_VALUES


@contextlib.contextmanager
def _offline_env_honoured() -> Iterator[None]:
    """Apply HF_HUB_OFFLINE / HF_DATASETS_OFFLINE as they are now, not as they were at import.

    ``datasets`` and ``huggingface_hub`` read these variables once, when first imported; a
    variable set later (by a launcher, a notebook or a test) would otherwise be ignored and
    every request retried for tens of seconds. Only ever switches offline mode on.
    """
    import datasets.config
    from huggingface_hub import constants

    hub_offline = _truthy(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))
    datasets_env = os.environ.get("HF_DATASETS_OFFLINE")
    datasets_offline = hub_offline if datasets_env is None else _truthy(datasets_env)
    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    try:
        if datasets_offline:
            datasets.config.HF_HUB_OFFLINE = True
        if hub_offline:
            constants.HF_HUB_OFFLINE = True
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _load_hub(spec: DataSpec) -> Any:
    import datasets

    name = spec.name
    try:
        with _offline_env_honoured():
            return datasets.load_dataset(
                name, split=spec.split, revision=spec.revision, streaming=spec.streaming
            )
    except _hub_errors() as exc:
        raise DataError(
            f"Could not load the data set {name!r} (split {spec.split!r}) from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}). "
            "If the machine is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set) or has no network, "
            "point data.path at a local copy: a parquet file or glob, a save_to_disk directory, or an "
            "image folder with one subfolder per class. "
            "If the data set is gated or private, log in with `hf auth login` (`huggingface-cli login` "
            "in older huggingface_hub) or set HF_TOKEN, and accept the terms on the data set's hub "
            f"page (https://huggingface.co/datasets/{name}). Check the spelling of data.name too."
        ) from exc
    except ValueError as exc:  # unknown split, missing config name, malformed repo id
        raise DataError(
            f"Could not load the data set {name!r} (split {spec.split!r}): {exc}. "
            "Check data.name and data.split."
        ) from exc


# --------------------------------------------------------------------------------------------
# Preprocessing


def resolve_data_config(model: torch.nn.Module, spec: DataSpec) -> dict[str, Any]:
    """The model's timm data config with the spec's non-``None`` overrides applied.

    Raises :class:`DataError` when the result is inconsistent (``mean``/``std`` not one value per
    input channel, an unknown interpolation, ``crop_pct`` outside (0, 1]).
    """
    import timm.data

    config = dict(timm.data.resolve_data_config({}, model=model))
    if spec.input_size is not None:
        config["input_size"] = _input_size(spec.input_size)
    if spec.mean is not None:
        config["mean"] = _float_tuple(spec.mean, "data.mean")
    if spec.std is not None:
        config["std"] = _float_tuple(spec.std, "data.std")
    if spec.crop_pct is not None:
        config["crop_pct"] = float(spec.crop_pct)
    if spec.interpolation is not None:
        config["interpolation"] = spec.interpolation

    channels = _input_size(config["input_size"])[0]
    for key in ("mean", "std"):
        values = tuple(float(v) for v in config[key])
        if len(values) != channels:
            raise DataError(
                f"The data config's {key} has {len(values)} value(s) but the input has {channels} "
                f"channel(s): set data.mean and data.std with {channels} value(s) each."
            )
        config[key] = values
    if min(config["std"]) <= 0:
        raise DataError(f"data.std must be positive; got {config['std']}.")
    crop_pct = config.get("crop_pct")
    if crop_pct is not None and not 0 < crop_pct <= 1:
        raise DataError(f"data.crop_pct must be in (0, 1]; got {crop_pct}.")
    if config.get("interpolation") not in _INTERPOLATIONS:
        raise DataError(
            f"data.interpolation must be one of {', '.join(_INTERPOLATIONS)}; got {config.get('interpolation')!r}."
        )
    return config


def build_transform(data_config: dict[str, Any]) -> Transform:
    """timm's evaluation transform (resize, center crop, to tensor, normalise) for ``data_config``.

    The transform maps a PIL image already in the model's mode (see :func:`to_model_mode`) to a
    float tensor of shape ``data_config["input_size"]``.
    """
    import timm.data

    accepted = inspect.signature(timm.data.create_transform).parameters
    kwargs = {k: v for k, v in data_config.items() if k in accepted and k != "is_training"}
    return timm.data.create_transform(**kwargs, is_training=False)


def to_model_mode(img: Image.Image, channels: int) -> Image.Image:
    """``img`` as an 8-bit "RGB" (``channels == 3``) or "L" (``channels == 1``) image.

    * 16-bit grayscale ("I;16*", and "I", read as 16-bit) is scaled to 8 bits by ``>> 8``
      (65535 -> 255), not clipped at 255 as Pillow's own conversion does; values of an "I"
      image outside 0..65535 end up clipped to 0..255.
    * Transparent images (RGBA, LA, P or L with a transparent colour, ...) are first composited
      onto black, so transparent pixels are defined (black) whatever colour they store.
    * Everything else (L, 1, P, CMYK, YCbCr, ...) goes through ``Image.convert``.
    """
    if channels not in (1, 3):
        raise DataError(f"Models with {channels} input channels are not supported; only 1 (grayscale) or 3 (RGB).")
    target = "RGB" if channels == 3 else "L"
    if img.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.int64) >> 8
        img = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    elif img.mode in _ALPHA_MODES or img.has_transparency_data:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    if img.mode == target:
        return img
    try:
        return img.convert(target)
    except ValueError as exc:
        raise DataError(f"Images of mode {img.mode!r} cannot be converted to {target!r}: {exc}.") from exc


def _decode_image(value: Any, feature: Any, where: str) -> Image.Image:
    """A PIL image from what a data set row holds (PIL image, {"bytes", "path"}, bytes, array)."""
    try:
        if isinstance(value, Image.Image):
            return value
        if isinstance(value, (dict, str)):
            import datasets

            if not (isinstance(feature, datasets.Image) and feature.decode):
                feature = datasets.Image()
            return feature.decode_example(value)
        if isinstance(value, (bytes, bytearray)):
            img = Image.open(io.BytesIO(value))
            img.load()
            return img
        if isinstance(value, np.ndarray):
            return Image.fromarray(value)
    except DataError:
        raise
    except Exception as exc:  # PIL.UnidentifiedImageError, truncated file, missing file
        raise DataError(
            f"{where} cannot be decoded as an image ({type(exc).__name__}: {exc}); the file is corrupt "
            "or not an image. Repair or remove it, or set data.on_error=skip to skip such images "
            "(they are counted and listed in the results)."
        ) from exc
    raise DataError(
        f"{where} holds a {type(value).__name__}, not an image; point data.image_column at the image column."
    )


def _label(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(
            f"{where} is {value!r}, not an integer class index; point data.label_column at an "
            "integer (or ClassLabel) column."
        )
    return torch.tensor(int(value), dtype=torch.int64)


def _check_columns(found: Sequence[str] | None, spec_columns: dict[str, str]) -> None:
    if found is None:
        return
    missing = [f"data.{key}={col!r}" for key, col in spec_columns.items() if col not in found]
    if missing:
        raise DataError(
            f"The data set has no column for {', '.join(missing)}; its columns are {list(found)}. "
            "Set data.image_column and data.label_column to the image and label columns."
        )


def _check_label_feature(feature: Any, column: str) -> None:
    """Reject a label column whose declared type is not an integer (strings, floats)."""
    import datasets

    if feature is None or isinstance(feature, datasets.ClassLabel):
        return
    if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        return
    raise DataError(
        f"The label column {column!r} has type {feature}; labels must be integer class indices. "
        "Point data.label_column at an integer (or ClassLabel) column, or cast it with ClassLabel."
    )


# --------------------------------------------------------------------------------------------
# Evaluation data sets


def _eval_setup(spec: DataSpec | None, data_config: dict[str, Any] | None) -> tuple[int, int | None, str, str]:
    """``(channels, limit, image_column, label_column)``: channels from the data config's input_size."""
    spec = spec if spec is not None else DataSpec()
    _check_limit(spec.limit)
    channels = 3 if data_config is None else _input_size(data_config["input_size"])[0]
    return channels, spec.limit, spec.image_column, spec.label_column


class EvalImages(torch.utils.data.Dataset):
    """The first ``spec.limit`` images of a map-style data set as ``(image, label, sample_id)``.

    ``image`` is ``transform(to_model_mode(img, channels))`` with ``channels`` the data
    config's ``input_size[0]`` (3 without a data config), ``label`` an int64 scalar tensor,
    ``sample_id`` an int64 scalar tensor equal to the data set index. The columns are
    ``spec.image_column`` and ``spec.label_column``; they and the label type are checked once,
    here. Images are decoded only in :meth:`__getitem__`.
    """

    def __init__(
        self,
        dataset: Any,
        transform: Transform,
        spec: DataSpec | None = None,
        data_config: dict[str, Any] | None = None,
    ) -> None:
        import datasets

        channels, limit, image_column, label_column = _eval_setup(spec, data_config)
        _check_columns(dataset.column_names, {"image_column": image_column, "label_column": label_column})
        features = dataset.features or {}
        _check_label_feature(features.get(label_column), label_column)
        # Cheap views (no data is read or copied). Images are left undecoded by the data set and
        # decoded in __getitem__, so a corrupt file is reported as such, with its index.
        view = dataset.select_columns([image_column, label_column]).with_format(None)
        image_feature = features.get(image_column)
        if isinstance(image_feature, datasets.Image) and image_feature.decode:
            view = view.cast_column(image_column, datasets.Image(mode=image_feature.mode, decode=False))
        self.dataset = view
        self.transform = transform
        self.channels = channels
        self.image_column = image_column
        self.label_column = label_column
        self._image_feature = features.get(image_column)
        self._len = len(dataset) if limit is None else min(int(limit), len(dataset))
        self.on_error = spec.on_error if spec is not None else "fail"
        self._blank: torch.Tensor | None = None

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i = int(index)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"index {index} out of range for {self._len} images")
        row = self.dataset[i]
        try:
            img = _decode_image(row[self.image_column], self._image_feature, f"Image {i} (column {self.image_column!r})")
        except DataError:
            if self.on_error != "skip":
                raise
            return _skipped_item(self, i)
        label = _label(row[self.label_column], f"The label of image {i} (column {self.label_column!r})")
        return self.transform(to_model_mode(img, self.channels)), label, torch.tensor(i, dtype=torch.int64)

    def label_array(self) -> np.ndarray:
        """The labels of the evaluated images (the first ``len(self)``), read as one column."""
        return _label_column(self.dataset, self.label_column, self._len)


def _skipped_item(data: Any, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What an evaluation data set yields for a corrupt image under ``data.on_error=skip``."""
    if data._blank is None:  # a zero image of the transform's output shape
        blank = Image.new("RGB" if data.channels == 3 else "L", (32, 32))
        data._blank = torch.zeros_like(data.transform(blank))
    return data._blank, torch.tensor(-1, dtype=torch.int64), torch.tensor(skipped_sample_id(i), dtype=torch.int64)


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: the arguments, else torch.distributed's when initialised, else (0, 1)."""
    dist = torch.distributed
    initialised = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return int(rank), int(world_size)


class StreamingEvalImages(torch.utils.data.IterableDataset):
    """The first ``spec.limit`` items of an iterable (streaming) data set, split among ranks and workers.

    Items are enumerated in stream order; this process keeps item ``i`` when
    ``i % world_size == rank`` (rank/world from the arguments, else from ``torch.distributed``
    when initialised at iteration time), and DataLoader workers split those further, so every
    item up to ``limit`` is yielded exactly once over all ranks and workers, as
    ``(image, label, sample_id=i)``, made as by :class:`EvalImages`. Only kept items are
    decoded. Do not also split the stream with ``datasets.distributed.split_dataset_by_node``.
    """

    def __init__(
        self,
        dataset: Any,
        transform: Transform,
        spec: DataSpec | None = None,
        data_config: dict[str, Any] | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        batch_size: int = 64,
    ) -> None:
        super().__init__()
        channels, limit, image_column, label_column = _eval_setup(spec, data_config)
        self._columns = {"image_column": image_column, "label_column": label_column}
        _check_columns(dataset.column_names, self._columns)
        features = dataset.features or {}
        _check_label_feature(features.get(label_column), label_column)
        self.dataset = dataset
        self.transform = transform
        self.channels = channels
        self.limit = limit
        self.image_column = image_column
        self.label_column = label_column
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self._image_feature = features.get(image_column)
        self.on_error = spec.on_error if spec is not None else "fail"
        self._blank: torch.Tensor | None = None
        self.exclude: frozenset[int] = frozenset()  # ids already evaluated (a resumed run): not decoded
        self.num_classes: int | None = None  # when set, labels outside [0, num_classes) are a DataError

    def _stream(self) -> Any:
        """The wrapped stream, reduced to the two columns, images left undecoded when possible."""
        import datasets

        stream = self.dataset
        if stream.column_names is not None:
            stream = stream.select_columns([self.image_column, self.label_column])
        if isinstance(self._image_feature, datasets.Image) and self._image_feature.decode:
            stream = stream.decode(False)  # decode only the items this worker keeps
        return stream

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        rank, world = _rank_world(self.rank, self.world_size)
        worker = torch.utils.data.get_worker_info()
        workers, worker_id = (1, 0) if worker is None else (worker.num_workers, worker.id)
        if worker is not None:
            with contextlib.suppress(Exception):  # as datasets does in workers: avoid fsspec hangs
                import fsspec.asyn

                fsspec.asyn.reset_lock()
        stride, offset = world * workers, rank + world * worker_id
        # .iter() rather than iter(): inside a DataLoader worker, iter() would let datasets hand
        # each worker whole shards, and the enumeration index would no longer be the stream's.
        i = 0
        for batch in self._stream().iter(batch_size=self.batch_size):
            if i == 0:
                _check_columns(list(batch), self._columns)
            for image, label in zip(batch[self.image_column], batch[self.label_column]):
                if self.limit is not None and i >= self.limit:
                    return
                if i % stride == offset and i not in self.exclude:
                    target = _label(label, f"The label of image {i} (column {self.label_column!r})")
                    if self.num_classes is not None and not 0 <= int(target) < self.num_classes:
                        raise DataError(
                            f"The label of image {i} is {int(target)}, outside [0, {self.num_classes}), the "
                            "model's classes: check data.label_column, data.split (unlabelled test splits use "
                            "-1) and that the model was trained on this data set's classes."
                        )
                    try:
                        img = _decode_image(image, self._image_feature, f"Image {i} (column {self.image_column!r})")
                    except DataError:
                        if self.on_error != "skip":
                            raise
                        yield _skipped_item(self, i)
                        i += 1
                        continue
                    yield (
                        self.transform(to_model_mode(img, self.channels)),
                        target,
                        torch.tensor(i, dtype=torch.int64),
                    )
                i += 1


class UnrepeatedSampler(torch.utils.data.Sampler[int]):
    """Indices ``rank, rank + world, rank + 2*world, ...`` below ``len(data_source)``.

    Unlike ``DistributedSampler`` it neither pads nor shuffles, so every index is evaluated
    exactly once over all ranks; ranks may get one index fewer than others. ``rank`` and
    ``num_replicas`` default to torch.distributed's when initialised, else to 0 and 1. (With
    Lightning, pass ``use_distributed_sampler=False`` so it is not wrapped again.)
    """

    def __init__(self, data_source: Sized | int, num_replicas: int | None = None, rank: int | None = None) -> None:
        self.total = data_source if isinstance(data_source, int) else len(data_source)
        self.rank, self.num_replicas = _rank_world(rank, num_replicas)
        self.num_samples = len(range(self.rank, self.total, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


# --------------------------------------------------------------------------------------------
# Labels


def _label_column(dataset: Any, column: str, n: int | None = None) -> np.ndarray:
    """Column ``column`` of the first ``n`` rows of a map-style data set as an int array (no image decoded)."""
    import pyarrow as pa

    _check_columns(dataset.column_names, {"label_column": column})
    n = len(dataset) if n is None else n
    table = dataset.select_columns([column]).with_format("arrow")[:n]
    values = table.column(0)
    if not pa.types.is_integer(values.type):
        raise DataError(
            f"The label column {column!r} holds {values.type} values; labels must be integer class "
            "indices. Point data.label_column at an integer (or ClassLabel) column."
        )
    if values.null_count:
        first = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(
            f"{values.null_count} image(s) have no label in column {column!r} (the first is image {first}); "
            "evaluate a labelled split (data.split)."
        )
    return values.to_numpy()


def check_labels(dataset_or_labels: Any, num_classes: int, *, label_column: str = "label") -> None:
    """Raise :class:`DataError` unless every label is in ``[0, num_classes)``.

    Accepts an :class:`EvalImages` (its evaluated images only), a map-style ``datasets.Dataset``
    (column ``label_column``, read at once without decoding images), or labels as a sequence,
    array or tensor (e.g. one batch of a stream).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive; got {num_classes}")
    import datasets

    if isinstance(dataset_or_labels, EvalImages):
        labels = dataset_or_labels.label_array()
    elif isinstance(dataset_or_labels, datasets.Dataset):
        labels = _label_column(dataset_or_labels, label_column)
    elif isinstance(dataset_or_labels, (datasets.IterableDataset, StreamingEvalImages)):
        raise TypeError("a stream's labels cannot be read up front: check the labels of each batch instead")
    else:
        if isinstance(dataset_or_labels, torch.Tensor):
            dataset_or_labels = dataset_or_labels.detach().cpu().numpy()
        labels = np.asarray(dataset_or_labels)
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"Labels must be integer class indices; got {labels.dtype} values.")
    labels = labels.reshape(-1)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        examples = ", ".join(f"{int(labels[i])} (image {int(i)})" for i in bad[:5])
        raise DataError(
            f"{bad.size} label(s) are outside [0, {num_classes}), the model's classes: {examples}. "
            "The labels must be the model's class indices: check data.label_column, data.split "
            "(unlabelled test splits use -1) and that the model was trained on this data set's classes."
        )


# --------------------------------------------------------------------------------------------
# Fingerprint


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _listing(root: Path | None, files: Sequence[Path]) -> tuple[int, str]:
    """Total size and the sha256 of the sorted ``name size`` lines of ``files``."""
    entries = sorted(
        ((f.relative_to(root).as_posix() if root is not None else f.name), f.stat().st_size) for f in files
    )
    digest = hashlib.sha256("".join(f"{name}\t{size}\n" for name, size in entries).encode())
    return sum(size for _, size in entries), digest.hexdigest()


def dataset_fingerprint_fields(spec: DataSpec, num_images: int) -> dict[str, Any]:
    """What makes two runs' data comparable, as JSON-able fields.

    ``name`` (the hub name, or the local path's basename), ``split``, ``revision``,
    ``num_images``, and for local data ``size_bytes`` and ``content_hash``: the sha256 of the
    bytes of a single parquet file (``"sha256:..."``), or, for a directory or glob, the sha256
    of its sorted file names and sizes (``"listing-sha256:..."``; hidden files skipped).
    """
    fields: dict[str, Any] = {
        "name": spec.name,
        "split": spec.split,
        "revision": spec.revision,
        "num_images": int(num_images),
        "size_bytes": None,
        "content_hash": None,
    }
    if not spec.path:
        return fields
    kind, target, files = _resolve_local(spec.path)
    fields["name"] = target.name
    if kind == "parquet" and len(files) == 1 and not _has_glob(spec.path):
        fields["size_bytes"] = files[0].stat().st_size
        fields["content_hash"] = "sha256:" + _sha256_file(files[0])
        return fields
    if kind == "parquet":
        size, digest = _listing(None, files)
    else:
        found = [
            p for p in target.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(target).parts)
        ]
        size, digest = _listing(target, found)
    fields["size_bytes"] = size
    fields["content_hash"] = "listing-sha256:" + digest
    return fields
