"""Run folders and the CLI never lose or mix a user's data, and refuse bad input before writing.

Most cases run the CLI as a user does, in a subprocess inside a temporary folder; the rest call
``main`` in-process where a subprocess would add nothing but start-up time.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from energyflow.cli import main, report, sample
from energyflow.training.fit import fit
from energyflow.training.schedule import lr_factor

# the reports judge 500 held-out rows: the judges have tests of their own (test_metrics.py)
pytestmark = pytest.mark.usefixtures("small_reports")

QUICK = "--blocks 1 --hidden 8 --n-train 200 --batch-size 32 --eval-every 0"


def run_cli(*words: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "energyflow", *words],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_args(out: Path, steps: int = 5, extra: str = "", data: str = "moons") -> list[str]:
    words = ["train", "--data", data, *QUICK.split(), "--steps", str(steps), *extra.split()]
    return [*words, "--out", str(out)]


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# ---- data loss and mixed runs -------------------------------------------------------------------
def test_a_second_run_on_a_locked_folder_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "energyflow", *train_args(out, steps=100000)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while not (out / "config.json").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "config.json").exists(), "the first run never started"
        before = files(out)
        second = run_cli(*train_args(out, steps=3), cwd=tmp_path)
        assert second.returncode != 0
        assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        resumed = run_cli("train", "--out", str(out), "--resume", cwd=tmp_path)
        assert resumed.returncode != 0 and f"pid {first.pid}" in resumed.stderr
        assert files(out)["config.json"] == before["config.json"]
    finally:
        first.kill()
        first.wait()


def test_a_finished_run_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(out)) == 0
    before = files(out)
    assert main(train_args(out, steps=7)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert files(out) == before


def test_a_non_run_folder_is_refused_and_left_untouched(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    (out / "notes.txt").write_text("keep me")
    before = files(out)
    assert main(train_args(out)) == 2
    assert "not an energyflow run" in capsys.readouterr().err
    assert files(out) == before and sorted(p.name for p in out.iterdir()) == sorted(before)
    assert main(train_args(out, extra="--overwrite")) == 0  # explicitly allowed
    assert (out / "notes.txt").read_text() == "keep me"


def test_resume_refuses_contradicting_flags_and_extends_with_steps(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(out, steps=6, extra="--checkpoint-every 3")) == 0
    for flag in ("--lr 0.5", "--hidden 16", "--model affine", "--data rings"):
        code = main(["train", "--out", str(out), "--resume", *flag.split()])
        err = capsys.readouterr().err
        assert code == 2 and flag.split()[0] in err and "contradict" in err, flag
    assert main(["train", "--out", str(out), "--resume"]) == 2
    assert "it stopped at its 6 steps" in capsys.readouterr().err
    same = "--lr 0.003 --hidden 8".split()  # equal to the saved values (lr: the recipe)
    assert main(["train", "--out", str(out), "--resume", *same, "--steps", "9"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 9
    assert json.loads((out / "metrics.json").read_text())["steps"] == 9


def test_extending_a_run_never_raises_the_learning_rate(tmp_path):
    from energyflow.models import SemiAutoregressiveGenerator

    data = torch.randn(300, 2)
    torch.manual_seed(0)
    model = SemiAutoregressiveGenerator(2, 1, hidden_features=(8,))
    state = fit(model, data, steps=20, batch_size=16, progress=False, checkpoint=tmp_path / "c.pt")
    state = fit(
        model, data, steps=40, batch_size=16, progress=False, checkpoint=tmp_path / "c.pt",
        resume=True,
    )  # fmt: skip
    rates = [lr_factor(state.lr_segments, step) for step in range(41)]
    assert all(later <= earlier + 1e-12 for earlier, later in zip(rates, rates[1:]))
    assert state.step == 40 and len(state.lr_segments) == 2
    with pytest.raises(ValueError, match="has done 40 steps"):
        fit(model, data, steps=30, progress=False, checkpoint=tmp_path / "c.pt", resume=True)


def test_run_files_get_the_users_umask(tmp_path):
    out = tmp_path / "run"
    previous = os.umask(0o022)
    try:
        assert main(train_args(out)) == 0
        assert (
            main(["sample", "--run", str(out), "--n", "10", "--out", str(tmp_path / "s.npy")]) == 0
        )
    finally:
        os.umask(previous)
    for path in [*out.iterdir(), tmp_path / "s.npy"]:
        if path.name != ".lock":
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# ---- data reading -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, header, rows",
    [
        ("\ufeff1,2\n3,4\n" + "5,6\n" * 10, None, 12),  # BOM on a data row: kept
        ("1,2,3\n" + "4,5,6\n" * 10, None, 11),  # numeric first row: data
        ("a,b\n" + "1,2\n" * 11, None, 11),  # names: header
        ("1,2\n" + "3,4\n" * 10, True, 10),  # forced header
        ("a;b\n" + "1,5;2\n" * 11, None, 11),  # semicolons with decimal commas
        ("a\tb\n" + "1\t2\n" * 11, None, 11),  # tabs
    ],
)
def test_csv_header_and_delimiter_rules(tmp_path, content, header, rows):
    from energyflow.training.data import read_table

    path = tmp_path / "d.CSV"  # upper-case suffix accepted
    path.write_text(content, encoding="utf-8")
    values, _ = read_table(path, header)
    assert values.shape == (rows, 2 if "a" in content or header or "\ufeff" in content else 3)
    if ";" in content:
        assert values[0, 0] == pytest.approx(1.5)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: p.with_suffix(".csv").write_text("1,,3\n" + "1,2,3\n" * 11), "row 1, column 2"),
        (lambda p: p.with_suffix(".csv").write_text("1,2\n" * 10 + "1e39,2\n"), "float32 range"),
        (
            lambda p: p.with_suffix(".csv").write_text("1,2\n\n" + "1,2\n" * 10 + "x,2\n"),
            "row 13, column 1",  # the real line number, blank lines counted
        ),
        (lambda p: np.save(p.with_suffix(".npy"), np.ones((20, 2), complex)), "complex"),
        (lambda p: np.save(p.with_suffix(".npy"), np.array([[1, "a"]] * 20, object)), "numeric"),
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros((0, 3))), "empty"),
        (lambda p: p.with_suffix(".npy").write_text("1,2\n" * 20), "not a readable .npy"),
        (lambda p: p.with_suffix(".csv").mkdir(), "holds no .png"),
    ],
)
def test_bad_data_files_fail_in_one_line_before_writing(tmp_path, capsys, make, words):
    base = tmp_path / "data"
    make(base)
    path = next(tmp_path.glob("data.*"))
    out = tmp_path / "run"
    code, err = main(train_args(out, data=str(path))), capsys.readouterr().err
    assert code == 2 and words in err and str(path) in err, err
    errors = [line for line in err.splitlines() if line.startswith("energyflow: error")]
    assert len(errors) == 1 and "Traceback" not in err and not out.exists()


def test_relative_data_paths_are_stored_absolute(tmp_path, monkeypatch, capsys):
    np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32))
    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    assert main(train_args(out, data="d.npy")) == 0
    assert json.loads((out / "config.json").read_text())["data"]["data"] == str(tmp_path / "d.npy")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["eval", "--run", str(out)]) == 0
    assert "test energy distance" in capsys.readouterr().out


# ---- arguments ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, words",
    [
        ("--steps 0", "--steps"),
        ("--batch-size 1", "--batch-size"),
        ("--lr 0", "--lr"),
        ("--lr -1", "--lr"),
        ("--estimator score --samples-per-target 1", "--samples-per-target"),
        ("--noise-features -1", "--noise-features"),
        ("--noise-distribution laplace", "--noise-distribution"),
        ("--n-train 5", "--n-train"),
        ("--blocks -1", "--blocks"),
        ("--blocks 3", "--blocks 3 exceeds"),
        ("--eval-every -1", "--eval-every"),
        ("--checkpoint-every -2", "--checkpoint-every"),
        ("--hidden 0", "--hidden"),
        ("--transforms 0", "--transforms"),
        ("--objective mle", "objective='mle' needs a model with a density"),
    ],
)
def test_bad_train_arguments_fail_in_one_line_before_writing(tmp_path, capsys, extra, words):
    out = tmp_path / "run"
    code = _exit_code(lambda: main(train_args(out, extra=extra)))
    err = capsys.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_duplicate_context_columns_are_refused(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("a,b,c\n" + "1,2,3\n" * 12)
    args = ["train", "--data", str(path), "--context-cols", "c", "2", "--out", str(tmp_path / "r")]
    assert main(args) == 2 and "names a column twice" in capsys.readouterr().err


def _exit_code(call) -> int:
    try:
        return call()
    except SystemExit as exit:  # argparse rejects a value
        return exit.code


def test_sample_and_eval_arguments(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(out)) == 0
    samples = str(tmp_path / "s.npy")
    assert (
        _exit_code(lambda: main(["sample", "--run", str(out), "--n", "0", "--out", samples])) == 2
    )
    assert "--n" in capsys.readouterr().err
    missing = str(tmp_path / "no" / "s.npy")
    assert main(["sample", "--run", str(out), "--out", missing]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert main(["sample", "--run", str(out), "--out", str(tmp_path / "a_file" / "s.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    locked = tmp_path / "read_only"
    locked.mkdir(mode=0o555)
    if not os.access(locked, os.W_OK):  # (root writes anywhere: then this case cannot be made)
        assert main(["sample", "--run", str(out), "--out", str(locked / "s.npy")]) == 2
        assert "not writable" in capsys.readouterr().err
    assert main(["sample", "--run", str(out), "--n", "100000000000", "--out", samples]) == 2
    assert "GiB" in capsys.readouterr().err and not Path(samples).exists()
    three = tmp_path / "three.npy"
    np.save(three, np.ones((30, 3), np.float32))
    assert main(["eval", "--run", str(out), "--data", str(three)]) == 2
    assert "3 features" in capsys.readouterr().err
    (out / "model.pt").write_bytes(b"truncated")
    assert main(["eval", "--run", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a readable energyflow model" in err and len(err.strip().splitlines()) == 1


def test_conditional_sampling_context_checks(tmp_path, capsys):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(80, 3)).astype(np.float32)
    data = tmp_path / "d.npy"
    np.save(data, values)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--context-cols", "2", "--blocks", "1", "--hidden", "8"]
    args += ["--steps", "3", "--batch-size", "16", "--eval-every", "0", "--out", str(out)]
    assert main(args) == 0
    samples = tmp_path / "s.npy"
    sample = ["sample", "--run", str(out), "--out", str(samples)]
    assert main(sample) == 2 and "--context" in capsys.readouterr().err
    for bad, words in (
        (np.zeros((0, 1), np.float32), "non-empty"),
        (np.array([[1.0], [np.nan]], np.float32), "NaN"),
        (np.zeros((4, 2), np.float32), "(rows, 1)"),
    ):
        np.save(tmp_path / "c.npy", bad)
        assert main([*sample, "--context", str(tmp_path / "c.npy")]) == 2
        assert words in capsys.readouterr().err
    np.save(tmp_path / "c.npy", np.zeros((4, 1), np.float32))
    assert main([*sample, "--context", str(tmp_path / "c.npy")]) == 0
    assert np.load(samples).shape == (4, 2)  # one sample per context row
    assert main([*sample, "--context", str(tmp_path / "c.npy"), "--n", "5"]) == 0
    assert np.load(samples).shape == (5, 4, 2)  # --n samples per context row


def test_no_traceback_reaches_the_user_unless_debug(tmp_path):
    result = run_cli("train", "--data", "nope.csv", "--out", "r", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if line.startswith("energyflow")
    ]
    debug = run_cli("train", "--data", "nope.csv", "--out", "r", "--debug", cwd=tmp_path)
    assert "Traceback" in debug.stderr


# ---- late failures ------------------------------------------------------------------------------
def test_tiny_and_constant_data_train_evaluate_and_plot(tmp_path):
    tiny = tmp_path / "tiny.npy"
    np.save(tiny, np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32))
    constant = tmp_path / "constant.npy"
    np.save(constant, np.ones((40, 2), np.float32))
    for data in (tiny, constant):
        out = tmp_path / data.stem
        assert main(train_args(out, steps=3, data=str(data))) == 0
        assert (out / "model.pt").exists() and (out / "metrics.json").exists()
        assert (out / "samples.png").exists()


def test_a_failure_after_training_keeps_the_model(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("plotting exploded")

    monkeypatch.setattr(report, "save_samples_png", broken)
    out = tmp_path / "run"
    assert main(train_args(out)) == 0
    assert "model is saved" in capsys.readouterr().err and (out / "model.pt").exists()
    monkeypatch.undo()
    assert main(["eval", "--run", str(out)]) == 0


def test_sampling_streams_in_chunks_to_the_file(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert main(train_args(out)) == 0
    monkeypatch.setattr(sample, "SAMPLE_CHUNK_ROWS", 1000)
    path = tmp_path / "s.npy"
    assert main(["sample", "--run", str(out), "--n", "4500", "--out", str(path)]) == 0
    values = np.load(path)
    assert values.shape == (4500, 2) and np.isfinite(values).all()
    assert not np.allclose(values[:1000], values[1000:2000])  # every chunk drawn afresh


def test_a_loss_that_becomes_nan_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    from energyflow.training.objective import Objective

    real = Objective.forward
    calls = {"n": 0}

    def diverging(*args):  # as with a far too large learning rate: NaN from step 7 on
        calls["n"] += 1
        loss = real(*args)
        return loss * float("nan") if calls["n"] > 6 else loss

    monkeypatch.setattr(Objective, "forward", diverging)
    out = tmp_path / "run"
    code = main(train_args(out, steps=50, extra="--checkpoint-every 5"))
    err = capsys.readouterr().err
    assert (
        code == 1
        and "became nan at step 6: training diverged" in err
        and "last good checkpoint" in err
    )
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert saved["state"]["step"] == 5 and not (out / "model.pt").exists()
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
