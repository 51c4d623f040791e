"""Where the images come from: the Hugging Face hub or a local file or folder.

:func:`load_source` opens a hub data set (``datasets.load_dataset``) or a local parquet file,
parquet glob/directory, ``save_to_disk`` directory or image folder. Nothing is decoded here.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sagebench.data.spec import DataSpec, _check_limit
from sagebench.errors import DataError

_WHERE_TO_POINT = (
    "Point data.path at a parquet file (or a glob such as 'dir/*.parquet', or a directory of "
    "parquet files), a directory written by datasets' save_to_disk, or an image folder with one "
    "subfolder per class."
)


_IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
    ".jfif", ".jpe",
}


_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


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


def prepare_source(spec: DataSpec) -> Any:
    """Download and prepare the data set of ``spec`` into the local caches; the loaded data set (None for a stream).

    Why separate from :func:`load_source`: Lightning runs a data module's ``prepare_data`` on one
    process per node before any process loads the data (``setup``), so a hub download or the
    parquet-to-Arrow conversion of a local file happens once instead of racing in every process;
    the later :func:`load_source` of each process then reads the prepared cache (the process that
    prepared it may reuse what this returns). A stream has nothing to prepare.
    """
    return None if spec.streaming else load_source(spec)


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


_LOCAL_WHAT = {"parquet": "a local parquet file", "parquet_dir": "local parquet files",
               "arrow": "a local save_to_disk folder", "imagefolder": "local images"}


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """``datasets``' progress bars off while it reads a local copy (restored after).

    Why: reading a local image folder or parquet file, ``datasets`` shows "Downloading data" (its
    download manager handles local files too) and "Generating train split" bars, hub wording for data
    that never leaves the disk; sagebench prints its own line instead (:func:`_load_local`).
    """
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _load_local(spec: DataSpec) -> Any:
    from sagebench.runtime.log import info

    kind, target, files = _resolve_local(spec.path)  # type: ignore[arg-type]
    info(f"Reading {_LOCAL_WHAT[kind]} from {target}" + (f" ({len(files)} files)" if len(files) > 1 else ""))
    with _quiet_datasets():
        return _read_local(spec, kind, target, files)


def _read_local(spec: DataSpec, kind: str, target: Path, files: list[Path]) -> Any:
    import datasets
    import pyarrow as pa

    where = f"data.path {spec.path!r}"
    try:
        if kind == "parquet":
            _check_parquet_rows(files, spec.path)  # type: ignore[arg-type]
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
        if kind == "parquet_dir":
            _check_parquet_rows(sorted(target.rglob("*.parquet")), spec.path)  # type: ignore[arg-type]
        loaded = datasets.load_dataset(builder, data_dir=str(target), streaming=spec.streaming)
        split = _pick_split(loaded, spec.split, where, strict=False)
        if kind == "imagefolder":
            split = _outer_folder_labels(split, target, where, streaming=spec.streaming)
        return split
    except DataError:
        raise
    except ValueError as exc:
        if "corresponds to no data" not in str(exc):
            raise
        raise DataError(f"{where} holds no images (0 rows). {_WHERE_TO_POINT}") from exc
    except (OSError, pa.ArrowException, datasets.exceptions.DatasetsError) as exc:
        raise DataError(
            f"Could not read {where} as {kind.replace('_', ' ')} ({type(exc).__name__}: {exc}). "
            f"Check that the files are complete. {_WHERE_TO_POINT}"
        ) from exc


def _check_parquet_rows(files: Sequence[Path], path: str) -> None:
    """Refuse parquet files that hold no rows at all (``datasets`` would fail with "no data"), naming them."""
    import pyarrow.parquet as pq

    rows = 0
    for f in files:
        try:
            rows += pq.ParquetFile(str(f)).metadata.num_rows
        except Exception:  # unreadable: left for the loader to report
            return
        if rows:
            return
    shown = ", ".join(str(f) for f in files[:3]) + (f", ... ({len(files)} files)" if len(files) > 3 else "")
    raise DataError(f"data.path {path!r}: the parquet file{'s' if len(files) > 1 else ''} {shown} "
                    f"hold{'' if len(files) > 1 else 's'} no rows (0 images). Point data.path at a data set with "
                    "images (was it written before any row was added?).")


def _split_folder(name: str) -> bool:
    """A folder name ``datasets`` reads as a split (train/, validation/, test/, val/, dev/ ...)."""
    try:
        from datasets.data_files import SPLIT_KEYWORDS

        keywords = {k for words in SPLIT_KEYWORDS.values() for k in words}
    except ImportError:  # pragma: no cover
        keywords = {"train", "training", "validation", "valid", "dev", "val", "test", "testing", "eval", "evaluation"}
    low = name.lower()
    return low in keywords or any(low.startswith(k) and low[len(k)] in "-._ " for k in keywords if len(low) > len(k))


def _outer_folder_labels(ds: Any, root: Path, where: str, *, streaming: bool) -> Any:
    """An image folder whose images lie deeper than their class folder (``cat/sub0/x.png``), labelled by
    the outer folder (``cat``).

    Why: ``datasets``' image folder labels each image by the folder that directly holds it (``sub0``),
    and gives no label at all when the depths differ. A flat folder is returned unchanged.
    """
    import datasets

    every = [p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    if any(p.stem == "metadata" and p.suffix in (".csv", ".jsonl", ".parquet") for p in every):
        return ds  # labels (if any) come from the metadata file, not from folder names
    files = [p for p in every if p.suffix.lower() in _IMAGE_SUFFIXES]
    dirs = [p.relative_to(root).parts[:-1] for p in files]
    split_level = bool(dirs) and all(d and _split_folder(d[0]) for d in dirs)
    depths = {len(d) - (1 if split_level else 0) for d in dirs}
    if depths == {1}:  # class/x.png (or split/class/x.png): datasets' own labels are the class folders
        return ds
    if 0 in depths:
        loose = next(p for p, d in zip(files, dirs) if len(d) - (1 if split_level else 0) == 0)
        raise DataError(f"{where} is an image folder, but {loose.relative_to(root)} is not inside a class folder: "
                        "put every image under a folder named after its class (class/x.png).")
    if streaming:
        raise DataError(f"{where} holds images nested below their class folders (e.g. "
                        f"{files[0].relative_to(root)}), which datasets would label by the innermost folder; "
                        "read it with data.streaming=false (labelled by the outer folder), or flatten it to "
                        "class/x.png.")
    image = ds.features.get("image")
    view = ds.cast_column("image", datasets.Image(decode=False)) if isinstance(image, datasets.Image) else ds
    paths = view.select_columns(["image"]).with_format("arrow")[:].column(0).combine_chunks().field("path")
    classes = []
    for path in paths.to_pylist():
        parts = Path(os.path.relpath(os.path.realpath(path), os.path.realpath(root))).parts[:-1]
        parts = parts[1:] if split_level else parts
        if not parts or parts[0] == "..":
            raise DataError(f"{where}: the image {path} is not inside a class folder of {root}.")
        classes.append(parts[0])
    feature = datasets.ClassLabel(names=sorted(set(classes)))
    if "label" in ds.column_names:
        ds = ds.remove_columns("label")
    return ds.add_column("label", [feature.str2int(c) for c in classes], feature=feature)


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
    extra: dict[str, Any] = {}
    if spec.config_name:  # a data set's configuration / subset (load_dataset's second argument)
        extra["name"] = spec.config_name
    if spec.data_files:
        extra["data_files"] = OmegaConfFree.plain(spec.data_files)
    if spec.token_env:  # the token is read from the environment here and never stored
        token = os.environ.get(spec.token_env)
        if not token:
            raise DataError(f"data.token_env={spec.token_env!r}, but that environment variable is not set.")
        extra["token"] = token
    try:
        with _offline_env_honoured():
            return datasets.load_dataset(
                name, split=spec.split, revision=spec.revision, streaming=spec.streaming, **extra
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


class OmegaConfFree:
    """Plain Python containers of config values (lists/dicts from OmegaConf nodes)."""

    @staticmethod
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): OmegaConfFree.plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [OmegaConfFree.plain(v) for v in value]
        return value


def check_columns(found: Sequence[str] | None, spec_columns: dict[str, str]) -> None:
    if found is None:
        return
    missing = [f"data.{key}={col!r}" for key, col in spec_columns.items() if col not in found]
    if missing:
        raise DataError(
            f"The data set has no column for {', '.join(missing)}; its columns are {list(found)}. "
            "Set data.image_column and data.label_column to the image and label columns."
        )
