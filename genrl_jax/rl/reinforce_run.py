"""REINFORCE as a runner experiment: its ``SPEC``, what ``experiments.reinforce`` (and its
comparison), checkpoint replay, sweeps and tests build.

    python -m experiments.reinforce
"""

from __future__ import annotations

from genrl_jax import run as runner
from genrl_jax.rl import reinforce, report
from genrl_jax.run import spec
from genrl_jax.run import sweep


def make_experiment(config: reinforce.ReinforceConfig, target: float | None) -> runner.Experiment:
  """The REINFORCE run on the runner: its chunk, progress line, results and return.png."""
  train = reinforce.make_train(config)
  title = f"REINFORCE on {config.env_id}: {config.estimator}, baseline {config.baseline}"
  return runner.Experiment(
      init=train.init, chunk=train.chunk, num_chunks=config.num_chunks, data=None,
      **report.hooks(config.curve_marks(), "updates" if config.total_updates else
                     "env steps per seed", target, title),
      progress=(("episode_return", "return"), ("return_last100", "last-100 return"),
                ("env_steps", "env steps"), ("updates", "updates")),
      finite_key="grad_norm_max",
      units_per_chunk=config.budget // config.num_chunks,
      units_label="env steps/s" if config.total_updates == 0 else "updates/s",
      resume_may_change=("target_return",), uses_seed_axis=True,
      sweepable=sweep.Sweepable(config, lambda hparams: reinforce.train_from_setup(
          reinforce.with_hyperparameters(train.static, hparams))))


def build(config: reinforce.ReinforceConfig, target: report.TargetConfig) -> runner.Experiment:
  return make_experiment(config, report.target_return(config, target.target_return))


def print_results(result: runner.RunResult) -> None:
  print(report.headline(result.results), flush=True)


SPEC = spec.Spec(name="reinforce", configs=(reinforce.ReinforceConfig, report.TargetConfig),
                 build=build, report=print_results, seeds=8)
