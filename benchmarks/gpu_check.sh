#!/usr/bin/env bash
# One script for a CUDA machine (README, "Benchmarks"): compile the Triton kernels for real, check
# them against the reference, time them against the baselines, and train through the CLI.
# Output goes to stdout and to benchmarks/results/ (gpu_validate.txt, masked_cuda.*, images_cuda.*,
# energy_cuda.*, gpu_training.txt).
# Usage: bash benchmarks/gpu_check.sh [PART ...]   PART: masked images validate energy training
#        (default: all, in that order: the timings the open issues wait for first). Each part runs
#        under its own time limit (seconds, the LIMIT_<PART> variables below), so one slow part
#        cannot take the others' time on a short device lease; a part that fails or runs out is
#        reported and the next one runs.
# Uses the python on PATH (or $PYTHON), which needs torch + triton; KeOps, GeomLoss and zuko
# baselines run where those packages are importable.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
# The defaults sum to 530 s: one 10-minute device command runs them all.
: "${LIMIT_MASKED:=140}" "${LIMIT_IMAGES:=60}" "${LIMIT_VALIDATE:=110}" "${LIMIT_ENERGY:=130}"
: "${LIMIT_TRAINING:=90}"
# The C++ extension is CPU-only: skip it here, the package imports without it.
ENERGYFLOW_NO_EXT=1 $PY -m pip install -q --no-build-isolation --no-deps -e . >/dev/null || exit 1
$PY -c "import energyflow, torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name()); print(energyflow.backends())" || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv || true
mkdir -p benchmarks/results
failed=()

part() {  # part NAME LIMIT LOG DIR COMMAND...: COMMAND in DIR under the time limit, tee'd to LOG
  local name=$1 limit=$2 log=$3 dir=$4 start=$SECONDS
  shift 4
  echo "== $name (limit ${limit} s)"
  (cd "$dir" && timeout --signal=INT --kill-after=15 "$limit" "$@") 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  echo "== $name: exit $status after $((SECONDS - start)) s"
  [ "$status" -eq 0 ] || failed+=("$name (exit $status)")
}

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(masked images validate energy training)
R=benchmarks/results
for name in "${parts[@]}"; do
  case $name in
    validate) part validate "$LIMIT_VALIDATE" $R/gpu_validate.txt . $PY benchmarks/gpu_validate.py ;;
    masked) part masked "$LIMIT_MASKED" $R/masked_cuda.log benchmarks \
      $PY bench_masked.py --device cuda --repeats 5 --name masked_cuda ;;
    images) part images "$LIMIT_IMAGES" $R/images_cuda.log benchmarks \
      $PY bench_images.py --device cuda --repeats 5 --name images_cuda ;;
    energy) part energy "$LIMIT_ENERGY" $R/energy_cuda.log benchmarks \
      $PY bench_energy.py --device cuda --sizes 4096 16384 65536 --dims 16 64 \
      --score-batches 4096 --score-ms 4 100 --sliced-n 1000000 --name energy_cuda ;;
    training) part training "$LIMIT_TRAINING" $R/gpu_training.txt . \
      $PY benchmarks/gpu_training_check.py ;;
    *) echo "unknown part $name (masked images validate energy training)"; exit 2 ;;
  esac
done
if [ ${#failed[@]} -eq 0 ]; then
  echo "gpu_check: every part passed"
else
  echo "gpu_check: FAILED: ${failed[*]}"
  exit 1
fi
