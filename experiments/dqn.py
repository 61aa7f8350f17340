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
100-episode average, mean and IQM over seeds with 95 % bootstrap bands). The experiment itself is
``genrl_jax.rl.dqn_run``.
"""

from genrl_jax.run import cli

if __name__ == "__main__":
  cli.main("genrl_jax.rl.dqn_run")
