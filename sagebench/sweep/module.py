"""The evaluation LightningModule: edge once -> gate -> every (strategy, budget) -> server.

Why one module for the whole sweep: the edge forward (and the gate) run once per image however
many strategies and budgets are compared, the ceiling pass and every budgeted pass share the
same offloaded images, and Lightning provides devices, precision and multi-process evaluation.
"""

from __future__ import annotations

from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from torchmetrics import SumMetric

from sagebench.edge.cache import EdgeSource
from sagebench.edge.evidence import EdgeEvidence
from sagebench.edge.model import EdgeModel
from sagebench.gates import Gate, get_gate
from sagebench.metrics import SweepLayout, flat_summary, summarize
from sagebench.runtime.progress import NO_PROGRESS
from sagebench.runtime.speed import PhaseTimer
from sagebench.server.model import ServerModel
from sagebench.strategies.base import Strategy, check_budget, check_byte_budget, required_evidence
from sagebench.sweep.cell_server import CellServer
from sagebench.sweep.offload_cache import OffloadCache
from sagebench.sweep.records import (
    SweepRecords,
    edge_rows,
    predictions,
    skipped_rows,
    split_skipped,
)
from sagebench.sweep.serving import Serving
from sagebench.sweep.strategy_stats import StrategyStats
from sagebench.transmission.codecs import Codec, RawCodec


class SageBenchModule(L.LightningModule):
    """Evaluation-only module; run it with ``Trainer.test`` (or ``validate``).

    After the epoch, :attr:`records` holds one row per image of the whole data set (gathered
    from every process), sorted by sample id; :attr:`layout` names its columns.
    """

    # counts the work done (sagebench.runtime.progress); the progress callback sets its own for a run
    progress: Any = NO_PROGRESS

    def __init__(self, edge: EdgeModel, server: ServerModel, strategies: Sequence[Strategy],
                 budgets: Sequence[int], gate: Gate | None = None,
                 seed: int = 0, budget_unit: str = "patches", codec: Codec | None = None, *,
                 dedupe: bool = True, timer: PhaseTimer | None = None, edge_source: EdgeSource | None = None,
                 earlier: Any = None, server_batch_size: int = 1,
                 examples: tuple[int, int | None] = (0, None)) -> None:
        super().__init__()
        if tuple(edge.grid) != tuple(server.grid):
            raise ValueError(f"edge grid {edge.grid} and server grid {server.grid} differ")
        self.edge = edge
        self.server = server
        self.strategies = list(strategies)
        if budget_unit not in ("patches", "bytes"):
            raise ValueError(f"budget_unit must be patches or bytes, got {budget_unit!r}")
        self.budget_unit = budget_unit
        self.budgets = ([check_budget(b, edge.grid[0] * edge.grid[1]) for b in budgets] if budget_unit == "patches"
                        else [check_byte_budget(b) for b in budgets])
        # how the chosen patches are packed and what they cost (sagebench.transmission.codecs); raw: 8-bit pixel count
        self.codec = codec if codec is not None else RawCodec()
        # which images go to the server, decided from the edge's evidence (sagebench.gates); default min_entropy
        self.gate = gate if gate is not None else get_gate("min_entropy")
        self.seed = seed
        # a list of gate thresholds (an operating curve): the lowest decides what is served, and each image's
        # gate score is recorded so that sagebench.operating_curve evaluates every threshold from the records
        self.layout = SweepLayout(tuple((s.label, b) for s in self.strategies for b in self.budgets),
                                  budget_unit=budget_unit, scored=self.gate.curve)
        self.sweep = SweepRecords(self.layout)
        # counters some strategies report (e.g. how often a rule was cut to the budget), summed over processes
        self.strategy_stats = StrategyStats(self.layout.cells,
                                            [s.stat_names for s in self.strategies for _ in self.budgets])
        self.strategy_stats_totals: list[dict] = []
        self.records: np.ndarray | None = None
        # images through the edge, summed over processes: must equal the number of images
        self.edge_images = SumMetric()
        self._edge_images_total = 0
        # speed switches (docs/performance.md); none changes the records
        self.edge_source = edge_source or EdgeSource(edge)  # runs the edge, or reads its evidence from the cache
        self.dedupe = bool(dedupe)  # one server pass per distinct patch set of an image at a budget
        self.timer = timer or PhaseTimer(False)  # per-phase wall seconds (profile=true)
        # offloaded images wait here (rows, pixels, evidence) until server_batch_size of them can go as one
        # server batch, whatever the gate lets through per data batch; 1: every data batch is served at once
        if int(server_batch_size) < 1:
            raise ValueError(f"server_batch_size must be >= 1, got {server_batch_size}")
        self.server_batch_size = int(server_batch_size)
        self._queue: list[tuple[torch.Tensor, torch.Tensor, EdgeEvidence]] = []
        self._queued = 0
        # the records writer (sagebench.sweep.partial.PartialResults): what an earlier attempt finished (resume) is
        # part of the summary the loggers receive, and is not served again
        self.earlier = earlier
        # strategies that declare requires={"server_attention"} (oracles): the ceiling pass runs the server
        # through EdgeModel, which gives the same logits plus its last-block CLS attention
        needs = required_evidence(self.strategies)
        self.server_probe = EdgeModel(server.vit, attention="last_layer") if "server_attention" in needs else None
        # how the run is served (sagebench.sweep.serving), read in setup from the data module that decided it: the
        # research-loop cache records every image's gate decision and the offloaded images' pixels and ceiling,
        # or, when it already covers the run (offload_cache.serving), gives the ceiling and the kept images' records
        self.serving: Serving | None = None
        self.offload_cache: OffloadCache | None = None
        # the (strategy, budget) cells of the offloaded images (sagebench.sweep.cell_server, Lightning-free, shared
        # with sagebench.session); it keeps the first offloaded images this process serves as the overlays draw
        # them (pixels, attention, edge prediction, each strategy's patches at examples[1]): the report computes
        # nothing again
        # a live session's build keeps every server batch here after its ceiling (rows, pixels, evidence)
        self.keep_served: list[tuple[torch.Tensor, torch.Tensor, EdgeEvidence]] | None = None
        self.cells = CellServer(server, self.strategies, self.budgets, self.layout, codec=self.codec,
                                dedupe=self.dedupe, timer=self.timer, stats=self.strategy_stats, examples=examples,
                                progress=lambda n: self.progress.advance("server", n))
        # nothing goes through self.log: evaluate() gives the loggers the exact float64 summary with its intervals
        # once the results are assembled (Lightning's self.log would turn each figure into a float32 tensor)
        self.summary: tuple[np.ndarray, dict] | None = None  # (rows, summarize(rows)) computed at the epoch's end

    @property
    def examples(self) -> dict[int, dict]:
        """The overlay material kept while serving (:attr:`CellServer.examples`)."""
        return self.cells.examples

    @property
    def server_passes(self) -> dict[str, int]:
        """Server forwards and (image, cell) pairs computed or reused by this process (:class:`CellServer`)."""
        return self.cells.server_passes

    def setup(self, stage: str) -> None:
        """Take the serving decision the data module made in its ``setup`` (Lightning runs it before this)."""
        serving = getattr(self.trainer.datamodule, "serving", None) if self._trainer is not None else None
        if serving is not None:
            self.serving = serving
            self.edge_source = serving.edge
            self.offload_cache = serving.offload

    def _prior_rows(self) -> np.ndarray:
        rows = getattr(self.earlier, "previous_rows", None)
        return rows if rows is not None else np.zeros((0, self.layout.num_columns))

    def _evaluate_batch(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
                        ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, EdgeEvidence] | None]:
        """Edge + gate for a batch: ``(rows of the images kept at the edge, offloaded work or None)``.

        The offloaded work is ``(their rows, pixels, evidence)``: the server columns are filled when it
        is served (:meth:`_serve`), in a full server batch.
        """
        images, labels, sample_ids = batch
        started = self.timer.start()
        evidence, through_edge = self.edge_source(images, sample_ids, self.seed)
        self.timer.stop("edge", started)
        self.edge_images.update(torch.tensor(float(through_edge), device=images.device))
        offload = self.gate.decide(evidence)
        # records.NONFINITE as the edge prediction for NaN/Inf logits
        rows = edge_rows(self.layout, sample_ids, labels, predictions(evidence.logits), offload)
        col = self.layout.column
        self.progress.gated(rows[:, col("label")], rows[:, col("edge_pred")], offload)
        if self.layout.scored:  # an operating curve: each threshold's offloaded set is score > threshold
            rows[:, col("gate_score")] = self.gate.score(evidence).double()
        if self.offload_cache is not None and not self.offload_cache.serving:
            self.offload_cache.record_gate(sample_ids, labels, rows[:, col("edge_pred")], offload)
        sent = offload.nonzero().squeeze(1)
        if sent.numel() == 0:
            return rows, None
        kept = (~offload).nonzero().squeeze(1)
        return rows[kept], (rows[sent], images[sent], evidence.subset(sent))

    def _serve(self, rows: torch.Tensor, images: torch.Tensor, sub: EdgeEvidence) -> torch.Tensor:
        """The server's columns of offloaded images: the ceiling and every (strategy, budget) cell."""
        col = self.layout.column
        started = self.timer.start()
        if self.server_probe is not None:  # an oracle strategy needs the server's attention: same forward
            full = self.server_probe(images, sub.sample_ids, self.seed)
            rows[:, col("ceiling_pred")] = predictions(full.logits)
            sub.server_attention = full.attention
        else:
            cached = self.offload_cache.ceiling(sub.sample_ids) if self.offload_cache is not None and \
                self.offload_cache.serving else None
            rows[:, col("ceiling_pred")] = (predictions(self.server.vit(images)) if cached is None
                                            else cached.to(rows.device))
        self.timer.stop("ceiling", started)
        self.progress.advance("ceiling", rows.shape[0])
        if self.offload_cache is not None and not self.offload_cache.serving:
            self.offload_cache.record_served(sub.sample_ids, images, rows[:, col("ceiling_pred")])
        if self.keep_served is not None:  # a live session's build (sagebench.session): the server batch, as served
            self.keep_served.append((rows.clone(), images, sub))
        return self.cells.serve(rows, images, sub)

    def _drain(self) -> torch.Tensor:
        """Serve every offloaded image waiting in the queue, as one server batch; their complete rows."""
        if not self._queue:
            return torch.zeros(0, self.layout.num_columns, dtype=torch.float64, device=self.device)
        rows, images, evidence = zip(*self._queue)
        self._queue, self._queued = [], 0
        return self._serve(torch.cat(rows), torch.cat(images), EdgeEvidence.cat(list(evidence)))

    def drain_queue(self) -> torch.Tensor:
        """Serve what is still waiting (end of this process's share) and store it; the stored rows.

        Called by the partial-results callback at the end of the epoch (before this module's own
        epoch-end hook), so that the last rows are saved like every other."""
        if not self._queue:
            return torch.zeros(0, self.layout.num_columns, dtype=torch.float64, device=self.device)
        return self.sweep.store(self._drain())

    def _rows(self, batch) -> tuple[torch.Tensor, tuple | None]:
        """The batch's complete records and its offloaded work; images skipped as corrupt (negative
        sample id, ``data.on_error=skip``) get a :func:`~sagebench.sweep.records.skipped_rows` record
        and never reach a model."""
        images, labels, sample_ids = batch
        skipped = sample_ids < 0
        if not bool(skipped.any()):
            return self._evaluate_batch(batch)
        keep = ~skipped
        parts = [skipped_rows(-sample_ids[skipped] - 1, self.layout)]
        work = None
        if bool(keep.any()):
            done, work = self._evaluate_batch((images[keep], labels[keep], sample_ids[keep]))
            parts.insert(0, done)
        return torch.cat(parts), work

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Edge and gate now; the offloaded images wait until ``server_batch_size`` of them are queued.

        Returns the rows completed in this step (stored copies), which the partial-results
        callback saves: rows still waiting in the queue are never saved half-filled.
        """
        done, work = self._rows(batch)
        parts = [done]
        if work is not None:
            self._queue.append(work)
            self._queued += int(work[0].shape[0])
            if self._queued >= self.server_batch_size:
                parts.append(self._drain())
        return self.sweep.store(torch.cat(parts) if len(parts) > 1 else done)

    def on_test_epoch_start(self) -> None:
        """Records known before any image is read (the kept images of a cached rerun), stored once, on rank 0."""
        if self.serving is not None and self.serving.from_cache and self.trainer.is_global_zero:
            rows = self.serving.known_rows(self.layout, exclude=getattr(self.earlier, "done_ids", None))
            if rows.shape[0]:
                self.sweep.store(torch.from_numpy(rows).to(self.device))

    def on_validation_epoch_start(self) -> None:
        self.on_test_epoch_start()

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.test_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.drain_queue()  # normally already drained by the partial-results callback
        self.sweep.ensure_state(self.device)
        self.records = self.sweep.compute()
        self._edge_images_total = int(self.edge_images.compute().item())
        if self.strategy_stats.active:  # the same on every process (it depends on the config only)
            self.strategy_stats_totals = self.strategy_stats.totals()
            self.strategy_stats.reset()
        self.sweep.reset()
        self.edge_images.reset()
        if self.trainer.is_global_zero:  # the summary, once, while the records are here (the results reuse it)
            self.summary_metrics()

    def summary_metrics(self) -> dict[str, float]:
        """The flat exact summary (:func:`sagebench.metrics.flat_summary`) of every image, this attempt's
        records merged with an earlier attempt's; skipped (corrupt) images are left out as in results.json."""
        from sagebench.sweep.resume import drop_redone, merge_rows

        prior = self._prior_rows()
        # this attempt's rows without images an earlier attempt finished (a padded process redoes one)
        this, _ = drop_redone(self.records, prior[:, 0].astype(np.int64), self.layout.num_columns)
        rows = merge_rows([prior, this], self.layout.num_columns)
        rows, _ = split_skipped(rows, self.layout)
        if not rows.shape[0]:
            return {}
        self.summary = (rows, summarize(rows, self.layout))  # the results reuse it (summary_of)
        return flat_summary(self.summary[1])

    def summary_of(self, rows: np.ndarray) -> dict | None:
        """The summary the loggers received, when it was computed from exactly ``rows`` (else None)."""
        if self.summary is None or not np.array_equal(self.summary[0], rows):
            return None
        return self.summary[1]

    def edge_images_total(self) -> int:
        """Images that went through the edge in the last epoch, all processes together."""
        return self._edge_images_total

    def on_validation_epoch_end(self) -> None:
        self.on_test_epoch_end()

    def configure_optimizers(self):  # evaluation only
        return None
