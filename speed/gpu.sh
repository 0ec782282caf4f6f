#!/usr/bin/env bash
# The GPU check, one command, made for the lent GPU machine as it is: its image (speed/device_packages.txt) has
# torch and pytest but no open_clip, spaCy or datasets, and it can fetch nothing. Prepare .gpu/ here first
# (`make gpu-prep`), carry it, then this script:
#   1. installs the carried wheels (.gpu/wheels) with pip --no-index --no-deps --target into a temporary folder;
#   2. imports the check's entry points (fails at once, naming the module, if a wheel is missing);
#   3. runs the CUDA-only tests (tests/test_cuda.py: bf16, fp16 + gradient scaler, chunked step, resume on CUDA);
#   4. times the training step of ViT-L-14 and ViT-bigG-14 (random weights, batch 512) on the prepared token arrays
#      (.gpu/captions: no spaCy here), chunked and whole batch (speed/gpu.py).
# All of it within GPU_BUDGET_S seconds (default 270: a device call with timeout_s=300 leaves room for a second try
# inside 15 minutes of device time); results in $OUT (the device tool's folder; elsewhere runs/gpu-check):
# gpu.json (written after every measurement, so a cut-short run keeps what finished), gpu.log, cuda-tests.log.
#   bash speed/gpu.sh                          # on a machine with a CUDA GPU
#   PYTHON=... bash speed/gpu.sh --device cpu --dry-run   # CPU rehearsal (tiny CLIP): tests/test_gpu_script.py
# Other arguments go to speed/gpu.py (--backbones, --batch, --steps ...). PYTHON: the interpreter (python3).
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
GPU_DIR=${LINCIR_GPU_DIR:-.gpu}
RESULTS=${OUT:-runs/gpu-check}
BUDGET=${GPU_BUDGET_S:-270}
CUDA_TESTS_S=${CUDA_TESTS_S:-150}  # the tests take well under a minute on a GPU; this caps a hang
SITE=$(mktemp -d "${TMPDIR:-/tmp}/lincir-gpu-site.XXXXXX")
trap 'rm -rf "$SITE"' EXIT

check() {
  local start=$SECONDS
  if ! ls "$GPU_DIR"/wheels/*.whl >/dev/null 2>&1 || [ ! -d "$GPU_DIR/captions" ]; then
    echo "gpu.sh: $GPU_DIR/ lacks wheels/ or captions/: run 'make gpu-prep' on a machine with the package index, and carry $GPU_DIR"
    return 2
  fi
  echo "== installing the carried wheels: $(cd "$GPU_DIR/wheels" && echo *.whl)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$GPU_DIR"/wheels/*.whl ||
    { echo "gpu.sh: pip could not install $GPU_DIR/wheels"; return 3; }
  export PYTHONPATH="$PWD:$SITE"  # this checkout's lincir, then the carried packages, then the image's

  echo "== imports"
  "$PY" -c 'import open_clip, lincir.training, lincir.captions' ||
    { echo "gpu.sh: an import failed with this machine's packages and the carried wheels: add the missing package to" \
           "CARRIED in speed/gpu_prep.py, or import it only where it is used"; return 4; }

  echo "== CUDA tests (skipped where there is no CUDA device), at most ${CUDA_TESTS_S} s"
  local t=$SECONDS
  timeout "$CUDA_TESTS_S" "$PY" -m pytest -m cuda tests/test_cuda.py -p no:cacheprovider 2>&1 | tee "$RESULTS/cuda-tests.log"
  local tests_rc=${PIPESTATUS[0]} tests_s=$((SECONDS - t))
  local summary; summary=$(tail -n 1 "$RESULTS/cuda-tests.log")
  [ "$tests_rc" = 124 ] && summary="stopped after ${CUDA_TESTS_S} s: $summary"

  local left=$((BUDGET - (SECONDS - start)))
  echo "== training-step timings, at most $left s"
  timeout "$((left > 30 ? left : 30))" "$PY" speed/gpu.py --budget-s "$((left > 40 ? left - 10 : 30))" \
    --out "$RESULTS/gpu.json" --cuda-tests "$tests_rc" "$tests_s" "$summary" "$@"
  local timing_rc=$?

  echo "== done in $((SECONDS - start)) s: CUDA tests $([ "$tests_rc" = 0 ] && echo passed || echo "FAILED (exit $tests_rc)");" \
       "timings $([ "$timing_rc" = 0 ] && echo finished || echo "FAILED (exit $timing_rc)"); results in $RESULTS"
  [ "$tests_rc" = 0 ] && [ "$timing_rc" = 0 ]
}

mkdir -p "$RESULTS"
check "$@" 2>&1 | tee "$RESULTS/gpu.log"
exit "${PIPESTATUS[0]}"
