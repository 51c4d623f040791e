"""sagebench as Lightning users expect: loggers receive the exact summary, callbacks come from configs."""

from __future__ import annotations

import csv
import json

import pytest
from lightning.pytorch.loggers import CSVLogger

from sagebench.config import load_config
from sagebench.errors import ConfigError
from sagebench.sweep.evaluate import evaluate

BASE = ["data.limit=30", "budgets=[4,8]", "strategies=[random,sage]", "gate.name=all"]


def _csv_metrics(folder):
    (path,) = list(folder.rglob("metrics.csv"))
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return {k: float(v) for row in rows for k, v in row.items() if v not in ("", None) and k not in ("epoch", "step")}


def _csv_text(folder):
    """``{key: the text the CSV holds}``: the exact digits, not a float parsed back."""
    (path,) = list(folder.rglob("metrics.csv"))
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return {k: v for row in rows for k, v in row.items() if v not in ("", None) and k not in ("epoch", "step")}


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_a_csv_logger_from_python_receives_the_exact_summary_intervals_and_config(random_models_overrides,
                                                                                  tmp_path):
    """A CSVLogger got float32 values through ``self.log_dict`` (0.3958333432674408 for 19/48), no interval and
    no config. Now it holds the float64 figures of results.json digit for digit, their interval ends, and the
    resolved config in hparams.yaml; evaluate returns the typed results, still readable as a dict."""
    import yaml

    from sagebench.results import RunResults

    logger = CSVLogger(save_dir=str(tmp_path / "logs"), name="sb")
    res = evaluate(load_config(None, [*random_models_overrides, *BASE, f"output_dir={tmp_path / 'run'}"]),
                   logger=logger)
    assert isinstance(res, RunResults)
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res.to_json() == on_disk and res["results"] == on_disk["results"] == res.results
    assert res["output_dir"] == str(tmp_path / "run") and "report" in res and set(on_disk) <= set(res)
    assert json.loads(json.dumps(res)) == {**on_disk, "output_dir": res.output_dir, "report": res.report}  # still a dict
    got = _csv_text(tmp_path / "logs")
    for r in on_disk["results"]:
        key = f"{r['strategy']}/B{r['budget']}"
        assert got[f"offloaded_acc/{key}"] == repr(r["offloaded_accuracy"])  # exact: the same digits
        assert got[f"ceiling_ratio/{key}"] == repr(r["ceiling_ratio"])
        assert got[f"offloaded_acc_low/{key}"] == repr(r["offloaded_accuracy_ci"][0])
        assert got[f"offloaded_acc_high/{key}"] == repr(r["offloaded_accuracy_ci"][1])
        assert got[f"ceiling_ratio_low/{key}"] == repr(r["ceiling_ratio_ci"][0])
    assert got["ceiling/offloaded_acc"] == repr(on_disk["ceiling"]["offloaded_accuracy"])
    assert got["edge_acc_low"] == repr(on_disk["edge_accuracy_ci"][0])
    assert float(got["num_images"]) == res["num_images"] == 30
    (hparams,) = list((tmp_path / "logs").rglob("hparams.yaml"))
    config = yaml.safe_load(hparams.read_text())
    assert config["budgets"] == [4, 8] and config["data"]["limit"] == 30 == on_disk["config"]["data"]["limit"]


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_a_logger_and_callbacks_from_class_path_entries(random_models_overrides, tmp_path):
    logs = tmp_path / "cfglogs"
    overrides = [*random_models_overrides, *BASE, f"output_dir={tmp_path / 'run'}",
                 f"trainer.logger={{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {logs}}}}}",
                 "trainer.callbacks=[{class_path: helpers.RecordingCallback, init_args: {tag: x}}]"]
    res = evaluate(load_config(None, overrides))
    assert _csv_metrics(logs)["edge_acc"] == pytest.approx(res["edge_accuracy"])


def test_a_callback_whose_constructor_fails_is_a_config_error_naming_it():
    """A class_path whose constructor raised (RichProgressBar without rich) gave a raw traceback."""
    from sagebench.sweep.trainer import instantiate

    with pytest.raises(ConfigError, match=r"helpers.NeedsAMissingPackage\(\*\*init_args\) failed "
                                          r"\(ModuleNotFoundError: `rich` is not installed"):
        instantiate("helpers.NeedsAMissingPackage", "trainer.callbacks")


@pytest.mark.slow
@pytest.mark.parametrize("setting, works", [("trainer.inference_mode=false", True),
                                            ("trainer.use_distributed_sampler=true", False)])
def test_trainer_settings_sagebench_also_sets_are_merged_or_refused(random_models_overrides, tmp_path, setting,
                                                                    works):
    """Both gave ``TypeError: build_trainer() got multiple values for keyword argument``."""
    cfg = load_config(None, [*random_models_overrides, *BASE, f"output_dir={tmp_path / 'run'}", setting])
    if works:
        assert evaluate(cfg)["num_images"] == 30
    else:
        with pytest.raises(ConfigError, match="pads each process's share"):
            evaluate(cfg)


@pytest.mark.parametrize("entry, message", [
    ("{class_path: lightning.pytorch.callbacks.NoSuchThing}", "cannot import"),
    ("{class_path: collections.OrderedDict}", "is not a lightning"),
])
def test_a_bad_class_path_is_a_clear_error(random_models_overrides, tmp_path, entry, message):
    cfg = load_config(None, [*random_models_overrides, *BASE, f"output_dir={tmp_path / 'run'}",
                             f"trainer.callbacks=[{entry}]"])
    with pytest.raises(ConfigError, match=message):
        evaluate(cfg)


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_the_data_is_prepared_once_then_loaded_in_the_data_modules_setup(random_models_overrides, tmp_path,
                                                                          monkeypatch):
    """Lightning's hooks own the data: nothing is read before the Trainer runs; ``prepare_data`` (one process
    per node) prepares the source, then ``setup`` (every process) builds the evaluation set from it (loading
    it again in the processes that did not prepare it), before the partial-results callback's setup reads
    the run key (which holds the number of images)."""
    from sagebench.data import sources
    from sagebench.sweep import datamodule, partial

    events: list[str] = []
    real_load, real_prepare = sources.load_source, datamodule.SweepData.prepare_data
    real_setup, real_partial_setup = datamodule.SweepData.setup, partial.PartialResults.setup
    monkeypatch.setattr(sources, "load_source", lambda spec: events.append("load_source") or real_load(spec))
    monkeypatch.setattr(datamodule.SweepData, "prepare_data",
                        lambda self: events.append("prepare_data") or real_prepare(self))
    monkeypatch.setattr(datamodule.SweepData, "setup", lambda self, stage: events.append("setup") or
                        real_setup(self, stage))

    def partial_setup(self, trainer, module, stage):
        out = real_partial_setup(self, trainer, module, stage)  # takes the run key from the data module's plan
        events.append(f"partial.setup key.num_images={self.key['data']['num_images']}")
        return out

    monkeypatch.setattr(partial.PartialResults, "setup", partial_setup)
    res = evaluate(load_config(None, [*random_models_overrides, *BASE, f"output_dir={tmp_path / 'run'}"]))
    assert events == ["prepare_data", "load_source", "setup", "partial.setup key.num_images=30"]
    assert res["num_images"] == 30 and res["resume"]["key"]["data"]["num_images"] == 30
