"""The conditional VAE as a runner experiment: the VAE's experiment with a label input, plus the
evaluator's conditional accuracy and the per-label sample grid.

Everything but the label is the VAE's: ``vae_run.make_experiment`` builds the run (data, epochs,
test -ELBO and IWAE bound, now of log p(x|y)), and this module adds to its summary and figures.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax import config as cfg
from genrl_jax import run as runner
from genrl_jax.data import images
from genrl_jax.generative import evaluator as evaluator_lib
from genrl_jax.generative import judges as judges_lib
from genrl_jax.generative import vae
from genrl_jax.generative import vae_figures
from genrl_jax.generative import vae_run
from genrl_jax.generative.settings import JudgeConfig
from genrl_jax.run import plots
from genrl_jax.run import spec
from genrl_jax.run import sweep

RESUME_MAY_CHANGE = vae_run.RESUME_MAY_CHANGE + ("samples_per_label", "evaluator_dir")


@dataclasses.dataclass(frozen=True)
class CVAEConfig(vae.VAEConfig):
  """The VAE's settings with the label-conditional prior choice (and the label count, from the
  data)."""
  num_classes: int = cfg.field(10, "K labels (set from the data).", flag=None)
  prior: str = cfg.field("standard", "p(z|y): 'standard' = N(0, prior_std^2 I) for every label; "
                         "'learned' = N(mu(y), diag(s(y)^2)), one learned mean and log-variance "
                         "per label, its KL in the general closed form (losses.gaussian_kl).",
                         choices=vae.PRIORS)


@dataclasses.dataclass(frozen=True)
class SampleConfig:
  """How many samples per label the evaluator judges for the conditional accuracy."""
  samples_per_label: int = cfg.field(1000, "Decoder samples per label judged by the evaluator "
                                     "for the conditional accuracy.", check=cfg.at_least_one)


def sample_labels(num_classes: int, per_label: int) -> np.ndarray:
  """[K * per_label] labels 0,0,...,1,1,...: per_label samples for each label."""
  return np.repeat(np.arange(num_classes), per_label)


def conditional_accuracies(state, model, config: CVAEConfig, judges, per_label: int
                           ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{judge name: ([n_seeds] share of decoder means for label k that the judge classifies as k,
  [n_seeds, K] the same share for each label k)}: ``per_label`` samples z ~ p(z|y) per label,
  drawn once per seed (its own params and figure key) and shown to every judge."""
  labels = jnp.asarray(sample_labels(config.num_classes, per_label))
  draw = jax.jit(lambda params, key: vae.conditional_samples(params, model, key, labels, config))
  out = {judge.name: ([], []) for judge in judges}
  n_seeds = jax.tree.leaves(state.params)[0].shape[0]
  for s in range(n_seeds):
    one = runner.unstack_seed(state, s)
    probs = np.asarray(draw(one.params, vae.figure_key(one)))
    images_01 = probs.reshape((-1,) + tuple(config.image_shape))
    for judge in judges:
      class_probs, _ = judge.outputs(images_01)
      overall, by_label = out[judge.name]
      overall.append(evaluator_lib.conditional_accuracy(class_probs, np.asarray(labels)))
      by_label.append(evaluator_lib.accuracy_per_label(class_probs, np.asarray(labels),
                                                       config.num_classes))
  return {name: (np.asarray(o), np.asarray(b)) for name, (o, b) in out.items()}


def conditional_accuracy(state, model, config: CVAEConfig, judge: evaluator_lib.Evaluator,
                         per_label: int) -> tuple[np.ndarray, np.ndarray]:
  """``conditional_accuracies`` by one judge."""
  return conditional_accuracies(state, model, config, (judge,), per_label)[judge.name]


def conditional_grid(path: str, state, model, config: CVAEConfig, per_row: int = 10) -> str:
  """conditional_samples.png: 10 rows (one per label k), seed 0's decoder means for label k."""
  one = runner.unstack_seed(state, 0)
  labels = jnp.asarray(sample_labels(config.num_classes, per_row))
  probs = vae.conditional_samples(one.params, model, jax.random.fold_in(vae.figure_key(one), 1),
                                  labels, config)
  grid = np.asarray(probs).reshape((-1,) + tuple(config.image_shape))[..., 0]
  return plots.image_grid(path, grid, rows=config.num_classes,
                          row_labels=[str(k) for k in range(config.num_classes)],
                          title=f"samples for each label (prior={config.prior})")


def make_experiment(config: CVAEConfig, dataset: images.ImageDataset,
                    data_config: images.DataConfig, samples_per_label: int,
                    evaluator_dir: str) -> runner.Experiment:
  base = vae_run.make_experiment(config, dataset, data_config)
  judges = judges_lib.load_judges(dataset, data_config.dataset, evaluator_dir)
  judge = judges[0]
  model = vae.make_model(config)
  labels = sample_labels(config.num_classes, samples_per_label)

  def summarize(result: runner.RunResult):
    metrics, extra = base.summarize(result)
    by_judge = conditional_accuracies(result.state, model, config, judges, samples_per_label)
    overall, by_label = by_judge[judge.name]
    # Per judge (the first unsuffixed): the share of samples it calls their label, and that share
    # over its own accuracy on real test images of the same labels (comparable across judges).
    extra["judges"] = {}
    for j in judges:
      suffix = "" if j is judge else f"_{j.name}"
      real = j.real_accuracy_for(labels)
      metrics[f"conditional_accuracy{suffix}"] = by_judge[j.name][0]
      metrics[f"conditional_accuracy_ratio{suffix}"] = by_judge[j.name][0] / real
      extra["judges"][j.name] = {
          "test_accuracy": j.test_accuracy, "real_conditional_accuracy": real,
          "conditional_accuracy_per_label": [round(float(v), 6)
                                             for v in by_judge[j.name][1].mean(0)]}
    real_by_label = evaluator_lib.accuracy_per_label(judge.real_probs, dataset.test_labels,
                                                     config.num_classes)
    extra.update(prior=config.prior, samples_per_label=samples_per_label,
                 conditional_accuracy_per_label=[round(float(v), 6) for v in by_label.mean(0)],
                 evaluator_test_accuracy_per_label=[round(float(v), 6) for v in real_by_label],
                 evaluator_test_accuracy=judge.test_accuracy,
                 evaluator=f"convnet classifier trained on the {len(dataset.train_images)} "
                           f"training images only ({dataset.source})",
                 units="nats per test example (-ELBO and NLL of log p(x|y))")
    return metrics, extra

  def figures(result: runner.RunResult, out_dir: str):
    paths = []
    if result.history:
      paths.append(vae_figures.learning_curves(os.path.join(out_dir, "learning_curves.png"),
                                               result.history))
    paths.append(conditional_grid(os.path.join(out_dir, "conditional_samples.png"), result.state,
                                  model, config))
    paths.append(vae_figures.reconstructions(os.path.join(out_dir, "reconstructions.png"), model,
                                             result.state.params, base.data["test"], config,
                                             test_labels=base.data["test_labels"]))
    return paths

  return dataclasses.replace(base, summarize=summarize, figures=figures,
                             resume_may_change=RESUME_MAY_CHANGE)


def build(config: CVAEConfig, data_config: images.DataConfig, sampling: SampleConfig,
          judges: JudgeConfig) -> runner.Experiment:
  """Loads the data (with labels) and builds the run."""
  dataset = data_config.load()
  if dataset.train_labels is None or dataset.test_labels is None:
    raise runner.UserError(f"the CVAE needs class labels, and {dataset.source} has none; add the "
                           "*-labels-idx1-ubyte files beside the image files")
  num_classes = int(max(dataset.train_labels.max(), dataset.test_labels.max())) + 1
  config = dataclasses.replace(vae_run.fit_to_data(config, dataset), num_classes=num_classes)
  print(f"data: {dataset.source}; binarize={config.binarize}; {num_classes} labels", flush=True)
  return make_experiment(config, dataset, data_config, sampling.samples_per_label,
                         judges.evaluator_dir)


def print_results(result: runner.RunResult) -> None:
  """The VAE's estimates, then the conditional accuracy (per sweep point) and per label."""
  vae_run.print_results(result)
  extra = result.results["extra"]
  for i, judge in enumerate(extra.get("judges") or {"": {}}):
    suffix = f"_{judge}" if i else ""
    for key, label in ((f"conditional_accuracy{suffix}", "conditional accuracy"),
                       (f"conditional_accuracy_ratio{suffix}", "  / its accuracy on real")):
      for name, point in sweep.result_keys(result.results, key):
        if name not in result.results["metrics"]:
          continue
        s = result.results["metrics"][name]  # one line per sweep point, if any
        print(f"  {label + point:24s} {s['mean']:.4f} ± {s['ci95_half_width']:.4f}   per seed: "
              + " ".join(f"{v:.4f}" for v in s["per_seed"]) + (f"   ({judge})" if judge else ""))
  if "conditional_accuracy_per_label" in extra:
    print(f"  {'  per label (mean)':24s} " + " ".join(
        f"{k}:{v:.3f}" for k, v in enumerate(extra["conditional_accuracy_per_label"])))
  print(f"  {'  evaluator, real test':24s} " + " ".join(
      f"{k}:{v:.3f}" for k, v in enumerate(extra["evaluator_test_accuracy_per_label"])))


SPEC = spec.Spec(name="cvae", configs=(CVAEConfig, images.DataConfig, SampleConfig, JudgeConfig),
                 build=build, report=print_results, chunk_label="epoch",
                 cpu_device_per_core=True)
