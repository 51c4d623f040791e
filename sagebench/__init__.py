"""sagebench: compare evidence-composition strategies for edge-cloud collaborative ViT inference.

Public API::

    from sagebench import register_strategy, get_strategy, list_strategies, evaluate, load_config
"""

import os as _os
import sys as _sys

# Before torch loads its OpenMP runtime: worker threads that sleep rather than spin when they wait, so a
# sweep does not slow down 3-5x on a CPU that other processes share (see sagebench.runtime.speed).
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from importlib.metadata import PackageNotFoundError, version

from sagebench.errors import ConfigError, DataError, ModelLoadError, SageBenchError

# The strategy API loads on first use: `sagebench --help` and config mistakes answer without torch.
_LAZY = {"Strategy": "sagebench.strategies", "get_strategy": "sagebench.strategies",
         "list_strategies": "sagebench.strategies", "register_strategy": "sagebench.strategies",
         "EdgeEvidence": "sagebench.edge.evidence", "Session": "sagebench.session",
         "open_session": "sagebench.session"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sagebench' has no attribute {name!r}")

try:
    __version__ = version("sagebench")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"


def evaluate(cfg=None, overrides=None, **kwargs):
    """Run a sweep; see :func:`sagebench.sweep.evaluate.evaluate` (imported lazily: it pulls in Lightning)."""
    from sagebench.sweep.evaluate import evaluate as _evaluate

    return _evaluate(cfg, overrides, **kwargs)


def load_config(config_file=None, overrides=()):
    """Load a config; see :func:`sagebench.config.load_config`."""
    from sagebench.config import load_config as _load

    return _load(config_file, overrides)


__all__ = [
    "ConfigError", "DataError", "EdgeEvidence", "ModelLoadError", "SageBenchError", "Session", "Strategy", "__version__",
    "evaluate", "get_strategy", "list_strategies", "load_config", "open_session", "register_strategy",
]
