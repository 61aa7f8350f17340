"""Variational autoencoder on MNIST / Fashion-MNIST, N seeds trained in one program.

  python -m experiments.vae --seeds=8
  python -m experiments.vae --seeds=8 --dataset=fashion_mnist --data_dir=../shared/data/fashion_mnist

Writes to --workdir: metrics.jsonl, run_info.json, checkpoints/, results.json (test -ELBO and the
IWAE test NLL per seed, mean ± 95 % CI) and PNGs (learning curves, prior samples,
reconstructions, the latent manifold when --latent_dim=2). Rerunning the same command resumes.
The experiment itself is ``genrl_jax.generative.vae_run``.
"""

from genrl_jax.run import cli

if __name__ == "__main__":
  cli.main("genrl_jax.generative.vae_run")
