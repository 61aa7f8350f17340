"""REINFORCE as a runner experiment: what ``experiments.reinforce`` (and its comparison) and
checkpoint replay build."""

from __future__ import annotations

from genrl_jax import config as cfg
from genrl_jax import run as runner
from genrl_jax.rl import reinforce, report
from genrl_jax.run import sweep


def make_experiment(config: reinforce.ReinforceConfig, target: float | None,
                    name: str = "reinforce", seed_loop: str = "vmap") -> runner.Experiment:
  """The REINFORCE run on the runner: its chunk, progress line, results and return.png."""
  train = reinforce.make_train(config)
  title = f"REINFORCE on {config.env_id}: {config.estimator}, baseline {config.baseline}"
  return runner.Experiment(
      name=name, init=train.init, chunk=train.chunk, num_chunks=config.num_chunks, data=None,
      chunk_label="chunk", **report.hooks(config, target, title),
      progress=(("episode_return", "return"), ("return_last100", "last-100 return"),
                ("env_steps", "env steps"), ("updates", "updates")),
      finite_key="grad_norm_max",
      units_per_chunk=config.budget // config.num_chunks,
      units_label="env steps/s" if config.total_updates == 0 else "updates/s",
      resume_may_change=("target_return",), seed_loop=seed_loop,
      sweepable=sweep.Sweepable(config, lambda hparams: reinforce.train_from_setup(
          reinforce.with_hyperparameters(train.static, hparams))))


def from_saved_flags(saved: dict, name: str = "reinforce") -> runner.Experiment:
  """The run a workdir's run_info.json describes (its "config": the flags it ran with)."""
  config = cfg.from_mapping(reinforce.ReinforceConfig, saved)
  return make_experiment(config, report.target_return(config, saved.get("target_return")), name,
                         saved.get("seed_loop", "vmap"))
