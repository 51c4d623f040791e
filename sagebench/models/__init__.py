"""timm model plumbing shared by the edge and the server: loading (``loading``) and ViT internals (``vit``).

The edge and server models themselves live in :mod:`sagebench.edge` and :mod:`sagebench.server`;
``sagebench.models.EdgeModel``, ``ServerModel`` and ``EdgeEvidence`` still resolve there
(deprecated names, kept so that existing code keeps working).
"""

from __future__ import annotations

import warnings
from typing import Any

from sagebench.models.loading import ModelSpec, create_model, read_state_dict

_MOVED = {"EdgeModel": "sagebench.edge.model", "EdgeEvidence": "sagebench.edge.evidence",
          "ServerModel": "sagebench.server.model"}
__all__ = ["EdgeEvidence", "EdgeModel", "ModelSpec", "ServerModel", "create_model", "read_state_dict"]


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        warnings.warn(f"sagebench.models.{name} moved to {_MOVED[name]}.{name}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'sagebench.models' has no attribute {name!r}")
