"""What the edge model knows about an image after its single forward pass."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, TypeVar

import torch

T = TypeVar("T")

#: ``(sample_ids [m], indices [m, B]) -> [m] float64``: the server's log-probability, sent these patches of
#: these images, of the class it predicts from the whole image (-inf when that is unknown). Keyed by sample
#: id, so it answers for any subset or order of the batch.
ServerJudge = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: The evidence a strategy may declare in ``Strategy.requires``, beyond the logits, attention and
#: embeddings the edge always provides, and who provides it. One owner: the sweep reads these names
#: to decide what to compute, and an undeclared name is an error (``sagebench.strategies.base``).
#:
#: - ``"rollout"``: Abnar & Zuidema's attention rollout (heads averaged per block), computed by the
#:   edge in its single forward on request (``EdgeModel(..., with_rollout=True)``), e.g. for
#:   ``importance: rollout``.
#: - ``"rollout_per_head"``: attention rollout in Im et al.'s order (a product per head, heads
#:   averaged at the end), likewise (``EdgeModel(..., with_rollout_per_head=True)``), for
#:   ``importance: rollout_per_head``. Both: :data:`sagebench.edge.model.ROLLOUT_KINDS`.
#: - ``"server_attention"``: the server's CLS attention on the full image, computed in the ceiling
#:   pass. A deployed edge cannot know it: a strategy requiring it is an oracle.
#: - ``"server_judge"``: a callable scoring a candidate subset by the server's own answer to it
#:   (:data:`ServerJudge`), for reference strategies that search subsets. An oracle too.
EVIDENCE_KINDS: Mapping[str, str] = MappingProxyType({"rollout": "edge", "rollout_per_head": "edge",
                                                      "server_attention": "server", "server_judge": "server"})


class Memo:
    """Values derived from one evidence object, computed once and shared by whoever asks again.

    Why: a sweep asks several strategies at several budgets for the same derived value of the same
    batch (an importance ranking, a Gram matrix); computing it once per evidence object is much of
    the sweep's selection time. Each entry is keyed by what it is and its options (e.g.
    ``("importance_order", "rollout")``) and remembers the tensors it was computed from: when such
    a tensor on the evidence is replaced, the entry is recomputed. Values are shared: callers treat
    them as read-only (slice and copy, never write into them).

    Not part of the evidence's identity: never compared, never written to the edge cache, and a
    fresh (empty) memo for every evidence object, including those made by ``subset`` and ``cat``.
    """

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[tuple[object, ...], object]] = {}

    def get_or_compute(self, key: Hashable, inputs: tuple[object, ...], compute: Callable[[], T]) -> T:
        """The value kept under ``key`` if it was computed from these very ``inputs`` (by identity),
        else ``compute()``, kept for the next caller."""
        entry = self._entries.get(key)
        if entry is None or len(entry[0]) != len(inputs) or any(a is not b for a, b in zip(entry[0], inputs)):
            entry = (tuple(inputs), compute())
            self._entries[key] = entry
        return entry[1]  # type: ignore[return-value]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Memo({sorted(map(repr, self._entries))})"


@dataclass
class EdgeEvidence:
    """Everything a composition strategy may look at, for a batch of ``b`` images.

    Attributes:
        logits: ``[b, C]`` edge class scores.
        attention: ``[b, N]`` importance of each patch: the last block's CLS->patch attention
            averaged over heads (or attention rollout), renormalised over the N patches so that
            each row sums to 1.
        embeddings: ``[b, N, D]`` final-layer (after the last norm) patch tokens, not L2-normalised.
        grid: ``(rows, cols)`` of the patch grid; ``N == rows * cols``, patches in raster order.
        sample_ids: ``[b]`` int64 index of each image in the data set: strategies that draw random
            numbers seed them from it so that an image gets the same draw in any batch or process.
        seed: the run seed.
        rollout: ``[b, N]`` attention rollout over the patches (rows sum to 1; Abnar & Zuidema's,
            heads averaged per block), or ``None`` when the edge was not asked for it
            (``EdgeModel(..., with_rollout=True)``); strategies with ``importance="rollout"`` rank
            patches by it.
        server_attention: see below.
        rollout_per_head: ``[b, N]`` attention rollout in Im et al.'s order (per-head products,
            heads averaged at the end; rows sum to 1), or ``None`` when not asked for
            (``EdgeModel(..., with_rollout_per_head=True)``); ``importance="rollout_per_head"``.
        memo: derived values shared by the strategies that read this evidence (:class:`Memo`);
            not a constructor argument, not compared, not cached on disk.
    """

    logits: torch.Tensor
    attention: torch.Tensor
    embeddings: torch.Tensor
    grid: tuple[int, int]
    sample_ids: torch.Tensor
    seed: int = 0
    rollout: torch.Tensor | None = None
    #: ``[b, N]`` the *server's* last-block CLS attention on the full image (rows sum to 1), present only
    #: when a strategy declares ``requires = {"server_attention"}`` (an oracle: the edge cannot know it).
    server_attention: torch.Tensor | None = None
    rollout_per_head: torch.Tensor | None = None
    #: the server's verdict on candidate subsets (:data:`ServerJudge`), present only when a strategy declares
    #: ``requires = {"server_judge"}`` (an oracle: it needs the server's forward on the subset and the image).
    server_judge: ServerJudge | None = None
    memo: Memo = field(default_factory=Memo, init=False, repr=False, compare=False)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def batch_size(self) -> int:
        return self.logits.shape[0]

    def subset(self, rows: torch.Tensor) -> "EdgeEvidence":
        """The evidence of a subset of the batch (e.g. the offloaded images), same order as ``rows``."""
        return EdgeEvidence(
            logits=self.logits[rows], attention=self.attention[rows], embeddings=self.embeddings[rows],
            grid=self.grid, sample_ids=self.sample_ids[rows], seed=self.seed,
            rollout=None if self.rollout is None else self.rollout[rows],
            server_attention=None if self.server_attention is None else self.server_attention[rows],
            rollout_per_head=None if self.rollout_per_head is None else self.rollout_per_head[rows],
            server_judge=self.server_judge,
        )

    @classmethod
    def cat(cls, parts: "list[EdgeEvidence]") -> "EdgeEvidence":
        """The evidence of several batches as one (e.g. the offloaded images waiting for a full server batch)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]

        def joined(name: str) -> torch.Tensor | None:
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else torch.cat(values)

        judge = first.server_judge if all(p.server_judge is first.server_judge for p in parts) else None
        return cls(logits=joined("logits"), attention=joined("attention"), embeddings=joined("embeddings"),
                   grid=first.grid, sample_ids=joined("sample_ids"), seed=first.seed, rollout=joined("rollout"),
                   server_attention=joined("server_attention"), rollout_per_head=joined("rollout_per_head"),
                   server_judge=judge)

