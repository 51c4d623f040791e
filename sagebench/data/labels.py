"""Labels in the model's label space: data labels mapped to model indices by name, range checks.

Why by name: a data set's label indices are its own. ``datasets``' image folder numbers the
class folders in sorted order, so a folder holding a subset of ImageNet's classes labels its
first folder 0 whatever class it is; a hub copy may order its classes differently from the
model's head. When the data's labels are named (a ``ClassLabel``) and the model's classes are
known (timm's ImageNet label spaces, the embedded benchmarks' models, a ``label_names`` key in
the model's pretrained config), each data label is mapped to the model index of its name;
``data.label_map`` states the mapping explicitly. Data with plain integer labels is taken as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

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

    Accepts an evaluation data set that reads its labels as one column (``label_array()``, as
    :class:`~sagebench.data.images.EvalImages`: its evaluated images only), a map-style
    ``datasets.Dataset`` (column ``label_column``, read at once without decoding images), or labels
    as a sequence, array or tensor (e.g. one batch of a stream). Why by ``label_array`` and not by
    class: the evaluation data sets are built from this module's label readers, so it cannot import them.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive; got {num_classes}")
    import datasets

    if callable(getattr(dataset_or_labels, "label_array", None)):
        labels = dataset_or_labels.label_array()
    elif isinstance(dataset_or_labels, datasets.Dataset):
        labels = _label_column(dataset_or_labels, label_column)
    elif isinstance(dataset_or_labels, (datasets.IterableDataset, torch.utils.data.IterableDataset)):
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
    """The class names of the labels a data set yields, in label order, or None.

    Its ``ClassLabel`` names; when its labels were mapped to model indices (``dataset.label_map``), the
    names in the model's index order (see :meth:`LabelMap.class_names`).
    """
    label_map = getattr(dataset, "label_map", None)
    if label_map is not None:
        return label_map.class_names()
    try:
        names = dataset.dataset.features[dataset.label_column].names
    except Exception:  # a stream, an int label column, another data set type
        return None
    return [str(n) for n in names] if names else None


# --------------------------------------------------------------------------------------------
# Label names and the mapping of data labels to model indices

#: The embedded benchmarks' models (sagebench.demo) by timm architecture-name prefix: their classes.
_DEMO_PREFIXES = (("sagebench_fmnist_", "FMNIST_CLASSES"), ("sagebench_cifar10_", "CIFAR10_CLASSES"))


def demo_label_names(model_name: str) -> tuple[str, ...] | None:
    """The class names of an embedded benchmark model (``sagebench_fmnist_*``, ``sagebench_cifar10_*``)."""
    from sagebench.demo.cifar10 import CIFAR10_CLASSES
    from sagebench.demo.models import FMNIST_CLASSES

    tables = {"FMNIST_CLASSES": FMNIST_CLASSES, "CIFAR10_CLASSES": CIFAR10_CLASSES}
    arch = str(model_name).split(".")[0]
    for prefix, table in _DEMO_PREFIXES:
        if arch.startswith(prefix):
            return tuple(tables[table])
    return None


def _normalise(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).casefold()


@dataclass(frozen=True)
class ModelLabels:
    """A model's classes in index order: ``names`` (as shown), ``aliases[i]`` (every spelling of class i)."""

    names: tuple[str, ...]
    aliases: tuple[frozenset[str], ...]

    @classmethod
    def plain(cls, names: Sequence[str]) -> "ModelLabels":
        names = tuple(str(n) for n in names)
        return cls(names, tuple(frozenset({_normalise(n)}) for n in names))


def model_label_names(model: Any, model_name: str | None = None) -> ModelLabels | None:
    """The classes of ``model``'s outputs, when known: a ``label_names`` entry of its pretrained config,
    the embedded benchmarks' class names, or timm's ImageNet label spaces (by number of classes; WordNet
    synsets such as ``n01440764`` and their descriptions such as ``tench, Tinca tinca``)."""
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if num_classes <= 0:
        return None
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("label_names") if isinstance(cfg, dict) else None
    if names is not None and len(names) == num_classes:
        return ModelLabels.plain(names)
    arch = (cfg.get("architecture") if isinstance(cfg, dict) else None) or model_name or ""
    demo = demo_label_names(arch)
    if demo is not None:
        return ModelLabels.plain(demo) if len(demo) == num_classes else None
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        if not subset:
            return None
        info = ImageNetInfo(subset)
        synsets = info.label_names()
        descriptions = info.label_descriptions()
    except Exception:  # an older timm, or no such subset: the classes are not known
        return None
    if len(synsets) != num_classes:
        return None
    aliases = []
    for synset, description in zip(synsets, descriptions):
        spellings = {_normalise(synset), _normalise(description)}
        spellings |= {_normalise(part) for part in str(description).split(",") if part.strip()}
        aliases.append(frozenset(spellings))
    return ModelLabels(tuple(synsets), tuple(aliases))


def data_label_names(feature: Any) -> list[str] | None:
    """The names of a ``ClassLabel`` label feature; ``None`` for plain integers (or names that are only
    the indices themselves, as ``ClassLabel(num_classes=n)`` makes)."""
    import datasets

    if not isinstance(feature, datasets.ClassLabel) or not feature.names:
        return None
    names = [str(n) for n in feature.names]
    if names == [str(i) for i in range(len(names))]:
        return None
    return names


@dataclass(frozen=True)
class LabelMap:
    """Data label index -> model index (``lookup[i]``; -1: not mapped), as applied to every label."""

    lookup: np.ndarray
    data_names: tuple[str, ...] | None
    model_names: tuple[str, ...] | None = None

    def class_names(self) -> list[str]:
        """Names by model index (the labels' space now): the model's classes when known, else the data's
        names at the indices they map to (``str(index)`` elsewhere)."""
        if self.model_names is not None:
            return list(self.model_names)
        names = [str(i) for i in range(int(self.lookup.max()) + 1)]
        for i, m in enumerate(self.lookup):
            if m >= 0:
                names[int(m)] = self.data_names[i] if self.data_names else str(i)
        return names

    def describe(self) -> dict[str, int]:
        """``{data label name (or index): model index}`` for the results, in data label order."""
        return {(self.data_names[i] if self.data_names else str(i)): int(m)
                for i, m in enumerate(self.lookup) if m >= 0}

    def apply(self, labels: np.ndarray, first_image: int = 0) -> np.ndarray:
        """``labels`` (of images ``first_image``, ``first_image + 1``, ...) as model indices; negative labels
        (unlabelled splits use -1) pass through for the range check to report."""
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        out = labels.copy()
        known = (labels >= 0) & (labels < len(self.lookup))
        out[known] = self.lookup[labels[known]]
        bad = np.flatnonzero((labels >= 0) & (~known | (out < 0)))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"{bad.size} label(s) have no entry in data.label_map: label {int(labels[i])} of image "
                f"{first_image + i} is not mapped. Give every data label a model index in data.label_map."
            )
        return out


def _examples(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(x) for x in list(names)[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


def resolve_label_map(data_names: Sequence[str] | None, model: ModelLabels | None, num_classes: int, *,
                      explicit: Any = None, model_name: str = "the model", trained: bool = True) -> LabelMap | None:
    """How data labels become model indices; ``None`` when they are taken as they are.

    ``explicit``: ``data.label_map`` (``"identity"``, or ``{name or index: model index}``). Otherwise the data's
    label names are looked up among the model's; with no data names the labels are taken as they are.
    Named data and a model whose classes are not known is refused. With ``trained`` false (random-init
    weights: no label space to get wrong) labels are taken as they are. Raises :class:`DataError` when a
    name cannot be placed.
    """
    if explicit == "identity":
        return None
    if explicit:
        found = _explicit_map(explicit, data_names, num_classes)
        if found is not None and model is not None and trained:
            found = LabelMap(found.lookup, found.data_names, model.names)
        return found
    if data_names is None or not trained:  # plain ints, or random-init weights (no label space to match)
        return None
    if model is None:
        raise DataError(
            f"The data's labels are named ({_examples(data_names)}) but the class names of {model_name!r} are not "
            "known, so sagebench cannot tell which model output each label is (an image folder numbers its class "
            "folders in sorted order). Set data.label_map={<data label name>: <model index>, ...}, or "
            "data.label_map=identity if the model was trained on this data set's own label indices."
        )
    # the same classes in the same order (whatever the spelling): the labels are already model indices
    if len(data_names) <= len(model.names) and all(
            _normalise(n) in model.aliases[i] for i, n in enumerate(data_names)):
        return None
    index: dict[str, list[int]] = {}
    for i, spellings in enumerate(model.aliases):
        for spelling in spellings:
            index.setdefault(spelling, []).append(i)
    lookup = np.full(len(data_names), -1, dtype=np.int64)
    missing, ambiguous = [], []
    for i, name in enumerate(data_names):
        hits = sorted(set(index.get(_normalise(name), [])))
        if len(hits) > 1 and i in hits:
            hits = [i]
        if not hits:
            missing.append(name)
        elif len(hits) > 1:
            ambiguous.append(f"{name!r} ({', '.join(model.names[h] for h in hits)})")
        else:
            lookup[i] = hits[0]
    if missing:
        raise DataError(
            f"{len(missing)} of the data's {len(data_names)} label names are not classes of {model_name!r}: "
            f"{_examples(missing)}. The model's classes are {_examples(model.names)}. Label the data with the "
            "model's class names (e.g. image folders named after them), or set data.label_map={<data label>: "
            "<model index>, ...}."
        )
    if ambiguous:
        raise DataError(
            f"The data's label names {', '.join(ambiguous[:5])} match several classes of {model_name!r}: set "
            "data.label_map={<data label>: <model index>, ...} to say which."
        )
    if len(set(lookup.tolist())) != len(lookup):
        raise DataError(f"Two of the data's label names map to the same class of {model_name!r}: "
                        f"{_examples(data_names)}. Set data.label_map explicitly.")
    if np.array_equal(lookup, np.arange(len(lookup))):
        return None
    return LabelMap(lookup, tuple(data_names), model.names)


def _explicit_map(explicit: dict, data_names: Sequence[str] | None, num_classes: int) -> LabelMap | None:
    positions = {str(n): i for i, n in enumerate(data_names or [])}
    pairs: dict[int, int] = {}
    for key, index in explicit.items():
        if isinstance(key, str) and key in positions:
            data_index = positions[key]
        elif isinstance(key, int) or (isinstance(key, str) and key.lstrip("-").isdigit()):
            data_index = int(key)
            if data_names is not None and not 0 <= data_index < len(data_names):
                raise DataError(f"data.label_map key {key!r} is not a label of the data, whose labels are "
                                f"0..{len(data_names) - 1} ({_examples(data_names)}).")
            if data_index < 0:
                raise DataError(f"data.label_map key {key!r} is not a label index (labels are >= 0).")
        else:
            raise DataError(f"data.label_map key {key!r} is not one of the data's label names "
                            f"({_examples(data_names) if data_names else 'the data has no names: use label indices'}).")
        if not 0 <= int(index) < num_classes:
            raise DataError(f"data.label_map[{key!r}] = {index} is not a class of the model, which has {num_classes} "
                            f"(indices 0..{num_classes - 1}).")
        pairs[data_index] = int(index)
    size = len(data_names) if data_names is not None else max(pairs) + 1
    lookup = np.full(size, -1, dtype=np.int64)
    for data_index, model_index in pairs.items():
        lookup[data_index] = model_index
    if data_names is not None and (lookup < 0).any():
        unmapped = [data_names[i] for i in np.flatnonzero(lookup < 0)]
        raise DataError(f"data.label_map gives no model index for the data labels {_examples(unmapped)}: map every "
                        "label of the data (or drop data.label_map to map them by name).")
    if data_names is not None and np.array_equal(lookup, np.arange(len(lookup))):
        return None  # every label to its own index: nothing to apply
    return LabelMap(lookup, tuple(data_names) if data_names is not None else None)
