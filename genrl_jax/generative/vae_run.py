"""The VAE as a runner experiment: its ``SPEC`` (configs -> ``Experiment``), results, figures.

    python -m experiments.vae --seeds=8

The entry point, checkpoint replay, sweeps and tests all build the run through ``SPEC``, so a
replayed run evaluates and draws exactly what the original run did.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from genrl_jax import run as runner
from genrl_jax.data import images
from genrl_jax.generative import vae
from genrl_jax.generative import vae_figures
from genrl_jax.run import spec
from genrl_jax.run import sweep

# Flags that may change when a run is resumed (more epochs, a larger k for the final estimate).
RESUME_MAY_CHANGE = ("epochs", "eval_iw_samples")


def fit_to_data(config: vae.VAEConfig, dataset: images.ImageDataset) -> vae.VAEConfig:
  """The config with the data's image shape; one clear line where the two cannot fit."""
  if dataset.image_shape != config.image_shape:
    config = dataclasses.replace(config, image_shape=dataset.image_shape)
  if config.arch == "conv" and (config.image_shape[0] % 4 or config.image_shape[1] % 4):
    raise runner.UserError(f"--arch=conv needs image sides divisible by 4, got "
                           f"{config.image_shape[:2]}; use --arch=mlp")
  n_train = dataset.train_images.shape[0]
  if config.batch_size > n_train:
    raise runner.UserError(f"--batch_size={config.batch_size} exceeds the {n_train} training "
                           "examples; pass a smaller --batch_size")
  return config


def make_experiment(config: vae.VAEConfig, dataset: images.ImageDataset,
                    data_config: images.DataConfig) -> runner.Experiment:
  """The VAE run: one epoch per chunk, the test -ELBO and IWAE NLL at the end, its figures."""
  data = images.device_arrays(dataset, config.binarize, with_labels=config.num_classes > 0)
  train = vae.make_train(config)
  n_train, n_test = dataset.train_images.shape[0], dataset.test_images.shape[0]

  def summarize(result: runner.RunResult):
    metrics = {"test_neg_elbo": result.final["test_neg_elbo"],
               "test_nll_iwae": result.final["test_nll"]}
    if result.history:
      metrics["final_train_neg_elbo"] = np.asarray(result.history[-1]["loss"])
    extra = {"dataset": data_config.dataset, "data_source": dataset.source,
             "binarize": config.binarize, "epochs": config.epochs,
             "iwae_k": config.eval_iw_samples, "units": "nats per test example"}
    return metrics, extra

  def figures(result: runner.RunResult, out_dir: str):
    first = runner.unstack_seed(result.state, 0)
    return vae_figures.write_all(out_dir, train.static.model, result.state.params,
                                 result.history, data["test"], config, vae.figure_key(first))

  return runner.Experiment(
      init=train.init, chunk=train.chunk, num_chunks=config.epochs, data=data,
      evaluate=train.evaluate, evaluate_cost=vae.evaluation_cost(config, n_train, n_test),
      summarize=summarize, figures=figures,
      progress=(("loss", "-elbo"), ("test_neg_elbo", "test -elbo"), ("kl", "kl")),
      finite_key="loss", units_per_chunk=vae.num_batches(n_train, config.batch_size)
      * config.batch_size, units_label="ex/s",
      resume_may_change=RESUME_MAY_CHANGE, compiler_options=vae.compiler_options(),
      sweepable=sweep.Sweepable(
          config, lambda hparams: vae.make_train(dataclasses.replace(config, **hparams))))


def build(config: vae.VAEConfig, data_config: images.DataConfig) -> runner.Experiment:
  """Loads the data and builds the run."""
  dataset = data_config.load()
  config = fit_to_data(config, dataset)
  print(f"data: {dataset.source}; binarize={config.binarize}", flush=True)
  return make_experiment(config, dataset, data_config)


def print_results(result: runner.RunResult) -> None:
  """The final estimates, mean ± 95 % CI half-width and per seed."""
  results = result.results
  n = len(results["seeds"])
  print(f"final test estimates over {n} seed(s), {result.eval_seconds:.1f} s "
        f"(mean ± 95% CI half-width, nats per example):")
  k = results["extra"]["iwae_k"]
  for key, label in (("test_neg_elbo", "test -ELBO"), ("test_nll_iwae", f"test NLL (IWAE, "
                                                      f"k={k})")):
    for name, point in sweep.result_keys(results, key):  # one line per sweep point, if any
      s = results["metrics"][name]
      print(f"  {label + point:24s} {s['mean']:.2f} ± {s['ci95_half_width']:.2f}   per seed: "
            + " ".join(f"{v:.2f}" for v in s["per_seed"]))


SPEC = spec.Spec(name="vae", configs=(vae.VAEConfig, images.DataConfig), build=build,
                 report=print_results, chunk_label="epoch", cpu_device_per_core=True)
