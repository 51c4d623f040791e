"""W&B logging and run plots: an offline run can be read back; PNGs exist and show the right patches;
W&B trouble never costs a run; the online/offline choice never prompts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import wandb_offline
from PIL import Image

from sagebench.config import load_config
from sagebench.errors import ConfigError
from sagebench.reporting import plots, report
from sagebench.reporting import wandb as tracking


def _row(results, strategy, budget):
    return next(r for r in results["results"] if r["strategy"] == strategy and r["budget"] == budget)


# -- the default run, W&B offline ------------------------------------------------------------


def test_offline_run_summary_config_and_table_read_back(small_run):
    run_dir, results = small_run
    runs = wandb_offline.offline_runs(run_dir)
    strategies = [s["label"] for s in results["strategies"]]
    assert len(runs) == 1 + len(strategies), "one sweep run + one run per strategy, under <output_dir>/wandb/"
    run = wandb_offline.sweep_run(run_dir)
    assert (run.name, run.project) == ("small-run", "sagebench")
    bench = results["benchmark"]
    assert run.tags == ["test", f"benchmark:{bench['name']}", f"edge:{bench['edge']['name']}",
                        f"server:{bench['server']['name']}"]
    assert run.config["sagebench/fingerprint"] == bench["fingerprint"]
    # the resolved config
    assert run.config["logger"] == "wandb" and run.config["budgets"] == [4, 8]
    assert run.config["data"]["limit"] == 60
    # summary: every (metric, strategy, budget), the ceiling, edge accuracy, the fingerprint
    s = run.summary
    for r in results["results"]:
        key = f"{r['strategy']}/B{r['budget']}"
        assert s[f"offloaded_acc/{key}"] == pytest.approx(r["offloaded_accuracy"])
        assert s[f"ceiling_ratio/{key}"] == pytest.approx(r["ceiling_ratio"])
        assert s[f"overall_acc/{key}"] == pytest.approx(r["overall_accuracy"])
        assert s[f"num_correct/{key}"] == r["num_correct"]
    assert s["ceiling/offloaded_acc"] == pytest.approx(results["ceiling"]["offloaded_accuracy"])
    assert s["ceiling/overall_acc"] == pytest.approx(results["ceiling"]["overall_accuracy"])
    assert s["edge_acc"] == pytest.approx(results["edge_accuracy"])
    assert s["benchmark/fingerprint"] == results["benchmark"]["fingerprint"]
    assert s["sagebench"]["benchmark"] == json.loads(json.dumps(results["benchmark"]))
    # the results table: one row per (strategy, budget), every metric
    table = run.table("results")
    assert table["columns"][:len(tracking.TABLE_COLUMNS)] == tracking.TABLE_COLUMNS
    assert table["columns"] == tracking.table_columns(results)
    assert len(table["data"]) == len(results["results"])
    got = {(row[0], row[1]): row for row in table["data"]}
    n_plain = len(tracking.row_fields(results))
    for r in results["results"]:
        row = got[(r["strategy"], r["budget"])]
        assert row[2:2 + n_plain] == pytest.approx([r[c] for c in table["columns"][2:2 + n_plain]])
        lo, hi = row[table["columns"].index("offloaded_accuracy_low")], row[table["columns"].index("offloaded_accuracy_high")]
        assert [lo, hi] == pytest.approx(r["offloaded_accuracy_ci"])  # the interval columns
    # line charts (one line per strategy), overlays as images, results + samples as an artifact
    for key, metric in (("curves/offloaded_acc_table", "offloaded_accuracy"),
                        ("curves/ceiling_ratio_table", "ceiling_ratio")):
        chart = run.table(key)  # wandb.plot.line_series: (x = budget, line = strategy, y)
        assert chart["columns"] == ["step", "lineKey", "lineVal"]
        assert sorted(map(tuple, chart["data"])) == sorted(
            (r["budget"], r["strategy"], pytest.approx(r[metric])) for r in results["results"])
    overlays = s["overlays"]
    assert overlays["count"] == report.NUM_OVERLAY_IMAGES
    assert all((run.files_dir / f).is_file() for f in overlays["filenames"])
    assert (run.files_dir / s["plots/curves"]["path"]).is_file()
    art = [a for a in run.artifacts if a["type"] == "sagebench-results"]
    assert len(art) == 1 and {"results.json", "samples.parquet"} <= set(art[0]["files"])
    # logging happened once, on the process that returned results
    assert results["report"]["wandb"]["mode"] == "offline"
    assert len(run.history) == 1


def test_curves_and_overlays_png_exist_and_show_each_strategy(small_run):
    run_dir, results = small_run
    for name in (plots.CURVES_FILE, plots.OVERLAYS_FILE):
        with Image.open(run_dir / name) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200
            assert np.asarray(img.convert("L")).std() > 5, f"{name} is blank"
    assert results["report"]["curves"].endswith(plots.CURVES_FILE)


def test_overlay_examples_are_the_first_offloaded_images_and_each_strategys_choice(small_run, random_models_overrides):
    """The overlays show, for fixed images, exactly what each strategy sends at the median budget."""
    from sagebench import data as data_lib
    from sagebench.data import DataSpec
    from sagebench.edge.model import EdgeModel
    from sagebench.strategies import get_strategy
    from sagebench.sweep.build import model_spec
    from sagebench.vit.loading import create_model

    run_dir, results = small_run
    cfg = load_config(None, [*random_models_overrides, "data.limit=60", "budgets=[4,8]"])
    edge = EdgeModel(create_model(model_spec(cfg.model.edge)))
    spec = DataSpec.from_config(cfg.data)
    view = data_lib.resolve_data_config(edge.vit, spec)
    dataset = data_lib.EvalImages(data_lib.load_source(spec), data_lib.build_transform(view), spec, view)
    import pyarrow.parquet as pq

    samples = pq.read_table(run_dir / "samples.parquet").to_pydict()
    offloaded = [i for i, o in zip(samples["sample_id"], samples["offloaded"]) if o][:report.NUM_OVERLAY_IMAGES]
    strategies = [get_strategy(n) for n in ("attention_prefix", "uniform")]
    rows = np.array([[i, 1.0] for i in samples["sample_id"]], dtype=float)
    rows[:, 1] = np.asarray(samples["offloaded"], dtype=float)

    class Layout:
        def column(self, name):
            return {"sample_id": 0, "offloaded": 1}[name]

    ctx = report.RunContext(edge=edge, strategies=strategies, dataset=dataset, data_config=view, rows=rows,
                              layout=Layout(), budgets=[8, 4, 16], seed=0)
    examples = report.selection_examples(ctx)
    assert [ex.sample_id for ex in examples] == offloaded
    for ex in examples:
        assert ex.budget == 8  # the median budget
        assert ex.image.shape == (28, 28) and 0.0 <= ex.image.min() and ex.image.max() <= 1.0
        assert ex.attention.shape == (7, 7) and ex.patch_size == (4, 4)
        top = set(np.argsort(-ex.attention.reshape(-1), kind="stable")[:8].tolist())
        assert set(ex.selections["attention_prefix"]) == top
        assert len(set(ex.selections["uniform"])) == 8
        mask = plots.sent_mask(ex.selections["uniform"], (7, 7), (4, 4))
        assert mask.sum() == 8 * 16
        r, c = divmod(ex.selections["uniform"][0], 7)
        assert mask[r * 4:(r + 1) * 4, c * 4:(c + 1) * 4].all()
    arr = plots.overlay_array(examples[0])  # what W&B gets: one row per image, as RGB
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and arr.shape[1] > arr.shape[0]


# -- failures and choices ----------------------------------------------------------------------


def test_a_wandb_failure_prints_one_line_and_the_run_goes_on(small_run, tmp_path, monkeypatch, capsys):
    import wandb

    _, results = small_run
    payload = {k: v for k, v in results.items() if k not in ("output_dir", "report")}

    def broken_init(*args, **kwargs):
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    monkeypatch.setenv("WANDB_MODE", "offline")
    info = report.report_run(payload["config"], payload, tmp_path)
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1 and "ConnectionError" in err[0] and str(tmp_path) in err[0]
    assert info["wandb"]["mode"] == "failed"
    assert (tmp_path / plots.CURVES_FILE).is_file(), "plots are written without W&B"


def test_logger_none_logs_nothing_but_still_writes_the_plots(small_run, tmp_path):
    _, results = small_run
    payload = {k: v for k, v in results.items() if k not in ("output_dir", "report")}
    info = report.report_run({**payload["config"], "logger": "none"}, payload, tmp_path)
    assert "wandb" not in info and not (tmp_path / "wandb").exists()
    assert (tmp_path / plots.CURVES_FILE).is_file()


def test_logger_and_wandb_config_keys():
    cfg = load_config()
    assert cfg.logger == "wandb" and cfg.wandb.project == "sagebench"
    assert cfg.wandb.entity is None and list(cfg.wandb.tags) == [] and cfg.wandb.name is None
    cfg = load_config(None, ["logger=none", "wandb.project=p", "wandb.entity=team", "wandb.tags=[a,b]", "wandb.name=x"])
    assert (cfg.logger, cfg.wandb.project, cfg.wandb.entity, list(cfg.wandb.tags)) == ("none", "p", "team", ["a", "b"])
    with pytest.raises(ConfigError, match="logger must be one of wandb, none"):
        load_config(None, ["logger=tensorboard"])
    with pytest.raises(ConfigError, match="wandb.projekt"):
        load_config(None, ["wandb.projekt=p"])


def test_mode_is_chosen_without_prompting(tmp_path):
    home = {"NETRC": str(tmp_path / "netrc"), "WANDB_CONFIG_DIR": str(tmp_path)}
    assert tracking.wandb_mode(home)[0] == "offline"
    assert "WANDB_API_KEY" in tracking.wandb_mode(home)[1] or "wandb login" in tracking.wandb_mode(home)[1]
    assert tracking.wandb_mode({**home, "WANDB_API_KEY": "k" * 40}) == ("online", "API key from WANDB_API_KEY")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "p" * 40 + "\n")
    assert tracking.wandb_mode(home)[0] == "online"
    assert tracking.wandb_mode({**home, "WANDB_BASE_URL": "https://wandb.example.org"})[0] == "offline"
    assert tracking.wandb_mode({**home, "WANDB_MODE": "offline"})[0] == "offline"
    assert tracking.wandb_mode({**home, "WANDB_MODE": "disabled"})[0] == "disabled"


def test_summary_keys_name_metric_strategy_and_budget(small_run):
    _, results = small_run
    s = tracking.summary_metrics(results)
    assert s["offloaded_acc/sage/B8"] == _row(results, "sage", 8)["offloaded_accuracy"]
    ratios = [_row(results, "sage", b)["ceiling_ratio"] for b in (4, 8)]
    assert s["mean_ceiling_ratio/sage"] == pytest.approx(sum(ratios) / 2)
    json.dumps(s)  # plain JSON: what W&B stores


def test_each_strategy_is_its_own_w_and_b_run_ranked_by_mean_ceiling_ratio(small_run):
    """Per strategy: a run named '<label> @ <benchmark>', config with the fingerprint, models and options,
    summary with the mean ceiling ratio and every budget's figures and intervals, budget as the step."""
    run_dir, results = small_run
    runs = wandb_offline.strategy_runs(run_dir)
    assert sorted(runs) == sorted(s["label"] for s in results["strategies"])
    bench = results["benchmark"]
    for label, run in runs.items():
        assert run.name == f"{label} @ {bench['name']}"
        assert run.config["sagebench/fingerprint"] == bench["fingerprint"]
        assert run.config["sagebench/edge"] == bench["edge"]["name"]
        assert run.config["sagebench/server_weights"] == bench["server"]["weights"]
        mine = [r for r in results["results"] if r["strategy"] == label]
        assert run.summary["mean_ceiling_ratio"] == pytest.approx(sum(r["ceiling_ratio"] for r in mine) / len(mine))
        for r in mine:
            key = f"{label}/B{r['budget']}"
            assert run.summary[f"offloaded_acc/{key}"] == pytest.approx(r["offloaded_accuracy"])
            assert [run.summary[f"offloaded_acc_low/{key}"], run.summary[f"offloaded_acc_high/{key}"]] == \
                pytest.approx(r["offloaded_accuracy_ci"])
        steps = [h for h in run.history if "budget" in h]
        assert [h["budget"] for h in steps] == sorted(r["budget"] for r in mine)
        assert [h["offloaded_acc"] for h in steps] == pytest.approx(
            [r["offloaded_accuracy"] for r in sorted(mine, key=lambda r: r["budget"])])


@pytest.mark.slow
def test_a_users_open_w_and_b_run_is_reused_and_left_open(random_models_overrides, tmp_path, monkeypatch):
    """evaluate() logs into the run the user's script opened and does not finish it."""
    import wandb

    from sagebench.config import load_config
    from sagebench.sweep.evaluate import evaluate

    monkeypatch.setenv("WANDB_MODE", "offline")
    user = wandb.init(project="mine", dir=str(tmp_path), mode="offline")
    try:
        res = evaluate(load_config(None, [*random_models_overrides, "data.limit=20", "budgets=[4]",
                                          "strategies=[random]", "logger=wandb", f"output_dir={tmp_path / 'run'}"]))
        assert res["report"]["wandb"]["reused_run"] is True
        user.log({"after": 1.0})  # raises "Run ... is finished" if sagebench had finished it
        assert user.summary["benchmark/fingerprint"] == res["benchmark"]["fingerprint"]
    finally:
        user.finish()


def test_figures_are_drawn_side_by_side_and_a_failing_one_is_only_a_warning(tmp_path, capsys):
    """draw_all draws each figure job (in forked children where that pays): every path comes back, and a
    figure that fails (in a child or in the parent) is one warning line, not a failed run."""
    from pathlib import Path

    from sagebench.reporting.guard import Guard
    from sagebench.reporting.report import draw_all

    def write(path):
        Path(path).write_text("x")
        return Path(path)

    def broken(_):
        raise ValueError("no such axis")

    guard = Guard(tmp_path)
    out = draw_all([("a", "drawing a", write, (tmp_path / "a.png",)), ("b", "drawing b", broken, (None,)),
                    ("c", "drawing c", write, (tmp_path / "c.png",))], guard)
    assert out["a"] == tmp_path / "a.png" and out["c"] == tmp_path / "c.png" and out["b"] is None
    assert (tmp_path / "a.png").read_text() == "x" and guard.failures == ["drawing b"]
    err = capsys.readouterr().err
    assert "drawing b failed" in err and "no such axis" in err


def test_the_offline_hint_syncs_every_run_of_the_sweep(small_run):
    """The hint named only the sweep's run: following it left the per-strategy runs (a W&B board's rows) unsynced."""
    import glob

    from sagebench.reporting.wandb import offline_hint

    run_dir, results = small_run
    wandb_run = Path(results["report"]["wandb"]["run_dir"])
    hint = offline_hint("no API key", wandb_run, len(results["strategies"]))
    command = hint.split("`")[1]
    assert command.startswith("wandb sync ") and "per-strategy run(s)" in hint
    matched = glob.glob(command.removeprefix("wandb sync "))
    assert len(matched) == 1 + len(results["strategies"])  # the sweep's run and one per strategy
    assert str(wandb_run) in matched


def test_no_top_level_summary_key_silently_means_the_last_budget(small_run):
    """A strategy run's summary held `offloaded_acc` and `ceiling_ratio` of the last budget logged, unnamed."""
    from sagebench.reporting.wandb import per_budget_keys

    run_dir, _ = small_run
    for run in wandb_offline.strategy_runs(run_dir).values():
        assert not set(per_budget_keys()) & set(run.summary), sorted(set(per_budget_keys()) & set(run.summary))
