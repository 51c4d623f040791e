"""The evaluation data sets: every image under its data set index, decoded lazily in a worker.

:class:`EvalImages` (map-style) and :class:`StreamingEvalImages` (a stream, split over processes
and workers) yield ``(pixels, label, sample_id)``; a corrupt image under ``data.on_error=skip``
yields a negative sample id (:func:`skipped_sample_id`) and no pixels reach a model.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.utils.data
from PIL import Image

from sagebench.data.labels import LabelMap, _label_column
from sagebench.data.samplers import PadIndex, rank_world
from sagebench.data.sources import check_columns
from sagebench.data.spec import DataSpec, _check_limit, _input_size
from sagebench.data.transforms import Transform, to_model_mode
from sagebench.errors import DataError


def skipped_sample_id(index: int) -> int:
    """The sample id an evaluation data set yields for image ``index`` skipped by ``data.on_error=skip``.

    Real ids are data set indices (>= 0); a skipped image is signalled by ``-(index + 1)`` (and a
    blank image, label -1), so the batch keeps its shape and the module can record and drop it.
    """
    return -(int(index) + 1)


def skipped_index(sample_id: Any) -> Any:
    """Inverse of :func:`skipped_sample_id` (works on ints, arrays and tensors)."""
    return -sample_id - 1


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


def _decode_item(transform: Any, value: Any, feature: Any, where: str) -> Any:
    """The row's image, decoded: a PIL image (``data.decode=pil``, and what the tensor decoder does not read),
    or, with a tensor transform (:mod:`sagebench.data.decode`), model input or the encoded JPEG already.
    An image feature with its own mode (``datasets.Image(mode=...)``, a conversion on decode) stays with PIL."""
    if getattr(transform, "encoded_output", False) and not getattr(feature, "mode", None):
        decoded = transform.decode(value, where)
        if decoded is not None:
            return decoded
    return _decode_image(value, feature, where)


def _model_input(transform: Any, img: Any, channels: int) -> torch.Tensor:
    """What the data set yields for a decoded image: ``transform(to_model_mode(img))``, or the tensor as it is."""
    if isinstance(img, torch.Tensor):
        return img
    return transform(to_model_mode(img, channels))


def _label(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(
            f"{where} is {value!r}, not an integer class index; point data.label_column at an "
            "integer (or ClassLabel) column."
        )
    return torch.tensor(int(value), dtype=torch.int64)


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
    here. Images are decoded only in :meth:`__getitem__`. ``label_map`` (see
    :func:`sagebench.data.labels.resolve_label_map`) turns the data's labels into model indices.
    """

    def __init__(
        self,
        dataset: Any,
        transform: Transform,
        spec: DataSpec | None = None,
        data_config: dict[str, Any] | None = None,
        *,
        label_map: LabelMap | None = None,
    ) -> None:
        import datasets

        channels, limit, image_column, label_column = _eval_setup(spec, data_config)
        check_columns(dataset.column_names, {"image_column": image_column, "label_column": label_column})
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
        self.label_map = label_map
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
            img = _decode_item(self.transform, row[self.image_column], self._image_feature,
                               f"Image {i} (column {self.image_column!r})")
        except DataError:
            if self.on_error != "skip":
                raise
            return skipped_item(self, i)
        label = _label(row[self.label_column], f"The label of image {i} (column {self.label_column!r})")
        if self.label_map is not None:
            label = torch.tensor(int(self.label_map.apply(np.array([int(label)]), i)[0]), dtype=torch.int64)
        return _model_input(self.transform, img, self.channels), label, torch.tensor(i, dtype=torch.int64)

    def label_array(self) -> np.ndarray:
        """The labels of the evaluated images (the first ``len(self)``, as model indices), read as one column."""
        labels = _label_column(self.dataset, self.label_column, self._len)
        return labels if self.label_map is None else self.label_map.apply(labels)


def skipped_item(data: Any, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What an evaluation data set yields for a corrupt image under ``data.on_error=skip``."""
    if data._blank is None:  # a zero image of the transform's output shape
        blank = Image.new("RGB" if data.channels == 3 else "L", (32, 32))
        data._blank = torch.zeros_like(data.transform(blank))
    return data._blank, torch.tensor(-1, dtype=torch.int64), torch.tensor(skipped_sample_id(i), dtype=torch.int64)


class PaddedView(torch.utils.data.Dataset):
    """``dataset`` that serves a :class:`PadIndex` as a placeholder (as a skipped image: no model sees it)."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if isinstance(index, PadIndex):
            return skipped_item(self.dataset, int(index))
        return self.dataset[index]


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
        label_map: LabelMap | None = None,
    ) -> None:
        super().__init__()
        channels, limit, image_column, label_column = _eval_setup(spec, data_config)
        self._columns = {"image_column": image_column, "label_column": label_column}
        check_columns(dataset.column_names, self._columns)
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
        self.label_map = label_map  # data labels -> model indices (sagebench.data.labels.resolve_label_map)
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
        rank, world = rank_world(self.rank, self.world_size)
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
                check_columns(list(batch), self._columns)
            for image, label in zip(batch[self.image_column], batch[self.label_column]):
                if self.limit is not None and i >= self.limit:
                    return
                if i % stride == offset and i not in self.exclude:
                    target = _label(label, f"The label of image {i} (column {self.label_column!r})")
                    if self.label_map is not None:
                        target = torch.tensor(int(self.label_map.apply(np.array([int(target)]), i)[0]),
                                              dtype=torch.int64)
                    if self.num_classes is not None and not 0 <= int(target) < self.num_classes:
                        raise DataError(
                            f"The label of image {i} is {int(target)}, outside [0, {self.num_classes}), the "
                            "model's classes: check data.label_column, data.split (unlabelled test splits use "
                            "-1) and that the model was trained on this data set's classes."
                        )
                    try:
                        img = _decode_item(self.transform, image, self._image_feature,
                                           f"Image {i} (column {self.image_column!r})")
                    except DataError:
                        if self.on_error != "skip":
                            raise
                        yield skipped_item(self, i)
                        i += 1
                        continue
                    yield (
                        _model_input(self.transform, img, self.channels),
                        target,
                        torch.tensor(i, dtype=torch.int64),
                    )
                i += 1
