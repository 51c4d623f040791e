"""Deprecated location of :class:`~sagebench.edge.evidence.EdgeEvidence` (kept for plug-ins that import it here)."""

from sagebench.edge.evidence import EdgeEvidence

__all__ = ["EdgeEvidence"]
