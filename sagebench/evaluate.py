"""Deprecated module path: ``evaluate`` lives in :mod:`sagebench.sweep.evaluate`.

``from sagebench.evaluate import evaluate`` keeps working. Why the module is also callable:
importing a submodule named ``evaluate`` rebinds the package attribute ``sagebench.evaluate``
from the function to the module, so ``sagebench.evaluate(cfg)`` must work on both.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from sagebench.sweep.evaluate import evaluate

__all__ = ["evaluate"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
