#!/usr/bin/env bash
# One run over every host of a multi-host Cloud TPU VM pod slice (e.g. v4-32: 4 hosts), one
# process per host, started on all workers at once. jax.distributed detects the coordinator,
# process count and id on Cloud TPU VMs by itself. From your machine:
#   gcloud compute tpus tpu-vm create genrl-pod --zone=us-central2-b \
#       --accelerator-type=v4-32 --version=tpu-ubuntu2204-base
#   gcloud compute tpus tpu-vm scp --recurse --worker=all . genrl-pod:~/genrl_jax --zone=us-central2-b
#   gcloud compute tpus tpu-vm ssh genrl-pod --zone=us-central2-b --worker=all --command \
#     "cd ~/genrl_jax && bash launch/tpu_vm_pod.sh python -m experiments.vae --seeds=64 \
#      --workdir=/mnt/shared/runs/vae"
# --workdir must be a directory every host sees (a mounted bucket or NFS): orbax writes each
# host's shards into the one checkpoint of a step there, process 0 writes the metrics. After a
# preemption, recreate the slice (or wait for the queued resource) and run the same command: it
# resumes from --workdir. Seeds x sweep points must be a multiple of the number of hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "error: usage: bash launch/tpu_vm_pod.sh python -m experiments.NAME [flags]" >&2; exit 2; }
if [ ! -d .venv ]; then
  python3 -m venv .venv
  . .venv/bin/activate
  pip install -q -c constraints.txt -e . && pip install -q "jax[tpu]==$(python -c 'import jax; print(jax.__version__)')"
else
  . .venv/bin/activate
fi
exec "$@"
