"""Seeds: a seeded strategy at several seeds in one run, its spread, and paired tests per seed."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest

from sagebench.errors import ConfigError
from sagebench.seeds import SeededStrategy, check_seeds, expand_seeds, format_seeds, seed_summary
from sagebench.strategies import get_strategy
from sagebench.testing import make_evidence


def _row(strategy, budget, acc, overall):
    return {"strategy": strategy, "budget": budget, "offloaded_accuracy": acc, "overall_accuracy": overall,
            "offloaded_accuracy_ci": [acc - 0.1, acc + 0.1], "overall_accuracy_ci": None, "ceiling_ratio": acc / 0.8}


def test_mean_and_spread_by_hand():
    results = [_row("random", 4, 0.5, 0.70), _row("sage", 4, 0.9, 0.9),
               _row("random@seed1", 4, 0.6, 0.72), _row("random@seed2", 4, 0.7, 0.77)]
    block = seed_summary(results, [0, 1, 2], run_seed=0)
    (row,) = block["rows"]  # sage draws no randomness: no row
    assert row["strategy"] == "random" and row["seeds"] == [0, 1, 2]
    acc = row["offloaded_accuracy"]
    # mean (0.5 + 0.6 + 0.7) / 3 = 0.6; sample std sqrt((0.1^2 + 0 + 0.1^2) / 2) = 0.1
    assert acc["mean"] == pytest.approx(0.6) and acc["std"] == pytest.approx(0.1)
    assert (acc["min"], acc["max"]) == (0.5, 0.7)
    overall = row["overall_accuracy"]
    # mean (0.70 + 0.72 + 0.77) / 3 = 0.73; deviations -0.03, -0.01, 0.04: std sqrt(0.0026 / 2)
    assert overall["mean"] == pytest.approx(0.73) and overall["std"] == pytest.approx(math.sqrt(0.0026 / 2))
    assert [p["offloaded_accuracy_ci"] for p in row["per_seed"]][0] == [0.4, 0.6]  # each seed keeps its interval
    assert "random: B=4: 60.0 +- 10.0 [50.0, 70.0]" in format_seeds(block)


def test_seeds_are_checked_and_only_seeded_strategies_are_expanded():
    assert check_seeds(None, 0) is None and check_seeds([0, 3], 0) == [0, 3]
    for bad in ([], [1, 2], [0, 0], [0, "1"], [0, True]):
        with pytest.raises(ConfigError):
            check_seeds(bad, 0)
    strategies = [get_strategy("random"), get_strategy("sage")]
    out = expand_seeds(strategies, [0, 1, 2], run_seed=0)
    assert [s.label for s in out] == ["random", "sage", "random@seed1", "random@seed2"]


def test_a_seeded_copy_is_the_strategy_at_that_seed():
    evidence = make_evidence(grid=(8, 8), b=5, seed=0)
    at_three = make_evidence(grid=(8, 8), b=5, seed=3)
    random = get_strategy("random")
    copy = SeededStrategy(random, 3)
    assert copy.choose(evidence, 6).indices.equal(random.choose(at_three, 6).indices)
    assert not copy.choose(evidence, 6).indices.equal(random.choose(evidence, 6).indices)
    assert evidence.seed == 0  # the caller's evidence is left as it was


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_seeds_in_one_run_equal_runs_at_each_seed_and_compare_per_seed(tmp_path):
    from sagebench.config import load_config
    from sagebench.leaderboard.compare import compare, format_comparison
    from sagebench.sweep.evaluate import evaluate

    sweep = ["data.limit=40", "batch_size=20", "budgets=[4,12]", "strategies=[random,sage]", "logger=none",
             "progress=false", "data.num_workers=0", "gate.name=all", "edge_cost.images=0"]
    multi = evaluate(load_config("fmnist", [*sweep, "seeds=[0,1]", f"output_dir={tmp_path / 'multi'}"]))
    single = evaluate(load_config("fmnist", [*sweep, "seed=1", f"output_dir={tmp_path / 'one'}"]))
    records = pq.read_table(tmp_path / "multi" / "samples.parquet").to_pandas()
    alone = pq.read_table(tmp_path / "one" / "samples.parquet").to_pandas()
    for b in (4, 12):
        assert (records[f"pred/random@seed1/B{b}"] == alone[f"pred/random/B{b}"]).all()
    rows = {(r["strategy"], r["budget"]): r for r in single["results"]}
    block = {(r["strategy"], r["budget"]): r for r in multi["seeds"]["rows"]}
    seed1 = block[("random", 4)]["per_seed"][1]
    assert seed1["seed"] == 1 and seed1["offloaded_accuracy"] == rows[("random", 4)]["offloaded_accuracy"]
    cmp = compare(str(tmp_path / "multi"), None, ["sage", "random"])
    assert [s["b"] for s in cmp["per_seed"]] == ["random@seed1"]
    assert "the same paired test at each other seed" in format_comparison(cmp)
    # a seeds run is not a board entry: its @seed rows are no methods, and would never reproduce at the run seed
    from sagebench.errors import SageBenchError
    from sagebench.leaderboard.store import submit

    with pytest.raises(SageBenchError, match=r"seeds=\[...\].*random@seed1"):
        submit(str(tmp_path / "multi"), root=tmp_path / "boards")
    assert not (tmp_path / "boards").exists() or not any((tmp_path / "boards").iterdir())
    assert submit(str(tmp_path / "one"), root=tmp_path / "boards").name  # the plain run goes in
