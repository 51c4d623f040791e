"""User-facing errors.

A :class:`SageBenchError` is a mistake the user can fix (bad config, missing data, wrong
checkpoint). The CLI prints its message and exits with status 2, without a traceback; every
other exception is a bug and keeps its traceback.
"""


class SageBenchError(Exception):
    """An error caused by input the user controls; its message says how to fix it."""


class ConfigError(SageBenchError):
    """The configuration is invalid (unknown key, bad value, malformed file)."""


class DataError(SageBenchError):
    """The data set cannot be loaded or does not have the expected shape."""


class ModelLoadError(SageBenchError):
    """A model or its weights cannot be loaded."""


class LeaderboardError(SageBenchError):
    """A leaderboard operation refused (invalid entry, wrong board, duplicate, different images...)."""


def without_worker_traceback(exc: SageBenchError) -> SageBenchError:
    """``exc`` with its own message, when a DataLoader worker re-raised it with a traceback inside.

    A worker's exception reaches the main process as ``type(exc)("Caught X in DataLoader worker
    process N.\\nOriginal Traceback ...\\nsagebench.errors.X: <message>")``: the user should see
    only ``<message>``. Other exceptions are returned unchanged.
    """
    text = str(exc)
    if "Original Traceback" not in text:
        return exc
    marker = f"{type(exc).__name__}: "
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if marker in line and not line.startswith(" ")]
    if not starts:
        return exc
    first = lines[starts[-1]]
    message = "\n".join([first[first.index(marker) + len(marker):], *lines[starts[-1] + 1:]]).strip()
    clean = type(exc)(message)
    clean.__cause__ = exc.__cause__
    return clean
