"""Steps after a run that must never fail it (figures, W&B): each failure becomes one warning line.

Its own module because both the post-run step (``report``) and the W&B logger (``wandb``) guard
their steps with it, and ``report`` calls ``wandb``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from sagebench.runtime.log import warn


class Guard:
    """Runs steps that must not fail the run: the first failure of each kind prints one line."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.failures: list[str] = []

    def __call__(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - by design: reporting never loses a run
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.failures.append(what)
            warn(f"{what} failed ({type(exc).__name__}: {first[:200]}); "
                 f"the results are saved in {self.out_dir}")
            return None
