r"""DQN / Double DQN on a gymnax environment, the whole training loop in one jit, seeds vmapped.

  python -m experiments.dqn                             # CartPole-v1, 8 seeds, 500k env steps each
  python -m experiments.dqn --env=Acrobot-v1
  python -m experiments.dqn --helpfull                  # every flag, explained

Writes into --workdir (default runs/dqn): the runner's metrics.jsonl, run_info.json and
checkpoints/ (params, target params, Adam state, replay buffer, env states, keys, counters; rerun
the same command to resume), results.json (per seed, and mean / 95 % CI / IQM over seeds: the
peak and final 100-episode average training return, the greedy evaluation of the final policy on
--eval_episodes fresh episodes; the env steps at which the average first reached
--target_return) and return.png (episodic return vs env steps: the latest episode and the
100-episode average, mean and IQM over seeds with 95 % bootstrap bands).
"""

from __future__ import annotations

import os

from absl import flags

from genrl_jax import config as cfg
from genrl_jax import run as runner
from genrl_jax.rl import dqn, dqn_run, report
from genrl_jax.run import cli
from genrl_jax.run import config_flags

cli.define_run_flags(workdir="runs/dqn", seeds=8, seed_loop="vmap")
config_flags.define_flags(dqn.DQNConfig)
report.define_target_return_flag()
FLAGS = flags.FLAGS


def main(argv):
  run_flags = cli.run_flags("dqn")
  config = config_flags.from_flags(dqn.DQNConfig)
  target = report.target_return(config, FLAGS.target_return)
  result = cli.run(dqn_run.make_experiment(config, target), run_flags)
  dqn_run.print_results(result.results)
  print(f"results in {os.path.join(run_flags.workdir, runner.RESULTS_FILE)} and return.png",
        flush=True)


if __name__ == "__main__":
  runner.cli_main(main)
