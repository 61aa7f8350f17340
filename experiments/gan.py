"""DCGAN on MNIST / Fashion-MNIST (Radford et al. 2015), N seeds in one program.

  python -m experiments.gan --seeds=4 --data_dir=../shared/data/mnist --test_fraction=0.1
  python -m experiments.gan --seeds=4 --dataset=fashion_mnist --data_dir=../shared/data/fashion_mnist

Writes to --workdir: metrics.jsonl (per-iteration D and G losses), run_info.json, checkpoints/,
snapshot grids at iterations 0, 250, 500, 1000, 2000, 3000 (then every --snapshot_every) with
the evaluator's classifier score and Fréchet distance per snapshot and seed (snapshots.jsonl),
snapshots.png (one column per snapshot), losses.png and results.json. Rerunning resumes. The
experiment itself is ``genrl_jax.generative.gan_run``.
"""

from genrl_jax.run import cli

if __name__ == "__main__":
  cli.main("genrl_jax.generative.gan_run")
