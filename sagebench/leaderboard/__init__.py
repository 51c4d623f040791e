"""Stage 10: the shared leaderboard, one module per job.

``store`` (boards on disk, ``submit``), ``validate`` (what an entry must be, records that
reproduce it), ``rank`` (one row per method, scores, simultaneous rank intervals), ``render``
(columns, README.md, curves, ``show``),
``compare`` (paired tests, every pair), ``verify`` (re-check boards on disk), ``record`` (the
board's one record of its benchmark), ``reproduce`` (``verify --reproduce``: rerun entries on
images the verifier draws), ``wandb_pull`` (entries from W&B runs), ``site`` (the boards as a static web
page, ``render --html``, and the board-repository template of ``init-repo``).
"""

from sagebench.errors import LeaderboardError
from sagebench.leaderboard.compare import (
                                         compare,
                                         compare_against_rest,
                                         compare_matrix,
                                         format_comparison,
                                         format_matrix,
                                         mcnemar_exact,
                                         paired_bootstrap_ci,
                                         resolve_ref,
)
from sagebench.leaderboard.rank import Ranking, Row, rank
from sagebench.leaderboard.record import BenchmarkRecord
from sagebench.leaderboard.render import Column, format_board, rank_board, render
from sagebench.leaderboard.reproduce import Outcome, reproduce_board
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
                                         check_records,
                                         load_json,
                                         load_samples,
                                         read_samples,
                                         results_schema,
                                         validate_entry,
                                         validate_samples,
)
from sagebench.leaderboard.verify import BoardReport, verify, verify_board
from sagebench.leaderboard.wandb_pull import (
                                         PullOutcome,
                                         entries_from_runs,
                                         entry_from_wandb,
                                         pull_wandb,
)

__all__ = [
    "BOARD_FILE", "ENTRIES_DIR", "SAMPLES_SUFFIX", "BenchmarkRecord", "Board", "BoardReport", "Column", "Entry",
    "LeaderboardError", "Outcome", "PullOutcome",
    "Ranking", "Row", "benchmark_fields", "check_records", "compare", "compare_against_rest",
    "compare_matrix", "default_root",
    "entries_from_runs", "entry_from_wandb", "format_board", "format_comparison", "format_matrix", "get_board",
    "list_boards", "load_json", "load_run", "load_samples", "mcnemar_exact", "paired_bootstrap_ci", "pull_wandb",
    "rank", "rank_board", "read_samples", "render", "reproduce_board", "resolve_ref", "results_schema", "safe_name", "submit", "validate_entry",
    "validate_samples", "verify", "verify_board",
]
