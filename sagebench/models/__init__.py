"""Edge and server models around timm ViTs, and what they exchange."""

from sagebench.models.edge import EdgeModel
from sagebench.models.evidence import EdgeEvidence
from sagebench.models.loading import ModelSpec, create_model, read_state_dict
from sagebench.models.server import ServerModel

__all__ = ["EdgeEvidence", "EdgeModel", "ModelSpec", "ServerModel", "create_model", "read_state_dict"]
