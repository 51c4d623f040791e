"""Configuration: defaults from ``conf/config.yaml``, then ``--config FILE``, then ``KEY=VALUE``.

The schema is a set of dataclasses in OmegaConf struct mode, so a misspelt key is refused
instead of silently ignored. ``trainer.*`` is passed through to ``lightning.Trainer`` and is
checked against its signature; ``model.*.kwargs`` go to ``timm.create_model`` unchecked.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sagebench.data.spec import DataSpec, check_name_or_path
from sagebench.errors import ConfigError
from sagebench.trainer_options import check_trainer_keys, check_trainer_options


def _asset(relative: str) -> str:
    """``${asset:demo/file}``: absolute path of a file shipped inside the sagebench package."""
    return str(Path(__file__).resolve().parent / relative)


if not OmegaConf.has_resolver("asset"):
    import warnings

    with warnings.catch_warnings():  # omegaconf 2.4 deprecates the name, 2.3 has only this one
        warnings.simplefilter("ignore", UserWarning)
        OmegaConf.register_new_resolver("asset", _asset)


DataConfig = DataSpec  # the data section is the data stage's own spec (one type, one set of checks)


@dataclass
class ModelConfig:
    name: str = "???"
    pretrained: bool = True
    checkpoint: Optional[str] = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class EdgeConfig(ModelConfig):
    attention: str = "last_layer"


@dataclass
class ModelsConfig:
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    server: ModelConfig = field(default_factory=ModelConfig)


@dataclass
class WandbConfig:
    project: str = "sagebench"
    entity: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    name: Optional[str] = None


LOGGERS = ("wandb", "none")


@dataclass
class CacheConfig:
    edge: bool = False  # keep the edge evidence on disk: a rerun (e.g. with a new strategy) skips the edge
    dir: Optional[str] = None  # default ~/.cache/sagebench/edge (a subfolder per data + edge model + weights)
    max_gb: Optional[float] = 50.0  # bound on the whole cache folder; writes beyond it are skipped (null: none)


@dataclass
class EdgeCostConfig:
    # after the sweep, each strategy's selection is timed on this many offloaded images with one CPU thread
    # (sagebench.cost; results.json edge_cost, e2e_latency_ms); 0: not timed (the operation counts need no timing)
    images: int = 8
    repeats: int = 5  # the median of this many calls per image
    max_seconds: float = 20.0  # the timing stops here; cells not reached are reported as not timed


@dataclass
class SageBenchConfig:
    benchmark: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelsConfig = field(default_factory=ModelsConfig)
    strategies: list[Any] = field(default_factory=lambda: ["random", "uniform", "attention_prefix", "sage"])
    budgets: list[Any] = field(default_factory=lambda: [4, 8, 12, 16, 24])
    # byte budgets per request instead of patch counts: each image sends as many patches as fit
    budget_bytes: Optional[list[Any]] = None
    # {name: ..., <options>}: a registered codec (`sagebench codecs`) and the options of its class
    codec: dict[str, Any] = field(default_factory=lambda: {"name": "raw"})
    # uplinks (conf/channel/<name>.yaml) for which each request's transmission latency is reported
    channels: list[str] = field(default_factory=lambda: ["nb_iot", "lte_m", "lte", "nr_5g", "wifi"])
    # {name: ..., <options>}: a registered gate (`sagebench gates`) and the options of its class
    gate: dict[str, Any] = field(default_factory=lambda: {"name": "min_entropy"})
    batch_size: int = 256
    # offloaded images wait until this many can go to the server as one batch (null: batch_size); records
    # do not depend on it, speed does: at the real gate a data batch offloads only a share of its images
    server_batch_size: Optional[int] = None
    seed: int = 0
    # e.g. [0, 1, 2, 3, 4]: strategies that draw randomness (random, ...) evaluated at each seed (sagebench.seeds);
    # the run's seed must be among them (its draw stays each one's usual row)
    seeds: Optional[list[int]] = None
    output_dir: Optional[str] = None
    progress: bool = True  # sagebench's display of the work done (edge, ceiling, server image-cells), rate, ETA
    progress_every: float = 30.0  # seconds between two progress lines when stderr is not a terminal (CI, SLURM)
    trainer: dict[str, Any] = field(default_factory=dict)
    resume: bool = False  # continue the unfinished run in output_dir (the newest under runs/ when unset)
    flush_seconds: float = 5.0  # finished per-sample rows are saved to <output_dir>/partial/ this often
    logger: str = "wandb"  # wandb (online with a key, else offline) | none; PNG plots are written either way
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # speed switches (docs/performance.md); none changes the results (trainer.precision aside)
    dedupe: bool = True  # one server pass per distinct patch set of an image at a budget
    compile: bool = False  # torch.compile the server's transformer blocks
    threads: Optional[int] = None  # torch intra-op CPU threads (null: torch's default)
    reuse_host_memory: bool = True  # glibc: keep freed tensor memory for the next forward (sagebench.runtime.host_memory)
    profile: bool = False  # record per-phase seconds (edge, selection, server) in results.json timing
    cache: CacheConfig = field(default_factory=CacheConfig)
    edge_cost: EdgeCostConfig = field(default_factory=EdgeCostConfig)


def _conf_dir() -> Path:
    return Path(str(files("sagebench.conf")))


def list_experiments() -> list[str]:
    """Names of the experiment files shipped in ``conf/experiment/``."""
    return sorted(p.stem for p in (_conf_dir() / "experiment").glob("*.yaml"))


def _resolve_config_file(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = _conf_dir() / "experiment" / f"{path.stem if path.suffix in ('.yaml', '.yml') else name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = list_experiments()
    close = difflib.get_close_matches(name_or_path, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"Config file {name_or_path!r} not found (neither a file nor a shipped experiment).{hint} "
                      f"Shipped experiments: {', '.join(known) or 'none'}.")


def _explain(exc: OmegaConfBaseException, source: str, value: str | None = None) -> ConfigError:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    msg = str(exc).splitlines()[0]
    if key and "is not a ListConfig" in msg:  # a scalar where a list goes: budgets=4
        example = value if value not in (None, "") else "..."
        return ConfigError(f"{key} must be a list, e.g. {key}=[{example}] (in {source}).")
    if "not in struct" in msg or "Key '" in msg and "not in" in msg or type(exc).__name__ == "ConfigKeyError":
        parent = ".".join(str(key).split(".")[:-1]) if key else ""
        node: Any = OmegaConf.structured(SageBenchConfig)
        try:
            node = OmegaConf.select(node, parent) if parent else node
            known = sorted(node.keys()) if isinstance(node, DictConfig) else []
        except Exception:
            known = []
        leaf = str(key).split(".")[-1] if key else "?"
        close = difflib.get_close_matches(leaf, known, n=1)
        hint = f" Did you mean {(parent + '.' if parent else '') + close[0]!r}?" if close else ""
        return ConfigError(f"Unknown config key {key!r} in {source}.{hint} "
                           f"Known keys{' under ' + parent if parent else ''}: {', '.join(known)}.")
    return ConfigError(f"Invalid value in {source}: {msg}" + (f" (key {key!r})" if key else ""))


def _group_file(entry: Any, source: str) -> Path:
    """``"data/cifar10"`` -> ``conf/data/cifar10.yaml`` (a config group file shipped with the package)."""
    if not isinstance(entry, str) or "/" not in entry:
        raise ConfigError(f"{source}: each defaults entry is GROUP/NAME (e.g. data/cifar10), got {entry!r}.")
    group, name = entry.split("/", 1)
    path = _conf_dir() / group / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (_conf_dir() / group).glob("*.yaml"))
        raise ConfigError(f"{source}: defaults entry {entry!r} names no file conf/{group}/{name}.yaml"
                          + (f"; conf/{group}/ holds {', '.join(known)}." if known else "."))
    return path


def _is_shipped(path: Path) -> bool:
    """A config file shipped with sagebench (``conf/``), not the user's own."""
    return path.resolve().is_relative_to(_conf_dir().resolve())


_UNSET = object()


class _Naming:
    """Whether a run's benchmark name must be its own: it reads its own data under a shipped benchmark's name.

    Why: a shipped experiment names its benchmark (``imagenet1k-val-deit``) after the data it describes;
    run with ``data.path`` pointing at the user's own folder or file, the results kept that name, so a
    custom data set's run looked like (and could be submitted as) the official benchmark's. Fed each config
    layer in order: the name is derived (:func:`own_benchmark_name`) when the final ``data.path`` differs
    from the one the shipped files set and no user file or override set ``benchmark``.
    """

    def __init__(self) -> None:
        self.shipped_path: Any = None
        self.user_named = False

    def saw(self, layer: DictConfig, shipped: bool) -> None:
        path = OmegaConf.select(layer, "data.path", default=_UNSET, throw_on_missing=False)
        if shipped and path is not _UNSET:
            self.shipped_path = path
        if not shipped and OmegaConf.select(layer, "benchmark", default=_UNSET, throw_on_missing=False) is not _UNSET:
            self.user_named = True

    def derive(self, cfg: DictConfig) -> bool:
        if self.user_named or not cfg.data.path:
            return False
        shipped = self.shipped_path
        if isinstance(shipped, str) and "${" in shipped:  # e.g. ${asset:demo/x.parquet}: compared resolved
            try:
                shipped = OmegaConf.to_container(OmegaConf.create({"v": shipped}), resolve=True)["v"]
            except OmegaConfBaseException:
                pass
        return str(cfg.data.path) != str(shipped)


def official_benchmarks() -> set[str]:
    """The benchmark names of the shipped experiments (the official boards')."""
    names = set()
    for path in (_conf_dir() / "experiment").glob("*.yaml"):
        name = OmegaConf.select(OmegaConf.load(path), "benchmark", default=None)
        if isinstance(name, str):
            names.add(name)
    return names


def own_benchmark_name(cfg: DictConfig) -> str:
    """``<data folder or file name>-<edge model>-<server model>``, e.g. ``my-photos-deit_tiny_patch16_224-
    deit_base_patch16_224``: the benchmark name of a run on the user's own data (see :class:`_Naming`);
    never one of :func:`official_benchmarks` (``-local`` is added if it would be)."""
    raw = os.path.expanduser(str(cfg.data.path)).rstrip("/\\")
    path = Path(raw)
    if any(ch in raw for ch in "*?["):  # a glob: the folder it starts in
        prefix = re.split(r"[*?\[]", raw, maxsplit=1)[0]
        path = Path(prefix) if prefix.endswith(("/", os.sep)) else Path(prefix).parent
        path = path if path.name else Path(prefix or ".").resolve()
    stem = path.stem if path.suffix in (".parquet", ".arrow") else path.name
    parts = [stem or "data", str(cfg.model.edge.name), str(cfg.model.server.name)]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-.") or "custom"
    return f"{name}-local" if name in official_benchmarks() else name


def _read_layers(source: str, path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[str, DictConfig]]:
    """A config file as the layers it stands for: its ``defaults`` (group files, in order), then itself.

    Why composition: a data set or a model pair is one file in ``conf/data/`` or ``conf/models/``,
    and an experiment names the ones it uses (``defaults: [data/cifar10, models/cifar10_vits]``)
    instead of repeating them.
    """
    if path.resolve() in seen:
        raise ConfigError(f"{source}: its defaults include itself ({' -> '.join(str(p) for p in seen)}).")
    try:
        layer = OmegaConf.load(path)
    except Exception as exc:
        raise ConfigError(f"Could not parse {source}: {exc}") from exc
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"{source} must hold a mapping of config keys, not a {type(layer).__name__}.")
    out: list[tuple[str, DictConfig]] = []
    if "defaults" in layer:
        entries = layer.pop("defaults")
        if not isinstance(entries, ListConfig):
            raise ConfigError(f"{source}: defaults must be a list of GROUP/NAME entries, e.g. [data/cifar10].")
        for entry in entries:
            group_path = _group_file(entry, source)
            out += _read_layers(f"conf/{entry}.yaml", group_path, (*seen, path.resolve()))
    out.append((source, layer))
    return out


#: Deeper than any sagebench config can be (the deepest key is model.edge.kwargs.<option>.<...>): a deeper
#: override is a mistake, and parsing it would hit Python's recursion limit.
MAX_DEPTH = 32


def _clip(text: str, limit: int = 120) -> str:
    """A user's text as a message quotes it: at most ``limit`` characters."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_depth(item: str) -> None:
    """Refuse an override nested deeper than :data:`MAX_DEPTH` (dots in its key, brackets in its value)."""
    key, _, value = item.partition("=")
    depth, deepest = 0, 0
    for ch in value:
        depth += ch in "[{"
        depth -= ch in "]}"
        deepest = max(deepest, depth)
    if key.count(".") + 1 > MAX_DEPTH or deepest > MAX_DEPTH:
        raise ConfigError(f"Override {_clip(item, 60)!r} is nested {max(key.count('.') + 1, deepest)} levels deep; "
                          f"sagebench's settings are at most {MAX_DEPTH} deep. Check the override (e.g. budgets=[8,16]).")


def load_config(config_file: str | Sequence[str] | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Merge defaults, config files (paths or shipped experiment names, applied in order) and overrides.

    Each file may name group files to merge first (``defaults: [data/cifar10, models/cifar10_vits]``);
    ``KEY=VALUE`` overrides come last.
    """
    cfg = OmegaConf.structured(SageBenchConfig)
    OmegaConf.set_struct(cfg, True)
    # free-form sections: passed through, or checked against the options of the plug-in they name
    for node in (cfg.trainer, cfg.model.edge.kwargs, cfg.model.server.kwargs, cfg.codec, cfg.gate):
        OmegaConf.set_struct(node, False)
    files_in = [config_file] if isinstance(config_file, str) else list(config_file or [])
    layers = [(source, layer, True) for source, layer in _read_layers("conf/config.yaml", _conf_dir() / "config.yaml")]
    for name in files_in:
        path = _resolve_config_file(name)
        read = _read_layers(name, path)  # its defaults are shipped group files; the file itself may be the user's
        layers += [(source, layer, True) for source, layer in read[:-1]]
        layers.append((*read[-1], _is_shipped(path)))
    naming = _Naming()
    for source, layer, shipped in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None)
            value = OmegaConf.select(layer, str(key), default=None, throw_on_missing=False) if key else None
            raise _explain(exc, source, None if value is None else str(value)) from exc
        naming.saw(layer, shipped)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Override {_clip(item)!r} is not KEY=VALUE (e.g. budgets=[8,16] or gate.threshold=0.5).")
        _check_depth(item)
        try:
            dot = OmegaConf.from_dotlist([item])
        except Exception as exc:
            raise ConfigError(f"Could not parse override {_clip(item)!r}: {_clip(str(exc), 300)}") from exc
        try:
            cfg = OmegaConf.merge(cfg, dot)
        except OmegaConfBaseException as exc:
            raise _explain(exc, f"override {item!r}", item.split("=", 1)[1].strip()) from exc
        naming.saw(dot, shipped=False)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"Could not resolve the config: {exc}") from exc
    if naming.derive(cfg):
        cfg.benchmark = own_benchmark_name(cfg)
    validate(cfg)
    fill_plugin_defaults(cfg)
    return cfg


def _name_and_options(entry: Any) -> tuple[str, dict[str, Any]] | None:
    """A name, or ``{name: ..., <options>}``, as (name, options); None when it is neither."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, (DictConfig, dict)) and isinstance(entry.get("name"), str):
        items = OmegaConf.to_container(entry, resolve=True) if isinstance(entry, DictConfig) else dict(entry)
        return str(entry["name"]), {k: v for k, v in items.items() if k != "name"}
    return None


def strategy_entries(cfg: DictConfig) -> list[tuple[str, dict[str, Any]]]:
    """``strategies`` as (name, options) pairs: each entry is a name or ``{name: ..., <options>}``."""
    out = []
    for entry in cfg.strategies:
        pair = _name_and_options(entry)
        if pair is None:
            raise ConfigError(f"Each strategies entry is a name or {{name: ..., options}}; got {entry!r}.")
        out.append(pair)
    return out


#: The config sections that name one plug-in, ``{name: ..., <options>}``, and the registry each is checked in.
PLUGIN_SECTIONS = {"gate": "gates", "codec": "codecs"}


def plugin_entry(node: Any, section: str) -> tuple[str, dict[str, Any]]:
    """The ``gate`` or ``codec`` section as (name, options); the options are checked by the registered class."""
    pair = _name_and_options(node)
    if pair is None:
        raise ConfigError(f"{section} must be {{name: ..., <options>}} (e.g. {section}.name=..., see "
                          f"`sagebench {PLUGIN_SECTIONS.get(section, section)}`), got {node!r}.")
    return pair


def fill_plugin_defaults(cfg: DictConfig) -> None:
    """Write each ``gate``/``codec`` option left out as its class's default, so that the printed and saved
    config shows every value the run used (``gate: {name: min_entropy, threshold: 1.0}``)."""
    from sagebench.plugins import REGISTRIES

    for section, plural in PLUGIN_SECTIONS.items():
        name, given = plugin_entry(cfg[section], section)
        for option in REGISTRIES[plural].options(name) or ():
            if option.name not in given and not option.required and \
                    (option.default is None or isinstance(option.default, (bool, int, float, str))):
                cfg[section][option.name] = option.default


def validate(cfg: DictConfig) -> None:
    """Checks that do not need the models (budgets against the grid are checked once it is known)."""
    from sagebench.strategies import strategy_class

    if not isinstance(cfg.budgets, ListConfig) or len(cfg.budgets) == 0:
        raise ConfigError("budgets must be a non-empty list of patch counts, e.g. budgets=[16,32,48].")
    for b in cfg.budgets:
        if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
            raise ConfigError(f"Budget {b!r} is not a positive integer number of patches.")
    if len(set(cfg.budgets)) != len(cfg.budgets):
        raise ConfigError(f"budgets contains duplicates: {list(cfg.budgets)}.")
    if cfg.budget_bytes is not None:
        if not isinstance(cfg.budget_bytes, ListConfig) or len(cfg.budget_bytes) == 0:
            raise ConfigError("budget_bytes must be a non-empty list of bytes per request, e.g. budget_bytes=[256,512], "
                              "or null to use patch budgets.")
        for b in cfg.budget_bytes:
            if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
                raise ConfigError(f"Byte budget {b!r} is not a positive integer number of bytes.")
        if len(set(cfg.budget_bytes)) != len(cfg.budget_bytes):
            raise ConfigError(f"budget_bytes contains duplicates: {list(cfg.budget_bytes)}.")
    max_gb = cfg.cache.get("max_gb")
    if max_gb is not None and (isinstance(max_gb, bool) or not isinstance(max_gb, (int, float)) or max_gb <= 0):
        raise ConfigError(f"cache.max_gb must be a positive number of gigabytes (or null for no bound); got {max_gb!r}.")
    from sagebench.gates import get_gate
    from sagebench.plugins import load_channel
    from sagebench.transmission.codecs import get_codec

    # unknown names or options -> ConfigError with a suggestion; bad values -> the class's own ConfigError
    codec, codec_options = plugin_entry(cfg.codec, "codec")
    get_codec(codec, **codec_options)
    for name in cfg.channels:
        load_channel(name)  # unknown channel -> ConfigError listing the shipped ones
    entries = strategy_entries(cfg)
    if not entries:
        raise ConfigError("strategies is empty: name at least one (see `sagebench strategies`).")
    for name, _ in entries:
        strategy_class(name)  # unknown names -> ConfigError with suggestions
    gate, gate_options = plugin_entry(cfg.gate, "gate")
    get_gate(gate, **gate_options)
    seed = cfg.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32 - 1] (what the random number generators accept), "
                          f"got {seed!r}.")
    check_name_or_path(cfg.data.name, cfg.data.path)
    if cfg.batch_size <= 0:
        raise ConfigError(f"batch_size must be positive, got {cfg.batch_size}.")
    if cfg.server_batch_size is not None and cfg.server_batch_size <= 0:
        raise ConfigError(f"server_batch_size must be a positive number of offloaded images (or null: batch_size), "
                          f"got {cfg.server_batch_size}.")
    if cfg.data.limit is not None and cfg.data.limit <= 0:
        raise ConfigError(f"data.limit must be a positive number of images, got {cfg.data.limit}.")
    if cfg.data.on_error not in ("fail", "skip"):
        raise ConfigError(f"data.on_error must be fail (stop at a corrupt image, naming it) or skip (count and "
                          f"report corrupt images), got {cfg.data.on_error!r}.")
    if not cfg.progress_every > 0:
        raise ConfigError(f"progress_every must be > 0 seconds (how often a progress line is written to a log), "
                          f"got {cfg.progress_every}; progress=false turns the display off.")
    if cfg.flush_seconds < 0:
        raise ConfigError(f"flush_seconds must be >= 0 (0: save finished rows after every batch), got {cfg.flush_seconds}.")
    if cfg.data.num_workers is not None and cfg.data.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0 (or null: chosen for the device), got {cfg.data.num_workers}.")
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError(f"threads must be a positive number of CPU threads (or null for torch's default), "
                          f"got {cfg.threads}.")
    if cfg.model.edge.attention not in ("last_layer", "rollout"):
        raise ConfigError(f"model.edge.attention must be last_layer or rollout, got {cfg.model.edge.attention!r}.")
    if cfg.logger not in LOGGERS:
        raise ConfigError(f"logger must be one of {', '.join(LOGGERS)} (wandb logs online with an API key, "
                          f"offline otherwise; none disables it), got {cfg.logger!r}.")
    check_trainer_keys(cfg.trainer)  # last: it loads Lightning, so every other mistake is reported without it
    check_trainer_options(OmegaConf.to_container(cfg.trainer, resolve=True))


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


#: One line per config key, for ``sagebench eval --help`` (defaults come from the shipped config).
KEY_HELP = {
    "benchmark": "name of the benchmark (board) the results belong to",
    "data.name": "hub data set (datasets.load_dataset), e.g. ILSVRC/imagenet-1k; set data.path=null",
    "data.path": "local parquet file/folder/glob, save_to_disk folder or image folder",
    "data.split": "split to evaluate",
    "data.limit": "evaluate the first N images (by data set index)",
    "data.streaming": "stream the hub data set instead of downloading it",
    "data.crop_pct": "override the models' timm crop_pct",
    "data.interpolation": "override the resize interpolation",
    "data.mean": "override the normalisation mean",
    "data.std": "override the normalisation std",
    "data.input_size": "override [channels, height, width]",
    "data.num_workers": "DataLoader workers (null: chosen for the device)",
    "data.on_error": "a corrupt image: fail | skip",
    "data.decode": "pil | tensor (torchvision; nvJPEG on CUDA) | auto (tensor on CUDA, else pil)",
    "data.config_name": "the hub data set's configuration / subset",
    "data.data_files": "load_dataset's data_files",
    "data.token_env": "environment variable holding a hub token (never written to results)",
    "model.edge.name": "timm name of the edge ViT",
    "model.edge.pretrained": "timm pretrained weights (hub, or the shipped file of the demo models)",
    "model.edge.checkpoint": "local .safetensors / state dict (weights_only)",
    "model.edge.attention": "last_layer | rollout",
    "model.server.name": "timm name of the server ViT",
    "model.server.pretrained": "timm pretrained weights",
    "model.server.checkpoint": "local .safetensors / state dict (weights_only)",
    "strategies": "strategy names or {name: ..., option: value} entries (`sagebench strategies`)",
    "budgets": "patch budgets B (units sent per request)",
    "budget_bytes": "byte budgets per request instead of patch budgets (null: off)",
    "codec.name": "what crosses the uplink, decoded by the server (`sagebench codecs`)",
    "channels": "uplinks to report latency for (`sagebench channels`, or paths of YAML files)",
    "gate.name": "which images the edge offloads (`sagebench gates`)",
    "batch_size": "images per data batch",
    "server_batch_size": "offloaded images per server batch, across data batches (null: batch_size)",
    "seed": "run seed (random strategy, random-init weights)",
    "seeds": "seeds at which strategies that draw randomness are also evaluated, with their spread (null: off)",
    "output_dir": "output folder (default runs/<benchmark>-<time>)",
    "resume": "continue the unfinished run in output_dir",
    "progress": "show the work done (edge images, ceiling, server image-cells) with rate and ETA",
    "progress_every": "seconds between two progress lines in a non-terminal log",
    "logger": "wandb | none",
    "wandb.project": "W&B project", "wandb.entity": "W&B entity", "wandb.tags": "W&B tags",
    "trainer": "passed to lightning.Trainer (devices, accelerator, precision, logger, callbacks, ...)",
    "dedupe": "one server pass per distinct patch set", "compile": "torch.compile the server blocks",
    "threads": "torch CPU threads", "profile": "per-phase seconds in results.json",
    "cache.edge": "keep edge evidence (and the offloaded images' pixels) on disk: a rerun reads only the offloaded images",
    "cache.max_gb": "bound on the cache folder's size (GB)",
    "edge_cost.images": "offloaded images each strategy's selection is timed on, one CPU thread (0: off)", "flush_seconds": "how often finished rows are saved",
}


def plugin_option_help(section: str) -> list[tuple[str, Any, str]]:
    """``(key, default, help)`` of every option of the ``gate``/``codec`` classes known without importing a
    plug-in, one entry per option shared by several classes (``codec.quality``: jpeg, webp)."""
    from sagebench.plugins import REGISTRIES

    grouped: dict[tuple[str, str, str], list[str]] = {}
    defaults: dict[tuple[str, str, str], Any] = {}
    for name, options in REGISTRIES[PLUGIN_SECTIONS[section]].known_options().items():
        for o in options:
            key = (o.name, repr(o.default), o.help or o.type)
            grouped.setdefault(key, []).append(name)
            defaults[key] = o.default
    return [(f"{section}.{option}", defaults[(option, d, text)], f"{text} ({', '.join(names)})")
            for (option, d, text), names in sorted(grouped.items())]


def config_reference() -> str:
    """``  key = default   help`` lines of every documented key, from the shipped defaults (no torch).

    The ``gate``/``codec`` lines come from the registered classes: their names, and each option with
    its default and help (``Annotated[float, "help"]`` in the class's ``__init__``).
    """
    from sagebench.plugins import REGISTRIES

    cfg = OmegaConf.structured(SageBenchConfig)
    for _, layer in _read_layers("conf/config.yaml", _conf_dir() / "config.yaml"):
        cfg = OmegaConf.merge(cfg, layer)
    rows: list[tuple[str, Any, str]] = []
    for key, text in KEY_HELP.items():
        section = key.split(".")[0]
        if key == f"{section}.name" and section in PLUGIN_SECTIONS:
            names = REGISTRIES[PLUGIN_SECTIONS[section]].names(builtin_only=True)
            rows.append((key, OmegaConf.select(cfg, key, default=None), f"{' | '.join(names)}: {text}"))
            rows += plugin_option_help(section)
        else:
            rows.append((key, OmegaConf.select(cfg, key, default=None), text))
    lines = []
    for key, value, text in rows:
        shown = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
        shown = str(shown).replace(str(_conf_dir().parent), "<sagebench>")
        if len(shown) > 40:
            shown = shown[:37] + "..."
        lines.append(f"  {key:<24} = {shown:<40} {text}")
    return "\n".join(lines)
