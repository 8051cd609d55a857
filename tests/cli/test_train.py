"""The command line: train / sample / eval, resume, bad data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from energyflow.cli import main
from energyflow.cli import train as cli_train

# the reports judge 500 held-out rows: the judges have tests of their own (test_metrics.py)
pytestmark = pytest.mark.usefixtures("small_reports")


def test_cli_train_sample_eval(tmp_path, capsys):
    out = tmp_path / "run"
    args = "train --data moons --blocks 2 --hidden 16 --steps 30 --batch-size 64".split()
    args += [
        "--n-train",
        "500",
        "--eval-every",
        "10",
        "--checkpoint-every",
        "10",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    for name in ("config.json", "checkpoint.pt", "model.pt", "metrics.json", "samples.png"):
        assert (out / name).exists(), name
    result = json.loads((out / "metrics.json").read_text())
    assert (
        result["steps"] == 30
        and np.isfinite(result["test_energy_distance"])
        and all(0 <= result[name] <= 1 for name in ("c2st", "c2st_knn", "precision", "recall"))
    )
    assert main(args) == 2 and "already holds a run" in capsys.readouterr().err
    assert main(["sample", "--run", str(out), "--n", "123", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (123, 2)
    assert main(["eval", "--run", str(out)]) == 0
    assert "test energy distance" in capsys.readouterr().out


def test_cli_affine_mle_on_csv_with_context(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(200, 3))
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n" + "\n".join(",".join(f"{v:.5f}" for v in row) for row in values))
    out = tmp_path / "run"
    options = "--context-cols label --model affine --blocks 2 --objective mle --hidden 8".split()
    options += "--transforms 1 --steps 5 --batch-size 32".split()
    assert main(["train", "--data", str(path), *options, "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert "log_likelihood" in result


@pytest.mark.parametrize(
    "content, words",
    [
        ("1,2\n3,4\n" * 10 + "5,nan\n", "row 21, column 2"),
        ("1,2\n3,4\n" * 10 + "5\n", "row 21 has 1 columns"),
        ("1,2\n" * 5, "too few"),
        ("x,y\n" + "1,2\n" * 10 + "1,abc\n", "row 12, column 2 is not a number"),
    ],
)
def test_cli_bad_data_fails_before_writing(tmp_path, capsys, content, words):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--out", str(out), "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and words in err
    assert not out.exists()


def test_cli_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    common = "train --data moons --blocks 2 --hidden 16 --batch-size 64 --n-train 400".split()
    common += "--checkpoint-every 10 --seed 5 --steps 20".split()
    assert main([*common, "--eval-every", "0", "--out", str(tmp_path / "whole")]) == 0
    # the same run killed at step 11 (after its step-10 checkpoint), then resumed
    real_evaluate = cli_train.evaluate
    calls = {"n": 0}

    def dying_evaluate(model, dataset, **kwargs):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt
        return real_evaluate(model, dataset, **kwargs)

    monkeypatch.setattr(cli_train, "evaluate", dying_evaluate)
    partial = tmp_path / "partial"
    with pytest.raises(KeyboardInterrupt):
        main([*common, "--eval-every", "1", "--out", str(partial)])
    assert not (partial / "model.pt").exists() and (partial / "checkpoint.pt").exists()
    monkeypatch.setattr(cli_train, "evaluate", real_evaluate)
    assert main(["train", "--out", str(partial), "--resume"]) == 0
    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state"]
    resumed = torch.load(partial / "model.pt", weights_only=True)["state"]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_cli_training_options_reach_fit_and_are_saved(tmp_path, capsys):
    out = tmp_path / "run"
    args = "train --data moons --n-train 600 --hidden 16 --steps 30 --batch-size 64".split()
    args += "--device cpu --precision bf16 --val-fraction 0.2 --val-every 10 --ema 0.9".split()
    args += "--warmup-steps 5 --time-budget 60 --beta 1.5 --eval-every 0".split()
    assert main([*args, "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    train = config["train"]
    assert train["precision"] == "bf16" and train["val_fraction"] == 0.2 and train["beta"] == 1.5
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert saved["config"]["ema"] == 0.9 and saved["config"]["time_budget"] == 60.0
    assert [h["step"] for h in saved["state"]["history"] if "val_loss" in h] == [10, 20, 30]
    assert saved["best"] is not None and saved["average"]["updates"] == 30
    assert (
        main(
            [
                "sample",
                "--run",
                str(out),
                "--n",
                "7",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "s.npy"),
            ]
        )
        == 0
    )
    # an extension may move to another device or budget, not change the recipe
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--steps", "40", "--beta", "1.0"]) == 2
    assert "--beta 1.0" in capsys.readouterr().err
    assert (
        main(["train", "--out", str(out), "--resume", "--steps", "40", "--time-budget", "30"]) == 0
    )


def test_cli_score_terms_reach_fit_and_are_saved(tmp_path):
    out = tmp_path / "run"
    args = "train --data moons --n-train 300 --hidden 16 --steps 3 --batch-size 32".split()
    args += "--estimator score --samples-per-target 3 --kernel-weight 0.5".split()
    args += "--kernel-bandwidth 0.2 --variogram-weight 2 --variogram-power 1".split()
    assert main([*args, "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())["train"]
    saved = torch.load(out / "checkpoint.pt", weights_only=False)["config"]
    for settings in (config, saved):
        assert settings["kernel_weight"] == 0.5 and settings["kernel_bandwidth"] == 0.2
        assert settings["variogram_weight"] == 2.0 and settings["variogram_power"] == 1.0


@pytest.mark.parametrize(
    "flags, words",
    [
        ("--beta 2", "must be in (0, 2)"),
        ("--kernel-weight 1", "kernel_weight adds a kernel score term"),
        ("--estimator score --variogram-weight 1 --variogram-power 3", "--variogram-power: must"),
        ("--kernel-bandwidth 0", "--kernel-bandwidth: must be a positive number"),
        ("--ema 1", "must be in [0, 1)"),
        ("--precision fp8", "invalid choice"),
        ("--time-budget 0", "--time-budget: must be a positive number"),
        ("--device tpu", "device must be"),
    ],
)
def test_cli_bad_training_options_name_themselves(tmp_path, capsys, flags, words):
    args = [
        "train",
        "--data",
        "moons",
        "--steps",
        "2",
        *flags.split(),
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(args) == 2
    assert words in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_cli_cuda_without_cuda_fails_before_writing(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "--data", "moons", "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_gpu_training_check_commands_parse(monkeypatch):
    """benchmarks/gpu_training_check.py (run on a CUDA device by gpu_check.sh, never here) builds
    valid ``energyflow train`` command lines: each one parses with the CLI's parser."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    from energyflow.cli import parser

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_training_check.py"
    spec = importlib.util.spec_from_file_location("gpu_training_check", path)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    seen = []
    real_run = subprocess.run

    def fake_run(command, **kwargs):
        seen.append(command)
        return real_run([sys.executable, "-c", "pass"], **kwargs)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(check, "final_loss", lambda out: 0.0)
    check.main()
    assert len(seen) >= len(check.CHECKS) + 2
    for command in seen:
        argv = command[command.index("energyflow") + 1 :]
        parser().parse_args(argv)  # exits (SystemExit) on an invalid command line
