"""A run's identity, owned once: :class:`RunPlan` and its four projections.

Why one value: four keys name a run. The *records* key (an unfinished run resumes only if it is
unchanged), the *benchmark* fingerprint (which runs a board compares), the *edge cache* key (whose
evidence a rerun may read) and the *offload cache* key (whose gate decisions, pixels and ceilings it
may read). Each used to be written out by hand in its own module, so a setting that changes records
had to be found four times (the trainer precision was missed in the fingerprint). Here every input
of every key is one field of a frozen value, and each field declares which identities it belongs to
(``identity(...)`` in its metadata); the keys are projections of the plan. ``tests/test_plan.py``
changes each field in turn and checks that exactly the projections it declares change, so a new
field cannot be left out of a key it belongs to.

The projections keep the historical layouts byte for byte (shipped boards' fingerprints, old run
keys and cache folders stay valid); a field added to a layout later is written only when it differs
from its default, for the same reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

#: The identities a field may belong to.
RECORDS = "records"  # decides per-sample records: the resume key
BENCHMARK = "benchmark"  # decides which runs are comparable: the fingerprint
EDGE_CACHE = "edge_cache"  # decides the edge evidence of an image
OFFLOAD_CACHE = "offload_cache"  # decides the gate's decision, kept pixels and ceiling (beyond the edge cache)
IDENTITIES = (RECORDS, BENCHMARK, EDGE_CACHE, OFFLOAD_CACHE)

#: Version tags of the cache layouts (a change of layout is a new folder).
EDGE_CACHE_VERSION = 1
OFFLOAD_CACHE_VERSION = 1

#: Lightning's full-precision names: the fingerprint names the precision only when it is something else.
FULL_PRECISION = ("32-true", "32", "64-true", "64")
#: Defaults of fields added after the layouts were fixed: a key names them only when they differ.
DEFAULT_DECODER = "pil"
DEFAULT_MATMUL_PRECISION = "highest"


def identity(*kinds: str, doc: str = "", default: Any = dataclasses.MISSING) -> Any:
    """A plan field that belongs to the identities ``kinds`` (``default``: for fields added later)."""
    unknown = set(kinds) - set(IDENTITIES)
    if unknown:
        raise ValueError(f"unknown identities {sorted(unknown)}; known: {IDENTITIES}")
    return field(default=default, metadata={"identity": frozenset(kinds), "doc": doc})


def _plain(obj: Any) -> Any:
    """JSON round trip: tuples become lists and odd objects strings, so keys compare as stored."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def digest(key: Mapping[str, Any]) -> str:
    """The 16-hex-digit name of a key (cache folders)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunPlan:
    """Everything that names a run, decided once the data is loaded and the Trainer resolved its settings.

    Build it with :func:`sagebench.sweep.plan_of` (from the built parts); read its projections
    :meth:`run_key`, :meth:`benchmark_fields`, :meth:`edge_cache_key`, :meth:`offload_cache_key`.
    """

    data: Mapping[str, Any] = identity(RECORDS, BENCHMARK, EDGE_CACHE,
                                       doc="data set fields: name, split, revision, content hash, num_images")
    dataset: str = identity(BENCHMARK, doc="what was read: a local path's basename, else the hub name")
    label_map: Any = identity(RECORDS, BENCHMARK, OFFLOAD_CACHE, doc="data labels -> model indices (None: same)")
    preprocessing: Mapping[str, Any] = identity(RECORDS, BENCHMARK, EDGE_CACHE, doc="the crop both models see")
    grid: tuple[int, int] = identity(BENCHMARK, doc="patch grid (rows, cols)")
    edge_name: str = identity(RECORDS, BENCHMARK, EDGE_CACHE)
    edge_kwargs: Mapping[str, Any] = identity(RECORDS, BENCHMARK, EDGE_CACHE)
    edge_weights: str = identity(RECORDS, BENCHMARK, doc="checkpoint hash, hub tag or random-init")
    edge_weights_sha256: str = identity(EDGE_CACHE, doc="hash of the weight tensors themselves")
    edge_attention: str = identity(RECORDS, BENCHMARK, EDGE_CACHE, doc="last_layer | rollout")
    edge_rollouts: tuple[str, ...] = identity(EDGE_CACHE, doc="the rollouts the edge forward computes, in "
                                              "ROLLOUT_KINDS order: (), ('rollout',), ('rollout_per_head',), both")
    server_name: str = identity(RECORDS, BENCHMARK, OFFLOAD_CACHE)
    server_kwargs: Mapping[str, Any] = identity(RECORDS, BENCHMARK, OFFLOAD_CACHE)
    server_weights: str = identity(RECORDS, BENCHMARK)
    server_weights_sha256: str = identity(OFFLOAD_CACHE)
    gate: Mapping[str, Any] = identity(RECORDS, BENCHMARK, OFFLOAD_CACHE,
                                       doc="the gate's identity, e.g. {gate: min_entropy, threshold: 1.0}")
    codec: Mapping[str, Any] = identity(RECORDS, BENCHMARK, doc="codec.describe()")
    budget_unit: str = identity(RECORDS, BENCHMARK, doc="patches | bytes")
    budgets: tuple[int, ...] = identity(RECORDS)
    strategies: tuple[Mapping[str, Any], ...] = identity(RECORDS, doc="label and options of each strategy")
    seed: int = identity(RECORDS)
    precision: str = identity(RECORDS, BENCHMARK, EDGE_CACHE, doc="what Lightning resolved, not what was asked")
    device_type: str = identity(EDGE_CACHE, doc="cpu | cuda | mps: evidence differs in rounding")
    torch_version: str = identity(EDGE_CACHE)
    compiled: bool = identity(OFFLOAD_CACHE, doc="torch.compile of the server (rounding)")
    decoder: str = identity(RECORDS, BENCHMARK, EDGE_CACHE, default=DEFAULT_DECODER,
                            doc="pil | tensor:cpu | tensor:cuda: data.decode where it ran (the pixels differ)")
    matmul_precision: str = identity(RECORDS, BENCHMARK, EDGE_CACHE, default=DEFAULT_MATMUL_PRECISION,
                                     doc="torch.get_float32_matmul_precision(): high/medium let CUDA use TF32 "
                                         "(or bf16) for float32 matmuls")
    gate_thresholds: tuple[float, ...] = identity(
        RECORDS, default=(), doc="an operating curve's thresholds (empty for one): the records hold the gate's score; "
        "the served set, the results and the fingerprint are the primary (lowest) threshold's, as in `gate`")

    # -- the fields of each identity

    @classmethod
    def fields_of(cls, kind: str) -> tuple[str, ...]:
        """Names of the fields that belong to identity ``kind``."""
        return tuple(f.name for f in dataclasses.fields(cls) if kind in f.metadata["identity"])

    # -- projections

    @property
    def num_patches(self) -> int:
        return int(self.grid[0]) * int(self.grid[1])

    @property
    def columns(self) -> tuple[str, ...]:
        """The per-sample columns the records hold (they follow from the strategies, budgets and unit)."""
        from sagebench.metrics import SweepLayout

        layout = SweepLayout(tuple((s["label"], b) for s in self.strategies for b in self.budgets),
                             budget_unit=self.budget_unit, scored=bool(self.gate_thresholds))
        return tuple(layout.names())

    def _later_fields(self) -> dict[str, Any]:
        """Fields added after the layouts were fixed, each only when it differs from its default (so
        the keys of earlier runs stay what they were): the decoder and the float32 matmul precision."""
        out: dict[str, Any] = {}
        if self.decoder != DEFAULT_DECODER:
            out["decoder"] = self.decoder
        if self.matmul_precision != DEFAULT_MATMUL_PRECISION:
            out["matmul_precision"] = self.matmul_precision
        return out

    def run_key(self) -> dict[str, Any]:
        """Everything that decides the per-sample records: an unfinished run resumes only if all is unchanged."""
        data = dict(self.data)
        if self.label_map is not None:  # only when labels were remapped: earlier run keys stay valid
            data["label_map"] = self.label_map
        return _plain({
            **({} if self.codec.get("name") == "raw" else {"codec": self.codec}),
            "data": data,
            "edge": {"name": self.edge_name, "weights": self.edge_weights, "attention": self.edge_attention,
                     "kwargs": self.edge_kwargs},
            "server": {"name": self.server_name, "weights": self.server_weights, "kwargs": self.server_kwargs},
            "preprocessing": self.preprocessing,
            **self.gate,
            **({"thresholds": [float(t) for t in self.gate_thresholds]} if self.gate_thresholds else {}),
            "strategies": list(self.strategies),
            "budgets": [int(b) for b in self.budgets],
            "seed": int(self.seed),
            "precision": self.precision,
            "columns": list(self.columns),
            **self._later_fields(),
        })

    def benchmark_fields(self, num_images: int, num_skipped: int = 0) -> dict[str, Any]:
        """What makes two runs comparable (hashed into the fingerprint), not what they compare.

        ``num_images`` / ``num_skipped``: what was evaluated (known once the run is done).
        """
        fields: dict[str, Any] = {
            "dataset": self.dataset or "unknown",
            # the data set's "name" is already "dataset"; kept out so it cannot shadow the benchmark name
            **{k: v for k, v in self.data.items() if k != "name"},
            "num_images": int(num_images),
            "num_patches": self.num_patches,
            "grid": [int(g) for g in self.grid],
            "edge": {"name": self.edge_name, "weights": self.edge_weights, "attention": self.edge_attention},
            "server": {"name": self.server_name, "weights": self.server_weights},
            "preprocessing": dict(self.preprocessing),
            **self.gate,
        }
        # set only when they differ from the historical default, so that older fingerprints stay valid:
        # model kwargs change the architecture; a codec changes what the server receives; a byte budget is
        # not a patch budget; reduced precision changes records; labels mapped to other indices
        if self.edge_kwargs:
            fields["edge"]["kwargs"] = dict(self.edge_kwargs)
        if self.server_kwargs:
            fields["server"]["kwargs"] = dict(self.server_kwargs)
        if self.codec.get("name") != "raw":
            fields["codec"] = dict(self.codec)
        if self.budget_unit != "patches":
            fields["budget_unit"] = self.budget_unit
        if self.precision not in FULL_PRECISION:
            fields["precision"] = self.precision
        if self.label_map is not None:
            fields["label_map"] = self.label_map
        fields.update(self._later_fields())  # another decoder or TF32 changes the pixels / the logits
        if num_skipped:  # not comparable with a run over every image
            fields["num_skipped"] = int(num_skipped)
        return _plain(fields)

    def edge_cache_key(self) -> dict[str, Any]:
        """Everything that decides the evidence of an image (and nothing that does not: not the gate,
        the server, the strategies, ``data.limit`` or the number of images).

        The rollouts: ``with_rollout`` says whether Abnar & Zuidema's is computed (the historical
        layout); ``rollouts`` lists them all, written only when one besides it is computed
        (``rollout_per_head``), so that the folders of earlier runs keep their names."""
        data = {k: v for k, v in self.data.items() if k not in ("num_images", "limit")}
        rollouts = [str(r) for r in self.edge_rollouts]
        edge = {"name": self.edge_name, "kwargs": self.edge_kwargs, "weights_sha256": self.edge_weights_sha256,
                "attention": self.edge_attention, "with_rollout": "rollout" in rollouts}
        if set(rollouts) - {"rollout"}:
            edge["rollouts"] = rollouts
        return _plain({
            "version": EDGE_CACHE_VERSION,
            "data": data,
            "preprocessing": self.preprocessing,
            "edge": edge,
            "precision": self.precision,
            "device_type": self.device_type,
            "torch": self.torch_version,
            **self._later_fields(),
        })

    def offload_cache_key(self) -> dict[str, Any]:
        """What decides the gate's decision, the pixels kept and the ceiling, beyond the edge cache's key."""
        gate = dict(self.gate)
        return _plain({
            "version": OFFLOAD_CACHE_VERSION, "edge_cache": digest(self.edge_cache_key()),
            "gate": gate.pop("gate"), **gate,
            "server": {"name": self.server_name, "kwargs": self.server_kwargs,
                       "weights_sha256": self.server_weights_sha256},
            "label_map": self.label_map, "compile": bool(self.compiled),
        })


def dataset_label(path: str | None, name: str | None) -> str:
    """What was read, as boards name it: a local path's basename wins over a hub name."""
    return (Path(path).name if path else name) or "unknown"


def resolved_precision(trainer: Any) -> str:
    """The precision Lightning runs (``16-mixed`` asked on CPU runs ``bf16-mixed``): what ran, not what was asked."""
    plugin = getattr(getattr(trainer, "strategy", None), "precision_plugin", None)
    value = getattr(plugin, "precision", None) or getattr(trainer, "precision", None)
    return str(value) if value is not None else "32-true"


def device_type(trainer: Any) -> str:
    """``cpu`` | ``cuda`` | ``mps`` ...: the accelerator the Trainer resolved."""
    accelerator = getattr(trainer, "accelerator", None)
    return type(accelerator).__name__.replace("Accelerator", "").lower() if accelerator is not None else "cpu"


def plan_of(sweep: Any, trainer: Any) -> RunPlan:
    """The plan of a built sweep (:class:`sagebench.sweep.build.Sweep`, data loaded) under ``trainer``.

    The weight-tensor hashes (``*_weights_sha256``) name cache folders only: they are computed when
    ``cache.edge`` is on (hashing a DeiT-Base takes a while) and are empty otherwise.
    """
    import torch

    from sagebench import data as data_lib
    from sagebench.edge.cache import weights_hash

    cfg, spec = sweep.cfg, sweep.data
    num_images = sweep.num_images if sweep.num_images is not None else spec.limit or 0
    cached = bool(cfg.get("cache", {}).get("edge", False))
    label_map = sweep.label_map
    return RunPlan(
        data=data_lib.dataset_fingerprint_fields(spec, num_images),
        dataset=dataset_label(spec.path, spec.name),
        label_map=None if label_map is None else label_map.describe(),
        preprocessing=dict(sweep.preprocessing),
        grid=tuple(int(g) for g in sweep.server.grid),
        edge_name=sweep.edge_spec.name,
        edge_kwargs=dict(sweep.edge_spec.kwargs or {}),
        edge_weights=sweep.edge_weights,
        edge_weights_sha256=weights_hash(sweep.edge.vit) if cached else "",
        edge_attention=str(cfg.model.edge.attention),
        edge_rollouts=tuple(sweep.edge.rollouts),
        server_name=sweep.server_spec.name,
        server_kwargs=dict(sweep.server_spec.kwargs or {}),
        server_weights=sweep.server_weights,
        server_weights_sha256=weights_hash(sweep.server.vit) if cached else "",
        gate=sweep.gate.identity(),
        codec=sweep.codec.describe(),
        budget_unit=sweep.budget_unit,
        budgets=tuple(int(b) for b in sweep.budgets),
        strategies=tuple({"label": s.label, "options": s.options()} for s in sweep.strategies),
        seed=int(cfg.seed),
        precision=resolved_precision(trainer),
        device_type=device_type(trainer),
        torch_version=torch.__version__,
        compiled=bool(cfg.get("compile", False)),
        # from the settings and the device (a finished run's plan, built without a data module, agrees with
        # the run's); a data set given decoded (evaluate(dataset=...)) went through no decoder of ours
        decoder=(data_lib.decoder_name(spec.decode, device_type(trainer)) if hasattr(sweep.dataset, "transform")
                 else DEFAULT_DECODER),
        matmul_precision=torch.get_float32_matmul_precision(),
        gate_thresholds=tuple(sweep.gate.thresholds) if sweep.gate.curve else (),
    )
