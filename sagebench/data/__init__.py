"""Stage 1 of the data path: images and labels, in the model's preprocessing, each exactly once.

``spec`` (what to read, checked once), ``sources`` (hub or local), ``transforms`` (timm's eval
transform), ``decode`` (``data.decode``: torchvision / nvJPEG decoding on tensors), ``images`` (the
evaluation data sets), ``samplers`` (one process per image, no padding), ``labels`` (labels in the
model's label space), ``fingerprint`` (what makes two runs' data the same).
"""

from __future__ import annotations

from typing import Any

# Names load on first use: the config loader reads DataSpec without importing torch.
_LAZY = {
    "dataset_fingerprint_fields": "fingerprint",
    "EvalImages": "images", "StreamingEvalImages": "images", "skipped_index": "images", "skipped_item": "images",
    "skipped_sample_id": "images", "PaddedView": "images",
    "check_labels": "labels", "class_names": "labels", "LabelMap": "labels", "ModelLabels": "labels",
    "data_label_names": "labels", "model_label_names": "labels", "resolve_label_map": "labels",
    "PadIndex": "samplers", "RemainingSampler": "samplers", "UnrepeatedSampler": "samplers",
    "rank_world": "samplers",
    "load_source": "sources", "prepare_source": "sources",
    "ON_ERROR_POLICIES": "spec", "DataSpec": "spec",
    "build_transform": "transforms", "resolve_data_config": "transforms", "to_model_mode": "transforms",
    "DataError": "_errors",
    "TensorTransform": "decode", "collate_for": "decode", "decode_batch": "decode", "decode_device": "decode",
    "decoder_of": "decode", "decoder_name": "decode",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = "sagebench.errors" if _LAZY[name] == "_errors" else f"sagebench.data.{_LAZY[name]}"
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'sagebench.data' has no attribute {name!r}")
