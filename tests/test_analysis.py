"""`sagebench analyze`: replacement, entropy split and coverage analyses of a finished run.

One tiny run (random-init demo models, 36 embedded images, every image offloaded, budgets 4
and 8, batches of 16 so the last batch is short) is analysed once per analysis; the tests
check the properties each analysis promises, against the run's own files.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import draw_no_figures

from sagebench import analysis
from sagebench.analysis import AnalysisError
from sagebench.cli import main

NUM_IMAGES = 36
BUDGETS = (4, 8)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, random_models_overrides):
    from sagebench.config import load_config
    from sagebench.sweep.evaluate import evaluate

    out = tmp_path_factory.mktemp("analysis_run") / "run"
    cfg = load_config(None, [*random_models_overrides, f"data.limit={NUM_IMAGES}", "gate.name=all",
                             "strategies=[attention_prefix,sage,random]", f"budgets=[{','.join(map(str, BUDGETS))}]",
                             "batch_size=16", f"output_dir={out}"])
    with pytest.MonkeyPatch.context() as mp:  # the run's own figures play no part here (conftest.no_figures)
        draw_no_figures(mp)
        evaluate(cfg)
    return out


@pytest.fixture(scope="module")
def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def samples(run_dir):
    table = pq.read_table(run_dir / "samples.parquet")
    return {name: table.column(name).to_numpy() for name in table.column_names}


@pytest.fixture(scope="module")
def replaced(run_dir):
    return analysis.replacement(run_dir)


@pytest.fixture(scope="module")
def split(run_dir):
    return analysis.entropy_split(run_dir)


def _edge_evidence_of(run_dir, sample_id: int):
    """The edge evidence of one image, rebuilt here from the run's config with the library's own parts."""
    from sagebench import data as data_lib
    from sagebench.config import load_config
    from sagebench.data import DataSpec
    from sagebench.edge.model import EdgeModel
    from sagebench.sweep.build import model_spec
    from sagebench.vit.loading import create_model

    cfg = load_config(str(run_dir / "config.yaml"))
    edge = EdgeModel(create_model(model_spec(cfg.model.edge))).eval()
    spec = DataSpec.from_config(cfg.data)
    view = data_lib.resolve_data_config(edge.vit, spec)
    images = data_lib.EvalImages(data_lib.load_source(spec), data_lib.build_transform(view), spec, view)
    image, _, sid = images[sample_id]
    with torch.no_grad():
        return edge(image.unsqueeze(0), sid.reshape(1), int(cfg.seed))


# --------------------------------------------------------------------------------------------
# replacement


def test_replacement_reports_every_budget_on_every_offloaded_image_and_reproduces_the_run(replaced):
    assert [b["budget"] for b in replaced["budgets"]] == list(BUDGETS)
    assert replaced["num_offloaded"] == replaced["num_analysed"] == NUM_IMAGES and replaced["limit"] is None
    assert replaced["strategies"] == {"prefix": "attention_prefix", "sage": "sage"}
    mismatches = replaced["reproduction_mismatches"]
    assert mismatches["edge_pred"] == 0 and mismatches["ceiling_pred"] == 0
    assert set(mismatches["coverage"].values()) == {0}


def test_sage_drops_exactly_as_many_units_as_it_adds(replaced):
    for row in replaced["budgets"]:
        b = str(row["budget"])
        added, dropped = replaced["images"]["by_budget"][b]["added"], replaced["images"]["by_budget"][b]["dropped"]
        assert [len(a) for a in added] == [len(d) for d in dropped]
        assert row["mean_added"] == row["mean_dropped"] == pytest.approx(np.mean([len(a) for a in added]))
        assert 0 <= row["mean_added"] <= row["budget"]
        assert row["images_changed"] == sum(1 for a in added if a)


def test_added_units_carry_less_edge_attention_than_the_dropped_ones(replaced):
    # the prefix is the top-B by edge attention: anything outside it is attended no more than anything in it
    for row in replaced["budgets"]:
        e = row["edge_attention"]
        if row["images_changed"]:
            assert e["added"] <= e["dropped"]
            assert e["mass_sage"] <= e["mass_prefix"] and 0 < e["mass_kept"] <= 1
        for v in (e["added"], e["dropped"], row["server_attention"]["added"], row["server_attention"]["dropped"]):
            assert v is None or 0 <= v <= 1


def test_added_units_are_outside_the_prefix_set_recomputed_for_one_image(run_dir, replaced):
    from sagebench.strategies import get_strategy

    k = next(i for i, a in enumerate(replaced["images"]["by_budget"]["8"]["added"]) if a)  # an image SAGE changed
    sample_id = replaced["images"]["sample_ids"][k]
    evidence = _edge_evidence_of(run_dir, sample_id)
    for budget in BUDGETS:
        prefix = set(get_strategy("attention_prefix").select(evidence, budget)[0].tolist())
        sage = get_strategy("sage").select(evidence, budget)[0].tolist()
        cell = replaced["images"]["by_budget"][str(budget)]
        added, dropped = cell["added"][k], cell["dropped"][k]
        assert not set(added) & prefix and set(dropped) <= prefix
        assert added == [u for u in sage if u not in prefix]  # in SAGE's pick order
        assert set(sage) == (prefix - set(dropped)) | set(added)


def test_fixed_minus_broken_is_the_difference_of_correct_counts_in_samples_parquet(replaced, samples):
    off = samples["offloaded"].astype(bool)
    for row in replaced["budgets"]:
        b = row["budget"]
        prefix_ok = int(((samples[f"pred/attention_prefix/B{b}"] == samples["label"]) & off).sum())
        sage_ok = int(((samples[f"pred/sage/B{b}"] == samples["label"]) & off).sum())
        acc = row["accuracy"]
        assert (acc["prefix_correct"], acc["sage_correct"]) == (prefix_ok, sage_ok)
        assert acc["fixed"] - acc["broken"] == sage_ok - prefix_ok
        assert acc["change"] == pytest.approx((sage_ok - prefix_ok) / NUM_IMAGES)


def test_replacement_needs_both_strategies_and_names_the_missing_one(run_dir, tmp_path):
    no_sage = tmp_path / "no_sage"
    shutil.copytree(run_dir, no_sage, ignore=shutil.ignore_patterns("analysis"))
    res = json.loads((no_sage / "results.json").read_text())
    res["strategies"] = [s for s in res["strategies"] if s["name"] != "sage"]
    res["results"] = [r for r in res["results"] if r["strategy"] != "sage"]
    (no_sage / "results.json").write_text(json.dumps(res))
    with pytest.raises(AnalysisError, match=r"needs both attention_prefix and sage.*missing sage"):
        analysis.replacement(no_sage)


# --------------------------------------------------------------------------------------------
# entropy split


def test_entropy_halves_partition_the_offloaded_images_at_the_median(split, samples):
    ids = np.asarray(split["images"]["sample_ids"])
    entropy = np.asarray(split["images"]["entropy"])
    low = np.asarray(split["images"]["half"]) == "low"
    assert sorted(ids.tolist()) == samples["sample_id"][samples["offloaded"].astype(bool)].tolist()
    assert low.sum() == NUM_IMAGES // 2 and (~low).sum() == NUM_IMAGES - NUM_IMAGES // 2
    assert entropy[low].max() <= split["entropy"]["median"] <= entropy[~low].min()
    assert np.all((entropy >= 0) & (entropy <= math.log(49) + 1e-9))  # 7x7 patches: at most log N nats


def test_entropy_halves_weigh_back_to_the_runs_offloaded_accuracy(split, results):
    by_key = {(r["strategy"], r["budget"]): r for r in results["results"]}
    assert {(c["strategy"], c["budget"]) for c in split["cells"]} == set(by_key)
    for c in split["cells"]:
        assert c["low"]["count"] + c["high"]["count"] == results["num_offloaded"]
        weighted = (c["low"]["correct"] + c["high"]["correct"]) / results["num_offloaded"]
        assert weighted == pytest.approx(by_key[(c["strategy"], c["budget"])]["offloaded_accuracy"])
        assert c["all"]["accuracy"] == pytest.approx(weighted)
    ceiling = split["ceiling"]
    assert (ceiling["low"]["correct"] + ceiling["high"]["correct"]) / results["num_offloaded"] == pytest.approx(
        results["ceiling"]["offloaded_accuracy"])


def test_attention_entropy_is_zero_for_one_patch_and_log_n_for_uniform():
    att = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    assert analysis.attention_entropy(att).tolist() == pytest.approx([0.0, math.log(4)])


# --------------------------------------------------------------------------------------------
# coverage


def test_coverage_table_is_the_results_json_values_with_pearson_r_per_budget(run_dir, results):
    out = analysis.coverage(run_dir)
    assert [(t["strategy"], t["budget"], t["coverage"], t["offloaded_accuracy"]) for t in out["table"]] == [
        (r["strategy"], r["budget"], r["coverage"], r["offloaded_accuracy"]) for r in results["results"]]
    for c in out["correlation"]:
        rows = [r for r in results["results"] if r["budget"] == c["budget"]]
        xs, ys = [r["coverage"] for r in rows], [r["offloaded_accuracy"] for r in rows]
        assert c["num_strategies"] == 3
        if np.std(xs) > 0 and np.std(ys) > 0:
            assert c["pearson_r"] == pytest.approx(np.corrcoef(xs, ys)[0, 1])
        else:
            assert c["pearson_r"] is None


def test_pearson_is_not_reported_for_two_points_or_a_constant():
    assert analysis.pearson([0.1, 0.2], [0.3, 0.4]) is None
    assert analysis.pearson([0.1, 0.2, 0.3], [0.5, 0.5, 0.5]) is None
    assert analysis.pearson([0.1, 0.2, 0.3], [0.3, 0.2, 0.1]) == pytest.approx(-1.0)


# --------------------------------------------------------------------------------------------
# outputs, errors, command line


def test_each_analysis_writes_json_and_png_beside_the_run_with_provenance(run_dir, results, replaced, split):
    for name in ("replacement", "entropy-split"):
        path = run_dir / "analysis" / f"{name}.json"
        assert path.is_file() and (run_dir / "analysis" / f"{name}.png").stat().st_size > 0
        on_disk = json.loads(path.read_text())
        assert on_disk == json.loads(json.dumps(replaced if name == "replacement" else split))
        prov = on_disk["provenance"]
        assert prov["run_dir"] == str(run_dir.resolve())
        assert prov["benchmark_fingerprint"] == results["benchmark"]["fingerprint"]
        assert prov["sagebench_version"] and prov["command"]


def test_a_folder_without_results_json_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(AnalysisError, match="no results.json"):
        analysis.coverage(tmp_path)
    assert main(["analyze", "coverage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no results.json" in err and "Traceback" not in err


def test_cli_analyze_prints_a_table_and_writes_where_asked(run_dir, tmp_path, capsys):
    assert main(["analyze", "replacement", str(run_dir), "--limit", "5", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "on 5 of 36 offloaded images (--limit 5)" in printed and "fixed" in printed
    out = json.loads((tmp_path / "replacement.json").read_text())
    assert out["limit"] == 5 and out["num_analysed"] == 5 and len(out["images"]["sample_ids"]) == 5
    assert out["provenance"]["command"].startswith("sagebench analyze replacement") and "--limit 5" in out["provenance"]["command"]
    assert (tmp_path / "replacement.png").is_file()
    assert main(["analyze", "coverage", str(run_dir), "--out", str(tmp_path)]) == 0
    assert "pearson r" in capsys.readouterr().out
