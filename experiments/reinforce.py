r"""REINFORCE on a gymnax environment, the whole training loop in one jit, seeds vmapped.

  python -m experiments.reinforce                       # CartPole-v1, 8 seeds, 1M env steps each
  python -m experiments.reinforce --env=Acrobot-v1 --estimator=total --baseline=mean
  python -m experiments.reinforce --helpfull            # every flag, explained

Writes into --workdir (default runs/reinforce): the runner's metrics.jsonl, run_info.json and
checkpoints/ (rerun the same command to resume), plus results.json (per seed: the average return
of its last 100 episodes, and the env steps at which that average first reached --target_return)
and return.png (episodic return vs env steps: mean and IQM over seeds, 95 % bootstrap bands).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from absl import flags

from genrl_jax import run as runner
from genrl_jax.rl import reinforce

# Gym's reward_threshold for the classic-control tasks ("solved" over 100 episodes).
SOLVED_RETURN = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0, "MountainCar-v0": -110.0}

_D = reinforce.ReinforceConfig()
flags.DEFINE_string("env", _D.env_id, "gymnax environment id with a discrete action space "
                    "(CartPole-v1, Acrobot-v1, MountainCar-v0, Catch-bsuite, "
                    "BernoulliBandit-misc, ...).")
flags.DEFINE_integer("max_episode_steps", _D.max_episode_steps,
                     "Episode-length limit (a truncation, bootstrapped by the value network "
                     "when there is one); 0 keeps the environment's own limit.")
flags.DEFINE_integer("num_envs", _D.num_envs, "Episodes per update, played in parallel (N).")
flags.DEFINE_float("gamma", _D.gamma, "Discount factor of the returns.")
flags.DEFINE_enum("estimator", _D.estimator, list(reinforce.ESTIMATORS),
                  "Weight of grad log pi(a_t|s_t): 'total' = the episode's whole return G_0 "
                  "(Williams 1992), 'reward_to_go' = G_t, the return from step t on.")
flags.DEFINE_enum("baseline", _D.baseline, list(reinforce.BASELINES),
                  "Subtracted from the return: 'none'; 'mean' = the batch mean of the returns; "
                  "'value' = a learned state value v(s_t), regressed on the returns.")
flags.DEFINE_bool("normalize_advantages", _D.normalize_advantages,
                  "Standardize G - b over the batch's real steps (zero mean, unit std).")
flags.DEFINE_float("policy_lr", _D.policy_lr, "Adam learning rate of the policy.")
flags.DEFINE_float("value_lr", _D.value_lr, "Adam learning rate of the value network "
                   "(used with --baseline=value).")
flags.DEFINE_list("hidden_sizes", [str(h) for h in _D.hidden_sizes],
                  "Hidden layer widths of the policy MLP, comma-separated ('' = linear).")
flags.DEFINE_list("value_hidden_sizes", [str(h) for h in _D.value_hidden_sizes],
                  "Hidden layer widths of the value MLP, comma-separated.")
flags.DEFINE_enum("activation", _D.activation, ["tanh", "relu", "elu"],
                  "Hidden-layer nonlinearity of both networks.")
flags.DEFINE_float("entropy_coef", _D.entropy_coef,
                   "Weight of the policy-entropy bonus in the policy loss (0 = plain REINFORCE).")
flags.DEFINE_float("max_grad_norm", _D.max_grad_norm,
                   "Clip each network's gradient to this global norm before Adam (0 = off).")
flags.DEFINE_integer("total_env_steps", _D.total_env_steps,
                     "Budget per seed in real env steps (padding after an episode ended is not "
                     "counted). Training stops at the first update that reaches it.")
flags.DEFINE_integer("total_updates", _D.total_updates,
                     "If > 0, the budget is this many updates instead of --total_env_steps.")
flags.DEFINE_integer("num_chunks", _D.num_chunks,
                     "The budget is run in this many equal chunks; after each: a progress line, "
                     "metrics.jsonl lines, and a checkpoint every --checkpoint_every chunks. "
                     "Seeds wait for the slowest at each chunk end, so fewer chunks waste less.")
flags.DEFINE_integer("points_per_chunk", _D.points_per_chunk,
                     "Learning-curve points recorded inside each chunk (return of the update "
                     "that reaches each mark), for return.png and the area under the curve.")
flags.DEFINE_integer("seeds", 8, "Number of seeds, vmapped in one program.")
flags.DEFINE_integer("seed", 0, "First seed: seed i uses jax.random.key(seed + i).")
flags.DEFINE_string("workdir", "runs/reinforce", "Output directory; rerunning with the same "
                    "flags resumes from its latest checkpoint.")
flags.DEFINE_integer("checkpoint_every", 1, "Checkpoint every this many chunks (and at the end).")
flags.DEFINE_float("target_return", None, "Return a seed's last-100-episode average must reach "
                   "to count as solved in results.json; default: Gym's threshold for the env "
                   "(CartPole-v1 475, Acrobot-v1 -100, MountainCar-v0 -110), else none.")

FLAGS = flags.FLAGS


def _sizes(values: list[str], name: str) -> tuple[int, ...]:
  try:
    sizes = tuple(int(v) for v in values if v.strip())
  except ValueError:
    raise runner.UserError(f"--{name} must be comma-separated integers, got {','.join(values)!r}")
  return sizes


def config_from_flags() -> reinforce.ReinforceConfig:
  """The ReinforceConfig the command-line flags describe."""
  return reinforce.ReinforceConfig(
      env_id=FLAGS.env, max_episode_steps=FLAGS.max_episode_steps, num_envs=FLAGS.num_envs,
      gamma=FLAGS.gamma, estimator=FLAGS.estimator, baseline=FLAGS.baseline,
      normalize_advantages=FLAGS.normalize_advantages, policy_lr=FLAGS.policy_lr,
      value_lr=FLAGS.value_lr, hidden_sizes=_sizes(FLAGS.hidden_sizes, "hidden_sizes"),
      value_hidden_sizes=_sizes(FLAGS.value_hidden_sizes, "value_hidden_sizes"),
      activation=FLAGS.activation, entropy_coef=FLAGS.entropy_coef,
      max_grad_norm=FLAGS.max_grad_norm, total_env_steps=FLAGS.total_env_steps,
      total_updates=FLAGS.total_updates, num_chunks=FLAGS.num_chunks,
      points_per_chunk=FLAGS.points_per_chunk)


def target_return(config: reinforce.ReinforceConfig, flag_value: float | None) -> float | None:
  return flag_value if flag_value is not None else SOLVED_RETURN.get(config.env_id)


def make_experiment(config: reinforce.ReinforceConfig, name: str = "reinforce"
                    ) -> runner.Experiment:
  init, chunk, _ = reinforce.make_train(config)
  by_steps = config.total_updates == 0
  return runner.Experiment(
      name=name, init=init, chunk=chunk, num_chunks=config.num_chunks, data=None,
      chunk_label="chunk",
      progress=(("episode_return", "return"), ("return_last100", "last-100 return"),
                ("env_steps", "env steps"), ("updates", "updates")),
      finite_key="grad_norm_max",
      units_per_chunk=config.budget // config.num_chunks,
      units_label="env steps/s" if by_steps else "updates/s",
      resume_may_change=("checkpoint_every", "target_return"))


def curves(history: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
  """[n_seeds, num_chunks * points_per_chunk]: a per-chunk curve metric laid end to end."""
  stacked = runner.stack_history(history, key)                 # [chunks, seeds, points]
  return np.concatenate(list(stacked), axis=-1)


def summarize(history: list[dict[str, np.ndarray]], seeds: np.ndarray,
              target: float | None) -> dict:
  """Per-seed and aggregate results of a run from its per-chunk history."""
  final = runner.stack_history(history, "return_last100")[-1]
  ret = curves(history, "curve_return")
  mean, half = runner.stats.mean_ci(final)
  auc = ret.mean(axis=1)
  auc_mean, auc_half = runner.stats.mean_ci(auc)
  out = {
      "seeds": [int(s) for s in seeds],
      "env_steps": [int(s) for s in runner.stack_history(history, "env_steps")[-1]],
      "updates": [int(u) for u in runner.stack_history(history, "updates")[-1]],
      "final_return_last100": [round(float(x), 2) for x in final],
      "final_return_last100_mean": round(mean, 2),
      "final_return_last100_ci95": round(half, 2),
      "final_return_last100_iqm": round(float(runner.stats.iqm(final)), 2),
      # Area under the learning curve, normalized: the mean of the episodic return over the
      # curve's points, which are equally spaced in env steps (= the average return in training).
      "auc_return": [round(float(x), 2) for x in auc],
      "auc_return_mean": round(auc_mean, 2),
      "auc_return_ci95": round(auc_half, 2),
      "auc_return_iqm": round(float(runner.stats.iqm(auc)), 2),
  }
  if target is not None:
    last100 = curves(history, "curve_return_last100")
    steps = curves(history, "curve_env_steps")
    first = [int(steps[i, np.argmax(row >= target)]) if np.any(row >= target) else None
             for i, row in enumerate(last100)]
    out.update(target_return=target, steps_to_target=first,
               seeds_reaching_target=int(sum(f is not None for f in first)))
  return out


def plot_returns(path: str, history: list[dict[str, np.ndarray]], config, title: str) -> str:
  """Episodic return vs env steps: mean (left) and IQM (right) over seeds with 95 % CI bands."""
  import matplotlib.pyplot as plt  # noqa: PLC0415 (after runner.plots selected Agg)
  marks = config.curve_marks()
  ret = curves(history, "curve_return")
  last100 = curves(history, "curve_return_last100")
  x = np.asarray(marks[:ret.shape[1]], np.float64)
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
  for ax, statistic in zip(axes, ("mean", "iqm")):
    runner.plots.band(ax, x, ret, label="episodes of the update", statistic=statistic)
    runner.plots.band(ax, x, last100, label="last 100 episodes", statistic=statistic)
    ax.set_title(f"{'IQM' if statistic == 'iqm' else 'mean'} over {ret.shape[0]} seeds, "
                 "95% bootstrap CI")
    ax.set_xlabel("env steps per seed" if config.total_updates == 0 else "updates")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("episodic return")
  axes[0].legend(loc="lower right")
  fig.suptitle(title)
  return runner.plots.save(fig, path)


def train(config: reinforce.ReinforceConfig, *, seeds: int, seed: int, workdir: str,
          checkpoint_every: int, flag_values: dict, target: float | None,
          name: str = "reinforce") -> tuple[runner.RunResult, dict]:
  """Runs (or resumes) one configuration; writes results.json and return.png into workdir."""
  result = runner.run(make_experiment(config, name), seeds=seeds, seed=seed, workdir=workdir,
                      checkpoint_every=checkpoint_every, config=flag_values)
  summary = summarize(result.history, result.seeds, target)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(summary, f, indent=2)
  plot_returns(os.path.join(workdir, "return.png"), result.history, config,
               f"REINFORCE on {config.env_id}: {config.estimator}, baseline {config.baseline}")
  return result, summary


def main(argv):
  config = config_from_flags()
  target = target_return(config, FLAGS.target_return)
  _, summary = train(config, seeds=FLAGS.seeds, seed=FLAGS.seed, workdir=FLAGS.workdir,
                     checkpoint_every=FLAGS.checkpoint_every,
                     flag_values=runner.flags_dict(FLAGS), target=target)
  line = (f"last-100 return {summary['final_return_last100_mean']:.1f} ± "
          f"{summary['final_return_last100_ci95']:.1f} (IQM "
          f"{summary['final_return_last100_iqm']:.1f})")
  if target is not None:
    line += (f"; {summary['seeds_reaching_target']}/{FLAGS.seeds} seeds reached {target:g}")
  print(f"{line}; results in {FLAGS.workdir}/results.json and return.png", flush=True)


if __name__ == "__main__":
  runner.cli_main(main)
