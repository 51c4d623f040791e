"""The paper's experiment: conf/experiment/paper_table3.yaml and its board of reported (not reproduced) numbers.

Offline and fast: nothing is downloaded; the DeiT models are built on the meta device only.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from sagebench import leaderboard as lb
from sagebench.config import load_config, strategy_entries
from sagebench.strategies import list_strategies, strategy_class

REPO = Path(__file__).resolve().parents[1]
BOARDS = REPO / "leaderboards"
BOARD = "imagenet1k-val-deit"

# The spec: the SAGE paper's Table III (ImageNet-1K val, DeiT-Tiny -> DeiT-Base, eta = 1.0),
# offloaded accuracy in %, only the cells the paper reports.
SOURCE = "SAGE paper, Table III (as reported; not reproduced by sagebench)"
NUM_IMAGES, NUM_OFFLOADED = 50_000, 17_829
CEILING_OFFLOADED, CEILING_OVERALL = 64.4, 80.4
TABLE3 = {
    ("random", 32): 10.9, ("uniform", 32): 9.8, ("attention_prefix", 32): 16.9, ("bat", 32): 15.6, ("sage", 32): 19.2,
    ("attention_prefix", 48): 34.0, ("bat", 48): 35.0, ("sage", 48): 38.4,
    ("attention_prefix", 64): 47.3, ("bat", 64): 49.0, ("sage", 64): 50.2,
    ("sage", 96): 60.2,
}
STRATEGIES = ["random", "uniform", "attention_prefix", "bat", "tome", "sage"]
BUDGETS = [16, 32, 48, 64, 96]


@pytest.fixture(scope="module")
def seed_script():
    spec = importlib.util.spec_from_file_location("seed_paper_table3", BOARDS / "seed_paper_table3.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cfg():
    return load_config("paper_table3")


# -- the experiment file ---------------------------------------------------------------------------


def test_experiment_file_holds_the_paper_protocol(cfg):
    assert cfg.data.name == "ILSVRC/imagenet-1k" and cfg.data.split == "validation" and cfg.data.path is None
    assert cfg.data.crop_pct == 0.875 and cfg.data.interpolation == "bicubic"
    assert (cfg.model.edge.name, cfg.model.edge.pretrained) == ("deit_tiny_patch16_224.fb_in1k", True)
    assert (cfg.model.server.name, cfg.model.server.pretrained) == ("deit_base_patch16_224.fb_in1k", True)
    assert cfg.model.edge.checkpoint is None and cfg.model.server.checkpoint is None
    assert list(cfg.strategies) == STRATEGIES
    assert strategy_entries(cfg) == [(s, {}) for s in STRATEGIES]  # default options, as in the paper's table
    assert list(cfg.budgets) == BUDGETS
    assert (cfg.gate.name, cfg.gate.threshold) == ("min_entropy", 1.0)
    assert cfg.benchmark == BOARD == load_config("imagenet_deit").benchmark
    top = (REPO / "conf" / "experiment" / "paper_table3.yaml").read_text().split("\ndefaults:")[0]
    assert "sagebench eval --config paper_table3 trainer.devices=N" in top and "ImageNet-1K val" in top
    data_file = (REPO / "conf" / "data" / "imagenet_val.yaml").read_text()  # composed: the data set is one file
    assert "ILSVRC/imagenet-1k" in data_file and "hf auth login" in data_file


def test_every_strategy_is_registered(cfg):
    registered = set(list_strategies())
    for name, _ in strategy_entries(cfg):
        assert name in registered
        strategy_class(name)
    assert {s for s, _ in TABLE3} <= set(STRATEGIES)  # every reported row is a strategy the config runs
    assert {b for _, b in TABLE3} <= set(BUDGETS)


def test_same_benchmark_as_imagenet_deit(seed_script, cfg):
    # strategies and budgets differ, the fingerprinted benchmark does not: one board for both
    ours = seed_script.benchmark_block(cfg, NUM_IMAGES)
    assert ours == seed_script.benchmark_block(load_config("imagenet_deit"), NUM_IMAGES)
    assert ours["num_patches"] == 196 and ours["grid"] == [14, 14]
    assert ours["preprocessing"]["crop_pct"] == 0.875 and ours["preprocessing"]["interpolation"] == "bicubic"


def test_benchmark_block_matches_what_eval_writes(seed_script, small_run, random_models_overrides):
    # the derivation the board's fingerprint rests on, checked against a real `sagebench eval` run
    _, results = small_run
    cfg = load_config(None, [*random_models_overrides, "data.limit=60", "budgets=[4,8]"])
    written = json.loads(json.dumps(results["benchmark"]))  # as in results.json (tuples -> lists)
    assert seed_script.benchmark_block(cfg, results["num_images"]) == written


# -- the board of reported numbers -----------------------------------------------------------------


def test_board_fingerprint_is_the_one_a_paper_table3_run_gets(seed_script, cfg):
    board = lb.get_board(BOARD, BOARDS)
    meta = board.meta()
    ours = seed_script.benchmark_block(cfg, NUM_IMAGES)
    assert meta["name"] == BOARD and meta["fingerprint"] == ours["fingerprint"]
    assert meta["benchmark"] == lb.benchmark_fields(ours)


def test_reported_entries_validate_and_equal_the_table(cfg):
    board = lb.get_board(BOARD, BOARDS)
    entries = board.entries()
    assert [e.name for e in entries] == ["sage-paper-table3"]
    (entry,) = entries
    lb.validate_entry(entry.data, str(entry.path))
    data = entry.data
    assert entry.reported and data["reported"] is True and data["source"] == SOURCE
    assert entry.samples_path is None  # a reported entry has no per-sample records
    assert data["benchmark"]["fingerprint"] == board.meta()["fingerprint"]
    assert (data["num_images"], data["num_offloaded"]) == (NUM_IMAGES, NUM_OFFLOADED)
    assert data["ceiling"] == pytest.approx({"offloaded_accuracy": CEILING_OFFLOADED / 100,
                                             "overall_accuracy": CEILING_OVERALL / 100})
    cells = {(r["strategy"], r["budget"]): r for r in data["results"]}
    assert len(cells) == len(data["results"])
    assert set(cells) == set(TABLE3)  # the missing cells stay missing
    for key, pct in TABLE3.items():
        assert 100 * cells[key]["offloaded_accuracy"] == pytest.approx(pct, abs=1e-9)
        # nothing the paper does not give is stored (no invented counts or derived accuracies)
        assert set(cells[key]) == {"strategy", "budget", "offloaded_accuracy"}


def test_seed_script_holds_the_same_numbers(seed_script):
    table = {(s, b): pct for b, row in seed_script.TABLE3_PCT.items() for s, pct in row.items()}
    assert table == TABLE3
    assert seed_script.SOURCE == SOURCE
    assert (seed_script.NUM_IMAGES, seed_script.NUM_OFFLOADED) == (NUM_IMAGES, NUM_OFFLOADED)
    assert seed_script.CEILING_PCT == {"offloaded_accuracy": CEILING_OFFLOADED, "overall_accuracy": CEILING_OVERALL}


def test_reported_rows_show_ceiling_ratio_and_are_marked_not_reproduced(tmp_path):
    ranking = lb.rank(lb.get_board(BOARD, BOARDS).entries())
    assert ranking.ranked == []
    assert {r.strategy for r in ranking.reported} == {s for s, _ in TABLE3}
    for row in ranking.reported:
        assert row.reported and row.rank is None and row.source == SOURCE
        for budget, (acc, ratio) in row.cells.items():
            assert 100 * acc == pytest.approx(TABLE3[(row.strategy, budget)])
            assert ratio == pytest.approx(TABLE3[(row.strategy, budget)] / CEILING_OFFLOADED)
    sage = next(r for r in ranking.reported if r.strategy == "sage")
    assert round(sage.cells[96][1], 3) == 0.935  # 60.2 / 64.4
    # the committed README is what `sagebench leaderboard render` writes for the board today
    copy_root = tmp_path / "leaderboards"
    shutil.copytree(BOARDS / BOARD, copy_root / BOARD)
    rendered = lb.render(lb.get_board(BOARD, copy_root)).read_text()
    assert rendered == (BOARDS / BOARD / "README.md").read_text()
    assert "No ranked entries yet." in rendered
    _, reported_part = rendered.split("## Reported, not reproduced")
    for strategy in {s for s, _ in TABLE3}:
        assert f"| reported | {strategy} |" in reported_part
    assert reported_part.count(SOURCE) == len({s for s, _ in TABLE3})
    assert "| 60.2 (0.935) |" in reported_part


def test_a_reported_row_is_never_ranked_among_measured_ones(small_run, tmp_path):
    root = tmp_path / "leaderboards"
    shutil.copytree(BOARDS / BOARD, root / BOARD)
    board = lb.get_board(BOARD, root)
    # a measured, verifiable entry on this benchmark: records over 50,000 images at the paper's budgets,
    # the server right on every offloaded image (a ceiling ratio of 1, above every reported row)
    import numpy as np

    from sagebench.metrics import SweepLayout, summarize
    from sagebench.results import write_samples

    paper = (32, 48, 64, 96)  # the budgets the board declares (its first entry's, the paper's table)
    layout = SweepLayout(tuple(("sage", b) for b in paper), "patches")
    rows = np.zeros((NUM_IMAGES, layout.num_columns))
    col = layout.column
    rows[:, col("sample_id")] = np.arange(NUM_IMAGES)
    rows[:, col("label")] = np.arange(NUM_IMAGES) % 1000
    rows[:, col("edge_pred")] = rows[:, col("label")]
    off = np.arange(NUM_IMAGES) < NUM_OFFLOADED
    rows[:, col("offloaded")] = off
    for name in ("ceiling_pred", *(("pred", j) for j in range(len(paper)))):
        c = col(*name) if isinstance(name, tuple) else col(name)
        rows[:, c] = np.where(off, rows[:, col("label")], -1)
    for j, b in enumerate(paper):
        rows[:, col("units", j)] = np.where(off, b, 0)
    run = tmp_path / "run"
    run.mkdir()
    measured = {"schema_version": "1.0", "benchmark": copy.deepcopy(board.entries()[0].data["benchmark"]),
                "config": {"seed": 0}, "strategies": [{"label": "sage", "name": "sage", "options": {}}],
                "provenance": {"sagebench_version": "test", "utc_time": "2030-01-01T00:00:00+00:00"},
                **summarize(rows, layout)}
    (run / "results.json").write_text(json.dumps(measured))
    write_samples(run, rows, layout)
    lb.submit(run, board=BOARD, root=root, name="measured")
    ranking = lb.rank(board.entries())
    assert ranking.rank_budgets == [32, 48, 64, 96]
    assert ranking.ranked and all(not r.reported and r.entry == "measured" for r in ranking.ranked)
    assert [r.rank_label for r in ranking.ranked] == ["1"]
    assert {r.strategy for r in ranking.reported} == {s for s, _ in TABLE3}
    assert all(r.reported and r.rank is None for r in ranking.reported)
    readme = lb.render(board).read_text()
    ranked_part, reported_part = readme.split("## Reported, not reproduced")
    assert SOURCE not in ranked_part and "| reported |" not in ranked_part
    assert "| 1 |" in ranked_part and "| 1 |" not in reported_part
    assert "reported, not reproduced (not ranked)" in lb.format_board(board)


def test_seed_recreates_the_committed_entry(seed_script, tmp_path, capsys):
    root = tmp_path / "leaderboards"
    seed_script.seed(root)
    fresh = lb.get_board(BOARD, root).entries()
    committed = lb.get_board(BOARD, BOARDS).entries()
    strip = lambda e: {k: v for k, v in e.data.items() if k != "submission"}  # noqa: E731
    assert [e.name for e in fresh] == [e.name for e in committed]
    assert [strip(e) for e in fresh] == [strip(e) for e in committed]
    seed_script.seed(root)  # again: nothing added, no duplicate refused, only re-rendered
    assert "already present" in capsys.readouterr().out
    assert len(lb.get_board(BOARD, root).entries()) == 1
    with pytest.raises(lb.LeaderboardError, match="duplicates"):
        lb.submit(json.loads(json.dumps(strip(committed[0]))), root=root)
