"""No stored figure is trusted on the way out: a results file is read back only with every figure
recomputed from its per-sample records.

Why: ``results.json`` is a plain file in a folder anyone can edit; ``resume=true`` on a finished run
and ``sagebench report`` used to print whatever it said. :func:`checked_results` reads it (strict
JSON, bounded size and depth), checks it against the schema and its own fingerprint, then reads
``samples.parquet`` (bounded by the file's own image count) and recomputes every summary figure from
the records, refusing the file and naming the first differences when they disagree. The checks are
the ones ``sagebench leaderboard submit`` applies to a board entry (:mod:`sagebench.leaderboard.validate`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sagebench.errors import SageBenchError
from sagebench.results.files import RESULTS_FILE, SAMPLES_FILE


def samples_path_of(results_path: Path) -> Path:
    """``run/samples.parquet`` beside ``run/results.json``; ``NAME.samples.parquet`` beside a board entry ``NAME.json``."""
    if results_path.name == RESULTS_FILE:
        return results_path.with_name(SAMPLES_FILE)
    return results_path.with_name(results_path.stem + ".samples.parquet")


def checked_results(run: str | os.PathLike) -> dict[str, Any]:
    """The results of ``run`` (a run folder or a results JSON file), every figure checked against its records.

    Raises :class:`SageBenchError` (one line) for an unreadable or malformed file, a missing per-sample file,
    or figures the records do not reproduce. Reported entries (figures copied from a paper, no records) are
    returned after the schema check: they carry no per-sample file to check against.
    """
    from sagebench.leaderboard.validate import load_json, load_samples, validate_entry

    path = Path(run)
    path = path / RESULTS_FILE if path.is_dir() else path
    entry = load_json(path)
    validate_entry(entry, where=str(path))
    if entry.get("reported"):
        return entry
    samples = samples_path_of(path)
    if not samples.is_file():
        raise SageBenchError(f"{path}: its per-sample records {samples} are missing, so its figures cannot be "
                             "checked; sagebench does not print figures it cannot check.")
    load_samples(entry, samples, where=str(samples))
    return entry
