r"""Variance reduction in practice: total return vs reward-to-go vs reward-to-go + value baseline.

  python -m experiments.reinforce_compare               # CartPole-v1, 8 seeds, 1M steps each
  python -m experiments.reinforce_compare --normalize_advantages --env=Acrobot-v1

Trains the three REINFORCE estimators with every other flag (those of experiments.reinforce)
equal: the same seeds, the same env-step budget, the same networks and learning rates. Writes
into --workdir (default runs/reinforce_compare):

  total/, reward_to_go/, reward_to_go_value/   one standard run directory each (resumable)
  compare.png    episodic return vs env steps, the three variants, mean and IQM over seeds
  compare.md     area under the curve (the average return over training), final returns,
                 steps to the target, and the gradient variance of each estimator at one policy
  compare.json   the same numbers, per seed

The gradient variance column: at the policy (and value network) the reward-to-go + value run
reached after --variance_at_chunk chunks, each estimator's gradient is drawn
--variance_samples times from fresh batches; tr Cov[g] is reported.
"""

from __future__ import annotations

import dataclasses
import json
import os

from genrl_jax.run import cli

cli.connect()  # a multi-process run connects before gymnax's import starts a JAX backend

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from genrl_jax import run as runner  # noqa: E402
from genrl_jax.rl import reinforce, reinforce_run, report  # noqa: E402
from genrl_jax.run import config_flags  # noqa: E402

SPEC = reinforce_run.SPEC
cli.define_run_flags(workdir="runs/reinforce_compare", seeds=SPEC.seeds,
                     chunk_label=SPEC.chunk_label)
for _config in SPEC.configs:
  config_flags.define_flags(_config)

VARIANTS = (  # (directory, label, estimator, baseline)
    ("total", "total return G_0", "total", "none"),
    ("reward_to_go", "reward-to-go G_t", "reward_to_go", "none"),
    ("reward_to_go_value", "reward-to-go G_t - v(s_t)", "reward_to_go", "value"),
)

flags.DEFINE_integer("variance_samples", 32, "Batches drawn per estimator to measure the "
                     "gradient variance (0 = skip that measurement).")
flags.DEFINE_integer("variance_at_chunk", 1, "Measure the gradient variance at the policy the "
                     "reward-to-go + value run reached after this many chunks.")
FLAGS = flags.FLAGS


def _variance_state(config: reinforce.ReinforceConfig, seeds: int, seed: int, chunks: int):
  """The value variant's state after ``chunks`` chunks, recomputed (the runner's computation)."""
  train = reinforce.make_train(config)
  placement = runner.SeedPlacement(seeds, seed, "vmap")
  state = placement.jit(train.init)(placement.keys(), None)
  chunk_fn = placement.jit(train.chunk)
  for _ in range(chunks):
    state, _ = chunk_fn(state, None)
  return state


def measure_variances(base: reinforce.ReinforceConfig, seeds: int, seed: int, chunks: int,
                      samples: int) -> dict[str, list[float]]:
  """tr Cov[g] per variant and seed at the value run's policy after ``chunks`` chunks."""
  value_config = dataclasses.replace(base, estimator="reward_to_go", baseline="value")
  states = _variance_state(value_config, seeds, seed, chunks)
  out = {}
  for name, _, estimator, baseline in VARIANTS:
    config = dataclasses.replace(base, estimator=estimator, baseline=baseline)
    out[name] = []
    for i in range(seeds):
      state = runner.unstack_seed(states, i)
      var, _ = reinforce.gradient_variance(config, state, jax.random.key(10_000 + seed + i),
                                           samples)
      out[name].append(float(var))
  return out


def plot_compare(path: str, config, histories: dict, title: str) -> str:
  import matplotlib.pyplot as plt  # noqa: PLC0415 (after runner.plots selected Agg)
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  for ax, statistic in zip(axes, ("mean", "iqm")):
    for (name, label, _, _) in VARIANTS:
      ret = report.curves(histories[name], "curve_return")
      x = np.asarray(config.curve_marks()[:ret.shape[1]], np.float64)
      runner.plots.band(ax, x, ret, label=label, statistic=statistic)
    ax.set_title(f"{'IQM' if statistic == 'iqm' else 'mean'} over seeds, 95% bootstrap CI")
    ax.set_xlabel("env steps per seed")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("episodic return")
  axes[0].legend(loc="lower right")
  fig.suptitle(title)
  return runner.plots.save(fig, path)


def table(summaries: dict, variances: dict | None, seeds: int, target: float | None) -> str:
  head = ["estimator", f"AUC: mean return over training (mean ± 95% CI, {seeds} seeds)",
          "AUC IQM", "final last-100 return"]
  if target is not None:
    head += [f"seeds reaching {target:g}", "median env steps to it"]
  if variances:
    head += ["gradient variance tr Cov[g]", "vs total"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, label, _, _ in VARIANTS:
    auc = summaries[name]["metrics"]["auc_return"]
    final = summaries[name]["metrics"]["final_return_last100"]
    extra = summaries[name]["extra"]
    row = [label, f"{auc['mean']:.1f} ± {auc['ci95_half_width']:.1f}", f"{auc['iqm']:.1f}",
           f"{final['mean']:.1f} ± {final['ci95_half_width']:.1f}"]
    if target is not None:
      reached = [x for x in extra["steps_to_target"] if x is not None]
      row += [f"{extra['seeds_reaching_target']}/{seeds}",
              f"{np.median(reached):,.0f}" if reached else "-"]
    if variances:
      v = np.mean(variances[name])
      row += [f"{v:.3g}", f"{v / np.mean(variances['total']):.3f}x"]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def main(argv):
  if FLAGS["estimator"].present or FLAGS["baseline"].present:
    raise runner.UserError("reinforce_compare runs its own estimators (total, reward_to_go, "
                           "reward_to_go + value); drop --estimator and --baseline")
  if FLAGS.variance_samples == 1 or FLAGS.variance_samples < 0:
    raise runner.UserError(f"--variance_samples must be 0 (skip) or >= 2, got "
                           f"{FLAGS.variance_samples}")
  run_flags = cli.run_flags("reinforce_compare")
  base = config_flags.from_flags(reinforce.ReinforceConfig)
  target_config = config_flags.from_flags(report.TargetConfig)
  target = report.target_return(base, target_config.target_return)
  flag_values = runner.flags_dict(FLAGS)
  for k in ("variance_samples", "variance_at_chunk"):
    flag_values.pop(k, None)
  summaries, histories = {}, {}
  for name, label, estimator, baseline in VARIANTS:
    print(f"== {label}", flush=True)
    config = dataclasses.replace(base, estimator=estimator, baseline=baseline)
    result = cli.run(SPEC.experiment(config, target_config, name=f"reinforce[{name}]"),
                     dataclasses.replace(run_flags, workdir=os.path.join(run_flags.workdir, name)),
                     config=dict(flag_values, estimator=estimator, baseline=baseline))
    summaries[name], histories[name] = result.results, result.history

  variances = None
  if FLAGS.variance_samples and 0 < FLAGS.variance_at_chunk <= base.num_chunks:
    print(f"== gradient variance at the value run's policy after chunk {FLAGS.variance_at_chunk}"
          f" ({FLAGS.variance_samples} batches per estimator and seed)", flush=True)
    variances = measure_variances(base, FLAGS.seeds, FLAGS.seed, FLAGS.variance_at_chunk,
                                  FLAGS.variance_samples)

  md = table(summaries, variances, FLAGS.seeds, target)
  title = (f"REINFORCE on {base.env_id}: {FLAGS.seeds} seeds, "
           f"{base.total_env_steps:,} env steps each")
  plot_compare(os.path.join(FLAGS.workdir, "compare.png"), base, histories, title)
  with open(os.path.join(FLAGS.workdir, "compare.md"), "w") as f:
    f.write(f"# {title}\n\n{md}\n")
  with open(os.path.join(FLAGS.workdir, "compare.json"), "w") as f:
    json.dump({"summaries": summaries, "gradient_variance": variances,
               "variance_at_chunk": FLAGS.variance_at_chunk}, f, indent=2)
  print(md, flush=True)
  print(f"plot and table in {FLAGS.workdir}/compare.png and compare.md", flush=True)


if __name__ == "__main__":
  runner.cli_main(main)
