"""Published JSON schemas (``results.schema.json``: a run's results file, i.e. a leaderboard entry)."""

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent
RESULTS_SCHEMA = SCHEMA_DIR / "results.schema.json"
