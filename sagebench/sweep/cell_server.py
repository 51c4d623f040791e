"""The server columns of offloaded images, cell by cell: selections, server forwards, per-image fields.

Why its own unit, free of Lightning: the evaluation module (:class:`sagebench.sweep.module.SageBenchModule`)
and a live :class:`sagebench.session.Session` serve offloaded images the same way, so one owner fills
every (strategy, budget) cell for both, and the records of a session equal a run's by construction.

The order of work in one server batch: every cell's selection in sweep order (strategy-major, as the
records' columns), then, per budget, ONE server forward for the distinct patch sets of all the
strategies at that budget (:meth:`sagebench.server.passes.ServerPasses.send_cells`); byte budgets
(whose per-image patch counts differ between cells) are served cell by cell.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from sagebench.cells import Cell
from sagebench.edge.evidence import EdgeEvidence
from sagebench.metrics import CELL_FIELDS, Sent, SweepLayout
from sagebench.runtime.speed import PhaseTimer
from sagebench.server.model import ServerModel
from sagebench.server.passes import ServerPasses
from sagebench.strategies.base import Strategy, required_evidence
from sagebench.sweep.records import predictions
from sagebench.sweep.strategy_stats import StrategyStats
from sagebench.transmission.byte_budget import fill_byte_budget
from sagebench.transmission.codecs import Codec, RawCodec
from sagebench.transmission.patches import patchify

#: What :class:`CellServer` counts over the server batches it serves (results.json ``timing.server_passes``).
PASS_COUNTERS = ("forwards", "images_run", "images_reused")


class CellServer:
    """Fills the (strategy, budget) cell columns of offloaded images' records.

    ``rows`` given to :meth:`serve` already hold the base fields and ``ceiling_pred`` (the oracle
    ``server_judge`` asks about the full image's class). ``stats`` (a :class:`StrategyStats` over the
    same cells) receives the strategies' counters; ``examples=(count, budget)`` keeps the overlay
    material of the first ``count`` images served at ``budget`` in :attr:`examples`.
    ``progress``: called with the number of (image, cell) pairs done after each server forward (a progress
    hook: :class:`sagebench.runtime.progress.Progress` counts server image-cells).
    """

    def __init__(self, server: ServerModel, strategies: Sequence[Strategy], budgets: Sequence[int],
                 layout: SweepLayout, *, codec: Codec | None = None, dedupe: bool = True,
                 timer: PhaseTimer | None = None, stats: StrategyStats | None = None,
                 examples: tuple[int, int | None] = (0, None),
                 progress: Callable[[int], None] | None = None) -> None:
        self.server = server
        self.strategies = list(strategies)
        self.budgets = list(budgets)
        self.layout = layout
        self.budget_unit = layout.budget_unit
        self.codec = codec if codec is not None else RawCodec()
        self.dedupe = bool(dedupe)
        self.timer = timer or PhaseTimer(False)
        self.stats = stats
        self.examples_wanted, self.example_budget = int(examples[0]), examples[1]
        self.examples: dict[int, dict] = {}
        self.progress = progress
        self.server_judged = "server_judge" in required_evidence(self.strategies)
        self.server_passes = dict.fromkeys(PASS_COUNTERS, 0)

    def serve(self, rows: torch.Tensor, images: torch.Tensor, sub: EdgeEvidence) -> torch.Tensor:
        """Every cell column of ``rows`` (one per offloaded image of ``images``/``sub``), filled in place."""
        col = self.layout.column
        sent = torch.arange(rows.shape[0], device=rows.device)
        patches = patchify(images, self.server.patch_size)
        passes = ServerPasses(self.server, patches, dedupe=self.dedupe, predict=predictions, timer=self.timer,
                              codec=self.codec)
        if self.server_judged:
            sub.server_judge = self._judge(rows[:, col("ceiling_pred")].clone(), patches, sub.sample_ids)
        by_budget: dict[int, list[tuple[int, torch.Tensor]]] = {}  # budget -> [(cell, indices)], sweep order
        j = 0
        for strategy in self.strategies:
            for budget in self.budgets:
                name = Cell(strategy.label, budget, self.budget_unit).name
                if self.budget_unit == "bytes":
                    self._send_byte_budget(rows, sent, sub, passes, strategy, budget, j, name)
                    self._advance(sent.numel())
                    j += 1
                    continue
                started = self.timer.start()
                indices, counters = strategy.choose(sub, budget)
                if strategy.stat_names and self.stats is not None:
                    self.stats.update(j, sent.numel(), counters)
                self.timer.stop(f"select/{name}", started)
                if budget == self.example_budget and not strategy.oracle:  # oracles: not on the edge's overlays
                    self._keep_examples(rows, images, sub, strategy.label, indices)
                by_budget.setdefault(budget, []).append((j, indices))
                j += 1
        for budget, cells in by_budget.items():  # one server forward per budget, across the strategies
            served = passes.send_cells([indices for _, indices in cells], f"server/B{budget}")
            for (k, indices), (preds, sizes) in zip(cells, served):
                self._fill(rows, sent, k, Sent(indices, preds, sizes, passes.units(indices), self.server.grid))
            self._advance(sent.numel() * len(cells))
        for key in PASS_COUNTERS:
            self.server_passes[key] += getattr(passes, key)
        return rows

    def _advance(self, image_cells: int) -> None:
        if self.progress is not None:
            self.progress(int(image_cells))

    def _judge(self, full_class: torch.Tensor, patches: torch.Tensor, sample_ids: torch.Tensor):
        """The server's verdict on candidate subsets of these images (``EdgeEvidence.server_judge``): its
        log-probability, given the subset, of the class it predicts from the full image (``full_class``).

        Its own passes (no dedupe memory, counters or timer shared with the recorded cells), so every
        recorded cell is computed exactly as in a run without the oracle; its time counts in the oracle's
        ``select`` phase.
        """
        passes = ServerPasses(self.server, patches, dedupe=False, codec=self.codec)
        position = {int(s): i for i, s in enumerate(sample_ids.tolist())}

        def judge(ids: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
            at = torch.tensor([position[int(s)] for s in ids.tolist()], dtype=torch.long, device=indices.device)
            logp = torch.log_softmax(passes.forward(indices, at).double(), dim=-1).nan_to_num(nan=-torch.inf)
            target = full_class[at].to(indices.device).long()
            known = (target >= 0) & (target < logp.shape[1])  # a non-finite full-image answer: no target
            picked = logp.gather(1, target.clamp(0, logp.shape[1] - 1)[:, None])[:, 0]
            return torch.where(known, picked, torch.full_like(picked, -torch.inf))

        return judge

    def _keep_examples(self, rows: torch.Tensor, images: torch.Tensor, sub: EdgeEvidence, label: str,
                       indices: torch.Tensor) -> None:
        """Keep the overlay material of the first ``examples_wanted`` offloaded images served."""
        col = self.layout.column
        for pos in range(rows.shape[0]):
            sid = int(rows[pos, col("sample_id")])
            if sid not in self.examples:
                if len(self.examples) >= self.examples_wanted:
                    break
                self.examples[sid] = {"image": images[pos].detach().float().cpu(),
                                      "attention": sub.attention[pos].detach().float().cpu(),
                                      "edge_pred": int(sub.logits[pos].argmax()), "label": int(rows[pos, col("label")]),
                                      "selections": {}}
            self.examples[sid]["selections"][label] = [int(x) for x in indices[pos].tolist()]

    def _send_byte_budget(self, rows: torch.Tensor, sent: torch.Tensor, sub: EdgeEvidence, passes: ServerPasses,
                          strategy: Strategy, budget: int, j: int, name: str) -> None:
        """One (strategy, byte budget) cell: per image, as many patches as fit (sagebench.transmission.byte_budget)."""
        started = self.timer.start()
        groups = fill_byte_budget(strategy, sub, budget, passes.payload)
        self.timer.stop(f"select/{name}", started)
        for units, (members, indices) in groups.items():
            preds, sizes = passes.send(indices, f"server/{name}", rows=members)
            self._fill(rows, sent[members], j, Sent(indices, preds, sizes, units, self.server.grid))

    def _fill(self, rows: torch.Tensor, target: torch.Tensor, j: int, sent: Sent) -> None:
        """Every cell field (:data:`sagebench.metrics.CELL_FIELDS`) of cell ``j`` for the images ``target``."""
        for f in CELL_FIELDS:
            value = f.fill(sent)
            rows[target, self.layout.column(f.name, j)] = (value.to(rows.device, torch.float64)
                                                           if isinstance(value, torch.Tensor) else value)
