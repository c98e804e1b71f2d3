#!/usr/bin/env bash
# One prepared check of a lent GPU (H100 / H200 class), recorded as JSON; see scripts/gpu_check.py
# for what it measures. Needs jax with CUDA (pip install -e '.[all]' "jax[cuda12]"); PYTHON
# selects the interpreter (default: .venv/bin/python when present, else python3).
#
#   scripts/gpu_check.sh --out gpu_check.json            # on the GPU machine, a few minutes
#   scripts/gpu_check.sh --tiny --out gpu_check_tiny.json # anywhere, tiny networks (the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if command -v nvidia-smi > /dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
fi
exec "$PYTHON" scripts/gpu_check.py "$@"
