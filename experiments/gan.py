"""DCGAN on MNIST / Fashion-MNIST (Radford et al. 2015), N seeds in one program.

  python -m experiments.gan --seeds=4 --data_dir=../shared/data/mnist --test_fraction=0.1
  python -m experiments.gan --seeds=4 --dataset=fashion_mnist --data_dir=../shared/data/fashion_mnist

Writes to --workdir: metrics.jsonl (per-iteration D and G losses), run_info.json, checkpoints/,
snapshot grids at iterations 0, 250, 500, 1000, 2000, 3000 (then every --snapshot_every) with
the evaluator's classifier score and Fréchet distance per snapshot and seed (snapshots.jsonl),
snapshots.png (one column per snapshot), losses.png and results.json. Rerunning resumes.
"""

from __future__ import annotations

import os

from absl import flags

from genrl_jax import config as cfg
from genrl_jax import run as runner
from genrl_jax.data import images
from genrl_jax.generative import gan
from genrl_jax.generative import gan_run
from genrl_jax.run import cli
from genrl_jax.run import config_flags

cli.define_run_flags(workdir="runs/gan", seeds=1, seed_loop="auto", chunk_label="chunk")
config_flags.define_flags(gan.GANConfig)
config_flags.define_flags(images.DataConfig)
flags.DEFINE_string("evaluator_dir", "runs/evaluators", "Cache of the evaluator classifiers, one "
                    "directory per data set; reused when trained on the same training split.")
FLAGS = flags.FLAGS


def main(argv):
  run_flags = cli.run_flags("gan")
  config = config_flags.from_flags(gan.GANConfig)
  data_config = config_flags.from_flags(images.DataConfig)
  experiment = gan_run.build(config, data_config, run_flags.seed_loop, "gan", FLAGS.evaluator_dir)
  result = cli.run(experiment, run_flags)
  snapshots = result.results["extra"]["snapshots"]
  print("iteration | classifier score | Fréchet distance | H(labels) | mean H(label | image)   "
        "(mean ± 95% CI over seeds; score = exp(H(labels) - mean H(label | image)))")
  for it, row in snapshots.items():
    cells = [f"{row[key]['mean']:.3f} ± {row[key]['ci95_half_width']:.3f}" if key in row else "-"
             for key in gan_run.SNAPSHOT_NUMBERS]
    print(f"{int(it):9d} | " + " | ".join(cells))
  real = result.results["extra"]["real"]
  print(f"     real | {real['classifier_score_train_images']:.3f} | "
        f"{real['frechet_distance_train_vs_test']:.3f}")
  print(f"wrote {os.path.join(run_flags.workdir, runner.RESULTS_FILE)} and the figures",
        flush=True)


if __name__ == "__main__":
  runner.cli_main(main, host_device_per_core=True)
