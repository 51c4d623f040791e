"""A finished run folder, read back for analysis, and the edge evidence of its offloaded images.

Why a separate reader: every analysis needs the same things from a run (its results, its
per-sample records, the strategies exactly as configured, the models and images rebuilt from
its own ``config.yaml``), and must refuse a folder that is not a finished run, or whose models
changed since the run, with a message that says so instead of producing silently wrong numbers.
Models and data are built with the very functions :func:`sagebench.sweep.evaluate.evaluate` uses.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from sagebench.errors import SageBenchError
from sagebench.results import RESULTS_FILE, SAMPLES_FILE

CONFIG_FILE = "config.yaml"
ANALYSIS_DIR = "analysis"


class AnalysisError(SageBenchError):
    """The run folder cannot be analysed as asked (not a finished run, a strategy missing, ...)."""


@dataclass
class RunDir:
    """What a finished ``sagebench eval`` wrote: ``results.json``, ``samples.parquet``, ``config.yaml``.

    ``samples`` is read on first use (the coverage analysis needs ``results.json`` only).
    """

    path: Path
    results: dict[str, Any]
    _samples: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str | None:
        return (self.results.get("benchmark") or {}).get("fingerprint")

    @property
    def num_patches(self) -> int:
        bench = self.results.get("benchmark") or {}
        if bench.get("num_patches"):
            return int(bench["num_patches"])
        rows, cols = bench["grid"]
        return int(rows) * int(cols)

    @property
    def budgets(self) -> list[int]:
        return sorted({int(r["budget"]) for r in self.results["results"]})

    @property
    def budget_unit(self) -> str:
        """``patches`` (B = units sent) or ``bytes`` (a byte budget per request), as the run recorded it."""
        unit = (self.results.get("transmission") or {}).get("budget_unit") or self.results["results"][0].get("budget_unit")
        return str(unit or "patches")

    def cell_column(self, field: str, label: str, budget: int) -> str:
        """Name of a per-cell column of ``samples.parquet``, e.g. ``pred/sage/B8`` (``pred/sage/bytes512``)."""
        from sagebench.cells import Cell

        return Cell(label, budget, self.budget_unit).key(field)

    @property
    def labels(self) -> list[str]:
        """Strategy labels in the run's order (the order of ``results['strategies']``)."""
        entries = self.results.get("strategies") or []
        if entries:
            return [str(e["label"]) for e in entries]
        return list(dict.fromkeys(str(r["strategy"]) for r in self.results["results"]))

    @property
    def samples(self) -> dict[str, np.ndarray]:
        """``samples.parquet`` as ``{column: numpy array}``, rows sorted by sample id."""
        if self._samples is None:
            path = self.path / SAMPLES_FILE
            if not path.is_file():
                raise AnalysisError(f"{self.path} has no {SAMPLES_FILE}: this analysis needs the per-image records "
                                    f"that `sagebench eval` writes beside {RESULTS_FILE}.")
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            cols = {name: table.column(name).to_numpy() for name in table.column_names}
            order = np.argsort(cols["sample_id"], kind="stable")
            self._samples = {k: v[order] for k, v in cols.items()}
        return self._samples

    def column(self, name: str) -> np.ndarray:
        cols = self.samples
        if name not in cols:
            raise AnalysisError(f"{self.path / SAMPLES_FILE} has no column {name!r} (it has "
                                f"{', '.join(list(cols)[:12])}, ...): was the run made by another sagebench version?")
        return cols[name]

    def offloaded_ids(self, limit: int | None = None) -> np.ndarray:
        """Sample ids of the offloaded images, ascending; the first ``limit`` of them if given."""
        ids = self.column("sample_id")[self.column("offloaded").astype(bool)].astype(np.int64)
        if limit is not None:
            if isinstance(limit, bool) or int(limit) < 1:
                raise AnalysisError(f"--limit must be a positive number of images, got {limit!r}.")
            ids = ids[: int(limit)]
        if ids.size == 0:
            raise AnalysisError(f"The run in {self.path} offloaded no image: there is nothing to analyse "
                                "(lower gate.threshold, or use gate.name=all).")
        return ids

    def correct(self, column: str, ids: np.ndarray) -> np.ndarray:
        """Per image of ``ids`` (sample ids): was ``column``'s prediction the label? (bool array)."""
        all_ids = self.column("sample_id")
        pos = np.searchsorted(all_ids, ids)
        if np.any(pos >= all_ids.size) or np.any(all_ids[np.minimum(pos, all_ids.size - 1)] != ids):
            raise AnalysisError(f"some sample ids are not in {self.path / SAMPLES_FILE}")
        return self.column(column)[pos] == self.column("label")[pos]

    def strategy_entry(self, label: str) -> dict[str, Any]:
        for entry in self.results.get("strategies") or []:
            if entry["label"] == label:
                return entry
        raise AnalysisError(f"The run in {self.path} has no strategy {label!r}; it has {', '.join(self.labels)}.")

    def find_label(self, wanted: str) -> str | None:
        """The run's label for ``wanted``: that exact label, else the only strategy registered as ``wanted``.

        ``None`` when the run has neither; an error when several strategies of that name ran
        with different options (the user must pick one label).
        """
        if wanted in self.labels:
            return wanted
        same_name = [e["label"] for e in self.results.get("strategies") or [] if e.get("name") == wanted]
        if len(same_name) > 1:
            raise AnalysisError(f"The run in {self.path} has several {wanted!r} strategies ({', '.join(same_name)}): "
                                "name the one to use by its label.")
        return same_name[0] if same_name else None

    def build_strategy(self, label: str) -> Any:
        """The strategy exactly as the run configured it (registry name + recorded options)."""
        from sagebench.strategies import get_strategy

        entry = self.strategy_entry(label)
        strategy = get_strategy(entry["name"], **(entry.get("options") or {}))
        if strategy.label != label:
            raise AnalysisError(f"Rebuilt strategy {entry['name']!r} has label {strategy.label!r}, the run "
                                f"recorded {label!r}: its default options changed since the run.")
        return strategy

    def config(self) -> Any:
        """The run's resolved config, reloaded (and validated) from its ``config.yaml``."""
        from sagebench.config import load_config

        path = self.path / CONFIG_FILE
        if not path.is_file():
            raise AnalysisError(f"{self.path} has no {CONFIG_FILE}: the models and images cannot be rebuilt "
                                "without the run's config.")
        return load_config(str(path))


def load_run(run_dir: str | Path) -> RunDir:
    """Open a finished run folder; a clear :class:`AnalysisError` if it is not one."""
    path = Path(run_dir)
    if not path.is_dir():
        raise AnalysisError(f"Run folder {path} does not exist.")
    results_path = path / RESULTS_FILE
    if not results_path.is_file():
        partial = " (it holds an unfinished run: finish it with resume=true)" if (path / "partial").exists() else ""
        raise AnalysisError(f"{path} has no {RESULTS_FILE}{partial}: give the output_dir of a finished "
                            "`sagebench eval ... output_dir=DIR` run.")
    try:
        results = json.loads(results_path.read_text())
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"Cannot read {results_path}: {exc}") from exc
    if not isinstance(results, dict) or not isinstance(results.get("results"), list) or not results["results"]:
        raise AnalysisError(f"{results_path} is not a sagebench results file (no 'results' list).")
    return RunDir(path, results)


def require_labels(run: RunDir, wanted: dict[str, str], analysis: str) -> dict[str, str]:
    """``{role: run label}`` for each wanted strategy; one error naming all that are missing."""
    found = {role: run.find_label(name) for role, name in wanted.items()}
    missing = [wanted[role] for role, label in found.items() if label is None]
    if missing:
        need = " and ".join(wanted.values())
        raise AnalysisError(f"The {analysis} analysis needs both {need} in the run; {run.path} is missing "
                            f"{', '.join(missing)} (it has {', '.join(run.labels)}). Rerun `sagebench eval` with "
                            f"strategies=[{','.join(wanted.values())}] (and budgets as before).")
    return {role: str(label) for role, label in found.items()}


# --------------------------------------------------------------------------------------------
# Recomputing evidence


@dataclass
class Models:
    """The run's edge (and, if asked for, server) rebuilt from its config, plus its images."""

    cfg: Any
    edge: Any  # sagebench.edge.model.EdgeModel
    server_probe: Any | None  # EdgeModel around the *server* ViT: its last-layer CLS attention on all N patches
    dataset: Any  # sagebench.data.images.EvalImages
    device: torch.device
    seed: int
    batch_size: int


def _device(cfg: Any, device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    accelerator = str((cfg.trainer or {}).get("accelerator", "auto")).lower()
    if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda"):
        return torch.device("cuda")
    return torch.device("cpu")


def build_models(run: RunDir, *, with_server: bool, strategies: Sequence[Any] = (),
                 device: str | None = None, batch_size: int | None = None) -> Models:
    """Rebuild the run's edge (and server) and its evaluation images, as ``evaluate`` does.

    The weights are checked against those the run recorded (``results['benchmark']``): an
    analysis of retrained or swapped weights would not match ``samples.parquet``.
    """
    import lightning as L

    from sagebench import data as data_lib
    from sagebench.edge.model import EdgeModel, rollout_options
    from sagebench.server.model import ServerModel
    from sagebench.strategies.base import required_evidence
    from sagebench.sweep.build import check_same_view, edge_input_map, model_spec, weights_id
    from sagebench.vit.loading import create_model

    cfg = run.config()
    seed = int(cfg.seed)
    L.seed_everything(seed, workers=True, verbose=False)  # as evaluate: same seed state before building
    bench = run.results.get("benchmark") or {}
    edge_spec = model_spec(cfg.model.edge)
    edge = EdgeModel(create_model(edge_spec), attention=cfg.model.edge.attention,
                     **rollout_options(required_evidence(strategies)))
    _check_weights(run, "edge", weights_id(edge_spec, edge.vit), (bench.get("edge") or {}).get("weights"))
    spec = data_lib.DataSpec.from_config(cfg.data)
    if spec.streaming:
        raise AnalysisError("The run streamed its data set (data.streaming=true); the analysis reads images by "
                            "sample id and needs a map-style copy: rerun it with data.streaming=false.")
    view = data_lib.resolve_data_config(edge.vit, spec)
    server_probe = None
    if with_server:
        server_spec = model_spec(cfg.model.server)
        server = ServerModel(create_model(server_spec))
        _check_weights(run, "server", weights_id(server_spec, server.vit),
                       (bench.get("server") or {}).get("weights"))
        server_view = data_lib.resolve_data_config(server.vit, spec)
        check_same_view(view, server_view, edge, server)
        view = server_view  # the transform evaluate uses
        edge = edge_input_map(spec, edge, server_view)  # as evaluate: the edge renormalises the server's crop
        # Sending all N patches reproduces vit(images) (see ServerModel), so the server's own
        # importance of each patch is its last block's CLS attention on the full image, which is
        # exactly what EdgeModel computes for the ViT it wraps.
        server_probe = EdgeModel(server.vit, attention="last_layer")
    source = data_lib.load_source(spec)
    dataset = data_lib.EvalImages(source, data_lib.build_transform(view), spec, view)
    dev = _device(cfg, device)
    edge.to(dev).eval()
    if server_probe is not None:
        server_probe.to(dev).eval()
    size = int(batch_size or run.results.get("config", {}).get("batch_size") or cfg.batch_size)
    return Models(cfg, edge, server_probe, dataset, dev, seed, size)


def _check_weights(run: RunDir, role: str, now: str, recorded: str | None) -> None:
    if recorded and now != recorded and recorded != "random-init":
        raise AnalysisError(f"The {role} weights are not those of the run in {run.path} (now {now}, the run used "
                            f"{recorded}): the recomputed evidence would not match its samples.parquet.")


@dataclass
class Batch:
    """The recomputed evidence of one batch of offloaded images."""

    sample_ids: np.ndarray
    evidence: Any  # EdgeEvidence
    server_attention: torch.Tensor | None  # [b, N], rows sum to 1
    server_pred: np.ndarray | None


def offloaded_batches(models: Models, ids: np.ndarray) -> Iterator[Batch]:
    """Edge evidence (and server attention) of the images ``ids``, in batches of the run's size."""
    from torch.utils.data import DataLoader, Subset

    if ids.size and int(ids.max()) >= len(models.dataset):
        raise AnalysisError(f"Sample id {int(ids.max())} is beyond the {len(models.dataset)} images the run's config "
                            "loads now: the data set changed since the run.")
    loader = DataLoader(Subset(models.dataset, [int(i) for i in ids]), batch_size=models.batch_size,
                        shuffle=False, num_workers=0)
    with torch.inference_mode():
        for images, _labels, sample_ids in loader:
            images, sample_ids = images.to(models.device), sample_ids.to(models.device)
            evidence = models.edge(images, sample_ids, models.seed)
            server_attention, server_pred = None, None
            if models.server_probe is not None:
                probe = models.server_probe(images, sample_ids, models.seed)
                server_attention = probe.attention
                server_pred = probe.logits.argmax(-1).cpu().numpy()
            yield Batch(sample_ids.cpu().numpy(), evidence, server_attention, server_pred)


# --------------------------------------------------------------------------------------------
# Outputs


def provenance(run: RunDir, command: str | None) -> dict[str, Any]:
    """Where the numbers come from: the run, its benchmark fingerprint, the command, the code."""
    from sagebench.results import provenance as run_provenance

    prov = run_provenance()
    if command is None:
        command = " ".join([Path(sys.argv[0]).name] + sys.argv[1:])
    return {
        "run_dir": str(run.path.resolve()),
        "benchmark": (run.results.get("benchmark") or {}).get("name"),
        "benchmark_fingerprint": run.fingerprint,
        "command": command,
        "sagebench_version": prov.get("sagebench_version"),
        "git_sha": prov.get("git_sha"),
        "torch": prov.get("torch"),
        "utc_time": prov.get("utc_time"),
    }


def clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, non-finite floats to ``None``."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def write_outputs(run: RunDir, name: str, payload: dict[str, Any], plot: Callable[[dict[str, Any], Path], Path],
                  out_dir: str | Path | None = None) -> dict[str, Any]:
    """Write ``<out_dir>/<name>.json`` and ``.png`` (default ``RUN_DIR/analysis``); return the payload."""
    from sagebench.runtime.files import atomic_write_text

    folder = Path(out_dir) if out_dir is not None else run.path / ANALYSIS_DIR
    json_path, png_path = folder / f"{name}.json", folder / f"{name}.png"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        payload["files"] = {"json": str(json_path), "png": str(png_path)}
        payload = clean(payload)
        plot(payload, png_path)
        atomic_write_text(json_path, _dumps(payload))
    except OSError as exc:
        raise AnalysisError(f"Cannot write the {name} analysis to {folder}: {exc}. Pass another output folder "
                            "(--out DIR).") from exc
    return payload


def _dumps(payload: dict[str, Any]) -> str:
    """Indented JSON, except the per-image section (``images``), kept on one line: it can hold
    one list per image and budget, which indentation would blow up to one line per number."""
    head = {k: v for k, v in payload.items() if k != "images"}
    text = json.dumps(head, indent=2, allow_nan=False)
    if "images" not in payload:
        return text + "\n"
    images = json.dumps(payload["images"], separators=(",", ":"), allow_nan=False)
    return text[:-2] + f',\n  "images": {images}\n}}\n' if head else f'{{\n  "images": {images}\n}}\n'


def mean_or_none(total: float, count: float) -> float | None:
    return float(total) / float(count) if count else None
