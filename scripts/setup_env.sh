#!/usr/bin/env bash
# Create .venv and install adcsr-jax with every extra (torch CPU, TF, data, export, dev).
# Needs only Python 3.11 and pip; about 70 s and 3.8 GB on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[all]'
