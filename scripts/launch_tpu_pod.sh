#!/usr/bin/env bash
# Train on every worker of a Cloud TPU VM slice (v4, v5e, v5p pods): the same command on all
# workers; JAX detects the slice by itself (adcsr_jax/train/distributed.py), process 0 writes
# metrics and exports, every worker takes part in orbax saves.
#
#   scripts/launch_tpu_pod.sh [--dry-run] [--setup] TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]
#
# Needs gcloud on this machine. The repository is expected at $REPO_DIR (default ~/adcsr-jax) on
# every worker; --setup first copies this checkout's committed files there (git archive of HEAD)
# and installs the TPU build (`pip install -e '.[tpu]'`, one venv per worker). WORKDIR must be one directory that every
# worker sees at the same path (a gcsfuse mount of a bucket, or Filestore NFS): checkpoints are
# written by all workers together. Data paths in CONFIG must also be readable on every worker;
# each reads only its own shard of the files.
# --dry-run prints the gcloud commands instead of running them.
set -euo pipefail
DRY=0
SETUP=0
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --setup) SETUP=1 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [[ $# -lt 4 ]]; then
  echo "usage: $0 [--dry-run] [--setup] TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]" >&2
  exit 2
fi
TPU=$1 ZONE=$2 CONFIG=$3 WORKDIR=$4
shift 4
REPO_DIR=${REPO_DIR:-'~/adcsr-jax'}
run() {
  if [[ $DRY == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}
ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "$1"
}
if [[ $SETUP == 1 ]]; then
  ARCHIVE=${TMPDIR:-/tmp}/adcsr-jax-$$.tar.gz
  run git -C "$(dirname "$0")/.." archive --format=tar.gz -o "$ARCHIVE" HEAD
  run gcloud compute tpus tpu-vm scp --zone "$ZONE" --worker=all "$ARCHIVE" "$TPU:adcsr-jax.tar.gz"
  ssh_all "mkdir -p $REPO_DIR && tar -xzf adcsr-jax.tar.gz -C $REPO_DIR && cd $REPO_DIR && python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'"
fi
EXTRA=$(printf ' %q' "$@")
ssh_all "cd $REPO_DIR && .venv/bin/adcsr train --config $(printf %q "$CONFIG") --workdir $(printf %q "$WORKDIR")${EXTRA% }"
