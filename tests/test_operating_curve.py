"""The operating curve: a list of gate thresholds in one run equals separate runs, record for record."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from sagebench.errors import ConfigError
from sagebench.gates import get_gate, parse_thresholds
from sagebench.metrics import SweepLayout
from sagebench.operating_curve import format_curve, offloaded_at, operating_curve

# the shipped Fashion-MNIST pair (trained): its edge is sure of most images (min-entropy 0.001..1 bit on these),
# so these low thresholds each offload
# a different set of these 40 images
FMNIST = ["--config", "fmnist"]
SWEEP = ["data.limit=40", "batch_size=16", "budgets=[4,12]", "strategies=[random,sage]", "logger=none", "edge_cost.images=0",
         "progress=false", "data.num_workers=0"]
THRESHOLDS = [0.01, 0.05, 0.2]


def test_thresholds_parse_as_number_list_or_inclusive_range():
    assert parse_thresholds(1.0) == (1.0,)
    assert parse_thresholds([1.5, 0.5, 1.0, 0.5]) == (0.5, 1.0, 1.5)
    assert parse_thresholds({"start": 0.5, "stop": 2.5, "step": 0.5}) == (0.5, 1.0, 1.5, 2.0, 2.5)
    assert parse_thresholds({"start": 0.0, "stop": 0.3, "step": 0.1}) == (0.0, 0.1, 0.2, 0.3)
    for bad in ([], ["x"], {"start": 1, "stop": 0, "step": 0.5}, {"start": 0, "stop": 1}, float("nan"), True):
        with pytest.raises(ConfigError):
            parse_thresholds(bad)


def test_a_single_threshold_gate_is_what_it_always_was():
    gate = get_gate("min_entropy", threshold=1.0)
    assert gate.identity() == {"gate": "min_entropy", "threshold": 1.0} and not gate.curve
    curve = get_gate("min_entropy", threshold=[2.0, 0.5])
    # the primary (lowest) threshold decides and is what identity() (run key, fingerprint) records
    assert curve.curve and curve.thresholds == (0.5, 2.0) and curve.identity() == {"gate": "min_entropy",
                                                                                     "threshold": 0.5}


def test_scores_are_rethresholded_in_the_gates_own_float32():
    # 0.1 is not a float32: a float32 score equal to float32(0.1) is NOT above 0.1 for the gate (float32
    # comparison), although its float64 copy is above the float64 0.1
    import torch

    score32 = torch.tensor([0.1], dtype=torch.float32)
    gate_says = bool(get_gate("min_entropy").offload_at(score32, 0.1)[0])
    assert bool(offloaded_at(score32.double().numpy(), 0.1)[0]) == gate_says
    assert bool(score32.double().numpy()[0] > 0.1) != gate_says


def _rows():
    """A hand-made 5-image record matrix: one cell, scores 0.2 0.6 1.2 2.0 3.0, all served (lowest eta 0)."""
    layout = SweepLayout((("s", 4),), scored=True)
    col = layout.column
    rows = np.full((5, layout.num_columns), -1.0)
    rows[:, col("sample_id")] = np.arange(5)
    rows[:, col("label")] = [0, 1, 2, 3, 4]
    rows[:, col("edge_pred")] = [0, 1, 9, 9, 9]  # the edge is right on the two surest images
    rows[:, col("offloaded")] = 1.0
    rows[:, col("ceiling_pred")] = [0, 1, 2, 3, 9]
    rows[:, col("pred", 0)] = [9, 1, 2, 9, 9]
    rows[:, col("bytes", 0)] = 100.0
    rows[:, col("gate_score")] = [0.25, 0.75, 1.25, 2.0, 3.0]
    return rows, layout


def test_the_curve_counts_by_hand():
    rows, layout = _rows()
    block = operating_curve(rows, layout, [0.0, 1.0, 2.5], gate="min_entropy", full_image_bytes=3072.0)
    by = {r["threshold"]: r for r in block["curve"]}
    # eta 0: all 5 offloaded; server right on images 1, 2 -> 2/5; 100 bytes each
    assert by[0.0]["offload_share"] == 1.0 and by[0.0]["system_accuracy"] == 2 / 5
    assert by[0.0]["bytes_per_image"] == 100.0
    # eta 1: images 2, 3, 4 offloaded (server right on 2), kept 0, 1 (edge right on both) -> 3/5; 300/5 bytes
    assert by[1.0]["offload_share"] == 3 / 5 and by[1.0]["system_accuracy"] == 3 / 5
    assert by[1.0]["bytes_per_image"] == 60.0 and by[1.0]["offloaded_accuracy"] == 1 / 3
    # eta 2.5: image 4 offloaded (server wrong), edge right on 0, 1 -> 2/5; ceiling: same (ceiling wrong on 4)
    assert by[2.5]["system_accuracy"] == 2 / 5 and by[2.5]["bytes_per_image"] == 20.0
    assert [p["ceiling"]["system_accuracy"] for p in block["points"]] == [4 / 5, 4 / 5, 2 / 5]
    assert block["edge_only"]["system_accuracy"] == 2 / 5
    assert block["server_only"]["system_accuracy"] == 4 / 5 and block["server_only"]["bytes_per_image"] == 3072.0
    lo, hi = by[1.0]["system_accuracy_ci"]
    assert lo < 3 / 5 < hi
    assert "eta 1 (60.0%)" in format_curve(block)


def test_an_unserved_image_leaves_the_server_only_point_as_bounds():
    rows, layout = _rows()
    rows[0, layout.column("offloaded")] = 0.0  # lowest threshold 0.5: image 0 (score 0.25) kept, never served
    block = operating_curve(rows, layout, [0.5, 1.0])
    server = block["server_only"]
    assert server["system_accuracy"] is None and server["images_known"] == 4
    assert server["system_accuracy_bounds"] == [3 / 5, 4 / 5] and "not for the other 1" in server["note"]
    with pytest.raises(ValueError, match="did not serve"):
        operating_curve(rows, layout, [0.1, 1.0])


def _run(tmp_path, name, *extra):
    from sagebench.config import load_config
    from sagebench.sweep.evaluate import evaluate

    cfg = load_config("fmnist", [*SWEEP, f"output_dir={tmp_path / name}", *extra])
    return evaluate(cfg), pq.read_table(tmp_path / name / "samples.parquet").to_pandas()


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_a_threshold_list_equals_separate_runs_record_for_record(tmp_path):
    multi, records = _run(tmp_path, "multi", f"gate.threshold=[{','.join(map(str, THRESHOLDS))}]")
    curve = multi["operating_curve"]
    cells = [(r["strategy"], r["budget"]) for r in multi["results"]]
    separate = {}
    for eta in THRESHOLDS:
        results, single = _run(tmp_path, f"eta{eta}", f"gate.threshold={eta}")
        separate[eta] = results
        assert "gate_score" not in single.columns and "operating_curve" not in results
        off = offloaded_at(records["gate_score"].to_numpy(), eta)
        assert (off == single["offloaded"].to_numpy()).all()
        assert 0 < off.sum() < len(off)  # a threshold that tells the images apart
        for column in ("sample_id", "label", "edge_pred"):
            assert (records[column] == single[column]).all()
        for column in [c for c in single.columns if c.startswith(("pred/", "coverage/", "units/", "bytes/"))] + \
                ["ceiling_pred"]:
            assert (records[column][off] == single[column][off]).all(), (eta, column)
            assert (single[column][~off] == -1).all()
        (point,) = [p for p in curve["points"] if p["threshold"] == eta]
        assert point["num_offloaded"] == results["num_offloaded"]
        assert point["ceiling"]["system_accuracy"] == results["ceiling"]["overall_accuracy"]
        assert point["ceiling"]["offloaded_accuracy"] == results["ceiling"]["offloaded_accuracy"]
        points = {(r["strategy"], r["budget"]): r for r in curve["curve"] if r["threshold"] == eta}
        for row in results["results"]:
            mine = points[(row["strategy"], row["budget"])]
            assert mine["system_accuracy"] == row["overall_accuracy"]
            assert mine["system_accuracy_ci"] == row["overall_accuracy_ci"]
            assert mine["offloaded_accuracy"] == row["offloaded_accuracy"]
            assert mine["offload_share"] == results["num_offloaded"] / results["num_images"]
            assert mine["bytes_per_image"] == pytest.approx(row["bytes_sent"] * results["num_offloaded"]
                                                            / results["num_images"])
    lowest = separate[THRESHOLDS[0]]
    # the primary results are the lowest threshold's run, on the same benchmark (fingerprint)
    assert multi["results"] == lowest["results"] and multi["ceiling"] == lowest["ceiling"]
    assert multi["benchmark"]["fingerprint"] == lowest["benchmark"]["fingerprint"]
    # the server ran once per (offloaded image, cell): as the lowest threshold's run, not once per threshold
    passes = multi["timing"]["server_passes"]
    assert passes == lowest["timing"]["server_passes"]
    assert passes["images_run"] + passes["images_reused"] == lowest["num_offloaded"] * len(cells)
    assert passes["images_run"] < sum(r["timing"]["server_passes"]["images_run"] for r in separate.values())


def test_the_system_view_is_drawn_with_both_reference_points(tmp_path):
    from sagebench.reporting.plots import plot_operating_curve

    rows, layout = _rows()
    results = {"benchmark": {"name": "hand"}, "strategies": [{"label": "s"}],
               "operating_curve": operating_curve(rows, layout, [0.0, 1.0, 2.5], gate="min_entropy",
                                                  full_image_bytes=3072.0)}
    path = plot_operating_curve(results, tmp_path / "curve.png")
    assert path is not None and path.stat().st_size > 1000
    rows[0, layout.column("offloaded")] = 0.0  # server-only point known as bounds only: still drawn
    results["operating_curve"] = operating_curve(rows, layout, [0.5, 1.0])
    assert plot_operating_curve(results, tmp_path / "bounds.png") is not None
    assert plot_operating_curve({"results": []}, tmp_path / "none.png") is None


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_a_curve_run_fills_the_research_cache_but_is_served_live(tmp_path):
    cache = ["cache.edge=true", f"cache.dir={tmp_path / 'cache'}"]
    curve = f"gate.threshold=[{','.join(map(str, THRESHOLDS))}]"
    first, records = _run(tmp_path, "first", curve, *cache)
    again, rerun = _run(tmp_path, "again", curve, *cache)
    # the scores are not in the cache: the rerun reads every image (edge evidence from the cache) and keeps them
    assert rerun.equals(records) and again["operating_curve"] == first["operating_curve"]
    assert again["timing"]["edge_cache"]["offload"]["served_from_cache"] is False
    # the decisions, pixels and ceilings it cached are the primary threshold's: a run at it alone is served from them
    single, alone = _run(tmp_path, "single", f"gate.threshold={THRESHOLDS[0]}", *cache)
    assert single["timing"]["edge_cache"]["offload"]["served_from_cache"] is True
    assert alone.equals(records.drop(columns=["gate_score"]))
