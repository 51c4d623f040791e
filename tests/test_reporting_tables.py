"""`sagebench report` tables for papers: ties by rank interval, boards, latency, the ratio (issue 27, item 5)."""

from __future__ import annotations

import numpy as np
import pytest
from test_leaderboard_stats import _edited, _measure, _vec

from sagebench import leaderboard as lb
from sagebench.cli import main
from sagebench.errors import SageBenchError
from sagebench.reporting import paper_table

N = 120  # offloaded images: enough for the bootstrap to separate 90% from 40%


def _run(folder, offloaded=None):
    """Three strategies: ``best`` (108/120), ``close`` (differs from best on 6 images: 106/120), ``poor`` (48/120)."""
    best = _vec(108, 12)
    close = best.copy()
    close[[0, 1, 2, 3]] = False
    close[[110, 111]] = True
    poor = np.array([i % 5 < 2 for i in range(N)])
    run = _measure(folder, {("best", 4): best, ("close", 4): close, ("poor", 4): poor},
                   n=N if offloaded is None else offloaded.size, offloaded=offloaded)

    def latency(d):
        for r in d["results"]:
            r["latency_ms"] = {"lte": 20.0 + r["bytes_sent"] / 1000.0, "wifi": 5.0 + r["bytes_sent"] / 2000.0}
    return _edited(run, latency)


def test_rows_tied_with_the_best_are_marked_by_their_rank_interval_and_the_marks_explained(tmp_path):
    """Bold alone said `close` lost to `best`; the data cannot tell them apart (rank interval holds 1)."""
    rows = paper_table.table_rows([_run(tmp_path / "run")])
    ranks = {r["strategy"]: (r["rank_low"], r["rank_high"]) for r in rows}
    assert ranks["best"][0] == 1 and ranks["close"][0] == 1 and ranks["poor"] == (3, 3)
    md = paper_table.format_wide(rows, "md").splitlines()
    assert md[2].startswith("| best | **90.0 [") and md[3].startswith("| close | 88.3 [") and md[3].endswith("] \u2020 |")
    assert "\u2020" not in md[4] and "**" not in md[4]
    assert "dagger: not separated from the best" in md[-1] and "rank interval" in md[-1]
    tex = paper_table.format_wide(rows, "latex")
    *table, footnote = tex.splitlines()
    assert "\n".join(table).count("$^\\dagger$") == 1 and tex.count("\\textbf") == 1 and "% offloaded acc" in tex
    assert footnote.startswith("\\par\\smallskip{\\footnotesize Bold: the highest") and "$^\\dagger$: not separated" in footnote
    csv_lines = paper_table.format_wide(rows, "csv").splitlines()
    assert csv_lines[0].endswith("B=4 best,B=4 tied")
    assert [line.split(",")[-2:] for line in csv_lines[1:]] == [["1", "0"], ["0", "1"], ["0", "0"]]
    long = paper_table.format_table(rows, "md")
    assert "| rank |" in long.splitlines()[0] and "| 3 |" in long and "rank: simultaneous 95% rank interval" in long


def test_no_tie_is_claimed_for_runs_that_are_not_on_the_same_images(tmp_path):
    a = _run(tmp_path / "a")
    other = np.ones(N + 10, bool)
    other[:10] = False  # ten other images offloaded
    b = _run(tmp_path / "b", offloaded=other)
    rows = paper_table.table_rows([a, b])
    assert all(r["rank_low"] is None for r in rows)
    md = paper_table.format_wide(rows, "md")
    assert "\u2020" not in md and "dagger" not in md and "**" in md
    assert "rank" not in paper_table.format_table(rows, "md").splitlines()[0]


def test_a_board_gives_the_same_table_with_its_own_rank_intervals(tmp_path, capsys):
    root = tmp_path / "boards"
    lb.submit(_run(tmp_path / "run"), root=root)
    folder = root / "toy-bench"
    rows = paper_table.board_rows(paper_table.board_at(folder))
    assert {r["strategy"] for r in rows} == {"best", "close", "poor"} and {r["run"] for r in rows} == {"toy-bench"}
    board = {r["strategy"]: (r["rank_low"], r["rank_high"]) for r in rows}
    ranking = lb.rank_board(lb.get_board("toy-bench", root))
    assert board == {r.strategy: r.budget_ranks[4] for r in ranking.ranked}
    assert main(["report", "--board", str(folder), "--wide"]) == 0
    by_folder = capsys.readouterr().out
    assert "| best | **90.0 [" in by_folder and "\u2020" in by_folder
    assert main(["report", "--board", "toy-bench", "--root", str(root), "--wide"]) == 0
    assert capsys.readouterr().out == by_folder
    assert main(["report", str(folder), "--wide"]) == 0  # a board folder as the positional argument
    assert capsys.readouterr().out == by_folder
    assert main(["report"]) == 2


def test_latency_is_in_the_long_table_and_a_wide_metric_and_ratio_is_a_metric(tmp_path, capsys):
    run = _run(tmp_path / "run")
    rows = paper_table.table_rows([run])
    long = paper_table.format_table(rows, "md").splitlines()
    assert "| latency lte ms | latency wifi ms |" in long[0]
    assert "| 20.1 | 5.0 |" in long[2]  # 64 bytes over each channel
    csv_head = paper_table.format_table(rows, "csv").splitlines()[0]
    assert "latency_ms_lte,latency_ms_wifi" in csv_head
    wide = paper_table.format_wide(rows, "md", metric="latency", channel="wifi").splitlines()
    assert wide[2] == "| best | 5.0 |" and "**" not in "\n".join(wide) and "wifi channel" in wide[-1]
    with pytest.raises(SageBenchError, match="no latency over channel 'nb_iot'"):
        paper_table.format_wide(rows, "md", metric="latency", channel="nb_iot")
    assert main(["report", str(run), "--wide", "--metric", "ratio"]) == 0
    out = capsys.readouterr().out
    assert "| best | **0.900 [" in out and "ceiling ratio with its 95% intervals" in out


def test_the_board_file_name_is_the_stores(tmp_path):
    from sagebench.leaderboard.store import BOARD_FILE

    assert paper_table.BOARD_FILE == BOARD_FILE
