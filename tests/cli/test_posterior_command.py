"""``energyflow posterior``: a task end to end, user files, errors before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from energyflow.cli import main
from energyflow.inference import get_task, load_posterior

# the reports judge 500 held-out rows: the judges have tests of their own (test_metrics.py)
pytestmark = pytest.mark.usefixtures("small_reports")

FAST = [
    "--hidden",
    "16",
    "--steps",
    "20",
    "--time-budget",
    "30",
    "--n",
    "300",
    "--c2st-draws",
    "60",
]


def test_posterior_for_a_task(tmp_path):
    out = tmp_path / "run"
    assert (
        main(["posterior", "--task", "two_moons", "--sims", "500", *FAST, "--out", str(out)]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["c2st"]) == 10 and 0.5 <= metrics["c2st_mean"] <= 1.0
    samples = np.load(out / "samples.npy")
    assert samples.shape == (300, 10, 2) and np.abs(samples).max() <= 1.0
    assert all((out / f"corner_{i}.png").exists() for i in range(10))
    assert load_posterior(out / "posterior.pt").prior is not None


def test_posterior_from_user_files(tmp_path):
    task = get_task("two_moons")
    theta, x = task.simulations(400)
    np.save(tmp_path / "theta.npy", theta.numpy())
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "xo.npy", x[0].numpy())  # one observation as a vector
    out = tmp_path / "mine"
    args = ["posterior", "--theta", str(tmp_path / "theta.npy"), "--x", str(tmp_path / "x.npy")]
    args += ["--observation", str(tmp_path / "xo.npy"), "--prior-low", "-1", "--prior-high", "1"]
    assert main([*args, *FAST, "--out", str(out)]) == 0
    assert np.load(out / "samples.npy").shape == (300, 1, 2)
    assert "c2st" not in json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--task", "two_moons", "--theta", "t.npy"], "drop --theta"),
        (["--theta", "t.npy"], "missing: --x, --observation"),
    ],
)
def test_posterior_input_errors(tmp_path, capsys, extra, words):
    out = tmp_path / "r"
    assert main(["posterior", *extra, *FAST, "--out", str(out)]) == 2
    assert words in capsys.readouterr().err and not out.exists()


def test_posterior_bad_prior_box(tmp_path, capsys):
    task = get_task("two_moons")
    theta, x = task.simulations(100)
    for name, values in (("theta", theta), ("x", x), ("xo", x[:2])):
        np.save(tmp_path / f"{name}.npy", values.numpy())
    args = ["posterior", "--theta", str(tmp_path / "theta.npy"), "--x", str(tmp_path / "x.npy")]
    args += ["--observation", str(tmp_path / "xo.npy"), "--prior-low", "1", "--prior-high", "-1"]
    assert main([*args, *FAST, "--out", str(tmp_path / "r")]) == 2
    assert "high > low" in capsys.readouterr().err


def test_posterior_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["posterior", "--task", "two_moons", *FAST, "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
