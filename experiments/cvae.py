"""Conditional VAE on MNIST / Fashion-MNIST: the VAE with a label input, N seeds in one program.

  python -m experiments.cvae --seeds=4 --data_dir=../shared/data/mnist --test_fraction=0.1
  python -m experiments.cvae --seeds=4 --dataset=fashion_mnist --data_dir=../shared/data/fashion_mnist
  python -m experiments.cvae --prior=learned --arch=conv

Writes to --workdir what the VAE writes (metrics.jsonl, run_info.json, checkpoints/, results.json
with the test -ELBO and IWAE bound, now of log p(x|y)) plus the evaluator's conditional accuracy
(--samples_per_label decoder means per label, classified by a convnet trained on the training
split only and cached in --evaluator_dir), learning_curves.png and conditional_samples.png (row
k = samples for label k). Rerunning the same command resumes. The experiment itself is
``genrl_jax.generative.cvae_run``.
"""

from genrl_jax.run import cli

if __name__ == "__main__":
  cli.main("genrl_jax.generative.cvae_run")
