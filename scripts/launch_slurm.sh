#!/usr/bin/env bash
# Train on GPU nodes under SLURM: one process per node, each driving all GPUs of its node.
#
#   sbatch --nodes=2 scripts/launch_slurm.sh CONFIG WORKDIR [--config.x=y ...]
#   DRY_RUN=1 bash scripts/launch_slurm.sh CONFIG WORKDIR      # prints the srun command
#
# JAX detects the SLURM job (adcsr_jax/train/distributed.py): process i = node i, coordinator on
# the first node. The repository and its .venv (`pip install -e '.[cuda]'`) must be at the same
# path on every node (shared home or NFS), and WORKDIR one shared directory (checkpoints are
# written by every process together). --kill-on-bad-exit stops the job when one process fails.
#SBATCH --job-name=adcsr-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=72:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: sbatch [--nodes=N] $0 CONFIG WORKDIR [--config.x=y ...]" >&2
  exit 2
fi
CONFIG=$1 WORKDIR=$2
shift 2
REPO=${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
CMD=(srun --kill-on-bad-exit=1 --ntasks-per-node=1 "$REPO/.venv/bin/adcsr" train
  --config "$CONFIG" --workdir "$WORKDIR" "$@")
if [[ ${DRY_RUN:-0} == 1 ]]; then
  printf '%q ' "${CMD[@]}"
  echo
  exit 0
fi
exec "${CMD[@]}"
