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
