"""Stage 6 of the data path: the frozen server ViT classifying from the sent patches alone.

``model`` is the token-subset forward (only the transmitted patches, at their positions);
``passes`` runs it over a batch of offloaded images, once per distinct patch set.
"""

from sagebench.server.model import ServerModel

__all__ = ["ServerModel"]
