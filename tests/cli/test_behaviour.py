"""What a user meets: the run's length, its report, its start line, resuming a finished run,
``eval`` writing the report again, and help texts that say what the code does."""

from __future__ import annotations

import io
import json

import pytest
import torch

from energyflow.cli import main
from energyflow.cli.settings import ModelOptions, dataset_of, resolve
from energyflow.training.progress import Progress
from energyflow.training.schedule import MIN_LR_FRACTION

# the reports judge 500 held-out rows: the judges have tests of their own (test_metrics.py)
pytestmark = pytest.mark.usefixtures("small_reports")

SMALL = "--hidden 16 --n-train 400 --batch-size 64 --eval-every 0".split()


def test_a_time_budget_is_the_runs_length_and_the_report_says_how_it_went(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["train", "--data", "moons", *SMALL, "--time-budget", "1.5", "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "360 training rows + 40 validation rows" in printed and "for 1.5 s on cpu" in printed
    result = json.loads((out / "metrics.json").read_text())
    assert result["stopped_by"] == "time_budget" and result["seconds"] >= 1.5
    assert result["steps"] > 0 and result["best_step"] >= 1
    assert result["loss_curve"][-1][0] == result["steps"] and result["val_curve"]
    assert (out / "loss_curve.png").stat().st_size > 1000
    history = torch.load(out / "checkpoint.pt", weights_only=False)["state"]["history"]
    assert history[-1]["lr"] < 2 * MIN_LR_FRACTION * history[0]["lr"]  # the schedule ended
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["steps"] is None and config["train"]["estimator"] == "distance"
    # a run the budget ended resumes only to go further, and says why
    assert main(["train", "--out", str(out), "--resume"]) == 2
    assert "stopped at its time budget of 1.5 s" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--time-budget", "2.5"]) == 0
    assert json.loads((out / "metrics.json").read_text())["seconds"] >= 2.5


def test_progress_shows_seconds_against_a_budget_and_steps_against_a_cap():
    shown = io.StringIO()
    by_time = Progress(None, 30.0, 0, 0.0, shown=True, file=shown)
    by_time.update(12, 7.5, loss="0.1")
    by_time.close()
    assert "8/30 s" in shown.getvalue() and "step=12" in shown.getvalue()
    shown = io.StringIO()
    by_steps = Progress(200, None, 0, 0.0, shown=True, file=shown)
    by_steps.update(12, 7.5)
    by_steps.close()
    assert "12/200" in shown.getvalue()


def test_eval_writes_a_missing_report_again(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "moons", *SMALL, "--steps", "20", "--out", str(out)]) == 0
    for name in ("metrics.json", "samples.png", "loss_curve.png"):
        (out / name).unlink()
    assert main(["eval", "--run", str(out)]) == 0
    assert "C2ST" in capsys.readouterr().out
    for name in ("metrics.json", "samples.png", "loss_curve.png"):
        assert (out / name).exists(), name
    assert json.loads((out / "metrics.json").read_text())["stopped_by"] == "steps"


@pytest.mark.parametrize(
    "data, model, hidden, residual, blocks, mixture",
    [
        ("8gaussians", "saef", [128] * 3, True, 1, 16),
        ("breast_cancer", "saef", [256] * 3, True, 1, 0),
        ("digits", "saef", [512] * 3, True, 1, 0),
        ("digits", "affine", [512] * 2, False, 4, 0),
    ],
)
def test_the_help_texts_say_what_the_recipe_does(data, model, hidden, residual, blocks, mixture):
    """--hidden, --blocks, --residual and --mixture-components promise these in their help."""
    settings, _ = resolve(
        {"data": {"data": data}, "model": {"model": model}}, None, lambda s: dataset_of(s.data, 0)
    )
    assert settings.model.hidden == hidden and settings.model.blocks == blocks
    assert settings.model.residual == residual and settings.model.mixture_components == mixture
    noise = "uniform" if settings.model.model == "saef" and data == "8gaussians" else "normal"
    assert settings.model.noise_distribution == noise
    helps = {f.name: f.metadata["help"] for f in ModelOptions.__dataclass_fields__.values()}
    assert "3 x 128 for D <= 8" in helps["hidden"] and "affine min(D, 4)" in helps["blocks"]
    assert "uniform for D <= 8, else normal" in helps["noise_distribution"]


def test_settings_errors_name_the_flag(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--data", "moons", "--noise-features", "0", "--out", out]) == 2
    assert "--noise-features: must be an integer >= 1" in capsys.readouterr().err
    assert main(["train", "--data", "moons", "--blocks", "3", "--out", out]) == 2
    assert "--blocks 3 exceeds the 2 features" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
