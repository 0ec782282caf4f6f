#!/usr/bin/env bash
# One-shot GPU check, at most 8 minutes on one GPU: the CUDA-only tests (bf16 autocast, fp16 with the gradient scaler,
# the chunked step, checkpoint/resume on CUDA), then training-step timings of the ViT-L-14 and ViT-bigG-14 text towers
# (random weights) at batch 512 on the paper's caption mix, with the extrapolated paper-recipe time per backbone,
# written to benchmarks/results/gpu.json.
#   bash benchmarks/gpu.sh                          # on a machine with a CUDA GPU
#   bash benchmarks/gpu.sh --device cpu --dry-run   # CPU smoke test (tiny backbone), run by tests/test_gpu_script.py
# Other arguments go to benchmarks/gpu.py (--backbones, --batch, --steps, --out ...).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
start=$SECONDS
echo "== CUDA tests (skipped where there is no CUDA device)"
timeout 240 "$PY" -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider
echo "== training-step timings"
timeout 360 "$PY" benchmarks/gpu.py "$@"
echo "== done in $((SECONDS - start)) s"
