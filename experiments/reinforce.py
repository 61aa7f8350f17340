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

import os

from absl import flags

from genrl_jax import config as cfg
from genrl_jax import run as runner
from genrl_jax.rl import reinforce, reinforce_run, report
from genrl_jax.run import cli
from genrl_jax.run import config_flags

cli.define_run_flags(workdir="runs/reinforce", seeds=8, seed_loop="vmap")
config_flags.define_flags(reinforce.ReinforceConfig)
report.define_target_return_flag()
FLAGS = flags.FLAGS


def main(argv):
  run_flags = cli.run_flags("reinforce")
  config = config_flags.from_flags(reinforce.ReinforceConfig)
  target = report.target_return(config, FLAGS.target_return)
  result = cli.run(reinforce_run.make_experiment(config, target), run_flags)
  print(f"{report.headline(result.results)}; results in "
        f"{os.path.join(run_flags.workdir, runner.RESULTS_FILE)} and return.png", flush=True)


if __name__ == "__main__":
  runner.cli_main(main)
