#!/usr/bin/env bash
# One SLURM array task per line of a commands file (from launch/sweep.py):
#   sbatch --array=1-$(wc -l < cmds.txt) launch/slurm_array.sh cmds.txt
# A task that is preempted or times out can simply be requeued: every experiment resumes from
# the latest checkpoint in its --workdir.
#SBATCH --job-name=genrl_jax
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --output=runs/slurm/%A_%a.out
set -euo pipefail
cmds="${1:?usage: sbatch --array=1-N launch/slurm_array.sh COMMANDS_FILE}"
line=$(sed -n "${SLURM_ARRAY_TASK_ID}p" "$cmds")
[ -n "$line" ] || { echo "error: no line ${SLURM_ARRAY_TASK_ID} in $cmds" >&2; exit 2; }
cd "${SLURM_SUBMIT_DIR:-.}"
# Environment: a venv made with the README's GPU install command.
[ -f .venv/bin/activate ] && . .venv/bin/activate
export XLA_PYTHON_CLIENT_PREALLOCATE=false
echo "[$(date -Is)] task ${SLURM_ARRAY_TASK_ID} on $(hostname): $line"
eval "$line"
