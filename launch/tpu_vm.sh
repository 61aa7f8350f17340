#!/usr/bin/env bash
# Runs one experiment on a Cloud TPU VM (single host). Create the VM first, e.g.
#   gcloud compute tpus tpu-vm create genrl --zone=us-central2-b \
#       --accelerator-type=v4-8 --version=tpu-ubuntu2204-base
# then copy the repository there and run:
#   bash launch/tpu_vm.sh python -m experiments.vae --seeds=64 --workdir=gs-mounted/runs/vae
# Seeds are vmapped on one chip; experiments resume from --workdir after preemption.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d .venv ]; then
  python3 -m venv .venv
  . .venv/bin/activate
  pip install -q -c constraints.txt -e . && pip install -q "jax[tpu]==$(python -c 'import jax; print(jax.__version__)')"
else
  . .venv/bin/activate
fi
exec "$@"
