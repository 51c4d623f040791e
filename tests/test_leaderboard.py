"""The shared leaderboard: submit (with its refusals), show, render, paired compare, pull from W&B."""

from __future__ import annotations

import copy
import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import wandb_offline

from sagebench import leaderboard as lb
from sagebench import stats
from sagebench.cli import main
from sagebench.reporting import wandb as tracking
from sagebench.results import fingerprint


@pytest.fixture
def root(tmp_path):
    return tmp_path / "leaderboards"


@pytest.fixture
def results(small_run):
    run_dir, _ = small_run
    return json.loads((run_dir / "results.json").read_text())


def _write_run(tmp_path, results, samples_from=None, name="run"):
    run = tmp_path / name
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results))
    if samples_from is not None:
        shutil.copy(samples_from / "samples.parquet", run / "samples.parquet")
    return run


def _other_benchmark(results, **changes):
    """A valid results dict of another benchmark (fields changed, fingerprint recomputed)."""
    other = copy.deepcopy(results)
    other["benchmark"].update(changes)
    other["benchmark"]["fingerprint"] = fingerprint(lb.benchmark_fields(other["benchmark"]))
    return other


def _reported(results, source="Paper, Table III"):
    return {"schema_version": "1.0", "reported": True, "source": source,
            "benchmark": results["benchmark"], "num_images": results["num_images"],
            "ceiling": {"offloaded_accuracy": 0.9},
            "results": [{"strategy": "paper-sage", "budget": 4, "offloaded_accuracy": 0.5},
                        {"strategy": "paper-sage", "budget": 8, "offloaded_accuracy": 0.8}]}


# -- submit, show, render ------------------------------------------------------------------------


def test_submit_show_render_end_to_end(small_run, root, capsys):
    run_dir, res = small_run
    assert main(["leaderboard", "--root", str(root), "submit", str(run_dir), "--create"]) == 0
    board = root / "fmnist-embedded"  # default board: the benchmark's name
    meta = json.loads((board / "board.json").read_text())
    assert meta["fingerprint"] == res["benchmark"]["fingerprint"]
    entries = sorted((board / "entries").iterdir())
    assert [p.suffix for p in entries] == [".json", ".parquet"]
    assert entries[1].name == entries[0].stem + ".samples.parquet"
    assert json.loads(entries[0].read_text())["results"] == json.loads((run_dir / "results.json").read_text())["results"]

    assert main(["leaderboard", "--root", str(root), "show"]) == 0
    out = capsys.readouterr().out
    assert "score: mean ceiling ratio" in out and "B=4" in out and "B=8" in out
    assert meta["budgets"] == [4, 8]  # declared by the board's first entry
    ranking = lb.rank_board(lb.get_board("fmnist-embedded", root))
    scores = [r.score for r in ranking.ranked]
    assert scores == sorted(scores, reverse=True) and ranking.ranked[0].rank == 1
    assert {r.strategy for r in ranking.ranked} == {"random", "uniform", "attention_prefix", "sage"}

    assert main(["leaderboard", "--root", str(root), "render"]) == 0
    readme = (board / "README.md").read_text()
    assert ("| rank | strategy | B=4 | B=8 | score [95% CI] | ceiling | edge cost @B=4: MACs (ms†) | edge | server | "
            "sagebench | date |") in readme
    # sage at B=4 on the 7x7 grid of 48-dim embeddings: B K D = 4 * 8 * 48 = 1536 MACs, beside its measured time
    sage_row = next(line for line in readme.splitlines() if "| sage |" in line)
    assert "| 1.54k (" in sage_row and " ms†) |" in sage_row
    assert (board / "curves.png").stat().st_size > 1000
    best = ranking.ranked[0]
    assert best.rank_low == 1 and best.rank_label == ("1" if best.rank_high == 1 else f"1-{best.rank_high}")
    assert f"| {best.rank_label} | {best.strategy} |" in readme


def test_refuses_an_entry_that_breaks_the_schema(results, tmp_path, root, capsys):
    bad = copy.deepcopy(results)
    bad["results"][0]["offloaded_accuracy"] = 1.5
    assert main(["leaderboard", "--root", str(root), "submit", str(_write_run(tmp_path, bad))]) == 2
    err = capsys.readouterr().err
    assert "sagebench: error:" in err and "results schema" in err and "results/0/offloaded_accuracy" in err
    bad = copy.deepcopy(results)
    del bad["benchmark"]["edge"]
    with pytest.raises(lb.LeaderboardError, match="'edge' is a required property"):
        lb.submit(bad, root=root)
    with pytest.raises(lb.LeaderboardError, match="provenance"):
        lb.submit({k: v for k, v in results.items() if k != "provenance"}, root=root)
    assert not root.exists(), "nothing is written for a refused entry"


def test_refuses_an_edited_fingerprint_and_a_foreign_benchmark(small_run, results, root):
    tampered = copy.deepcopy(results)
    tampered["benchmark"]["threshold"] = 0.5  # fingerprint left as it was
    with pytest.raises(lb.LeaderboardError, match="does not match its benchmark fields"):
        lb.submit(tampered, root=root)
    lb.submit(small_run[0], root=root)
    other = _other_benchmark(results, threshold=0.5)
    with pytest.raises(lb.LeaderboardError, match=r"not comparable \(differs in: threshold\)"):
        lb.submit(other, root=root, board="fmnist-embedded")
    with pytest.raises(lb.LeaderboardError, match="not comparable"):
        lb.submit(other, root=root)  # same name, so the same default board
    saved = lb.submit(other, root=root, board="fmnist-embedded-gate0.5", samples=small_run[0] / "samples.parquet")
    assert saved.path.parent.parent.name == "fmnist-embedded-gate0.5"


def test_refuses_a_duplicate_even_when_re_measured(small_run, results, root):
    lb.submit(small_run[0], root=root)
    with pytest.raises(lb.LeaderboardError, match="duplicates entry"):
        lb.submit(small_run[0], root=root)
    again = copy.deepcopy(results)
    again["provenance"]["utc_time"] = "2030-01-01T00:00:00+00:00"  # a rerun: same numbers, later
    with pytest.raises(lb.LeaderboardError, match="duplicates entry"):
        lb.submit(again, root=root, samples=small_run[0] / "samples.parquet")


def test_refuses_a_per_sample_file_that_does_not_belong(small_run, results, tmp_path, root):
    run_dir, _ = small_run
    other = copy.deepcopy(results)
    other["results"][0]["num_correct"] += 1
    other["results"][0]["offloaded_accuracy"] = other["results"][0]["num_correct"] / other["num_offloaded"]
    with pytest.raises(lb.LeaderboardError, match="do not belong together"):
        lb.submit(_write_run(tmp_path, other, samples_from=run_dir), root=root)


def test_names_are_sanitised_and_stay_inside_the_board(small_run, root):
    assert lb.safe_name("../../etc/passwd") == "etc-passwd"
    assert lb.safe_name("Paper: Table III (DeiT-S)") == "paper-table-iii-deit-s"
    for bad in ("..", "/", "  ", "../"):
        with pytest.raises(lb.LeaderboardError):
            lb.safe_name(bad)
    saved = lb.submit(small_run[0], root=root, board="../../outside", name="../x/../../y")
    assert saved.path == (root / "outside" / "entries" / "x-y.json").resolve()
    assert root.resolve() in saved.path.parents


def test_leaderboard_files_are_json_only(small_run, root, tmp_path):
    saved = lb.submit(small_run[0], root=root)
    text = saved.path.read_text().replace('"edge_accuracy": 0', '"edge_accuracy": NaN, "x": 0', 1)
    saved.path.write_text(text)
    with pytest.raises(lb.LeaderboardError, match="not valid JSON"):
        lb.get_board("fmnist-embedded", root).entries()
    table = pq.read_table(small_run[0] / "samples.parquet").append_column("note", pa.array(["x"] * 60))
    run = tmp_path / "strings"
    run.mkdir()
    shutil.copy(small_run[0] / "results.json", run / "results.json")
    pq.write_table(table, run / "samples.parquet")
    with pytest.raises(lb.LeaderboardError, match="numbers only"):
        lb.submit(run, root=tmp_path / "other-root")


def test_reported_rows_are_marked_and_never_ranked(small_run, results, root):
    lb.submit(small_run[0], root=root)
    lb.submit(_reported(results), root=root)
    with pytest.raises(lb.LeaderboardError, match="'source' is a required property"):
        lb.submit({k: v for k, v in _reported(results, "Other paper").items() if k != "source"}, root=root)
    board = lb.get_board("fmnist-embedded", root)
    ranking = lb.rank(board.entries())
    assert [r.strategy for r in ranking.reported] == ["paper-sage"]
    assert ranking.reported[0].rank is None and all(not r.reported for r in ranking.ranked)
    assert ranking.reported[0].score == pytest.approx((0.5 / 0.9 + 0.8 / 0.9) / 2)  # ratio from its own ceiling
    readme = lb.render(board).read_text()
    ranked_part, reported_part = readme.split("## Reported, not reproduced")
    assert "paper-sage" not in ranked_part
    assert "| reported | paper-sage |" in reported_part and "Paper, Table III" in reported_part
    shown = lb.format_board(board)
    assert "reported, not reproduced (not ranked)" in shown


# -- compare ---------------------------------------------------------------------------------------


def test_mcnemar_exact_values():
    assert lb.mcnemar_exact(0, 0) == 1.0
    assert lb.mcnemar_exact(3, 0) == pytest.approx(0.25)
    assert lb.mcnemar_exact(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert lb.mcnemar_exact(5, 5) == 1.0
    assert lb.mcnemar_exact(2000, 2100) == lb.mcnemar_exact(2100, 2000) < 0.2  # large n, exact, no overflow


def test_paired_bootstrap_matches_resampling_images():
    rng = np.random.default_rng(1)
    a = rng.random(400) < 0.7
    b = np.where(rng.random(400) < 0.8, a, ~a)
    lo, hi = lb.paired_bootstrap_ci(a, b)
    assert lo <= a.mean() - b.mean() <= hi
    idx = rng.integers(0, 400, (4000, 400))  # the textbook index bootstrap
    naive = np.quantile(a[idx].mean(1) - b[idx].mean(1), [0.025, 0.975])
    assert lo == pytest.approx(naive[0], abs=0.01) and hi == pytest.approx(naive[1], abs=0.01)
    assert lb.paired_bootstrap_ci(a, b) == (lo, hi), "fixed seed: the same interval every time"


def test_compare_two_entries_on_the_same_images(small_run, root, capsys):
    saved = lb.submit(small_run[0], root=root)
    cmp = lb.compare(saved.name, saved.name, ["sage", "uniform"], root=root)
    samples = pq.read_table(saved.samples_path).to_pydict()
    off = np.asarray(samples["offloaded"])
    label = np.asarray(samples["label"])
    assert [r["budget"] for r in cmp["rows"]] == [4, 8]
    for row in cmp["rows"]:
        a_ok = (np.asarray(samples[f"pred/sage/B{row['budget']}"]) == label)[off]
        b_ok = (np.asarray(samples[f"pred/uniform/B{row['budget']}"]) == label)[off]
        assert row["n"] == off.sum()
        assert row["diff"] == pytest.approx(a_ok.mean() - b_ok.mean())
        assert (row["only_a"], row["only_b"]) == ((a_ok & ~b_ok).sum(), (~a_ok & b_ok).sum())
        assert row["ci_low"] <= row["diff"] <= row["ci_high"]
        assert row["p_mcnemar"] == stats.mcnemar_score(row["only_a"], row["only_b"])  # the test the CI inverts
        assert row["p_exact"] == lb.mcnemar_exact(row["only_a"], row["only_b"])
        assert (row["ci_low"] <= 0 <= row["ci_high"]) == (row["p_mcnemar"] >= 0.05)
    assert main(["leaderboard", "--root", str(root), "compare", saved.name, str(small_run[0]),
                 "-s", "sage", "-s", "uniform"]) == 0
    out = capsys.readouterr().out
    assert "95% Tango score interval" in out and "McNemar" in out
    assert main(["leaderboard", "--root", str(root), "compare", saved.name, saved.name]) == 2
    assert "choose with --strategy" in capsys.readouterr().err


def test_compare_refuses_different_images(small_run, results, tmp_path, root):
    run_dir, _ = small_run
    shifted = _write_run(tmp_path, results, name="shifted")
    table = pq.read_table(run_dir / "samples.parquet")
    ids = table.column("sample_id").to_numpy() + 1000  # other images, same counts
    table = table.set_column(table.column_names.index("sample_id"), "sample_id", pa.array(ids))
    pq.write_table(table, shifted / "samples.parquet")
    with pytest.raises(lb.LeaderboardError, match="different images"):
        lb.compare(str(run_dir), str(shifted), ["sage"], root=root)
    no_samples = _write_run(tmp_path, results, name="bare")
    with pytest.raises(lb.LeaderboardError, match="no per-sample file"):
        lb.compare(str(run_dir), str(no_samples), ["sage"], root=root)
    other = _write_run(tmp_path, _other_benchmark(results, threshold=0.5), samples_from=run_dir, name="other")
    with pytest.raises(lb.LeaderboardError, match="different benchmarks"):
        lb.compare(str(run_dir), str(other), ["sage"], root=root)


# -- pull from W&B (public API shapes, no network) ---------------------------------------------


class FakeApi:
    """Stands in for ``wandb.Api()``: ``runs(path, filters=...)`` returns run-like objects."""

    def __init__(self, runs):
        self._runs = runs
        self.calls = []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        return iter(self._runs)


def _api_run(run_id, summary, config, state="finished", raw_config=False):
    if raw_config:  # the raw GraphQL shape: {"key": {"value": ..., "desc": ...}}
        config = {k: {"value": v, "desc": None} for k, v in config.items()}
    return SimpleNamespace(id=run_id, name=f"run-{run_id}", state=state, summary_metrics=summary, config=config,
                           path=["team", "sagebench", run_id], url=f"https://wandb.ai/team/sagebench/runs/{run_id}")


def test_pull_builds_validated_entries_from_wandb_runs(small_run, results, root):
    # the summary exactly as sagebench logged it (read back from the offline run) plus W&B's own keys
    logged = wandb_offline.sweep_run(small_run[0])
    summary = json.loads(json.dumps(logged.summary))
    per_strategy = next(iter(wandb_offline.strategy_runs(small_run[0]).values()))
    runs = [
        _api_run("strat1", json.loads(json.dumps(per_strategy.summary)), per_strategy.config),
        _api_run("abc123", summary, logged.config),
        _api_run("raw456", summary, logged.config, raw_config=True),  # same numbers: a duplicate
        _api_run("crash7", summary, logged.config, state="crashed"),
        _api_run("other8", {"loss": 0.1, "_step": 3}, {"lr": 0.1}),
        _api_run("gate09", {**tracking.summary_metrics(_other_benchmark(results, threshold=0.5))},
                 logged.config),
    ]
    api = FakeApi(runs)
    outcomes = {o.run_id: o for o in lb.pull_wandb("team/sagebench", board="fmnist-embedded", root=root, api=api)}
    assert api.calls == [("team/sagebench", {"state": "finished"})]
    assert outcomes["abc123"].entry == "wandb-abc123" and outcomes["abc123"].board == "fmnist-embedded"
    assert "duplicates entry" in outcomes["raw456"].skipped
    assert "not finished" in outcomes["crash7"].skipped
    assert "not logged by sagebench" in outcomes["other8"].skipped
    assert "not comparable" in outcomes["gate09"].skipped
    assert "per-strategy view" in outcomes["strat1"].skipped
    assert not outcomes["abc123"].verified  # no artifact to fetch records from: listed, never ranked
    entry = json.loads((root / "fmnist-embedded" / "entries" / "wandb-abc123.json").read_text())
    assert entry["benchmark"] == results["benchmark"]
    assert entry["config"] == results["config"]
    assert [(r["strategy"], r["budget"]) for r in entry["results"]] == \
        [(r["strategy"], r["budget"]) for r in results["results"]]
    for got, want in zip(entry["results"], results["results"]):
        assert got["latency_ms"] == pytest.approx(want["latency_ms"])
        # the W&B summary holds numbers only: the [low, high] intervals of results.json are not in it
        numbers = {k: v for k, v in want.items() if k != "latency_ms" and not isinstance(v, list)}
        assert {k: v for k, v in got.items() if k != "latency_ms"} == pytest.approx(numbers)
    assert entry["wandb_run"]["path"] == "team/sagebench/abc123"


def test_entry_from_wandb_takes_raw_or_plain_config(results):
    summary = json.loads(json.dumps(tracking.summary_metrics(results)))
    plain = lb.entry_from_wandb(summary, {"seed": 0, "_wandb": {}}, "n", "i")
    raw = lb.entry_from_wandb(summary, {"seed": {"value": 0, "desc": None}}, "n", "i")
    assert plain["config"] == raw["config"] == {"seed": 0}
    lb.validate_entry({**plain, "config": results["config"]})
    with pytest.raises(lb.LeaderboardError, match="ENTITY/PROJECT"):
        lb.pull_wandb("just-a-project", root=None, api=FakeApi([]))
    assert not math.isnan(plain["results"][0]["offloaded_accuracy"])


def test_boards_are_found_from_another_directory_and_submit_needs_create(small_run, tmp_path, monkeypatch, capsys):
    """Lookup order: --root, $SAGEBENCH_LEADERBOARDS, the enclosing repository, the shipped boards (read-only);
    a board that does not exist is created only with --create."""
    from sagebench.cli import main

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("SAGEBENCH_LEADERBOARDS", raising=False)
    assert main(["leaderboard", "show", "fmnist-embedded"]) == 0  # the shipped board, found from elsewhere
    assert "fmnist-embedded" in capsys.readouterr().out
    run_dir = small_run[0]
    assert main(["leaderboard", "submit", str(run_dir)]) == 2  # read-only: names --root
    assert "read-only" in capsys.readouterr().err
    root = tmp_path / "boards"
    assert main(["leaderboard", "--root", str(root), "submit", str(run_dir), "--board", "mine"]) == 2
    assert "--create" in capsys.readouterr().err and not (root / "mine").exists()
    assert main(["leaderboard", "--root", str(root), "submit", str(run_dir), "--board", "mine", "--create"]) == 0
    monkeypatch.setenv("SAGEBENCH_LEADERBOARDS", str(root))
    assert main(["leaderboard", "show", "mine"]) == 0


def test_what_evaluate_returns_is_submitted_as_is_with_its_records(small_run, tmp_path):
    """`lb.submit(evaluate(cfg))`: the typed results (not a dict) were taken for a path and failed."""
    run_dir, res = small_run
    saved = lb.submit(res, root=tmp_path / "boards")
    assert saved.samples_path is not None and saved.samples_path.is_file()
    assert saved.data["results"] == json.loads((run_dir / "results.json").read_text())["results"]
    assert "output_dir" not in saved.data and "report" not in saved.data
