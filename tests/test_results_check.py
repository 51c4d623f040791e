"""No stored figure is trusted on the way out: resume=true on a finished run and `sagebench report`
recompute every figure from samples.parquet and refuse a results.json that disagrees."""

from __future__ import annotations

import json
import shutil

import pytest

from sagebench.cli import main
from sagebench.config import load_config
from sagebench.errors import SageBenchError
from sagebench.results.check import checked_results
from sagebench.sweep.evaluate import evaluate

SMALL = ["data.limit=60", "budgets=[4,8]", "logger=none"]


@pytest.fixture
def copied_run(small_run, tmp_path):
    run_dir, _ = small_run
    out = tmp_path / "run"
    shutil.copytree(run_dir, out, ignore=shutil.ignore_patterns("wandb"))
    return out


def edit(run, change) -> None:
    path = run / "results.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def sage_at_99(data) -> None:
    row = next(r for r in data["results"] if r["strategy"] == "sage")
    row["offloaded_accuracy"] = 0.99


def test_an_untouched_run_reads_back(copied_run):
    assert checked_results(copied_run)["num_images"] == 60


def test_resume_on_a_finished_run_refuses_edited_figures(copied_run, random_models_overrides):
    """Before: resume=true printed the edited results.json (99.0% for sage) as the run's own."""
    edit(copied_run, sage_at_99)
    cfg = load_config(None, [*random_models_overrides, *SMALL, f"output_dir={copied_run}", "resume=true"])
    with pytest.raises(SageBenchError, match="does not reproduce the entry's figures.*offloaded_accuracy"):
        evaluate(cfg)


def test_a_malformed_results_file_is_one_line_not_a_key_error(copied_run, random_models_overrides):
    """Before: ``KeyError: 'budget'``."""
    edit(copied_run, lambda d: [r.pop("budget") for r in d["results"]])
    cfg = load_config(None, [*random_models_overrides, *SMALL, f"output_dir={copied_run}", "resume=true"])
    with pytest.raises(SageBenchError, match="does not match the results schema.*budget") as info:
        evaluate(cfg)
    assert "\n" not in str(info.value)


def test_report_refuses_edited_figures(copied_run, capsys):
    """Before: `sagebench report` printed edited figures beside the real ratio."""
    assert main(["report", str(copied_run)]) == 0
    edit(copied_run, sage_at_99)
    assert main(["report", str(copied_run)]) == 2
    err = capsys.readouterr().err
    assert "does not reproduce the entry's figures" in err and "Traceback" not in err


def test_report_refuses_a_run_without_its_records(copied_run, capsys):
    (copied_run / "samples.parquet").unlink()
    assert main(["report", str(copied_run)]) == 2
    assert "per-sample records" in capsys.readouterr().err
