"""Leaderboard statistics and trust: compare intervals, matrix mode, one row per method and simultaneous
rank intervals on constructed boards whose answer is known, declared budgets, verified entries (records reproduce every figure), verify, links and bounds, `sagebench report`.

Every run here is built from constructed per-image records (no model, no data set): the records
go through ``metrics.summarize`` and ``results.files.write_samples`` like a real sweep's.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sagebench import leaderboard as lb
from sagebench import stats
from sagebench.cells import Cell
from sagebench.cli import main
from sagebench.leaderboard.compare import INTERVAL_METHOD
from sagebench.leaderboard.rank import display_names
from sagebench.metrics import SweepLayout, summarize
from sagebench.reporting import paper_table
from sagebench.results.files import fingerprint, write_samples

BENCH = {
    "name": "toy-bench", "dataset": "toy.parquet", "split": "test", "revision": None, "num_images": 0,
    "num_patches": 16, "grid": [4, 4],
    "edge": {"name": "toy_edge", "weights": "sha256:0000"}, "server": {"name": "toy_server", "weights": "sha256:1111"},
    "preprocessing": {"input_size": [1, 8, 8]}, "gate": "min_entropy", "threshold": 1.0,
}


def _bench(n: int, **changes) -> dict:
    bench = {**copy.deepcopy(BENCH), "num_images": n, **changes}
    bench["fingerprint"] = fingerprint(lb.benchmark_fields(bench))
    return bench


def _measure(folder: Path, correct: dict[tuple[str, int], np.ndarray], *, n: int | None = None,
             offloaded: np.ndarray | None = None, day: int = 1, bench: dict | None = None,
             ceiling_ok: np.ndarray | None = None) -> Path:
    """A run folder (results.json + samples.parquet) whose server is right exactly where ``correct`` says.

    ``correct[(strategy, budget)]``: a boolean vector over the offloaded images.
    """
    m = len(next(iter(correct.values())))
    n = n or m
    off = np.zeros(n, bool)
    off[:m] = True
    if offloaded is not None:
        off = offloaded
    label = np.arange(n) % 3
    layout = SweepLayout(tuple(correct), "patches")
    rows = np.zeros((n, layout.num_columns))
    rows[:, layout.column("sample_id")] = np.arange(n)  # a board's images are ids 0..n-1
    rows[:, layout.column("label")] = label
    rows[:, layout.column("edge_pred")] = np.where(np.arange(n) % 2 == 0, label, (label + 1) % 3)
    rows[:, layout.column("offloaded")] = off
    ceil = np.ones(int(off.sum()), bool) if ceiling_ok is None else ceiling_ok
    full = np.zeros(n, bool)
    full[off] = ceil
    rows[:, layout.column("ceiling_pred")] = np.where(off, np.where(full, label, (label + 1) % 3), -1)
    for j, cell in enumerate(correct):
        hit = np.zeros(n, bool)
        hit[off] = correct[cell]
        rows[:, layout.column("pred", j)] = np.where(off, np.where(hit, label, (label + 2) % 3), -1)
        rows[:, layout.column("coverage", j)] = np.where(off, 0.25 + 0.01 * j, 0.0)
        rows[:, layout.column("units", j)] = np.where(off, cell[1], 0)
        rows[:, layout.column("bytes", j)] = np.where(off, 16 * cell[1], 0)
    summary = summarize(rows, layout)
    results = {"schema_version": "1.0", "benchmark": bench or _bench(n), "config": {"seed": 0},
               "strategies": [{"label": s, "name": s, "options": {}} for s in dict.fromkeys(s for s, _ in correct)],
               "provenance": {"sagebench_version": "0.0-test", "utc_time": f"2030-01-{day:02d}T00:00:00+00:00"},
               **summary}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))
    write_samples(folder, rows, layout)
    return folder


def _vec(ones: int, zeros: int) -> np.ndarray:
    return np.array([True] * ones + [False] * zeros)


# -- compare: the exact interval, the plain form, the matrix ---------------------------------------


def test_compare_interval_includes_zero_at_b4_c0(tmp_path):
    # 14 offloaded images: A right and B wrong on 4 (b = 4, c = 0); 5 both right, 5 both wrong
    a = np.array([True] * 4 + [True] * 5 + [False] * 5)
    b = np.array([False] * 4 + [True] * 5 + [False] * 5)
    run = _measure(tmp_path / "run", {("a", 4): a, ("b", 4): b})
    cmp = lb.compare(str(run), None, ["a", "b"])
    (row,) = cmp["rows"]
    assert (row["only_a"], row["only_b"], row["n"]) == (4, 0, 14)
    assert row["p_exact"] == pytest.approx(0.125)
    assert row["p_mcnemar"] == pytest.approx(stats.mcnemar_score(4, 0)) and row["p_mcnemar"] > 0.05
    assert row["ci_low"] < 0 < row["ci_high"], "p > 0.05: the interval must include 0"
    assert row["diff"] == pytest.approx(4 / 14) and row["ci_low"] <= row["diff"] <= row["ci_high"]
    assert (row["ci_low"], row["ci_high"]) == stats.paired_difference_interval(a, b)
    assert cmp["interval"] == INTERVAL_METHOD


@pytest.mark.parametrize("only_a,only_b", [(6, 0), (5, 0), (9, 2), (8, 2), (3, 3)])
def test_compare_interval_agrees_with_mcnemar(tmp_path, only_a, only_b):
    a = np.array([True] * only_a + [False] * only_b + [True] * 7 + [False] * 7)
    b = np.array([False] * only_a + [True] * only_b + [True] * 7 + [False] * 7)
    run = _measure(tmp_path / "run", {("a", 2): a, ("b", 2): b})
    (row,) = lb.compare(str(run), None, ["a", "b"])["rows"]
    assert (row["ci_low"] <= 0 <= row["ci_high"]) == (row["p_mcnemar"] >= 0.05)


def test_compare_plain_form_and_deprecated_resamples(tmp_path, capsys):
    run = _measure(tmp_path / "run", {("sage", 4): _vec(30, 10), ("attention_prefix", 4): _vec(20, 20)})
    assert main(["leaderboard", "compare", str(run), "-s", "sage", "-s", "attention_prefix"]) == 0
    out = capsys.readouterr().out
    assert "A = sage" in out and "B = attention_prefix" in out and "Tango score interval" in out
    assert main(["leaderboard", "compare", str(run), "-s", "sage", "-s", "attention_prefix",
                 "--resamples", "0", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert "ignored" in got["notes"][0] and got["rows"][0]["diff"] == pytest.approx(0.25)
    assert main(["leaderboard", "compare", str(run), "-s", "sage"]) == 0  # sage against every other strategy
    assert "B = attention_prefix" in capsys.readouterr().out


def test_compare_matrix_of_a_run_and_of_a_board(tmp_path, capsys):
    root = tmp_path / "boards"
    run = _measure(tmp_path / "run", {(s, b): v for b in (4, 8) for s, v in
                                      (("x", _vec(35, 5)), ("y", _vec(20, 20)), ("z", _vec(10, 30)))})
    mat = lb.compare_matrix(str(run))
    assert mat["kind"] == "run" and mat["rows"] == ["x", "y", "z"]
    assert [blk["budget"] for blk in mat["budgets"]] == [4, 8]
    pairs = mat["budgets"][0]["pairs"]
    assert [(p["a"], p["b"]) for p in pairs] == [("x", "y"), ("x", "z"), ("y", "z")]
    assert all(p["p_adjusted"] >= p["p_value"] for p in pairs)
    assert pairs == stats.pairwise_matrix({"x": _vec(35, 5), "y": _vec(20, 20), "z": _vec(10, 30)})
    lb.submit(run, root=root, name="first")
    lb.submit(_measure(tmp_path / "other", {("w", 4): _vec(36, 4), ("w", 8): _vec(36, 4)}, day=2),
              root=root, name="second")
    assert main(["leaderboard", "--root", str(root), "compare", "toy-bench", "--matrix"]) == 0
    out = capsys.readouterr().out
    assert "every pair of the verified rows of board toy-bench" in out and "p Holm" in out
    board = lb.compare_matrix("toy-bench", root=root)
    assert board["kind"] == "board" and len(board["rows"]) == 4
    assert len(board["budgets"][0]["pairs"]) == 6
    assert main(["leaderboard", "--root", str(root), "compare", "toy-bench", "x", "--matrix"]) == 2


# -- ranks: one row per method, simultaneous rank intervals, declared budgets ------------------------


def _entry(run: Path, name: str = "e") -> lb.Entry:
    return lb.Entry(name, json.loads((run / "results.json").read_text()), run / "results.json", run / "samples.parquet")


def _ranks(ranking) -> list[tuple[str, str]]:
    return [(r.strategy, r.rank_label) for r in ranking.ranked]


def _small_board(tmp_path):
    root = tmp_path / "boards"
    strong = _vec(50, 10)
    close = strong.copy()
    close[0] = False  # one discordant image
    weak = _vec(15, 45)
    run = _measure(tmp_path / "run", {(s, b): v for b in (4, 8, 12) for s, v in
                                      (("strong", strong), ("close", close), ("weak", weak))})
    lb.submit(run, root=root, name="measured")
    return root, run


def test_rank_intervals_on_a_board_and_the_rows_listed_apart(tmp_path, capsys):
    root, run = _small_board(tmp_path)
    assert json.loads((root / "toy-bench" / "board.json").read_text())["budgets"] == [4, 8, 12]  # declared
    # a measured entry without records (as a W&B pull without its artifact): listed, never ranked
    unverified = json.loads((run / "results.json").read_text())
    unverified["strategies"] = [{"label": "nosamples", "name": "nosamples", "options": {}}]
    unverified["results"] = [{**r, "strategy": "nosamples", "offloaded_accuracy": 1.0, "ceiling_ratio": 1.0,
                              "num_correct": 60} for r in unverified["results"] if r["strategy"] == "strong"]
    lb.submit(unverified, root=root, name="bare", allow_unverified=True)
    reported = {"schema_version": "1.0", "reported": True, "source": "A paper, Table 1",
                "benchmark": unverified["benchmark"], "num_images": 60, "ceiling": {"offloaded_accuracy": 1.0},
                "results": [{"strategy": "paper", "budget": 4, "offloaded_accuracy": 0.99}]}
    lb.submit(reported, root=root)
    ranking = lb.rank_board(lb.get_board("toy-bench", root))
    assert _ranks(ranking) == [("strong", "1-2"), ("close", "1-2"), ("weak", "3")]
    assert ranking.num_paired == 60 and ranking.declared and ranking.rank_budgets == [4, 8, 12]
    strong = ranking.ranked[0]
    assert strong.score == pytest.approx(50 / 60) and strong.score_ci[0] < 50 / 60 < strong.score_ci[1]
    assert strong.budget_ranks == {4: (1, 2), 8: (1, 2), 12: (1, 2)}
    assert ranking.sets[4].better[0, 2] and not ranking.sets[4].better[0, 1]
    assert [r.strategy for r in ranking.unverified] == ["nosamples"] and ranking.unverified[0].rank is None
    assert [r.strategy for r in ranking.reported] == ["paper"]
    assert main(["leaderboard", "--root", str(root), "show"]) == 0
    out = capsys.readouterr().out
    assert "1-2  | strong" in out and "3    | weak" in out and "simultaneous rank interval" in out
    assert "measured, not verified (no usable per-sample file, or not reproduced; never ranked)" in out
    readme = lb.render(lb.get_board("toy-bench", root)).read_text()
    assert "| 1-2 | strong | 83.3 (0.833) #1-2 |" in readme and "| 3 | weak |" in readme
    assert "| rank | strategy | B=4 | B=8 | B=12 | score [95% CI] | ceiling |" in readme
    assert "## Measured, not verified" in readme and "win rate" not in readme
    again = lb.rank_board(lb.get_board("toy-bench", root))  # seeded: the same intervals every time
    assert [r.score_ci for r in again.ranked] == [r.score_ci for r in ranking.ranked]


def test_non_transitive_case_on_a_board(tmp_path):
    # A ~ B and B ~ C (neither pair separable), A > C: 400 offloaded images in blocks of (A, B, C) right
    blocks = [((1, 0, 0), 8), ((0, 1, 0), 12), ((1, 1, 0), 8), ((1, 0, 1), 12), ((1, 1, 1), 172), ((0, 0, 0), 188)]
    vec = {s: np.concatenate([np.full(count, bool(p[i])) for p, count in blocks]) for i, s in enumerate("abc")}
    run = _measure(tmp_path / "run", {(s, b): vec[s] for b in (4, 8) for s in "abc"})
    ranking = lb.rank([_entry(run)])
    assert _ranks(ranking) == [("a", "1-2"), ("b", "1-3"), ("c", "2-3")]
    assert all(r.budget_ranks[4] == r.budget_ranks[8] for r in ranking.ranked)


def test_a_leader_beaten_at_most_budgets_is_ranked_there_below(tmp_path):
    """The score's leader is far ahead at one budget and significantly behind at three: the per-budget
    rank intervals say so, the score's order follows the declared score."""
    n = 300
    base = np.arange(n) < 150
    more = np.arange(n) < 180  # 30 images more, never fewer: a clear, one-sided difference
    run = _measure(tmp_path / "run", {**{("leader", b): base for b in (4, 8, 12)}, ("leader", 16): np.arange(n) < 270,
                                      **{("steady", b): more for b in (4, 8, 12)}, ("steady", 16): base})
    ranking = lb.rank([_entry(run)])
    leader, steady = ranking.ranked
    assert (leader.strategy, steady.strategy) == ("leader", "steady")  # mean over the budgets: 0.600 vs 0.575
    assert {b: leader.budget_ranks[b] for b in (4, 8, 12, 16)} == {4: (2, 2), 8: (2, 2), 12: (2, 2), 16: (1, 1)}
    assert {b: steady.budget_ranks[b] for b in (4, 8, 12, 16)} == {4: (1, 1), 8: (1, 1), 12: (1, 1), 16: (2, 2)}


def test_identical_rows_are_one_row_and_count_once(tmp_path):
    x, y = _vec(40, 20), _vec(30, 30)
    y[45] = True  # y differs from x on 11 images
    plain = _measure(tmp_path / "plain", {(s, b): v for b in (4, 8) for s, v in (("x", x), ("y", y))})
    # the same x under three names, and a renamed copy of the whole entry
    copies = _measure(tmp_path / "copies", {(s, b): v for b in (4, 8) for s, v in
                                            (("x", x), ("x_alias", x), ("x_again", x), ("y", y))}, day=2)
    base = lb.rank([_entry(plain, "plain")])
    merged = lb.rank([_entry(plain, "plain"), _entry(copies, "copies")])
    assert [r.aliases for r in merged.ranked] == [[("plain", "x"), ("copies", "x"), ("copies", "x_again"),
                                                   ("copies", "x_alias")], [("plain", "y"), ("copies", "y")]]
    assert [(r.rank_label, r.score_ci) for r in merged.ranked] == [(r.rank_label, r.score_ci) for r in base.ranked]
    assert merged.sets["score"].estimate.size == 2
    # a label on several entries is named with its entry; a unique label alone
    assert display_names(merged.ranked) == ["x (plain) = x (copies) = x_again = x_alias", "y (plain) = y (copies)"]


def test_a_later_entry_with_an_existing_label_is_shown_with_its_entry(tmp_path):
    root = tmp_path / "boards"
    lb.submit(_measure(tmp_path / "first", {("sage", 4): _vec(40, 20)}), root=root, name="first")
    later = _vec(41, 19)  # another method under the same label
    lb.submit(_measure(tmp_path / "second", {("sage", 4): later}, day=2), root=root, name="second")
    board = lb.get_board("toy-bench", root)
    ranking = lb.rank_board(board)
    assert sorted(r.label for r in ranking.ranked) == ["sage (first)", "sage (second)"]
    readme = lb.render(board).read_text()
    assert "| sage (first) |" in readme and "| sage (second) |" in readme


def test_an_entry_lacking_a_declared_budget_is_listed_and_changes_nothing(tmp_path):
    root = tmp_path / "boards"
    lb.submit(_measure(tmp_path / "run", {(s, b): v for b in (4, 8, 12) for s, v in
                                          (("a", _vec(45, 15)), ("b", _vec(30, 30)))}), root=root, name="full")
    board = lb.get_board("toy-bench", root)
    before = lb.rank_board(board)
    lb.submit(_measure(tmp_path / "one", {("solo", 4): _vec(60, 0)}, day=2), root=root, name="one-budget")
    after = lb.rank_board(board)
    assert after.rank_budgets == [4, 8, 12]
    assert [(r.strategy, r.rank_label, r.score) for r in after.ranked] == \
        [(r.strategy, r.rank_label, r.score) for r in before.ranked]
    assert [(r.strategy, r.rank, r.score) for r in after.incomplete] == [("solo", None, None)]
    assert "## Verified, lacking a declared budget" in lb.render(board).read_text()
    # a board.json without budgets: the first entry's
    meta = json.loads((board.path / "board.json").read_text())
    del meta["budgets"]
    (board.path / "board.json").write_text(json.dumps(meta))
    undeclared = lb.rank_board(board)
    assert undeclared.rank_budgets == [4, 8, 12] and not undeclared.declared
    meta["budgets"] = [4, 4]
    (board.path / "board.json").write_text(json.dumps(meta))
    with pytest.raises(lb.LeaderboardError, match="distinct positive integers"):
        lb.rank_board(board)
    (report,) = lb.verify(root, "toy-bench")
    assert any("budgets must be" in p for p in report.problems)


def test_an_entry_offloading_other_images_is_refused_by_the_board_record(tmp_path):
    """The gate is part of the benchmark: an entry whose records offload other images than the board's record
    (the "cherry" forgery: offloaded cleared where the method is wrong) is refused, naming ids and fields."""
    root = tmp_path / "boards"
    n = 100
    own = np.arange(n) < 80  # images 0..79
    other = (np.arange(n) < 60) | (np.arange(n) >= 80)  # images 0..59 and 80..99
    lb.submit(_measure(tmp_path / "p", {("p", 4): np.arange(80) < 55}, n=n, offloaded=own), root=root, name="p")
    x_ok = np.concatenate([np.arange(60) < 20, np.ones(20, bool)])
    with pytest.raises(lb.LeaderboardError, match=r"on 40 of 100 ids \(offloaded on 40, ceiling_pred on 40\)"):
        lb.submit(_measure(tmp_path / "x", {("x", 4): x_ok}, n=n, offloaded=other, day=2), root=root, name="x")
    assert [e.name for e in lb.get_board("toy-bench", root).entries()] == ["p"]


# -- verified entries: submit recomputes, verify re-checks ------------------------------------------


def _edited(run: Path, edit) -> Path:
    data = json.loads((run / "results.json").read_text())
    edit(data)
    (run / "results.json").write_text(json.dumps(data))
    return run


def test_submit_refuses_figures_the_records_do_not_reproduce(tmp_path):
    root = tmp_path / "boards"
    correct = {("a", 4): _vec(30, 10), ("b", 4): _vec(20, 20)}
    for i, (field, value, named) in enumerate([
            ("coverage", 0.5, "a @ B=4 coverage"), ("bytes_sent", 63.0, "a @ B=4 bytes_sent"),
            ("overall_accuracy", None, "a @ B=4 overall_accuracy")]):
        run = _measure(tmp_path / f"run{i}", correct)

        def edit(d, field=field, value=value):
            d["results"][0][field] = value if value is not None else d["results"][0][field] + 1e-6
        _edited(run, edit)
        with pytest.raises(lb.LeaderboardError, match=f"does not reproduce.*{named}"):
            lb.submit(run, root=root)
    run = _edited(_measure(tmp_path / "edge", correct), lambda d: d.update(edge_accuracy=0.75))
    with pytest.raises(lb.LeaderboardError, match="edge_accuracy: entry 0.75, records 0.5"):
        lb.submit(run, root=root)
    tiny = _edited(_measure(tmp_path / "tiny", correct),  # float round-off within 1e-9 is not an edit
                   lambda d: d["results"][0].update(coverage=d["results"][0]["coverage"] + 1e-12))
    assert lb.submit(tiny, root=root).samples_path.is_file()


def test_measured_entries_need_their_per_sample_file(tmp_path):
    run = _measure(tmp_path / "run", {("a", 4): _vec(3, 1)})
    (run / "samples.parquet").unlink()
    with pytest.raises(lb.LeaderboardError, match="has no per-sample file"):
        lb.submit(run, root=tmp_path / "boards")
    assert main(["leaderboard", "--root", str(tmp_path / "boards"), "submit", str(run)]) == 2
    assert not (tmp_path / "boards").exists()


def test_verify_turns_a_hand_edited_entry_red(tmp_path, capsys):
    root = tmp_path / "boards"
    saved = lb.submit(_measure(tmp_path / "run", {("a", 4): _vec(30, 10), ("b", 4): _vec(20, 20)}),
                      root=root, name="clean")
    assert main(["leaderboard", "verify", "--root", str(root)]) == 0  # --root before or after the action
    assert "board toy-bench: OK (1 entry checked)" in capsys.readouterr().out
    data = json.loads(saved.path.read_text())
    data["results"][1]["offloaded_accuracy"] = 0.6  # b: 20/40 = 0.5 in the records
    data["results"][1]["ceiling_ratio"] = 0.6
    saved.path.write_text(json.dumps(data, indent=2))
    assert main(["leaderboard", "--root", str(root), "verify", "toy-bench"]) == 1
    err = capsys.readouterr().err
    assert "clean.json" in err and "b @ B=4 offloaded_accuracy: entry 0.6, records 0.5" in err
    # a read of the board skips it, with a warning
    assert main(["leaderboard", "--root", str(root), "show"]) == 0
    captured = capsys.readouterr()
    assert "skipped:" in captured.err and "clean.json" in captured.err and "(no entries)" in captured.out
    with pytest.raises(lb.LeaderboardError, match="does not reproduce"):
        lb.get_board("toy-bench", root).entries(records=True)


def test_verify_names_replaced_records_orphans_and_edited_metadata(tmp_path):
    root = tmp_path / "boards"
    one = lb.submit(_measure(tmp_path / "one", {("a", 4): _vec(30, 10)}), root=root, name="one")
    lb.submit(_measure(tmp_path / "two", {("c", 4): _vec(20, 20)}, day=2), root=root, name="two")
    (one.path.parent / "ghost.samples.parquet").write_bytes(one.samples_path.read_bytes())
    (one.path.parent / ".one.json.abc.tmp").write_text("{}")
    data = json.loads(one.path.read_text())
    data["provenance"]["utc_time"] = "2020-01-01T00:00:00+00:00"  # figures intact, metadata edited
    one.path.write_text(json.dumps(data))
    (report,) = lb.verify(root)
    text = "\n".join(report.problems)
    assert not report.ok
    assert "ghost.samples.parquet: a per-sample file without its entry" in text
    assert "leftover temporary file" in text
    assert "one.json: its content hash is not the one recorded at submission" in text
    assert report.entries == 1  # "two" is fine


def test_reads_skip_links_and_foreign_entries(tmp_path, capsys):
    root = tmp_path / "boards"
    lb.submit(_measure(tmp_path / "run", {("a", 4): _vec(30, 10)}), root=root, name="mine")
    foreign = _measure(tmp_path / "foreign", {("evil", 4): _vec(40, 0)}, bench=_bench(40, threshold=0.5))
    entries = root / "toy-bench" / "entries"
    (entries / "linked.json").symlink_to(foreign / "results.json")
    copied = json.loads((foreign / "results.json").read_text())
    (entries / "copied.json").write_text(json.dumps(copied))  # a plain file of another benchmark
    assert main(["leaderboard", "--root", str(root), "show"]) == 0
    captured = capsys.readouterr()
    assert "evil" not in captured.out and "mine" in captured.out
    assert "linked.json is a symbolic link" in captured.err
    assert "copied.json has benchmark fingerprint" in captured.err and "another benchmark" in captured.err
    (report,) = lb.verify(root)
    assert any("linked.json is a symbolic link" in p for p in report.problems)
    with pytest.raises(lb.LeaderboardError, match="symbolic link"):
        lb.compare("linked", None, ["evil", "evil"], root=root)


def test_planted_links_are_never_followed(tmp_path):
    root = tmp_path / "boards"
    lb.submit(_measure(tmp_path / "first", {("a", 4): _vec(30, 10)}), root=root, name="first")
    board = root / "toy-bench"
    outside = tmp_path / "outside"
    outside.mkdir()
    targets = {name: outside / name for name in ("samples", "png", "readme")}
    for target in targets.values():
        target.write_text("precious\n")
    # the fixed temporary names the old code wrote to, and the README itself
    (board / "entries" / ".second.samples.parquet.tmp").symlink_to(targets["samples"])
    (board / ".curves.png.tmp.png").symlink_to(targets["png"])
    (board / "README.md").symlink_to(targets["readme"])
    saved = lb.submit(_measure(tmp_path / "second", {("b", 4): _vec(20, 20)}, day=2), root=root, name="second")
    lb.render(lb.get_board("toy-bench", root))
    assert all(t.read_text() == "precious\n" for t in targets.values()), "nothing outside the board was written"
    assert not (board / "README.md").is_symlink() and "# Leaderboard" in (board / "README.md").read_text()
    assert not saved.samples_path.is_symlink() and pq.ParquetFile(saved.samples_path).metadata.num_rows == 40
    (report,) = lb.verify(root)
    assert [p for p in report.problems if "symbolic link" in p] and not report.ok
    # an entry name taken by a planted link is refused, not written through
    (board / "entries" / "third.samples.parquet").symlink_to(targets["samples"])
    with pytest.raises(lb.LeaderboardError, match="symbolic link"):
        lb.submit(_measure(tmp_path / "third", {("c", 4): _vec(10, 30)}, day=3), root=root, name="third")
    assert targets["samples"].read_text() == "precious\n"


def test_bounds_rows_before_reading_and_nesting(tmp_path, monkeypatch):
    run = _measure(tmp_path / "run", {("a", 4): _vec(3, 1)})
    table = pq.read_table(run / "samples.parquet")
    pq.write_table(pa.concat_tables([table] * 1000), run / "samples.parquet")  # 4000 rows, 4 images claimed

    def no_read(*args, **kwargs):
        raise AssertionError("columns were read before the row count was checked")
    monkeypatch.setattr(pq.ParquetFile, "read", no_read)
    with pytest.raises(lb.LeaderboardError, match="4000 rows but the entry has 4 images: refused before reading"):
        lb.submit(run, root=tmp_path / "boards")
    monkeypatch.undo()
    deep = tmp_path / "deep.json"
    deep.write_text('{"results": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(lb.LeaderboardError, match="nest"):
        lb.load_json(deep)
    with pytest.raises(lb.LeaderboardError, match="nest"):
        lb.submit(deep, root=tmp_path / "boards")
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(lb.LeaderboardError, match="nests JSON more than"):
        lb.submit({"schema_version": "1.0", "results": nested}, root=tmp_path / "boards")
    shallow = tmp_path / "shallow.json"
    shallow.write_text('{"a": ' + "[" * 100 + "]" * 100 + "}")  # parses, but deeper than any results file
    with pytest.raises(lb.LeaderboardError, match="more than 64 levels deep"):
        lb.load_json(shallow)


# -- W&B pull with the run's artifact -------------------------------------------------------------


def test_pull_fetches_the_records_of_the_artifact(tmp_path):
    from sagebench.reporting import wandb as tracking

    run = _measure(tmp_path / "run", {("a", 4): _vec(30, 10), ("b", 4): _vec(20, 20)})
    results = json.loads((run / "results.json").read_text())

    class Artifact:
        type, name = "sagebench-results", "sagebench-toy:v0"

        def download(self, root):
            Path(root).mkdir(parents=True)
            (Path(root) / "samples.parquet").write_bytes((run / "samples.parquet").read_bytes())
            return root

    api_run = SimpleNamespace(id="r1", name="r1", state="finished", config=results["config"],
                              summary_metrics=json.loads(json.dumps(tracking.summary_metrics(results))),
                              path=["t", "p", "r1"], url=None, logged_artifacts=lambda: [Artifact()])
    api = SimpleNamespace(runs=lambda path, filters=None: iter([api_run]))
    (outcome,) = lb.pull_wandb("t/p", root=tmp_path / "boards", api=api)
    assert outcome.entry == "wandb-r1" and outcome.verified
    ranking = lb.rank(lb.get_board("toy-bench", tmp_path / "boards").entries())
    assert [r.strategy for r in ranking.ranked] == ["a", "b"] and not ranking.unverified


# -- sagebench report ------------------------------------------------------------------------------


def test_report_table_of_several_runs(tmp_path, capsys):
    with_ci = _measure(tmp_path / "seed0", {("sage", 4): _vec(30, 10), ("sage", 8): _vec(35, 5)})
    bare = _measure(tmp_path / "seed1", {("sage", 4): _vec(28, 12), ("sage", 8): _vec(33, 7)})
    # a results file without the *_ci fields: intervals computed from the counts (and the records)
    _edited(bare, lambda d: [r.pop(k) for r in d["results"] for k in list(r) if k.endswith("_ci")])
    rows = paper_table.table_rows([with_ci, bare])
    assert [(r["run"], r["budget"]) for r in rows] == [("seed0", 4), ("seed1", 4), ("seed0", 8), ("seed1", 8)]
    r0 = json.loads((with_ci / "results.json").read_text())["results"][0]
    assert [rows[0]["offloaded_accuracy_low"], rows[0]["offloaded_accuracy_high"]] == r0["offloaded_accuracy_ci"]
    assert (rows[1]["offloaded_accuracy_low"], rows[1]["offloaded_accuracy_high"]) == stats.wilson_interval(28, 40)
    assert (rows[1]["overall_accuracy_low"], rows[1]["overall_accuracy_high"]) == stats.wilson_interval(28, 40)
    assert rows[1]["ceiling_ratio_low"] is not None  # the paired bootstrap over samples.parquet
    assert main(["report", str(with_ci), str(bare)]) == 0
    md = capsys.readouterr().out
    assert "| run | strategy | budget | offloaded acc % | ceiling ratio | overall acc % | bytes sent |" in md
    low, high = stats.wilson_interval(28, 40)
    assert f"| seed1 | sage | 4 | 70.0 [{100 * low:.1f}, {100 * high:.1f}] |" in md
    assert main(["report", str(with_ci), str(bare), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("run,strategy,budget,budget_unit,offloaded_accuracy,offloaded_accuracy_low,")
    assert len(lines) == 5 and lines[2].startswith("seed1,sage,4,patches,0.7,")
    out = tmp_path / "table.tex"
    assert main(["report", str(with_ci), "--format", "latex", "--metrics", "offloaded_accuracy", "coverage",
                 "--out", str(out)]) == 0
    tex = out.read_text()
    assert "\\toprule" in tex and "offloaded acc \\%" in tex and "\\end{tabular}" in tex
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert not math.isnan(rows[0]["offloaded_accuracy"])


def test_cells_keys_come_from_cells_module(tmp_path):
    run = _measure(tmp_path / "run", {("odd/label[x=1]", 4): _vec(3, 1)})
    columns = pq.ParquetFile(run / "samples.parquet").schema_arrow.names
    assert Cell("odd/label[x=1]", 4).key("pred") in columns
    lb.submit(run, root=tmp_path / "boards")


def test_oracle_rows_are_a_reference_never_ranked(tmp_path):
    root = tmp_path / "boards"
    run = _measure(tmp_path / "run", {("sage", 4): _vec(30, 10), ("oracle", 4): _vec(39, 1)})
    _edited(run, lambda d: d["strategies"][1].update(oracle=True, requires=["server_attention"]))
    lb.submit(run, root=root)
    board = lb.get_board("toy-bench", root)
    ranking = lb.rank(board.entries())
    assert [r.strategy for r in ranking.ranked] == ["sage"] and ranking.ranked[0].rank_label == "1"
    assert [r.strategy for r in ranking.oracles] == ["oracle"] and ranking.oracles[0].rank is None
    oracle = ranking.oracles[0]  # on the paired images, with its interval from the same replicates
    assert oracle.score == pytest.approx(39 / 40) and oracle.score_ci[0] < 39 / 40 <= oracle.score_ci[1]
    assert "oracle | oracle" in lb.format_board(board)
    assert "## Oracles (reference, not ranked)" in lb.render(board).read_text()


def test_compare_one_strategy_of_a_run_against_every_other_with_holm(tmp_path, capsys):
    """`compare RUN -s sage` was refused; a researcher expects sage against every other strategy of the run."""
    run = _measure(tmp_path / "run", {("sage", 4): _vec(30, 10), ("random", 4): _vec(20, 20),
                                      ("uniform", 4): _vec(29, 11)})
    results = lb.compare_against_rest(str(run), "sage")
    assert [(r["a"]["strategy"], r["b"]["strategy"]) for r in results] == [("sage", "random"), ("sage", "uniform")]
    p = [r["rows"][0]["p_mcnemar"] for r in results]
    assert [r["rows"][0]["p_holm"] for r in results] == stats.holm(p)
    assert main(["leaderboard", "compare", str(run), "-s", "sage"]) == 0
    out = capsys.readouterr().out
    assert out.count("A = sage") == 2 and "Holm p" in out and "adjusted over the 2 comparisons" in out


def test_report_wide_is_strategies_by_budgets_with_intervals_and_the_best_deployable_row_marked(tmp_path, capsys):
    """A paper wants strategies x budgets, each cell with its interval, the best marked (an oracle never is)."""
    run = _measure(tmp_path / "run", {("sage", 4): _vec(30, 10), ("sage", 8): _vec(33, 7),
                                      ("random", 4): _vec(20, 20), ("random", 8): _vec(36, 4),
                                      ("oracle", 4): _vec(39, 1), ("oracle", 8): _vec(40, 0)})
    _edited(run, lambda d: d["strategies"][2].update(oracle=True, requires=["server_attention"]))
    rows = paper_table.table_rows([run])
    md = paper_table.format_wide(rows, "md")
    lines = md.splitlines()
    assert lines[0] == "| strategy | B=4 | B=8 |"
    low, high = stats.wilson_interval(30, 40)
    assert lines[2] == f"| sage | **75.0 [{100 * low:.1f}, {100 * high:.1f}]** | 82.5 [" + lines[2].split("82.5 [")[1]
    assert lines[3].startswith("| random | 50.0 [") and "| **90.0 [" in lines[3]
    assert lines[4].startswith("| oracle (oracle) | 97.5 [") and "**" not in lines[4]
    tex = paper_table.format_wide(rows, "latex")
    assert "\\textbf{75.0" in tex and "\\begin{tabular}{lrr}" in tex and tex.count("\\textbf") == 2
    csv_text = paper_table.format_wide(rows, "csv").splitlines()
    assert csv_text[0].startswith("strategy,run,B=4 offloaded_accuracy,B=4 low,B=4 high,B=4 best,")
    assert csv_text[1].split(",")[5] == "1" and csv_text[3].split(",")[5] == "0"  # sage best at B=4, oracle never
    assert main(["report", str(run), "--wide", "--format", "latex"]) == 0
    assert "\\textbf" in capsys.readouterr().out
