"""CUDA training checks for gpu_check.sh: short ``energyflow train`` runs on the GPU.

Each model and objective trains 200 steps on cuda (fp32, bf16, fp16, and bf16 + compile), a run
is resumed on cuda and another checkpoint saved on cuda is resumed on the CPU, and with two or
more GPUs a 2-process torchrun (nccl) run is checked against one process. Prints one line per
check with its seconds and final loss, and exits non-zero if any failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BASE = ["--data", "8gaussians", "--steps", "200", "--eval-every", "0", "--checkpoint-every", "100"]
CHECKS = {
    "saef energy fp32": ["--model", "saef"],
    "saef energy bf16": ["--model", "saef", "--precision", "bf16"],
    "saef energy fp16": ["--model", "saef", "--precision", "fp16"],
    "saef energy bf16 compile": ["--model", "saef", "--precision", "bf16", "--compile"],
    "affine mle fp32": ["--model", "affine", "--objective", "mle"],
    "affine hybrid fp32": ["--model", "affine", "--objective", "hybrid"],
    "saef score val+ema": [
        "--model",
        "saef",
        "--estimator",
        "score",
        "--val-fraction",
        "0.1",
        "--ema",
        "0.99",
    ],
}


def run(args: list[str], prefix: list[str] = ()) -> tuple[bool, str]:
    """``energyflow train`` with ``args`` (under ``prefix``, e.g. torchrun, when given)."""
    command = [
        *prefix,
        *([sys.executable, "-m", "energyflow"] if not prefix else ["-m", "energyflow"]),
        "train",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    return done.returncode == 0, (done.stdout + done.stderr)[-400:]


def final_loss(out: Path) -> float:
    return json.loads((out / "metrics.json").read_text())["final_loss"]


def main() -> int:
    failures = 0
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for name, extra in CHECKS.items():
            out = root / name.replace(" ", "_")
            start = time.perf_counter()
            ok, tail = run([*BASE, *extra, "--device", "cuda", "--out", str(out)])
            seconds = time.perf_counter() - start
            print(
                f"{'ok  ' if ok else 'FAIL'} {name:28s} {seconds:6.1f} s",
                f"loss {final_loss(out):.4f}" if ok else tail,
            )
            failures += not ok
        resumed = root / "saef_energy_fp32"
        ok, tail = run(["--out", str(resumed), "--resume", "--steps", "300", "--device", "cuda"])
        print(f"{'ok  ' if ok else 'FAIL'} resume on cuda to 300 steps", "" if ok else tail)
        failures += not ok
        ok, tail = run(
            [
                "--out",
                str(root / "affine_mle_fp32"),
                "--resume",
                "--steps",
                "300",
                "--device",
                "cpu",
            ]
        )
        print(f"{'ok  ' if ok else 'FAIL'} cuda checkpoint resumed on cpu", "" if ok else tail)
        failures += not ok
        if torch.cuda.device_count() >= 2:
            torchrun = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                "2",
            ]
            ok, tail = run([*BASE, "--device", "auto", "--out", str(root / "ddp")], prefix=torchrun)
            print(
                f"{'ok  ' if ok else 'FAIL'} torchrun 2 x nccl",
                f"loss {final_loss(root / 'ddp'):.4f}" if ok else tail,
            )
            failures += not ok
        else:
            print("skip torchrun 2 x nccl: one GPU")
    print(
        "all CUDA training checks passed"
        if not failures
        else f"{failures} CUDA training checks FAILED"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
