"""A live session (sagebench.open_session) gives the very records and results of a run of the same config.

Why these tests: a session serves the offloaded images it kept from its build to any strategies and
budgets without a Trainer; it is only worth having if its numbers are a run's numbers. Each test
compares a session's records array (bit for bit) and its results' numbers with ``evaluate()`` of the
config that names the same strategies and budgets.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import sagebench
from sagebench import Strategy
from sagebench.config import load_config
from sagebench.errors import ConfigError
from sagebench.sweep.evaluate import evaluate

# several server batches (of >= 12 offloaded images, queued across data batches of 40), a strategy with counters
# (the shipped Fashion-MNIST pair: trained, so that the gate keeps some images at the edge)
BASE = ["data.limit=240", "batch_size=40", "gate.threshold=0.3", "server_batch_size=12", "budgets=[4,12]",
        "strategies=[random,attention_prefix,sage,attention_threshold]", "logger=none", "progress=false",
        "data.num_workers=0"]
NUMBERS = ("num_images", "num_offloaded", "edge_accuracy", "ceiling", "results", "strategy_stats", "nonfinite",
           "skipped", "benchmark", "strategies", "transmission")


class CornersFirst(Strategy):
    """A strategy defined in the test only (not registered): the grid's patches from the last one back."""

    name = "corners_first_test"

    def select(self, evidence, budget: int) -> torch.Tensor:
        n = evidence.grid[0] * evidence.grid[1]
        order = torch.arange(n - 1, n - 1 - budget, -1, device=evidence.attention.device)
        return order.expand(evidence.batch_size, -1)


def _cli(overrides, tmp_path, name):
    res = evaluate(load_config("fmnist", [*overrides, f"output_dir={tmp_path / name}"]))
    return res, pq.read_table(tmp_path / name / "samples.parquet")


def _same_numbers(cli: dict, session: dict) -> None:
    for key in NUMBERS:
        assert cli[key] == session[key], key


@pytest.fixture(scope="module")
def session():
    return sagebench.open_session(load_config("fmnist", BASE))


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_a_session_gives_the_records_and_results_of_a_run(session, tmp_path):
    assert len(session._batches) > 1 and 0 < session.num_offloaded < session.num_images  # several server batches
    cli, table = _cli([*BASE], tmp_path, "cli")
    results = session.evaluate(output_dir=tmp_path / "session")
    assert np.array_equal(session.last_records.rows, pq.read_table(tmp_path / "cli" / "samples.parquet")
                          .to_pandas().to_numpy(dtype=np.float64))
    assert pq.read_table(tmp_path / "session" / "samples.parquet").equals(table)
    _same_numbers(cli, results.to_json())
    assert results.strategy_stats  # attention_threshold's counters, summed as a run sums them
    assert results.timing["server_passes"] == {k: v for k, v in cli["timing"]["server_passes"].items()}
    # evaluated again: the same (nothing it keeps was changed by the first evaluation)
    again = session.evaluate()
    assert np.array_equal(session.last_records.rows, table.to_pandas().to_numpy(dtype=np.float64))
    _same_numbers(cli, again.to_json())


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_other_strategies_and_budgets_equal_a_run_of_that_config(session, tmp_path):
    sagebench.register_strategy("corners_first_test")(CornersFirst)
    try:
        results = session.evaluate(["corners_first_test", "sage"], budgets=[8])
        rows = session.last_records.rows
        cli, table = _cli([*BASE, "strategies=[corners_first_test,sage]", "budgets=[8]"],
                          tmp_path, "cli")
    finally:
        from sagebench.plugins import STRATEGIES

        STRATEGIES.unregister("corners_first_test")
    assert np.array_equal(rows, table.to_pandas().to_numpy(dtype=np.float64))
    _same_numbers(cli, results.to_json())
    assert results.config["strategies"] == ["corners_first_test", "sage"] and results.config["budgets"] == [8]
    # an instance (not registered) gives the same records as its registered name
    session.evaluate([CornersFirst(), "sage"], budgets=[8])
    assert np.array_equal(session.last_records.rows, rows)


def test_a_strategy_needing_evidence_the_session_lacks_is_refused(session):
    with pytest.raises(ConfigError, match=r"requires=\['rollout'\]"):
        session.evaluate([sagebench.get_strategy("attention_prefix", importance="rollout")])
    with pytest.raises(ConfigError, match="at least one strategy, each once"):
        session.evaluate(["sage", "sage"])
    with pytest.raises(ConfigError, match="budget"):
        session.evaluate(["sage"], budgets=[10_000])


def test_a_session_never_writes_over_a_runs_results(session, tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match="never replaces"):
        session.evaluate(["uniform"], budgets=[4], output_dir=tmp_path)
    with pytest.raises(ConfigError, match="output_dir"):
        session.evaluate(["uniform"], budgets=[4], plots=True)


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_oracles_in_a_session_equal_a_run(tmp_path):
    """The server's attention (from the ceiling's forward, kept from the build) and its judge (asked per batch)."""
    base = [*BASE, "data.limit=120", "budgets=[4]"]
    oracles = ["server_attention_oracle", "best_of_random_oracle"]
    session = sagebench.open_session(load_config("fmnist", base), requires=["server_attention"])
    results = session.evaluate([*oracles, "sage"])
    cli, table = _cli([*base, f"strategies=[{','.join(oracles)},sage]"], tmp_path, "cli")
    assert np.array_equal(session.last_records.rows, table.to_pandas().to_numpy(dtype=np.float64))
    _same_numbers(cli, results.to_json())
