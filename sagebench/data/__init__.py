"""Stage 1 of the data path: images and labels, in the model's preprocessing, each exactly once.

``spec`` (what to read, checked once), ``sources`` (hub or local), ``transforms`` (timm's eval
transform), ``images`` (the evaluation data sets), ``samplers`` (one process per image, no
padding), ``labels`` (labels in the model's label space), ``fingerprint`` (what makes two runs'
data the same).
"""

from sagebench.data.fingerprint import dataset_fingerprint_fields
from sagebench.data.images import (
    EvalImages,
    StreamingEvalImages,
    skipped_index,
    skipped_item,
    skipped_sample_id,
)
from sagebench.data.labels import (
    LabelMap,
    ModelLabels,
    check_labels,
    class_names,
    data_label_names,
    model_label_names,
    resolve_label_map,
)
from sagebench.data.samplers import (
    PaddedView,
    PadIndex,
    RemainingSampler,
    UnrepeatedSampler,
    rank_world,
)
from sagebench.data.sources import load_source
from sagebench.data.spec import ON_ERROR_POLICIES, DataSpec
from sagebench.data.transforms import (
    build_transform,
    resolve_data_config,
    to_model_mode,
)
from sagebench.errors import DataError

__all__ = [
    "DataError", "DataSpec", "EvalImages", "LabelMap", "ModelLabels", "data_label_names", "model_label_names",
    "resolve_label_map", "ON_ERROR_POLICIES", "PadIndex", "PaddedView", "RemainingSampler",
    "StreamingEvalImages", "UnrepeatedSampler", "build_transform", "check_labels", "class_names", "dataset_fingerprint_fields",
    "load_source", "rank_world", "resolve_data_config", "skipped_index", "skipped_item", "skipped_sample_id",
    "to_model_mode",
]
