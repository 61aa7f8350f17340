"""Variational autoencoder on MNIST / Fashion-MNIST, N seeds trained in one program.

  python -m experiments.vae --seeds=8
  python -m experiments.vae --seeds=8 --dataset=fashion_mnist --data_dir=../shared/data/fashion_mnist

Writes to --workdir: metrics.jsonl, run_info.json, checkpoints/, results.json (test -ELBO and the
IWAE test NLL per seed, mean ± 95 % CI) and PNGs (learning curves, prior samples,
reconstructions, the latent manifold when --latent_dim=2). Rerunning the same command resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

from absl import flags
import jax
import numpy as np

from genrl_jax import run as runner
from genrl_jax.data import images
from genrl_jax.generative import vae
from genrl_jax.generative import vae_figures
from genrl_jax.models import vae as vae_models

_START = time.perf_counter()

flags.DEFINE_integer("seeds", 1, "Number of seeds trained side by side in one program (see --seed_loop).")
flags.DEFINE_integer("seed", 0, "First seed; seed i of the run uses jax.random.key(seed + i).")
flags.DEFINE_integer("epochs", 10, "Passes over the training set (one checkpointable chunk each).")
flags.DEFINE_integer("batch_size", 128, "Examples per Adam step; an epoch drops the last partial "
                     "batch of its fresh permutation.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam step size.")
flags.DEFINE_integer("latent_dim", 20, "Dimension D of the latent z (2 also draws the manifold).")
flags.DEFINE_list("hidden", ["400"], "Hidden layer widths of the encoder, comma-separated; the "
                  "decoder mirrors them (mlp: 784-400-20 by default; conv: width of the dense "
                  "layer after the convolutions).")
flags.DEFINE_enum("arch", "mlp", list(vae_models.ARCHS), "Encoder/decoder: 'mlp' (ReLU MLP) or "
                  "'conv' (two 4x4 stride-2 convolutions, mirrored by transposed convolutions).")
flags.DEFINE_integer("num_samples", 1, "J: reparameterized z samples per example in the training "
                     "ELBO (K&W 2013 eq. 10 with the closed-form KL).")
flags.DEFINE_float("prior_std", 1.0, "Standard deviation s of the prior p(z) = N(0, s^2 I).")
flags.DEFINE_enum("binarize", "dynamic", list(images.BINARIZE),
                  "Pixel targets: 'dynamic' = fresh Bernoulli(intensity) draw of every training "
                  "batch (the test set is binarized once); 'static' = one fixed draw of the whole "
                  "data set; 'none' = grayscale intensities in [0, 1] as Bernoulli targets "
                  "(the PyTorch VAE example's BCE).")
flags.DEFINE_integer("eval_iw_samples", 100, "k of the importance-weighted bound (Burda et al. "
                     "2015) used for the final test NLL estimate, batched over test examples.")
flags.DEFINE_string("dataset", "mnist", f"tensorflow-datasets name: {', '.join(images.DATASETS)}.")
flags.DEFINE_string("data_dir", None, "Offline data: a prepared tensorflow-datasets directory, or a "
                    "directory of raw IDX files (train-/t10k-images-idx3-ubyte[.gz], labels "
                    "optional; auto-detected). Unset: a prepared copy in tensorflow-datasets' "
                    "default directory, else the IDX files downloaded once into "
                    "~/tensorflow_datasets/downloads/idx/<dataset>/.")
flags.DEFINE_float("test_fraction", 0.2, "Only when --data_dir holds a single IDX split (e.g. only "
                   "the t10k files): the fraction held out as the test set (fixed split).")
flags.DEFINE_string("workdir", "runs/vae", "Where metrics, checkpoints, results and figures go; "
                    "rerunning with the same flags resumes from the latest checkpoint here.")
flags.DEFINE_integer("checkpoint_every", 1, "Checkpoint every this many epochs (and the last).")
flags.DEFINE_enum("seed_loop", "auto", list(runner.devices.SEED_LOOPS),
                  "How each device runs its seeds: 'vmap' batches them into every op (what a GPU "
                  "or TPU needs), 'map' runs them one after another with unbatched ops (faster on "
                  "a CPU: plain matmuls, each seed's parameters stay in cache), 'auto' = map on "
                  "CPU, vmap otherwise. Same results up to float rounding; may change on resume.")

FLAGS = flags.FLAGS


def _config_from_flags() -> vae.VAEConfig:
  """Checks every flag (one clear line on bad input) and builds the VAE config."""
  UserError = runner.UserError  # pylint: disable=invalid-name
  if FLAGS.seeds < 1:
    raise UserError(f"--seeds must be >= 1, got {FLAGS.seeds}")
  if FLAGS.epochs < 1:
    raise UserError(f"--epochs must be >= 1, got {FLAGS.epochs}")
  if FLAGS.latent_dim < 1:
    raise UserError(f"--latent_dim must be >= 1, got {FLAGS.latent_dim}")
  try:
    hidden = tuple(int(h) for h in FLAGS.hidden)
  except ValueError:
    raise UserError(f"--hidden must be comma-separated integers, got {','.join(FLAGS.hidden)!r}")
  if not hidden or min(hidden) < 1:
    raise UserError(f"--hidden needs at least one width, all >= 1, got {','.join(FLAGS.hidden)!r}")
  if FLAGS.batch_size < 1:
    raise UserError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
  if not (math.isfinite(FLAGS.learning_rate) and FLAGS.learning_rate > 0):
    raise UserError(f"--learning_rate must be a positive number, got {FLAGS.learning_rate}")
  if FLAGS.num_samples < 1:
    raise UserError(f"--num_samples must be >= 1, got {FLAGS.num_samples}")
  if not (math.isfinite(FLAGS.prior_std) and FLAGS.prior_std > 0):
    raise UserError(f"--prior_std must be a positive number, got {FLAGS.prior_std}")
  if FLAGS.eval_iw_samples < 1:
    raise UserError(f"--eval_iw_samples must be >= 1, got {FLAGS.eval_iw_samples}")
  if not 0 < FLAGS.test_fraction < 1:
    raise UserError(f"--test_fraction must be in (0, 1), got {FLAGS.test_fraction}")
  if FLAGS.checkpoint_every < 1:
    raise UserError(f"--checkpoint_every must be >= 1, got {FLAGS.checkpoint_every}")
  if FLAGS.dataset not in images.DATASETS:
    raise UserError(f"unknown --dataset={FLAGS.dataset!r}; choose one of "
                    f"{', '.join(images.DATASETS)}")
  config = vae.VAEConfig(latent_dim=FLAGS.latent_dim, hidden=hidden, arch=FLAGS.arch,
                         num_samples=FLAGS.num_samples, prior_std=FLAGS.prior_std,
                         binarize=FLAGS.binarize, learning_rate=FLAGS.learning_rate,
                         batch_size=FLAGS.batch_size, eval_iw_samples=FLAGS.eval_iw_samples)
  return config


def _summary(values: np.ndarray) -> dict:
  mean, half = runner.stats.mean_ci(values)
  return {"per_seed": [float(v) for v in values], "mean": mean, "ci95_half_width": half}


def main(argv):
  config = _config_from_flags()
  dataset = images.load(FLAGS.dataset, FLAGS.data_dir, FLAGS.test_fraction)
  if dataset.image_shape != config.image_shape:
    config = dataclasses.replace(config, image_shape=dataset.image_shape)
  if config.arch == "conv" and (config.image_shape[0] % 4 or config.image_shape[1] % 4):
    raise runner.UserError(f"--arch=conv needs image sides divisible by 4, got "
                           f"{config.image_shape[:2]}; use --arch=mlp")
  n_train = dataset.train_images.shape[0]
  if config.batch_size > n_train:
    raise runner.UserError(f"--batch_size={config.batch_size} exceeds the {n_train} training "
                           "examples; pass a smaller --batch_size")
  print(f"data: {dataset.source}; binarize={config.binarize}", flush=True)
  data = images.device_arrays(dataset, config.binarize)

  train = vae.make_train(config)
  examples_per_epoch = vae.num_batches(n_train, config.batch_size) * config.batch_size
  experiment = runner.Experiment(
      name="vae", init=train.init, chunk=train.chunk, num_chunks=FLAGS.epochs, data=data,
      chunk_label="epoch",
      progress=(("loss", "-elbo"), ("test_neg_elbo", "test -elbo"), ("kl", "kl")),
      finite_key="loss", units_per_chunk=examples_per_epoch, units_label="ex/s",
      resume_may_change=("checkpoint_every", "epochs", "eval_iw_samples", "seed_loop"),
      compiler_options=vae.compiler_options(), seed_loop=FLAGS.seed_loop)
  result = runner.run(experiment, seeds=FLAGS.seeds, seed=FLAGS.seed, workdir=FLAGS.workdir,
                      checkpoint_every=FLAGS.checkpoint_every, config=runner.flags_dict(FLAGS))

  t0 = time.perf_counter()
  by_seed, _ = runner.devices.seed_shardings(FLAGS.seeds)
  evaluate = jax.jit(runner.devices.over_seeds(train.evaluate, FLAGS.seed_loop, by_seed),
                     compiler_options=vae.compiler_options())
  final = evaluate(result.state, data)
  final = {k: np.asarray(v, dtype=np.float64) for k, v in jax.device_get(final).items()}
  eval_seconds = time.perf_counter() - t0
  for key, label in (("test_neg_elbo", "test -ELBO"), ("test_nll", "test NLL")):
    if not np.all(np.isfinite(final[key])):
      bad = [int(s) for s, v in zip(result.seeds, final[key]) if not math.isfinite(v)]
      raise runner.TrainingDiverged(f"vae: final {label} is NaN/Inf for seed(s) {bad}; lower the "
                                    "learning rate or check the data")

  results = {
      "dataset": FLAGS.dataset, "data_source": dataset.source, "binarize": config.binarize,
      "seeds": [int(s) for s in result.seeds], "epochs": FLAGS.epochs,
      "test_neg_elbo": _summary(final["test_neg_elbo"]),
      "test_nll_iwae": {**_summary(final["test_nll"]), "k": config.eval_iw_samples},
      "final_train_neg_elbo": (_summary(np.asarray(result.history[-1]["loss"]))
                               if result.history else None),
      "units": "nats per test example",
      "eval_seconds": round(eval_seconds, 2),
      "epoch_seconds": [round(s, 3) for s in result.chunk_seconds],
      "total_seconds": round(time.perf_counter() - _START, 2),
  }
  os.makedirs(FLAGS.workdir, exist_ok=True)
  results_path = os.path.join(FLAGS.workdir, "results.json")
  with open(results_path + ".tmp", "w") as f:
    json.dump(results, f, indent=2)
  os.replace(results_path + ".tmp", results_path)

  n = len(result.seeds)
  print(f"final test estimates over {n} seed(s), {eval_seconds:.1f} s "
        f"(mean ± 95% CI half-width, nats per example):")
  for key, label in (("test_neg_elbo", "test -ELBO"), ("test_nll_iwae", f"test NLL (IWAE, "
                                                      f"k={config.eval_iw_samples})")):
    s = results[key]
    print(f"  {label:24s} {s['mean']:.2f} ± {s['ci95_half_width']:.2f}   per seed: "
          + " ".join(f"{v:.2f}" for v in s["per_seed"]))

  first = runner.unstack_seed(result.state, 0)
  paths = vae_figures.write_all(FLAGS.workdir, train.model, result.state.params, result.history,
                                data["test"], config, vae.figure_key(first))
  print(f"wrote {results_path} and {', '.join(os.path.basename(p) for p in paths)}", flush=True)


if __name__ == "__main__":
  runner.cli_main(main, host_device_per_core=True)
