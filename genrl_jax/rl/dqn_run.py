"""DQN as a runner experiment: its ``SPEC``, what ``experiments.dqn``, checkpoint replay and tests
build.

    python -m experiments.dqn
"""

from __future__ import annotations

import numpy as np

from genrl_jax import run as runner
from genrl_jax.rl import dqn, report
from genrl_jax.run import spec


def make_experiment(config: dqn.DQNConfig, target: float | None) -> runner.Experiment:
  """The DQN run: chunks of the env-step budget, the greedy evaluation, results and return.png.

  results.json metrics (per seed): ``report.summarize``'s (final last-100 return, area under
  the curve, env steps, gradient steps), ``peak_return_last100`` (the best 100-episode average
  at any curve point where 100 episodes had ended), ``eval_return`` / ``eval_return_min`` (the final greedy evaluation: mean
  and worst episode); extra: the target, steps to it, and how many seeds reached it in training
  and in the greedy evaluation.
  """
  train = dqn.make_train(config)
  kind = "Double DQN" if config.double_dqn else "DQN"
  hooks = report.hooks(config.curve_marks(), "env steps per seed", target,
                       f"{kind} on {config.env_id}", curve_label="latest episode")

  def summarize(result: runner.RunResult):
    metrics, extra = hooks["summarize"](result)
    last100 = report.curves(result.history, "curve_return_last100")   # NaN: window not full
    metrics["peak_return_last100"] = np.asarray(
        [np.nanmax(row) if np.any(np.isfinite(row)) else np.nan for row in last100])
    metrics["eval_return"] = result.final["return"]
    metrics["eval_return_min"] = result.final["return_min"]
    extra.update(env_id=config.env_id, eval_episodes=config.eval_episodes)
    if target is not None:
      extra["seeds_eval_reaching_target"] = int(np.sum(result.final["return"] >= target))
    return metrics, extra

  return runner.Experiment(
      init=train.init, chunk=train.chunk, num_chunks=config.num_chunks, data=None,
      evaluate=train.evaluate, evaluate_every=config.eval_every, summarize=summarize,
      figures=hooks["figures"],
      progress=(("episode_return", "return"), ("return_last100", "last-100 return"),
                ("eval_return", "greedy eval"), ("epsilon", "eps"), ("env_steps", "env steps")),
      finite_key="loss", units_per_chunk=config.budget // config.num_chunks,
      units_label="env steps/s", resume_may_change=("target_return",), uses_seed_axis=True)


def build(config: dqn.DQNConfig, target: report.TargetConfig) -> runner.Experiment:
  return make_experiment(config, report.target_return(config, target.target_return))


def print_results(result: runner.RunResult) -> None:
  """The per-seed table of a results.json: peak / final last-100 return, greedy evaluation."""
  results = result.results
  m, extra = results["metrics"], results["extra"]
  n = len(results["seeds"])
  print(f"{extra['env_id']}, {n} seeds (mean ± 95% CI half-width; per seed):")
  rows = [("peak_return_last100", "peak last-100 return"),
          ("final_return_last100", "final last-100 return"),
          ("eval_return", f"greedy eval ({extra['eval_episodes']} episodes)")]
  show = lambda v, spec: "n/a" if v is None else format(v, spec)  # None: no full window yet
  for key, label in rows:
    s = m[key]
    print(f"  {label:30s} {show(s['mean'], '8.1f')} ± {show(s['ci95_half_width'], '5.1f')}   "
          + " ".join(show(v, ".0f") for v in s["per_seed"]))
  if "target_return" in extra:
    steps = " ".join("-" if v is None else str(v) for v in extra["steps_to_target"])
    print(f"  {'env steps to ' + format(extra['target_return'], 'g'):30s} {steps}")
    print(f"  {extra['seeds_reaching_target']}/{n} seeds reached {extra['target_return']:g} in "
          f"training, {extra['seeds_eval_reaching_target']}/{n} in the greedy evaluation")


SPEC = spec.Spec(name="dqn", configs=(dqn.DQNConfig, report.TargetConfig), build=build,
                 report=print_results, seeds=8)
