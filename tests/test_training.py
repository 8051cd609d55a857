"""fit(), checkpoints and resume, and the CLI (train / sample / eval, bad data)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from energyflow import metrics
from energyflow.cli import main
from energyflow.data import load_dataset, toy
from energyflow.models import BlockAffineFlow, SemiAutoregressiveGenerator
from energyflow.train import fit

SMALL = dict(hidden_features=(16,))


@pytest.mark.parametrize("estimator", ["distance", "score", "sliced"])
def test_energy_training_reduces_the_distance(estimator):
    data = torch.as_tensor(toy("8gaussians", 2000, np.random.default_rng(0)))
    model = SemiAutoregressiveGenerator(2, 2, hidden_features=(32, 32))
    before = metrics.energy_distance(model.sample((1000,)), data[:1000])
    fit(model, data, estimator=estimator, steps=150, batch_size=128, lr=3e-3, progress=False)
    after = metrics.energy_distance(model.sample((1000,)), data[:1000])
    assert after < 0.5 * before


def test_mle_and_conditional_score_training_run():
    data = torch.randn(500, 3) * torch.tensor([1.0, 2.0, 0.5])
    flow = BlockAffineFlow(3, 3, transforms=1, **SMALL)
    start = -flow.log_prob(data).mean().item()
    fit(flow, data, objective="mle", steps=100, batch_size=64, lr=1e-2, progress=False)
    assert -flow.log_prob(data).mean().item() < start
    context = torch.randn(500, 1)
    model = SemiAutoregressiveGenerator(3, 3, context_features=1, **SMALL)
    state = fit(model, data + context, context=context, estimator="score", steps=5, batch_size=32, progress=False)
    assert state.step == 5
    with pytest.raises(ValueError, match="estimator='score'"):
        fit(model, data, context=context, estimator="distance", steps=1, progress=False)
    with pytest.raises(ValueError, match="needs a model with a density"):
        fit(model, data, context=context, objective="mle", steps=1, progress=False)


def test_resume_continues_bit_for_bit(tmp_path):
    data = torch.as_tensor(toy("moons", 1000, np.random.default_rng(1)))
    settings = dict(steps=40, batch_size=64, lr=1e-3, seed=3, checkpoint_every=20, progress=False)

    def new_model():
        torch.manual_seed(0)
        return SemiAutoregressiveGenerator(2, 2, **SMALL)

    straight = new_model()
    whole = fit(straight, data, checkpoint=tmp_path / "a.pt", **settings)
    # the same run, killed after its step-20 checkpoint (evaluate raises at step 21), then resumed
    stopped = new_model()
    with pytest.raises(KeyboardInterrupt):
        fit(stopped, data, checkpoint=tmp_path / "b.pt", evaluate=_interrupt_at(20), eval_every=1, **settings)
    resumed = new_model()
    state = fit(resumed, data, checkpoint=tmp_path / "b.pt", resume=True, **settings)
    assert state.step == whole.step == 40
    assert [h["loss"] for h in state.history] == [h["loss"] for h in whole.history]
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def _interrupt_at(step):
    calls = {"n": 0}

    def evaluate(model):
        calls["n"] += 1
        if calls["n"] > step:
            raise KeyboardInterrupt
        return {}
    return evaluate


def test_cli_train_sample_eval(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", "moons", "--blocks", "2", "--hidden", "16", "--steps", "30", "--batch-size", "64",
            "--n-train", "500", "--eval-every", "10", "--checkpoint-every", "10", "--out", str(out)]
    assert main(args) == 0
    for name in ("config.json", "checkpoint.pt", "model.pt", "metrics.json", "samples.png"):
        assert (out / name).exists(), name
    result = json.loads((out / "metrics.json").read_text())
    assert result["steps"] == 30 and np.isfinite(result["test_energy_distance"]) and 0 <= result["c2st_accuracy"] <= 1
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
    assert main(["train", "--data", str(path), "--context-cols", "label", "--model", "affine", "--blocks", "2",
                 "--objective", "mle", "--hidden", "8", "--transforms", "1", "--steps", "5", "--batch-size", "32",
                 "--out", str(out)]) == 0
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


def test_dataset_loaders():
    for name in ("moons", "8gaussians", "checkerboard", "pinwheel", "rings", "spirals"):
        ds = load_dataset(name, n_train=100, n_test=50)
        assert ds.train.shape == (100, 2) and ds.test.shape == (50, 2) and np.isfinite(ds.train).all()
    digits = load_dataset("digits")
    assert digits.features == 64 and digits.image_shape == (8, 8) and 0 <= digits.train.min() and digits.train.max() < 1
    with pytest.raises(ValueError, match="no such file"):
        load_dataset("nope.csv")


def test_cli_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    import energyflow.cli as cli

    common = ["train", "--data", "moons", "--blocks", "2", "--hidden", "16", "--batch-size", "64", "--n-train", "400",
              "--checkpoint-every", "10", "--seed", "5", "--steps", "20"]
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
