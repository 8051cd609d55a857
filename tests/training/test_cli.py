"""The command line: train / sample / eval, resume, bad data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from energyflow.training import cli
from energyflow.training.cli import main


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
        and 0 <= result["c2st_accuracy"] <= 1
    )
    assert main(args) == 2 and "already holds a run" in capsys.readouterr().err
    assert main(["sample", "--run", str(out), "--n", "123", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (123, 2)
    assert main(["eval", "--run", str(out)]) == 0
    assert "test_energy_distance" in capsys.readouterr().out


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
    real_evaluate = cli.evaluate
    calls = {"n": 0}

    def dying_evaluate(model, dataset, **kwargs):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt
        return real_evaluate(model, dataset, **kwargs)

    monkeypatch.setattr(cli, "evaluate", dying_evaluate)
    partial = tmp_path / "partial"
    with pytest.raises(KeyboardInterrupt):
        main([*common, "--eval-every", "1", "--out", str(partial)])
    assert not (partial / "model.pt").exists() and (partial / "checkpoint.pt").exists()
    monkeypatch.setattr(cli, "evaluate", real_evaluate)
    assert main(["train", "--out", str(partial), "--resume"]) == 0
    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state"]
    resumed = torch.load(partial / "model.pt", weights_only=True)["state"]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
