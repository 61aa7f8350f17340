"""Variational autoencoder on MNIST / Fashion-MNIST, N seeds trained in one program.

  python -m experiments.vae --seeds=8
  python -m experiments.vae --seeds=8 --dataset=fashion_mnist --data_dir=../shared/data/fashion_mnist

Writes to --workdir: metrics.jsonl, run_info.json, checkpoints/, results.json (test -ELBO and the
IWAE test NLL per seed, mean ± 95 % CI) and PNGs (learning curves, prior samples,
reconstructions, the latent manifold when --latent_dim=2). Rerunning the same command resumes.
"""

from __future__ import annotations

import os

from genrl_jax import config as cfg
from genrl_jax import run as runner
from genrl_jax.data import images
from genrl_jax.generative import vae
from genrl_jax.generative import vae_run
from genrl_jax.run import cli
from genrl_jax.run import config_flags

cli.define_run_flags(workdir="runs/vae", seeds=1, seed_loop="auto", chunk_label="epoch")
config_flags.define_flags(vae.VAEConfig)
config_flags.define_flags(images.DataConfig)


def main(argv):
  run_flags = cli.run_flags("vae")
  config = config_flags.from_flags(vae.VAEConfig)
  data_config = config_flags.from_flags(images.DataConfig)
  experiment = vae_run.build(config, data_config, run_flags.seed_loop)
  result = cli.run(experiment, run_flags)
  vae_run.print_results(result.results, result.eval_seconds)
  print(f"wrote {os.path.join(run_flags.workdir, runner.RESULTS_FILE)} and the figures",
        flush=True)


if __name__ == "__main__":
  runner.cli_main(main, host_device_per_core=True)
