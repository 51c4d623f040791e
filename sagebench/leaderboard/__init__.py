"""Stage 10: the shared leaderboard, one module per job.

``store`` (boards on disk, ``submit``), ``validate`` (what an entry must be), ``rank`` (the
order), ``render`` (README.md, curves, ``show``), ``compare`` (paired tests), ``wandb_pull``
(entries from W&B runs).
"""

from sagebench.errors import LeaderboardError
from sagebench.leaderboard.compare import (
                                         compare,
                                         format_comparison,
                                         mcnemar_exact,
                                         paired_bootstrap_ci,
                                         resolve_ref,
)
from sagebench.leaderboard.rank import Ranking, Row, rank
from sagebench.leaderboard.render import format_board, render
from sagebench.leaderboard.store import (
                                         BOARD_FILE,
                                         ENTRIES_DIR,
                                         SAMPLES_SUFFIX,
                                         Board,
                                         Entry,
                                         default_root,
                                         get_board,
                                         list_boards,
                                         load_run,
                                         safe_name,
                                         submit,
)
from sagebench.leaderboard.validate import (
                                         benchmark_fields,
                                         load_json,
                                         read_samples,
                                         results_schema,
                                         validate_entry,
                                         validate_samples,
)
from sagebench.leaderboard.wandb_pull import (
                                         PullOutcome,
                                         entries_from_runs,
                                         entry_from_wandb,
                                         pull_wandb,
)

__all__ = [
    "BOARD_FILE", "ENTRIES_DIR", "SAMPLES_SUFFIX", "Board", "Entry", "LeaderboardError", "PullOutcome", "Ranking",
    "Row", "benchmark_fields", "compare", "default_root", "entries_from_runs", "entry_from_wandb", "format_board",
    "format_comparison", "get_board", "list_boards", "load_json", "load_run", "mcnemar_exact",
    "paired_bootstrap_ci", "pull_wandb", "rank", "read_samples", "render", "resolve_ref", "results_schema",
    "safe_name", "submit", "validate_entry", "validate_samples",
]
