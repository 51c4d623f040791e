"""A live session: build a benchmark once, then evaluate any strategies and budgets against it in seconds.

Why: in the research loop (write a strategy, look at its curve, change it) everything but the new
strategy's selections and server passes is the same every time: the models, the data, the edge
forward, the gate, the offloaded images' pixels and the server's ceiling. :func:`open_session` pays
for them once, through the same Lightning path as a run (``Trainer.test`` over the data module, the
research-loop cache included), and keeps them in memory on the run's device, in the server batches
the run served them in. :meth:`Session.evaluate` then serves those batches to the strategies through
the very unit a run uses (:class:`sagebench.sweep.cell_server.CellServer`), without a Trainer, and
assembles the results as a run does (:func:`sagebench.sweep.evaluate.results_json`): the per-sample
records and every number of the results equal those of ``sagebench eval`` with the same config
(tests/test_session.py).

::

    import sagebench
    session = sagebench.open_session(overrides=["data.limit=2000"])
    results = session.evaluate(["sage", MyStrategy()], budgets=[8, 16])
    results.to_dataframe()
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from sagebench.edge.evidence import EdgeEvidence
from sagebench.errors import ConfigError
from sagebench.metrics import BASE_FIELDS, SweepLayout
from sagebench.results import RunResults
from sagebench.strategies import Strategy, get_strategy
from sagebench.strategies.base import check_budget, check_byte_budget, required_evidence

#: Evidence the session can add to the edge's forward at build time (``open_session(requires=...)``).
BUILD_EVIDENCE = ("rollout", "rollout_per_head", "server_attention")


@dataclass
class _Batch:
    """One server batch as the run served it: base records (ceiling filled), pixels, evidence."""

    rows: torch.Tensor
    images: torch.Tensor
    evidence: EdgeEvidence


class Session:
    """A benchmark built once and kept in memory (models, data, edge evidence, offloaded pixels, ceiling).

    Make one with :func:`open_session`. :meth:`evaluate` runs any strategies at any budgets (of the
    config's budget unit) against it and returns the same :class:`~sagebench.results.RunResults` a run
    with those strategies and budgets would write.
    """

    def __init__(self, sweep: Any, plan: Any, trainer: Any, base_rows: np.ndarray, batches: list[_Batch],
                 evidence: frozenset[str], build_seconds: float) -> None:
        self.sweep = sweep
        self.plan = plan
        self._trainer = trainer  # its precision plugin gives the forwards' context (autocast under bf16-mixed)
        self.device = trainer.strategy.root_device
        self._base_rows = base_rows  # [num_images, len(BASE_FIELDS)], sorted by sample id
        self._batches = batches
        self.evidence = evidence
        self.build_seconds = build_seconds
        #: the per-sample records of the last :meth:`evaluate` (``.rows`` sorted by sample id, ``.layout``)
        self.last_records: Any = None

    @property
    def cfg(self) -> DictConfig:
        return self.sweep.cfg

    @property
    def num_images(self) -> int:
        return int(self._base_rows.shape[0])

    @property
    def num_offloaded(self) -> int:
        return sum(int(b.rows.shape[0]) for b in self._batches)

    def strategies(self, strategies: Iterable[str | Strategy] | None = None) -> list[Strategy]:
        """The strategies to evaluate: the config's (None), else each a registry name or a Strategy instance."""
        if strategies is None:
            return list(self.sweep.strategies)
        if isinstance(strategies, (str, Strategy)):
            strategies = [strategies]
        out = [get_strategy(s) if isinstance(s, str) else s for s in strategies]
        for s in out:
            if not isinstance(s, Strategy):
                raise ConfigError(f"session.evaluate takes strategy names or Strategy instances, got {s!r}.")
        labels = [s.label for s in out]
        if len(set(labels)) != len(labels) or not out:
            raise ConfigError(f"session.evaluate needs at least one strategy, each once; got {labels}.")
        missing = sorted(required_evidence(out) & set(BUILD_EVIDENCE) - self.evidence)
        if missing:
            raise ConfigError(f"The strategies {labels} need the evidence {missing}, which this session did not "
                              f"compute when it was built: open it with sagebench.open_session(..., "
                              f"requires={missing}).")
        return out

    def budgets(self, budgets: Sequence[int] | None = None) -> list[int]:
        """The budgets to evaluate (None: the config's), checked in the config's unit (patches or bytes)."""
        if budgets is None:
            return list(self.sweep.budgets)
        if self.sweep.budget_unit == "bytes":
            return [check_byte_budget(b) for b in budgets]
        return [check_budget(b, self.sweep.num_patches) for b in budgets]

    def evaluate(self, strategies: Iterable[str | Strategy] | None = None, budgets: Sequence[int] | None = None, *,
                 output_dir: str | Path | None = None, plots: bool = False, wandb: bool = False) -> RunResults:
        """The results of ``strategies`` at ``budgets`` (default: the config's) on this session's images.

        ``output_dir``: also write ``results.json``, ``samples.parquet`` and ``config.yaml`` there, as a run
        does (never over an existing ``results.json``); ``plots`` / ``wandb`` (need ``output_dir``): draw the
        run's figures into it / log to W&B as the config's ``wandb`` section says.
        """
        from sagebench.sweep.cell_server import CellServer
        from sagebench.sweep.evaluate import records_of, results_json
        from sagebench.sweep.strategy_stats import StrategyStats

        started = time.perf_counter()
        if (plots or wandb) and output_dir is None:
            raise ConfigError("session.evaluate(plots=True / wandb=True) needs output_dir=... for the figures.")
        chosen, budget_list = self.strategies(strategies), self.budgets(budgets)
        layout = SweepLayout(tuple((s.label, b) for s in chosen for b in budget_list),
                             budget_unit=self.sweep.budget_unit)
        stats = StrategyStats(layout.cells, [s.stat_names for s in chosen for _ in budget_list]).to(self.device)
        examples = self._examples_wanted(budget_list) if plots else (0, None)
        from sagebench.runtime.speed import PhaseTimer

        cells = CellServer(self.sweep.server, chosen, budget_list, layout, codec=self.sweep.codec,
                           dedupe=bool(self.cfg.get("dedupe", True)),
                           timer=PhaseTimer(bool(self.cfg.get("profile", False))), stats=stats, examples=examples)
        self.sweep.server.eval()
        base = len(BASE_FIELDS)
        kept = self._base_rows[:, layout.column("offloaded")] == 0
        parts = [self._expand(torch.from_numpy(self._base_rows[kept]), layout)]
        with torch.inference_mode(), self._trainer.strategy.precision_plugin.test_step_context():
            for batch in self._batches:
                rows = torch.full((batch.rows.shape[0], layout.num_columns), -1.0, dtype=torch.float64,
                                  device=batch.rows.device)
                rows[:, :base] = batch.rows[:, :base]
                batch.evidence.server_judge = None
                parts.append(cells.serve(rows, batch.images, batch.evidence).cpu())
        all_rows = torch.cat(parts).numpy()
        all_rows = all_rows[np.argsort(all_rows[:, 0], kind="stable")]
        records = self.last_records = records_of(all_rows, layout)
        config = self._config(chosen, budget_list, output_dir)
        results = results_json(
            self.sweep, self.plan, records, strategies=chosen, device=str(self.device), world_size=1,
            strategy_stats=stats.totals() if stats.active else [],
            resume={"key": None, "attempts": 1, "images_resumed": 0}, config=config,
            timing={"wall_seconds": round(time.perf_counter() - started, 3), "edge_forwards_per_image": 0.0,
                    "session": {"build_seconds": round(self.build_seconds, 3)},
                    "server_passes": dict(cells.server_passes, dedupe=cells.dedupe),
                    **({"phases": cells.timer.report()} if cells.timer.enabled else {})})
        if output_dir is not None:
            self._write(Path(output_dir), config, records, results)
            results["output_dir"] = str(output_dir)
            if plots or wandb:
                results["report"] = self._report(results, records, Path(output_dir), chosen, budget_list,
                                                 cells.examples, plots=plots, wandb=wandb)
        return RunResults.from_json(results)

    # -- helpers

    def _expand(self, base_rows: torch.Tensor, layout: SweepLayout) -> torch.Tensor:
        rows = torch.full((base_rows.shape[0], layout.num_columns), -1.0, dtype=torch.float64)
        rows[:, :len(BASE_FIELDS)] = base_rows
        return rows

    def _examples_wanted(self, budgets: list[int]) -> tuple[int, int | None]:
        if self.sweep.budget_unit != "patches":
            return (0, None)
        from sagebench.reporting.report import NUM_OVERLAY_IMAGES, overlay_budget

        return (NUM_OVERLAY_IMAGES, overlay_budget(budgets))

    def _config(self, strategies: list[Strategy], budgets: list[int], output_dir: str | Path | None) -> DictConfig:
        """The config of a run of these strategies and budgets (what results.json and config.yaml record)."""
        cfg = OmegaConf.create(OmegaConf.to_container(self.cfg, resolve=True))
        if [s.label for s in strategies] != [s.label for s in self.sweep.strategies]:
            cfg.strategies = [s.name if s.label == s.name else {"name": s.name, **s.options()} for s in strategies]
        cfg["budget_bytes" if self.sweep.budget_unit == "bytes" else "budgets"] = list(budgets)
        cfg.output_dir = None if output_dir is None else str(output_dir)
        return cfg

    def _write(self, out_dir: Path, cfg: DictConfig, records: Any, results: dict[str, Any]) -> None:
        from sagebench.results import RESULTS_FILE, write_results, write_samples
        from sagebench.runtime.files import atomic_write_text

        if (out_dir / RESULTS_FILE).exists():
            raise ConfigError(f"{out_dir} already holds a {RESULTS_FILE}; sagebench never replaces a run's results. "
                              "Give session.evaluate another output_dir.")
        out_dir.mkdir(parents=True, exist_ok=True)
        write_samples(out_dir, records.rows, records.layout, class_names=results.get("class_names"))
        atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg))
        write_results(out_dir, results)

    def _report(self, results: dict[str, Any], records: Any, out_dir: Path, strategies: list[Strategy],
                budgets: list[int], examples: dict[int, dict], *, plots: bool, wandb: bool) -> dict[str, Any]:
        from sagebench.sweep.evaluate import report

        results = dict(results, config=dict(results["config"], logger="wandb" if wandb else "none"))
        if not plots:
            examples = {}
        return report(replace(self.sweep, strategies=strategies, budgets=budgets), results, records, out_dir,
                      examples)


def open_session(cfg: DictConfig | None = None, overrides: list[str] | None = None, *,
                 dataset: torch.utils.data.Dataset | None = None, requires: Iterable[str] = ()) -> Session:
    """Build the benchmark ``cfg`` (or the default config with ``overrides``) once and keep it in memory.

    The build is a run's own first half: models, data, the edge forward and gate over every image (or
    the research-loop cache when ``cache.edge=true`` covers the run), the server's ceiling on the
    offloaded images, through ``Trainer.test``. The config's strategies decide which rollouts the edge
    computes; ``requires`` adds evidence other strategies will need (``rollout``, ``rollout_per_head``,
    ``server_attention``). ``dataset``: an in-memory evaluation set, as :func:`sagebench.evaluate` takes.
    """
    import lightning as L

    from sagebench.config import load_config
    from sagebench.edge.model import EdgeModel
    from sagebench.sweep.build import build
    from sagebench.sweep.datamodule import SweepData
    from sagebench.sweep.evaluate import build_module, configure_runtime, progress_display
    from sagebench.sweep.serving import CacheSettings
    from sagebench.sweep.trainer import build_trainer, lightning_objects

    started = time.perf_counter()
    cfg = cfg if cfg is not None else load_config(None, overrides or [])
    unknown = sorted(set(requires) - set(BUILD_EVIDENCE))
    if unknown:
        raise ConfigError(f"open_session(requires=...) knows {list(BUILD_EVIDENCE)}, got {unknown}.")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    configure_runtime(cfg)
    sweep = build(cfg, load_data=False)
    needs = set(required_evidence(sweep.strategies)) | set(requires)
    sweep.edge.with_rollout = sweep.edge.with_rollout or "rollout" in needs
    sweep.edge.with_rollout_per_head = sweep.edge.with_rollout_per_head or "rollout_per_head" in needs
    trainer_kwargs = lightning_objects(dict(OmegaConf.to_container(cfg.trainer, resolve=True)), None, None)
    trainer = build_trainer(**{**trainer_kwargs, "logger": False, "enable_checkpointing": False,
                               "enable_model_summary": False, "enable_progress_bar": bool(cfg.progress),
                               "inference_mode": True, "use_distributed_sampler": False,
                               "callbacks": progress_display(cfg, trainer_kwargs)})  # the build's progress
    if trainer.world_size != 1:
        raise ConfigError("A session runs in one process: set trainer.devices=1 (and trainer.num_nodes=1).")
    module = build_module(replace(sweep, strategies=[]), None)
    if "server_attention" in needs:  # the oracles' server attention comes from the ceiling's own forward
        module.server_probe = EdgeModel(sweep.server.vit, attention="last_layer")
    module.keep_served = []
    from sagebench.runtime import speed

    data = SweepData(sweep, cfg.batch_size, speed.num_workers(cfg.data.num_workers, trainer),
                     cache=CacheSettings.from_config(cfg.get("cache")), dataset=dataset)
    trainer.test(module, datamodule=data, verbose=False)
    sweep.edge.to(trainer.strategy.root_device)  # Lightning's teardown moved the models to the CPU
    sweep.server.to(trainer.strategy.root_device)
    base = module.records[:, :len(BASE_FIELDS)]
    batches = [_Batch(rows, images, evidence) for rows, images, evidence in module.keep_served]
    evidence = frozenset(k for k in BUILD_EVIDENCE if k in needs)
    return Session(sweep, data.plan, trainer, base, batches, evidence, time.perf_counter() - started)
