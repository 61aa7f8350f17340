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
import os

from absl import flags

from genrl_jax import run as runner
from genrl_jax.rl import reinforce, report

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


def train(config: reinforce.ReinforceConfig, *, seeds: int, seed: int, workdir: str,
          checkpoint_every: int, flag_values: dict, target: float | None,
          name: str = "reinforce") -> tuple[runner.RunResult, dict]:
  """Runs (or resumes) one configuration; writes results.json and return.png into workdir."""
  result = runner.run(make_experiment(config, name), seeds=seeds, seed=seed, workdir=workdir,
                      checkpoint_every=checkpoint_every, config=flag_values)
  summary = report.summarize(result.history, result.seeds, target)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(summary, f, indent=2)
  report.plot_returns(os.path.join(workdir, "return.png"), result.history, config,
               f"REINFORCE on {config.env_id}: {config.estimator}, baseline {config.baseline}")
  return result, summary


def main(argv):
  config = config_from_flags()
  target = report.target_return(config, FLAGS.target_return)
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
