"""The evaluation LightningModule: edge once -> gate -> every (strategy, budget) -> server.

Why one module for the whole sweep: the edge forward (and the gate) run once per image however
many strategies and budgets are compared, the ceiling pass and every budgeted pass share the
same offloaded images, and Lightning provides devices, precision and multi-process evaluation.
"""

from __future__ import annotations

from typing import Sequence

import lightning as L
import numpy as np
import torch
from torchmetrics import SumMetric

from sagebench.gates import get_gate
from sagebench.metrics import NOT_OFFLOADED, SweepLayout, SweepRecords, coverage
from sagebench.models.edge import EdgeModel
from sagebench.models.server import ServerModel
from sagebench.strategies.base import Strategy, check_budget
from sagebench.transmission import patchify, transmit


class SageBenchModule(L.LightningModule):
    """Evaluation-only module; run it with ``Trainer.test`` (or ``validate``).

    After the epoch, :attr:`records` holds one row per image of the whole data set (gathered
    from every process), sorted by sample id; :attr:`layout` names its columns.
    """

    def __init__(self, edge: EdgeModel, server: ServerModel, strategies: Sequence[Strategy],
                 budgets: Sequence[int], gate: str = "min_entropy", threshold: float = 1.0,
                 seed: int = 0) -> None:
        super().__init__()
        if tuple(edge.grid) != tuple(server.grid):
            raise ValueError(f"edge grid {edge.grid} and server grid {server.grid} differ")
        self.edge = edge
        self.server = server
        self.strategies = list(strategies)
        self.budgets = [check_budget(b, edge.grid[0] * edge.grid[1]) for b in budgets]
        self.gate_fn = get_gate(gate)
        self.threshold = threshold
        self.seed = seed
        self.layout = SweepLayout(tuple((s.label, b) for s in self.strategies for b in self.budgets))
        self.sweep = SweepRecords(self.layout)
        self.records: np.ndarray | None = None
        # images through the edge, summed over processes: must equal the number of images
        self.edge_images = SumMetric()
        self._edge_images_total = 0

    def _evaluate_batch(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, labels, sample_ids = batch
        b = images.shape[0]
        evidence = self.edge(images, sample_ids, self.seed)
        self.edge_images.update(torch.tensor(float(b), device=images.device))
        offload = self.gate_fn(evidence.logits, self.threshold)
        rows = torch.full((b, self.layout.num_columns), float(NOT_OFFLOADED), dtype=torch.float64, device=images.device)
        col = self.layout.column
        rows[:, col("sample_id")] = sample_ids.double()
        rows[:, col("label")] = labels.double()
        rows[:, col("edge_pred")] = evidence.logits.argmax(-1).double()
        rows[:, col("offloaded")] = offload.double()
        sent = offload.nonzero().squeeze(1)
        if sent.numel() == 0:
            return rows
        sub_images = images[sent]
        sub = evidence.subset(sent)
        rows[sent, col("ceiling_pred")] = self.server.vit(sub_images).argmax(-1).double()
        patches = patchify(sub_images, self.server.patch_size)
        j = 0
        for strategy in self.strategies:
            for budget in self.budgets:
                indices = strategy.select(sub, budget)
                tx = transmit(patches, indices, self.server.grid)
                rows[sent, col("pred", j)] = self.server(tx).argmax(-1).double()
                rows[sent, col("coverage", j)] = coverage(indices, self.server.grid)
                rows[sent, col("units", j)] = float(tx.units)
                rows[sent, col("bytes", j)] = float(tx.raw_bytes_per_image)
                j += 1
        return rows

    def test_step(self, batch, batch_idx: int) -> None:
        self.sweep.update(self._evaluate_batch(batch))

    def validation_step(self, batch, batch_idx: int) -> None:
        self.test_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.records = self.sweep.compute()
        self._edge_images_total = int(self.edge_images.compute().item())
        self.sweep.reset()
        self.edge_images.reset()

    def edge_images_total(self) -> int:
        """Images that went through the edge in the last epoch, all processes together."""
        return self._edge_images_total

    def on_validation_epoch_end(self) -> None:
        self.on_test_epoch_end()

    def configure_optimizers(self):  # evaluation only
        return None
