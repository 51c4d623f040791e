"""``server_attention_oracle``: the top-B patches by the *server's* own attention on the full image.

Why: a headroom reference, not a method. It answers "what if the edge knew where the server
looks?": the server's last-block CLS->patch attention (head mean) on all N patches, computed in
the ceiling pass the sweep already makes, ranks the patches; ties go to the lower index. A
deployed edge device cannot compute it (it needs the server's full forward), so the strategy
declares ``requires = {"server_attention"}``: results mark it ``oracle`` and boards show it as a
reference line, never ranked with deployable strategies. The gap between it and the best
deployable strategy at a budget is the headroom an importance signal could still close.
"""

from __future__ import annotations

import torch

from sagebench.edge.evidence import EdgeEvidence
from sagebench.errors import ConfigError
from sagebench.strategies.base import Strategy
from sagebench.strategies.importance import attention_order
from sagebench.strategies.registry import register_strategy


@register_strategy("server_attention_oracle")
class ServerAttentionOracle(Strategy):
    """ORACLE: top-B patches by the server's last-layer CLS attention on the full image (a reference)."""

    requires = frozenset({"server_attention"})

    def select(self, evidence: EdgeEvidence, budget: int) -> torch.Tensor:
        if evidence.server_attention is None:
            raise ConfigError("server_attention_oracle needs the server's attention, which the sweep computes "
                              "only for strategies that declare requires={'server_attention'}; build the "
                              "evidence with server_attention (see sagebench.testing.make_evidence).")
        scores = torch.nan_to_num(evidence.server_attention.float(), nan=0.0, posinf=0.0, neginf=0.0)
        return attention_order(scores)[:, :budget].clone()
