"""Stage 2 of the data path: the edge ViT's one forward per image and what it yields.

``model`` runs the edge (logits, last-block CLS attention, patch embeddings); ``evidence`` is
what strategies may look at; ``cache`` keeps evidence on disk so a rerun skips the edge.
Names load on first use, so that importing a strategy does not build the model stack.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"EdgeEvidence": "sagebench.edge.evidence", "EdgeModel": "sagebench.edge.model",
         "ATTENTION_KINDS": "sagebench.edge.model", "ROLLOUT_KINDS": "sagebench.edge.model"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sagebench.edge' has no attribute {name!r}")
