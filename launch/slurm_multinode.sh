#!/usr/bin/env bash
# One multi-node run: one process per GPU over all nodes of the job, the seed (x sweep) axis
# split over every GPU by jax.distributed (coordinator: the first node of the job's node list).
#   sbatch --nodes=2 launch/slurm_multinode.sh python -m experiments.vae --seeds=16 \
#       --sweep="learning_rate=1e-3,3e-4,1e-4" --workdir=runs/vae_sweep
# --seeds x sweep points must be a multiple of the number of processes (nodes x GPUs per node).
# Preemption / time limit: SLURM sends SIGTERM, every process finishes its chunk and the run
# checkpoints and stops; --requeue reruns the same command, which resumes from --workdir (on a
# file system every node sees).
#SBATCH --job-name=genrl_jax_mn
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=128G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=TERM@120
#SBATCH --output=runs/slurm/%j.out
set -euo pipefail
[ $# -gt 0 ] || { echo "error: usage: sbatch --nodes=N launch/slurm_multinode.sh python -m experiments.NAME [flags]" >&2; exit 2; }
cd "${SLURM_SUBMIT_DIR:-.}"
[ -f .venv/bin/activate ] && . .venv/bin/activate
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# The coordinator: process 0 on the first node of the allocation. jax.distributed also finds it
# by itself under srun (its SLURM cluster detection); these flags make the choice explicit.
head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
port=$((20000 + SLURM_JOB_ID % 20000))
echo "[$(date -Is)] job $SLURM_JOB_ID: $SLURM_NTASKS processes on $SLURM_JOB_NUM_NODES nodes, coordinator $head:$port: $*"
# One task per GPU; each task's process id is its SLURM_PROCID (expanded by srun, per task).
srun --kill-on-bad-exit=1 bash -c 'exec "$@" --coordinator_address='"$head:$port"' \
  --num_processes=$SLURM_NTASKS --process_id=$SLURM_PROCID' _ "$@"
