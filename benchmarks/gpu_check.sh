#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): our encoder's training step and
# encoding vs PyTorch on the same GPU in bfloat16 and float32, and a short
# cells-ranker training with its steps/s and peak memory. Under 8 minutes on one
# GPU; needs only the working tree and the image's jax/flax/optax/torch/transformers
# (no pip install, no network).
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine
#   bash benchmarks/gpu_check.sh --smoke    # anywhere (CPU), seconds: the script runs
#
# PYTHON picks the interpreter (default python3); the last line is the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # torch runs beside jax on the same GPU
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec timeout "${GPU_CHECK_TIMEOUT:-470}" "$PY" -m benchmarks.gpu_check "$@"
