r"""DQN / Double DQN on a gymnax environment, the whole training loop in one jit, seeds vmapped.

  python -m experiments.dqn                             # CartPole-v1, 8 seeds, 500k env steps each
  python -m experiments.dqn --env=Acrobot-v1
  python -m experiments.dqn --helpfull                  # every flag, explained

Writes into --workdir (default runs/dqn): the runner's metrics.jsonl, run_info.json and
checkpoints/ (params, target params, Adam state, replay buffer, env states, keys, counters; rerun
the same command to resume), results.json (per seed, and mean / 95 % CI / IQM over seeds: the
peak and final 100-episode average training return, the env steps at which it first reached
--target_return, and the greedy evaluation of the final policy on --eval_episodes fresh
episodes) and return.png (episodic return vs env steps: the latest episode and the 100-episode
average, mean and IQM over seeds with 95 % bootstrap bands).
"""

from __future__ import annotations

import math
import os

import numpy as np
from absl import flags

from genrl_jax import run as runner
from genrl_jax.rl import dqn, report
from genrl_jax.run import cli
from genrl_jax.run import config as cfg

cli.define_run_flags(workdir="runs/dqn", seeds=8, chunk_label="chunk")
cfg.define_flags(dqn.DQNConfig)
flags.DEFINE_float("target_return", None, "Return the 100-episode training average must reach to "
                   "count as solved in results.json; default: Gym's threshold for the env "
                   "(CartPole-v1 475, Acrobot-v1 -100, MountainCar-v0 -110), else none.")
FLAGS = flags.FLAGS


def make_experiment(config: dqn.DQNConfig, target: float | None) -> runner.Experiment:
  """The DQN run: chunks of the env-step budget, greedy evaluation, results.json, return.png."""
  train = dqn.make_train(config)

  def summarize(result: runner.RunResult):
    last100 = report.curves(result.history, "curve_return_last100")
    metrics = {
        "peak_return_last100": last100.max(axis=1),
        "final_return_last100": runner.stack_history(result.history, "return_last100")[-1],
        "auc_return_last100": last100.mean(axis=1),
        "eval_return": result.final["return"],
        "eval_return_min": result.final["return_min"],
    }
    extra = {"env_id": config.env_id, "eval_episodes": config.eval_episodes,
             "env_steps": runner.stack_history(result.history, "env_steps")[-1],
             "gradient_steps": runner.stack_history(result.history, "updates")[-1]}
    if target is not None:
      first = report.steps_to_target(result.history, target)
      metrics["steps_to_target"] = np.asarray([math.nan if f is None else f for f in first])
      extra.update(target_return=target,
                   seeds_reaching_target=int(sum(f is not None for f in first)),
                   seeds_eval_reaching_target=int(np.sum(result.final["return"] >= target)))
    return metrics, extra

  def figures(result: runner.RunResult, out_dir: str):
    kind = "Double DQN" if config.double_dqn else "DQN"
    return [report.plot_returns(os.path.join(out_dir, "return.png"), result.history, config,
                                f"{kind} on {config.env_id}", curve_label="latest episode")]

  return runner.Experiment(
      name="dqn", init=train.init, chunk=train.chunk, num_chunks=config.num_chunks, data=None,
      evaluate=train.evaluate, evaluate_every=config.eval_every, summarize=summarize,
      figures=figures,
      chunk_label="chunk",
      progress=(("episode_return", "return"), ("return_last100", "last-100 return"),
                ("eval_return", "greedy eval"), ("epsilon", "eps"), ("env_steps", "env steps")),
      finite_key="loss", units_per_chunk=config.budget // config.num_chunks,
      units_label="env steps/s", resume_may_change=("target_return",))


def print_results(results: dict) -> None:
  m, extra = results["metrics"], results["extra"]
  n = len(results["seeds"])
  print(f"{extra['env_id']}, {n} seeds (mean ± 95% CI half-width; per seed):")
  for key, label in (("peak_return_last100", "peak last-100 return"),
                     ("final_return_last100", "final last-100 return"),
                     ("eval_return", f"greedy eval ({extra['eval_episodes']} episodes)"),
                     ("steps_to_target", "env steps to the target")):
    if key in m:
      s = m[key]
      per_seed = " ".join("-" if v is None else f"{v:.0f}" for v in s["per_seed"])
      mean = "-" if s["mean"] is None else f"{s['mean']:.1f} ± {s['ci95_half_width'] or 0:.1f}"
      print(f"  {label:30s} {mean:>16s}   {per_seed}")
  if "target_return" in extra:
    print(f"  {extra['seeds_reaching_target']}/{n} seeds reached {extra['target_return']:g} in "
          f"training, {extra['seeds_eval_reaching_target']}/{n} in the greedy evaluation")


def main(argv):
  run_flags = cli.run_flags("dqn")
  config = cfg.from_flags(dqn.DQNConfig)
  target = report.target_return(config, FLAGS.target_return)
  result = cli.run(make_experiment(config, target), run_flags)
  print_results(result.results)
  print(f"wrote {os.path.join(run_flags.workdir, runner.RESULTS_FILE)} and return.png",
        flush=True)


if __name__ == "__main__":
  runner.cli_main(main)
