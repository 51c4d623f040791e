"""Issue 23: a board entry is trusted because it was reproduced, not because it agrees with itself.

Each forgery of the issue is built here and shown refused (by ``submit``, ``verify``, or the board's
record of its benchmark) or flagged (by ``verify --reproduce``), and honest entries (a run of the
embedded benchmark, a plug-in strategy's, the shipped boards) reproduce.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sagebench import leaderboard as lb
from sagebench.cli import main
from sagebench.leaderboard import record as record_lib
from sagebench.leaderboard import reproduce as reproduce_lib
from sagebench.leaderboard.store import SHIPPED_ROOT, _canonical
from sagebench.leaderboard.validate import recompute
from sagebench.metrics import ROW_METRICS
from sagebench.results import fingerprint


@pytest.fixture
def root(tmp_path):
    return tmp_path / "leaderboards"


def _columns(run: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(run / "samples.parquet")
    return {n: c.to_numpy(zero_copy_only=False).copy() for n, c in zip(table.column_names, table.columns)}


def _forge(tmp_path: Path, run: Path, name: str, samples=None, results=None) -> Path:
    """A copy of ``run`` with its records edited by ``samples(columns)`` and every figure recomputed from
    them (so the entry agrees with itself, as a careful forger's does), then ``results(data)`` applied."""
    data = json.loads((run / "results.json").read_text())
    for key in ("output_dir", "report", "submission"):
        data.pop(key, None)
    cols = _columns(run)
    if samples is not None:
        samples(cols)
        summary = recompute(data, cols)
        for key in ("num_images", "num_offloaded", "edge_accuracy"):
            data[key] = summary[key]
        data["ceiling"].update({k: summary["ceiling"][k] for k in ("offloaded_accuracy", "overall_accuracy")})
        for row, got in zip(data["results"], summary["results"]):
            for metric in ROW_METRICS:
                row[metric.name] = got.get(metric.name)
    if results is not None:
        results(data)
    out = tmp_path / name
    out.mkdir()
    (out / "results.json").write_text(json.dumps(data))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({n: pa.array(v) for n, v in cols.items()}), sink)
    (out / "samples.parquet").write_bytes(sink.getvalue().to_pybytes())
    return out


def _flip(strategy: str):
    """Half of ``strategy``'s wrong offloaded predictions set to the label, at every budget."""
    def edit(cols):
        for key in [k for k in cols if k.startswith(f"pred/{strategy}/")]:
            wrong = np.flatnonzero(cols["offloaded"] & (cols[key] != cols["label"]))
            cols[key][wrong[::2]] = cols["label"][wrong[::2]]
    return edit


def _relabel(cols, n=20):
    """Labels set to sage's prediction on ``n`` offloaded images where sage is wrong at B=4."""
    wrong = np.flatnonzero(cols["offloaded"] & (cols["pred/sage/B4"] != cols["label"]))[:n]
    cols["label"][wrong] = cols["pred/sage/B4"][wrong]


def _cherry(cols):
    """``offloaded`` cleared on the images sage always gets wrong."""
    always = cols["offloaded"].copy()
    for key in [k for k in cols if k.startswith("pred/sage/")]:
        always &= cols[key] != cols["label"]
    for key in [k for k in cols if "/" in k or k == "ceiling_pred"]:
        cols[key][always] = -1 if (key.startswith("pred/") or key == "ceiling_pred") else 0
    cols["offloaded"][always] = False


def _shift_ids(cols):
    cols["sample_id"] = cols["sample_id"] + 10 ** 12


def _put_on_board(board: lb.Board, run: Path, name: str) -> None:
    """An entry written into the board folder by hand (not by submit), its hashes recomputed with plain sha256."""
    data = json.loads((run / "results.json").read_text())
    samples = (run / "samples.parquet").read_bytes()
    data["submission"] = {"utc_time": "1999-01-01T00:00:00+00:00"}
    data["submission"]["sha256"] = hashlib.sha256(_canonical(data)).hexdigest()
    data["submission"]["samples_sha256"] = hashlib.sha256(samples).hexdigest()
    (board.entries_dir / f"{name}.json").write_text(json.dumps(data))
    (board.entries_dir / f"{name}{lb.SAMPLES_SUFFIX}").write_bytes(samples)


# -- one record of the benchmark per board ----------------------------------------------------------


def test_the_first_entry_writes_the_board_record_with_its_hash(small_run, root):
    run, _ = small_run
    lb.submit(run, root=root, name="honest")
    board = lb.get_board(None, root)
    meta = board.meta()
    path = board.path / record_lib.RECORD_FILE
    assert meta["record"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    record = board.record()
    cols = _columns(run)
    assert record.num_images == meta["benchmark"]["num_images"] == len(cols["sample_id"])
    assert np.array_equal(record.offloaded, cols["offloaded"][np.argsort(cols["sample_id"])])
    path.write_bytes(path.read_bytes() + b"\0")  # replaced: refused by its hash
    with pytest.raises(lb.LeaderboardError, match="sha256 is not the one board.json records"):
        board.record()


def test_a_board_from_before_records_gets_one_from_its_entries_on_the_next_submit(small_run, root, tmp_path):
    run, _ = small_run
    lb.submit(run, root=root, name="honest")
    board = lb.get_board(None, root)
    meta = board.meta()
    meta.pop("record")
    (board.path / "board.json").write_text(json.dumps(meta))
    (board.path / record_lib.RECORD_FILE).unlink()
    assert any("names no record" in p for p in lb.verify(root)[0].problems)
    with pytest.raises(lb.LeaderboardError, match="label on 20"):  # checked against the existing entry's record
        lb.submit(_forge(tmp_path, run, "relabel", samples=_relabel), root=root, name="relabel")
    def only_sage(d):  # another honest entry: the same run's sage alone
        d["strategies"] = [x for x in d["strategies"] if x["label"] == "sage"]
        d["results"] = [r for r in d["results"] if r["strategy"] == "sage"]

    lb.submit(_forge(tmp_path, run, "later", results=only_sage), root=root, name="later")
    assert board.record() is not None and lb.verify(root)[0].ok


@pytest.mark.parametrize("forgery,refusal", [
    (_relabel, r"disagrees with the board's record .* on 20 of 60 ids \(label on 20\)"),
    (_cherry, r"disagrees with the board's record .* ids \(offloaded on \d+, ceiling_pred on \d+\)"),
    (_shift_ids, r"60 sample ids lie outside 0\.\.59"),
])
def test_forged_benchmark_columns_are_refused_by_submit(small_run, root, tmp_path, forgery, refusal):
    run, _ = small_run
    lb.submit(run, root=root, name="honest")
    forged = _forge(tmp_path, run, "forged", samples=forgery,
                    results=lambda d: d["provenance"].update(utc_time="1999-01-01T00:00:00+00:00"))
    with pytest.raises(lb.LeaderboardError, match=refusal):
        lb.submit(forged, root=root, name="forged")
    assert [e.name for e in lb.get_board(None, root).entries()] == ["honest"]


def test_a_forged_first_entry_cannot_use_ids_outside_the_benchmark(small_run, root, tmp_path):
    run, _ = small_run
    with pytest.raises(lb.LeaderboardError, match="outside 0..59"):
        lb.submit(_forge(tmp_path, run, "ids", samples=_shift_ids), root=root)


def test_an_early_dated_relabelled_entry_planted_in_the_folder_changes_nothing(small_run, root, tmp_path, capsys):
    """Before: the earliest-dated entry was the pairing reference, so a 1999-dated relabelled entry made every
    honest entry "measured, without a per-sample file". Now pairing is the board's record: the planted entry
    is a verify problem and is listed unverified; the honest one stays ranked."""
    run, _ = small_run
    lb.submit(run, root=root, name="honest")
    board = lb.get_board(None, root)
    forged = _forge(tmp_path, run, "relabel", samples=_relabel,
                    results=lambda d: d["provenance"].update(utc_time="1999-01-01T00:00:00+00:00"))
    _put_on_board(board, forged, "relabel")
    (report,) = lb.verify(root)
    assert any("relabel" in p and "label on 20" in p for p in report.problems)
    ranking = lb.rank_board(board)
    assert {e for r in ranking.ranked for e in r.entries} == {"honest"}
    assert "relabel" not in {e for r in ranking.ranked + ranking.unverified for e in r.entries}  # skipped: invalid


def test_a_board_without_a_record_pairs_only_entries_that_agree(small_run, root, tmp_path):
    """No earliest-dated reference any more: without a record, entries that disagree are none of them ranked."""
    run, _ = small_run
    honest = lb.load_run(run)[0]
    forged = json.loads((_forge(tmp_path, run, "relabel", samples=_relabel) / "results.json").read_text())
    entries = [lb.Entry("honest", honest, run / "results.json", run / "samples.parquet"),
               lb.Entry("relabel", forged, tmp_path / "relabel" / "results.json",
                        tmp_path / "relabel" / "samples.parquet")]
    assert lb.rank(entries).ranked == []
    assert lb.rank(entries[:1]).ranked


# -- verify: edited after submission -----------------------------------------------------------------


def test_an_entry_without_its_submission_block_is_a_verify_problem(small_run, root, capsys):
    run, _ = small_run
    entry = lb.submit(run, root=root, name="honest")
    data = json.loads(entry.path.read_text())
    data.pop("submission")
    entry.path.write_text(json.dumps(data))
    assert main(["leaderboard", "--root", str(root), "verify"]) == 1
    assert "submission block" in capsys.readouterr().err


# -- bounded reads ------------------------------------------------------------------------------------


def _amplified(path: Path, rows: int, names: list[str]) -> None:
    """A small parquet file claiming ``rows`` rows (constant, dictionary/RLE-encoded columns)."""
    zeros = pa.array(np.zeros(rows, dtype=np.int8))
    pq.write_table(pa.table({n: zeros for n in names}), path, use_dictionary=True, compression="zstd",
                   row_group_size=rows)


@pytest.mark.parametrize("new_board", [False, True])
def test_an_amplified_parquet_is_refused_from_its_footer(small_run, root, tmp_path, new_board):
    run, _ = small_run
    rows = 2 * 10 ** 7
    if not new_board:
        lb.submit(run, root=root, name="honest")
    data = json.loads((run / "results.json").read_text())
    data.pop("output_dir", None)
    if new_board:  # the entry claims the images itself: a new benchmark, so a new board
        data["num_images"] = rows
        data["benchmark"]["num_images"] = rows
        data["benchmark"]["fingerprint"] = fingerprint(lb.benchmark_fields(data["benchmark"]))
    bomb = tmp_path / "bomb"
    bomb.mkdir()
    (bomb / "results.json").write_text(json.dumps(data))
    _amplified(bomb / "samples.parquet", rows, lb.validate.sample_columns(data)[:6])
    assert (bomb / "samples.parquet").stat().st_size < 1_000_000
    started = time.perf_counter()
    with pytest.raises(lb.LeaderboardError, match="refused before reading it"):
        lb.submit(bomb, root=root, board="bomb" if new_board else None, name="bomb")
    assert time.perf_counter() - started < 2.0


# -- precision mixing -----------------------------------------------------------------------------


def test_an_entry_run_at_another_precision_is_refused_from_the_full_precision_board(small_run, root, tmp_path):
    run, _ = small_run
    lb.submit(run, root=root, name="fp32")
    mixed = _forge(tmp_path, run, "bf16", results=lambda d: (
        d["benchmark"].update(precision="bf16-mixed"), d["provenance"].update(precision="bf16-mixed"),
        d["benchmark"].update(fingerprint=fingerprint(lb.benchmark_fields(d["benchmark"])))))
    board = lb.get_board(None, root).name
    with pytest.raises(lb.LeaderboardError, match="differs in: precision"):
        lb.submit(mixed, root=root, board=board, name="bf16")


# -- reproduction -----------------------------------------------------------------------------------


def test_draw_takes_offloaded_and_kept_images_by_the_verifiers_seed():
    rec = record_lib.BenchmarkRecord(np.arange(100), np.zeros(100, int), np.zeros(100, int), np.arange(100) < 40,
                                     np.zeros(100, int))
    a, b = reproduce_lib.draw(rec, 8, 1), reproduce_lib.draw(rec, 8, 2)
    assert len(a) == 10 and (a < 40).sum() == 8 and not np.array_equal(a, b)
    assert np.array_equal(a, reproduce_lib.draw(rec, 8, 1))
    assert len(reproduce_lib.draw(rec, 500, 0)) == 40 + 60 and len(reproduce_lib.draw(rec, 500, 0)) == 100


def test_code_identity_decides_whether_a_strategy_can_be_rerun_here():
    from sagebench.strategies.registry import strategy_class

    here = strategy_class("sage").code_identity()
    assert reproduce_lib._code_problem({"name": "sage", "code": here}) is None
    assert reproduce_lib._code_problem({"name": "sage"}) is None  # entries from before code identity
    other = {**here, "source_sha256": "0" * 16}
    assert "is not the code the entry ran" in reproduce_lib._code_problem({"name": "sage", "code": other})
    missing = {"name": "my_method", "code": {"distribution": "my-package", "source_sha256": "1" * 16}}
    assert reproduce_lib._code_problem(missing) == "strategy `my_method` from package `my-package` is not installed here"


@pytest.mark.slow
def test_reproduce_flags_forged_entries_and_reproduces_honest_ones(small_run, random_models_overrides, root,
                                                                   tmp_path, capsys):
    """An honest run and a plug-in strategy's reproduce; a flipped entry (submitted, or planted with its hashes
    recomputed), an oracle renamed my_method, or an oracle whose flag was dropped, are flagged or marked."""
    from sagebench.config import load_config
    from sagebench.plugins import STRATEGIES
    from sagebench.strategies.base import Strategy
    from sagebench.strategies.registry import register_strategy
    from sagebench.strategies.uniform import UniformGridStrategy
    from sagebench.sweep.evaluate import evaluate

    run, _ = small_run
    lb.submit(run, root=root, name="honest")
    lb.submit(_forge(tmp_path, run, "flip", samples=_flip("sage")), root=root, name="flip")  # accepted: consistent
    board = lb.get_board(None, root)
    _put_on_board(board, _forge(tmp_path, run, "flip2", samples=_flip("attention_prefix")), "flip-planted")
    assert lb.verify(root)[0].ok  # a recomputable hash is no signature: the files agree with one another

    @register_strategy("test_trust_plugin")
    class Plugin(UniformGridStrategy):
        """A plug-in strategy (uniform under another name)."""

    assert issubclass(Plugin, Strategy)
    try:
        out = tmp_path / "oracle-run"
        cfg = load_config(None, [*random_models_overrides, "data.limit=60", "budgets=[4,8]", f"output_dir={out}",
                                 "strategies=[server_attention_oracle,test_trust_plugin]"])
        evaluate(cfg)
        lb.submit(out, root=root, name="plugin-and-oracle")
        def rename(d):  # the oracle's records as "my_method", without its flag, requirements or code identity
            d["strategies"][0] = {"label": "my_method", "name": "my_method", "options": d["strategies"][0]["options"]}
            d["config"]["strategies"] = ["my_method", "test_trust_plugin"]
            for r in d["results"]:
                r["strategy"] = r["strategy"].replace("server_attention_oracle", "my_method")

        renamed = _forge(tmp_path, out, "renamed", results=rename)
        cols = _columns(renamed)
        cols = {k.replace("/server_attention_oracle/", "/my_method/"): v for k, v in cols.items()}
        pq.write_table(pa.table(cols), renamed / "samples.parquet")
        lb.submit(renamed, root=root, name="renamed")
        unflagged = _forge(tmp_path, out, "unflagged", results=lambda d: (
            d["strategies"][0].pop("oracle"), d["strategies"][0].pop("requires")))
        _put_on_board(board, unflagged, "unflagged")

        assert main(["leaderboard", "--root", str(root), "verify", "--reproduce", "--sample", "12", "--seed", "7",
                     "--write"]) == 1
        text = capsys.readouterr()
        lines = {line.split(": ")[1]: line for line in text.out.splitlines() if line.count(": ") >= 2}
        k = len(reproduce_lib.draw(board.record(), 12, 7))
        assert f"reproduced on {k} images" in lines["honest"]
        assert "differs on" in lines["flip"] and "pred/sage/B" in lines["flip"]
        assert "differs on" in lines["flip-planted"]
        assert "reproduced" in lines["plugin-and-oracle"] and "oracle by its requirements: server_attention_oracle" \
            in lines["plugin-and-oracle"]
        assert "cannot reproduce here (strategy `my_method` is not installed here)" in lines["renamed"]
        assert "oracle by its requirements: server_attention_oracle" in lines["unflagged"]
    finally:
        STRATEGIES.unregister("test_trust_plugin")
    ranking = lb.rank_board(board)
    ranked = {e for r in ranking.ranked for e in r.entries}
    assert "flip" not in ranked and "flip-planted" not in ranked and "honest" in ranked
    assert {"flip", "flip-planted", "renamed"} <= {e for r in ranking.unverified for e in r.entries}
    assert "renamed" not in ranked and not any(r.strategy == "my_method" for r in ranking.ranked)
    assert all(r.oracle for r in ranking.ranked + ranking.oracles if r.strategy == "server_attention_oracle")
    assert not any(r.strategy == "server_attention_oracle" for r in ranking.ranked)
    readme = lb.render(board).read_text()
    assert "| reproduced |" in readme and "DIFFERS" in readme and f"yes ({k})" in readme


@pytest.mark.slow
def test_the_shipped_boards_reproduce():
    reports = lb.verify(SHIPPED_ROOT, reproduce=True, sample=16, seed=3, strict=True)
    for report in reports:
        assert report.ok, report.problems
        assert all(o.status in (reproduce_lib.REPRODUCED, reproduce_lib.REPORTED) for o in report.outcomes), \
            [o.line for o in report.outcomes]


def test_a_stored_outcome_is_dropped_once_its_entry_changes(small_run, root):
    run, _ = small_run
    entry = lb.submit(run, root=root, name="honest")
    board = lb.get_board(None, root)
    outcome = reproduce_lib.Outcome("honest", reproduce_lib.REPRODUCED, images=5,
                                    entry_sha256=reproduce_lib.entry_digest(entry.data))
    reproduce_lib.write_outcomes(board, [outcome], 5, 0)
    assert reproduce_lib.stored(board)["honest"]["status"] == "reproduced"
    assert "yes (5)" in lb.format_board(board)
    data = copy.deepcopy(entry.data)
    data["provenance"]["utc_time"] = "1999-01-01T00:00:00+00:00"
    entry.path.write_text(json.dumps(data))
    assert reproduce_lib.stored(board) == {}


def test_reproduction_never_takes_code_from_the_entrys_config(small_run, tmp_path):
    """The stored config's trainer section may name classes to import (callbacks, loggers): a rerun
    rebuilds it (keeping only the precision), and a config with interpolations is refused."""
    run, _ = small_run
    data = json.loads((run / "results.json").read_text())
    data["config"]["trainer"] = {"accelerator": "auto", "precision": "bf16-mixed",
                                 "callbacks": [{"class_path": "os.system", "init_args": {"command": "false"}}]}
    cfg = reproduce_lib._config(data, data["benchmark"], tmp_path / "out")
    assert dict(cfg.trainer) == {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed"}
    assert cfg.output_dir == str(tmp_path / "out") and cfg.logger == "none" and not cfg.resume
    data["config"]["seed"] = "${oc.env:HOME}"
    with pytest.raises(lb.LeaderboardError, match="interpolations"):
        reproduce_lib._config(data, data["benchmark"], tmp_path / "out")
