"""energyflow.distributed and fit under torchrun: 2 processes on gloo, spawned by the tests.

The global loss and its gradients equal the single-process ones on the concatenated batch; a
2-process run follows the 1-process loss curve with the same global batch; its checkpoint
resumes in 1 process; a CLI run killed under torchrun resumes there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from energyflow import distributed, functional
from energyflow.models import SemiAutoregressiveGenerator
from energyflow.training.fit import fit

WORKER = Path(__file__).with_name("distributed_worker.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not sys.platform.startswith("linux"),
    reason="needs torch.distributed with gloo (and /proc to kill torchrun's workers)",
)


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*TORCHRUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_single_process_functions_are_the_plain_ops():
    x, y = torch.randn(2, 30, 3, dtype=torch.float64)
    assert not distributed.is_distributed()
    assert distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.all_gather(x) is x
    expected = functional.energy_distance(x, y, beta=1.5, include_xx=False)
    assert torch.equal(distributed.global_energy_distance(x, y, beta=1.5), expected)
    distributed.finish()  # no process group: nothing to close, no error
    assert not torch.distributed.is_initialized()


def test_global_losses_and_gradients_equal_the_concatenated_batch(tmp_path):
    _torchrun(str(WORKER), "loss", str(tmp_path / "loss.json"), cwd=tmp_path)
    worst = json.loads((tmp_path / "loss.json").read_text())
    assert len(worst) == 8  # 2 shapes x (3 betas + sliced)
    assert all(error < 1e-10 for error in worst.values()), worst


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (torchrun starts its workers in their own sessions)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def _single_process(steps: int, checkpoint=None, resume=False) -> list[float]:
    data = torch.randn(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(0)
    model = SemiAutoregressiveGenerator(2, 2, hidden_features=(16,)).double()
    state = fit(
        model,
        data,
        steps=steps,
        batch_size=64,
        lr=3e-3,
        seed=1,
        checkpoint=checkpoint,
        resume=resume,
        progress=False,
    )
    return [h["loss"] for h in state.history]


def test_two_processes_follow_the_one_process_curve_and_resume_in_one(tmp_path):
    _torchrun(str(WORKER), "fit", str(tmp_path / "curve.json"), cwd=tmp_path)
    two = json.loads((tmp_path / "curve.json").read_text())
    one = _single_process(20)
    assert len(two) == 20
    assert two == pytest.approx(one, rel=1e-10, abs=1e-12)
    # the 2-process checkpoint, extended in 1 process, continues like the 1-process run's
    extended = _single_process(30, checkpoint=tmp_path / "curve.json.pt", resume=True)
    _single_process(20, checkpoint=tmp_path / "one.pt")
    alone = _single_process(30, checkpoint=tmp_path / "one.pt", resume=True)
    assert len(extended) == 30 and extended == pytest.approx(alone, rel=1e-9)


@pytest.mark.slow_end_to_end
def test_a_killed_torchrun_training_resumes_under_torchrun(tmp_path):
    out = tmp_path / "run"
    args = [
        "-m",
        "energyflow",
        "train",
        "--data",
        "moons",
        "--n-train",
        "2000",
        "--hidden",
        "16",
        "--batch-size",
        "64",
        "--eval-every",
        "0",
        "--checkpoint-every",
        "10",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runner = subprocess.Popen(
        [*TORCHRUN, *args, "--steps", "100000"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoint = out / "checkpoint.pt"
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # let it run past its first checkpoint
    finally:  # a crash: every process killed at once, no chance to clean up
        for pid in [runner.pid, *_descendants(runner.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        runner.wait()
    saved = torch.load(checkpoint, weights_only=False)
    done = saved["state"]["step"]
    assert done >= 10 and done % 10 == 0 and not (out / "model.pt").exists()
    _torchrun(*args, "--resume", "--steps", str(done + 20), cwd=tmp_path)
    resumed = torch.load(checkpoint, weights_only=False)
    steps = [h["step"] for h in resumed["state"]["history"]]
    assert steps == list(range(1, done + 21))
    assert resumed["state"]["history"][:done] == saved["state"]["history"]
    assert (out / "model.pt").exists() and (out / "metrics.json").exists()
    # only rank 0 wrote: one config, and its saved settings are the run's
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["steps"] == done + 20 and config["train"]["device"] == "cpu"
