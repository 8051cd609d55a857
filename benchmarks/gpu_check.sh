#!/usr/bin/env bash
# One script for a CUDA machine (README, "Benchmarks"): compile the Triton kernels for real, check
# them against the reference, time them against the cdist baseline, print a short table last.
# Output goes to stdout and to benchmarks/results/ (energy_cuda.{json,md}, gpu_validate.txt).
# Usage: bash benchmarks/gpu_check.sh   (uses the python on PATH, which needs torch + triton)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
# The C++ extension is CPU-only: skip it here, the package imports without it.
ENERGYFLOW_NO_EXT=1 $PY -m pip install -q --no-build-isolation --no-deps -e . >/dev/null
$PY -c "import energyflow, torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name()); print(energyflow.backends())"
mkdir -p benchmarks/results
$PY benchmarks/gpu_validate.py | tee benchmarks/results/gpu_validate.txt
cd benchmarks
$PY bench_masked.py --device cuda --repeats 5 --name masked_cuda
$PY bench_images.py --device cuda --repeats 5 --name images_cuda
$PY bench_energy.py --device cuda --sizes 4096 16384 65536 --dims 16 64 --sliced-n 1000000 --name energy_cuda
cd ..
# Training on CUDA through the CLI: each model and objective briefly, bf16 + compile, a resume,
# and a 2-process nccl run when there are 2 GPUs (the script's last lines say what passed).
$PY benchmarks/gpu_training_check.py | tee benchmarks/results/gpu_training.txt
