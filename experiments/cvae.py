"""Conditional VAE on MNIST / Fashion-MNIST: the VAE with a label input, N seeds in one program.

  python -m experiments.cvae --seeds=4 --data_dir=../shared/data/mnist --test_fraction=0.1
  python -m experiments.cvae --seeds=4 --dataset=fashion_mnist --data_dir=../shared/data/fashion_mnist
  python -m experiments.cvae --prior=learned --arch=conv

Writes to --workdir what the VAE writes (metrics.jsonl, run_info.json, checkpoints/, results.json
with the test -ELBO and IWAE bound, now of log p(x|y)) plus the evaluator's conditional accuracy
(--samples_per_label decoder means per label, classified by a convnet trained on the training
split only and cached in --evaluator_dir), learning_curves.png and conditional_samples.png (row
k = samples for label k). Rerunning the same command resumes.
"""

from __future__ import annotations

import os

from absl import flags

from genrl_jax import config as cfg
from genrl_jax import run as runner
from genrl_jax.data import images
from genrl_jax.generative import cvae_run
from genrl_jax.generative import vae_run
from genrl_jax.run import cli
from genrl_jax.run import config_flags
from genrl_jax.run import sweep

cli.define_run_flags(workdir="runs/cvae", seeds=1, seed_loop="auto", chunk_label="epoch")
config_flags.define_flags(cvae_run.CVAEConfig)
config_flags.define_flags(images.DataConfig)
flags.DEFINE_integer("samples_per_label", 1000, "Decoder samples per label judged by the "
                     "evaluator for the conditional accuracy.")
flags.DEFINE_string("evaluator_dir", "runs/evaluators", "Cache of the evaluator classifiers, one "
                    "directory per data set; reused when trained on the same training split.")
FLAGS = flags.FLAGS


def main(argv):
  run_flags = cli.run_flags("cvae")
  config = config_flags.from_flags(cvae_run.CVAEConfig)
  data_config = config_flags.from_flags(images.DataConfig)
  if FLAGS.samples_per_label < 1:
    raise runner.UserError(f"--samples_per_label must be >= 1, got {FLAGS.samples_per_label}")
  experiment = cvae_run.build(config, data_config, run_flags.seed_loop, "cvae",
                              FLAGS.samples_per_label, FLAGS.evaluator_dir)
  result = cli.run(experiment, run_flags)
  vae_run.print_results(result.results, result.eval_seconds)
  for name, point in sweep.result_keys(result.results, "conditional_accuracy"):
    s = result.results["metrics"][name]  # one line per sweep point, if any
    print(f"  {'conditional accuracy' + point:24s} {s['mean']:.4f} ± "
          f"{s['ci95_half_width']:.4f}   per seed: " + " ".join(f"{v:.4f}" for v in s["per_seed"]))
  extra = result.results["extra"]
  if "conditional_accuracy_per_label" in extra:
    print(f"  {'  per label (mean)':24s} " + " ".join(
        f"{k}:{v:.3f}" for k, v in enumerate(extra["conditional_accuracy_per_label"])))
  print(f"  {'  evaluator, real test':24s} " + " ".join(
      f"{k}:{v:.3f}" for k, v in enumerate(extra["evaluator_test_accuracy_per_label"])))
  print(f"wrote {os.path.join(run_flags.workdir, runner.RESULTS_FILE)} and the figures",
        flush=True)


if __name__ == "__main__":
  runner.cli_main(main, host_device_per_core=True)
