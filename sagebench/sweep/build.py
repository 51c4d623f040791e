"""From a config to the parts of a sweep: models, strategies, data, budgets, codec, channels, gate.

Why public: ``evaluate`` builds with these functions, and so do ``sagebench analyze`` and
notebooks that want the run's edge, server or images without running a sweep. Each function
has one job; :func:`build` calls them in the order ``evaluate`` always has (random-init
weights depend on the seed state when each model is created).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sagebench import data as data_lib
from sagebench.config import plugin_entry, strategy_entries
from sagebench.edge.model import EdgeModel, rollout_options
from sagebench.errors import ConfigError
from sagebench.gates import Gate, get_gate
from sagebench.plugins import load_channel
from sagebench.results.files import file_sha256
from sagebench.seeds import check_seeds, expand_seeds
from sagebench.server.model import ServerModel
from sagebench.strategies import Strategy, get_strategy
from sagebench.strategies.base import check_budget, check_byte_budget, required_evidence
from sagebench.transmission.channels import Channel
from sagebench.transmission.codecs import Codec, codec_from_config
from sagebench.vit.loading import ModelSpec, create_model

#: The preprocessing keys that must agree between edge and server (they see the same pixels).
PIXEL_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


@dataclass
class Sweep:
    """Everything a sweep needs, built from a config before any image is read."""

    cfg: DictConfig
    data: data_lib.DataSpec
    strategies: list[Strategy]
    edge_spec: ModelSpec
    server_spec: ModelSpec
    edge: EdgeModel
    server: ServerModel
    view: dict[str, Any]  # the resolved timm data config both models see
    budgets: list[int]
    budget_unit: str  # "patches" | "bytes"
    codec: Codec
    channels: list[Channel]
    gate: Gate
    dataset: torch.utils.data.Dataset | None  # None until loaded (attach_data)
    num_images: int | None  # None for a stream (and until loaded)
    edge_weights: str
    server_weights: str

    @property
    def num_patches(self) -> int:
        return self.server.grid[0] * self.server.grid[1]

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {k: self.view.get(k) for k in PIXEL_KEYS}

    @property
    def label_map(self) -> data_lib.LabelMap | None:
        """How the data's labels became model indices (None: taken as they are)."""
        return getattr(self.dataset, "label_map", None)


def model_spec(node: DictConfig) -> ModelSpec:
    """The :class:`ModelSpec` of a ``model.edge`` / ``model.server`` config node."""
    return ModelSpec(name=node.name, pretrained=bool(node.pretrained), checkpoint=node.checkpoint,
                     kwargs=OmegaConf.to_container(node.kwargs, resolve=True) or {})


def weights_id(spec: ModelSpec, model: torch.nn.Module) -> str:
    """What identifies the weights: the checkpoint's hash, the shipped file's hash, or the hub tag."""
    if spec.checkpoint:
        return "sha256:" + file_sha256(spec.checkpoint)[:16]
    if spec.pretrained:
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        if cfg.get("file") and Path(cfg["file"]).is_file():
            return "sha256:" + file_sha256(cfg["file"])[:16]
        return "hub:" + str(cfg.get("hf_hub_id") or cfg.get("tag") or spec.name)
    return "random-init"


def build_strategies(cfg: DictConfig) -> list[Strategy]:
    """The configured strategies, each built once; two with the same label are refused."""
    strategies = [get_strategy(name, **opts) for name, opts in strategy_entries(cfg)]
    labels = [s.label for s in strategies]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"strategies lists the same strategy twice: {labels}.")
    return strategies


def build_edge(cfg: DictConfig, strategies: list[Strategy]) -> tuple[ModelSpec, EdgeModel]:
    """The edge: each attention rollout is computed (in the same single forward) only if a strategy requires it."""
    spec = model_spec(cfg.model.edge)
    return spec, EdgeModel(create_model(spec), attention=cfg.model.edge.attention,
                           **rollout_options(required_evidence(strategies)))


def build_server(cfg: DictConfig) -> tuple[ModelSpec, ServerModel]:
    spec = model_spec(cfg.model.server)
    return spec, ServerModel(create_model(spec))


#: What must agree for both models to see the same pixels; mean/std may differ (each model normalises the crop).
GEOMETRY_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode")


def check_same_view(edge_cfg: dict, server_cfg: dict, edge: EdgeModel, server: ServerModel) -> None:
    """Edge and server must see the same crop through the same patch grid (their normalisation may differ)."""
    diff = [k for k in GEOMETRY_KEYS if str(edge_cfg.get(k)) != str(server_cfg.get(k))]
    if diff:
        details = "; ".join(f"{k}: edge {edge_cfg.get(k)} vs server {server_cfg.get(k)}" for k in diff)
        raise ConfigError(f"Edge and server models expect different crops ({details}). They must see "
                          "the same pixels: set the data.* overrides (e.g. data.crop_pct, data.input_size) explicitly.")
    if tuple(edge.grid) != tuple(server.grid):
        raise ConfigError(f"Edge grid {edge.grid} and server grid {server.grid} differ: evidence units must be "
                          "the same patches for both (same image size and patch size).")
    if edge.vit.patch_embed.patch_size != server.vit.patch_embed.patch_size:
        raise ConfigError(f"Edge patch size {edge.vit.patch_embed.patch_size} and server patch size "
                          f"{server.vit.patch_embed.patch_size} differ.")


def resolve_view(spec: data_lib.DataSpec, edge: EdgeModel, server: ServerModel) -> dict[str, Any]:
    """The timm data config of the server (the pixels both see; checked to be the same crop for both)."""
    edge_view = data_lib.resolve_data_config(edge.vit, spec)
    server_view = data_lib.resolve_data_config(server.vit, spec)
    check_same_view(edge_view, server_view, edge, server)
    return server_view


def edge_input_map(spec: data_lib.DataSpec, edge: EdgeModel, server_view: dict[str, Any]) -> EdgeModel:
    """The edge, normalising the server-normalised crop to its own mean/std when the two differ.

    Why: images are decoded and cropped once (the server's view); a model pair trained with other
    normalisations (e.g. a CLIP edge and an ImageNet server) still sees the same pixels, each
    normalised as it was trained. Equal mean/std: the edge is returned unchanged.
    """
    edge_view = data_lib.resolve_data_config(edge.vit, spec)
    if [tuple(edge_view.get(k) or ()) for k in ("mean", "std")] == [tuple(server_view.get(k) or ())
                                                                    for k in ("mean", "std")]:
        return edge
    return EdgeModel(edge.vit, attention=edge.attention_kind, with_rollout=edge.with_rollout,
                     with_rollout_per_head=edge.with_rollout_per_head, input_map=(server_view["mean"], server_view["std"], edge_view["mean"], edge_view["std"]))


def dry_forward(edge: EdgeModel, server: ServerModel, view: dict[str, Any], edge_name: str, server_name: str) -> None:
    """One all-zero image of the resolved input size through edge and server, so that a shape mistake is a
    clear error now and not a traceback in the middle of the sweep.

    Changes no number: no gradient, eval mode, the random number generators' state is restored
    (``torch.random.fork_rng``), and it runs after both models are created (random-init weights
    are drawn from the seeded state).
    """
    size = [int(v) for v in view["input_size"]]
    for role, name, model in (("edge", edge_name, edge), ("server", server_name, server.vit)):
        ref = next(model.parameters(), None)
        images = torch.zeros(1, *size, device=ref.device if ref is not None else "cpu",
                             dtype=ref.dtype if ref is not None and ref.is_floating_point() else torch.float32)
        modes = [(m, m.training) for m in model.modules()]
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                model.eval()
                if role == "edge":
                    edge(images, torch.zeros(1, dtype=torch.int64, device=images.device))
                else:
                    model(images)
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise ConfigError(
                f"The {role} model {name!r} cannot classify images of the input size {size} [channels, height, "
                f"width] ({type(exc).__name__}: {detail}). Set data.input_size to the size the model was built for, "
                f"or build it for this size with model.{role}.kwargs.img_size (and in_chans) set to it."
            ) from exc
        finally:
            for m, training in modes:
                m.training = training


def build_budgets(cfg: DictConfig, num_patches: int) -> tuple[list[int], str]:
    """``(budgets, unit)``: patch budgets checked against the grid, or byte budgets per request."""
    if cfg.budget_bytes is not None:
        return [check_byte_budget(b) for b in cfg.budget_bytes], "bytes"
    return [check_budget(b, num_patches) for b in cfg.budgets], "patches"


def build_dataset(spec: data_lib.DataSpec, view: dict[str, Any], num_classes: int, *,
                  model_labels: data_lib.ModelLabels | None = None, model_name: str = "the model",
                  trained: bool = True, source: Any = None,
                  device_type: str = "cpu") -> tuple[torch.utils.data.Dataset, int | None]:
    """The evaluation images (a stream when ``data.streaming``) and their number (None for a stream).

    Labels become the model's indices (``dataset.label_map``): by ``data.label_map``, or by name when the
    data's labels and the model's classes (``model_labels``) are named (:mod:`sagebench.data.labels`).
    ``device_type``: where the run computes (``cpu`` | ``cuda`` ...): with ``data.decode`` ``tensor`` (or
    ``auto``) on ``cuda`` the workers leave JPEGs encoded for the device (:mod:`sagebench.data.decode`).
    """
    source = source if source is not None else data_lib.load_source(spec)  # given: prepared by this process
    features = getattr(source, "features", None) or {}
    label_map = data_lib.resolve_label_map(
        data_lib.data_label_names(features.get(spec.label_column)), model_labels, num_classes,
        explicit=spec.label_map, model_name=model_name, trained=trained)
    decode_on = data_lib.decode_device(spec.decode, device_type)
    transform = (data_lib.build_transform(view) if decode_on is None
                 else data_lib.TensorTransform(view, on_device=decode_on == "cuda"))
    if spec.streaming:
        dataset: torch.utils.data.Dataset = data_lib.StreamingEvalImages(source, transform, spec, view,
                                                                         label_map=label_map)
        dataset.num_classes = num_classes  # a stream's labels are checked as they come
        return dataset, None
    dataset = data_lib.EvalImages(source, transform, spec, view, label_map=label_map)
    if len(dataset) == 0:
        where = f"data.path {spec.path!r}" if spec.path else f"the data set {spec.name!r} (split {spec.split!r})"
        raise data_lib.DataError(f"{where} holds no images (0 rows): point data.path / data.name at a data set "
                                 "with images.")
    data_lib.check_labels(dataset, num_classes)
    return dataset, len(dataset)


def model_labels(edge_spec: ModelSpec, edge: EdgeModel, server_spec: ModelSpec,
                 server: ServerModel) -> data_lib.ModelLabels | None:
    """The class names of the models' outputs (the server's; the edge's must agree when both are known)."""
    server_labels = data_lib.model_label_names(server.vit, server_spec.name)
    edge_labels = data_lib.model_label_names(edge.vit, edge_spec.name)
    if server_labels is not None and edge_labels is not None and edge_labels.names != server_labels.names:
        raise ConfigError(f"The edge model {edge_spec.name!r} and the server model {server_spec.name!r} predict "
                          f"different classes (edge: {', '.join(edge_labels.names[:3])}, ...; server: "
                          f"{', '.join(server_labels.names[:3])}, ...): both must share one label space.")
    return server_labels


def build(cfg: DictConfig, *, load_data: bool = True) -> Sweep:
    """Every part of the sweep ``cfg`` describes (call after seeding: random-init weights use the seed).

    ``load_data=False`` leaves ``dataset`` and ``num_images`` unset: ``evaluate`` loads the data in
    its data module's ``setup`` (after ``prepare_data`` downloaded it on one process), with
    :func:`attach_data`.
    """
    spec = data_lib.DataSpec.from_config(cfg.data)
    # seeds=[...]: each seeded strategy also at the other seeds, as extra cells (sagebench.seeds)
    strategies = expand_seeds(build_strategies(cfg), check_seeds(cfg.get("seeds"), int(cfg.seed)), int(cfg.seed))
    edge_spec, edge = build_edge(cfg, strategies)
    server_spec, server = build_server(cfg)
    view = resolve_view(spec, edge, server)
    edge = edge_input_map(spec, edge, view)
    dry_forward(edge, server, view, edge_spec.name, server_spec.name)  # after both exist: their init used the seed
    budgets, unit = build_budgets(cfg, server.grid[0] * server.grid[1])
    codec = codec_from_config(cfg.codec, view)
    channels = [load_channel(c) for c in cfg.channels]
    gate_name, gate_options = plugin_entry(cfg.gate, "gate")
    sweep = Sweep(cfg=cfg, data=spec, strategies=strategies, edge_spec=edge_spec, server_spec=server_spec,
                  edge=edge, server=server, view=view, budgets=budgets, budget_unit=unit, codec=codec,
                  channels=channels, gate=get_gate(gate_name, **gate_options), dataset=None, num_images=None,
                  edge_weights=weights_id(edge_spec, edge.vit), server_weights=weights_id(server_spec, server.vit))
    if load_data:
        attach_data(sweep)
    return sweep


def attach_data(sweep: Sweep, source: Any = None, *, dataset: torch.utils.data.Dataset | None = None,
                device_type: str = "cpu") -> torch.utils.data.Dataset:
    """Load the evaluation images of ``sweep`` (labels mapped into the models' label space) into it.

    ``source``: the data set this process already loaded (:func:`sagebench.data.prepare_source`), if any.
    ``dataset``: an in-memory evaluation set to use as it is (items ``(image, label, sample_id)`` as
    :class:`~sagebench.data.EvalImages` yields them, labels already in the model's label space): the seam
    for benchmarks and notebooks that hold decoded images. ``device_type``: where the run computes (for
    ``data.decode``; see :func:`build_dataset`).
    """
    if dataset is not None:
        data_lib.check_labels([int(dataset[i][1]) for i in range(len(dataset))], sweep.server.vit.num_classes)
        sweep.dataset, sweep.num_images = dataset, len(dataset)
        return dataset
    sweep.dataset, sweep.num_images = build_dataset(
        sweep.data, sweep.view, sweep.server.vit.num_classes,
        model_labels=model_labels(sweep.edge_spec, sweep.edge, sweep.server_spec, sweep.server),
        model_name=sweep.server_spec.name,
        trained=bool(sweep.server_spec.pretrained or sweep.server_spec.checkpoint), source=source,
        device_type=device_type)
    return sweep.dataset
