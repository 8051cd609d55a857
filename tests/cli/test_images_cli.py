"""The command line on images: train (unconditional and class-conditional), sample images,
eval with the class accuracy, the sample grid."""

from __future__ import annotations

import json

import numpy as np
import pytest

from energyflow.cli import main

pytestmark = pytest.mark.usefixtures("small_reports")


def test_image_run_unconditional(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "x.npy"
    np.save(data, rng.random((300, 2, 4, 4)).astype(np.float32))
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--hidden", "8", "8", "--steps", "4", "--out", str(out)]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["model"] == "image" and config["train"]["estimator"] == "block_score"
    assert config["model"]["patch"] == 2 and config["model"]["noise_channels"] == 16
    assert config["train"]["batch_size"] == 128  # the image recipe's (flat models: 512)
    assert (out / "samples.png").stat().st_size > 0
    samples = tmp_path / "s.npy"
    assert main(["sample", "--run", str(out), "--n", "9", "--out", str(samples)]) == 0
    values = np.load(samples)
    assert values.shape == (9, 2, 4, 4) and 0 <= values.min() and values.max() <= 1
    assert "(9, 2, 4, 4)" in capsys.readouterr().out
    bad = ["train", "--data", str(data), "--hidden", "8", "16", "--out", str(tmp_path / "b")]
    assert main(bad) == 2 and "all equal" in capsys.readouterr().err


def test_image_run_class_conditional(tmp_path, capsys):
    rng = np.random.default_rng(1)
    data, labels = tmp_path / "x.npy", tmp_path / "y.npy"
    classes = np.arange(90) % 3
    images = rng.random((90, 1, 4, 4)).astype(np.float32) * 0.2 + classes[:, None, None, None]
    np.save(data, images)
    np.save(labels, classes)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--labels", str(labels), "--hidden", "8", "8"]
    assert main(args + ["--steps", "3", "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert 0 <= result["class_accuracy"] <= 1 and result["class_accuracy_real"] == 1.0
    want = tmp_path / "want.npy"
    np.save(want, np.array([0, 2, 1, 2]))
    samples = tmp_path / "s.npy"
    command = ["sample", "--run", str(out), "--context", str(want), "--out", str(samples)]
    assert main(command + ["--n", "5"]) == 0
    assert np.load(samples).shape == (5, 4, 1, 4, 4)
    assert main(command) == 0 and np.load(samples).shape == (4, 1, 4, 4)
    capsys.readouterr()
    np.save(want, np.array([0, 3]))
    assert main(command) == 2 and "classes 0..2" in capsys.readouterr().err
    np.save(want, np.zeros((2, 3)))
    assert main(command) == 2 and "integer class labels" in capsys.readouterr().err
    assert main(["eval", "--run", str(out)]) == 0
    assert "class accuracy" in capsys.readouterr().out


def test_image_model_needs_image_data_and_its_own_options(tmp_path, capsys):
    args = ["train", "--data", "moons", "--model", "image", "--out", str(tmp_path / "r")]
    assert main(args) == 2 and "needs image data" in capsys.readouterr().err
    args = ["train", "--data", "moons", "--patch", "2", "--out", str(tmp_path / "r")]
    assert main(args) == 2 and "--patch do(es) not apply to --model saef" in capsys.readouterr().err
    args = ["train", "--data", "digits-images", "--blocks", "4", "--out", str(tmp_path / "r")]
    err = (main(args), capsys.readouterr().err)
    assert err[0] == 2 and "--blocks do(es) not apply to --model image" in err[1]
