"""Labels in the model's label space: range checks over the whole label column."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.utils.data

from sagebench.data.sources import check_columns
from sagebench.errors import DataError


def _label_column(dataset: Any, column: str, n: int | None = None) -> np.ndarray:
    """Column ``column`` of the first ``n`` rows of a map-style data set as an int array (no image decoded)."""
    import pyarrow as pa

    check_columns(dataset.column_names, {"label_column": column})
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

    from sagebench.data.images import (  # here: images reads labels too
        EvalImages,
        StreamingEvalImages,
    )

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


def class_names(dataset: Any) -> list[str] | None:
    """The data set's class names (a ``ClassLabel`` feature), in label order, or None."""
    try:
        names = dataset.dataset.features[dataset.label_column].names
    except Exception:  # a stream, an int label column, another data set type
        return None
    return [str(n) for n in names] if names else None
