r"""REINFORCE on a gymnax environment, the whole training loop in one jit, seeds vmapped.

  python -m experiments.reinforce                       # CartPole-v1, 8 seeds, 1M env steps each
  python -m experiments.reinforce --env=Acrobot-v1 --estimator=total --baseline=mean
  python -m experiments.reinforce --helpfull            # every flag, explained

Writes into --workdir (default runs/reinforce): the runner's metrics.jsonl, run_info.json and
checkpoints/ (rerun the same command to resume), plus results.json (per seed: the average return
of its last 100 episodes, and the env steps at which that average first reached --target_return)
and return.png (episodic return vs env steps: mean and IQM over seeds, 95 % bootstrap bands). The experiment itself is
``genrl_jax.rl.reinforce_run``.
"""

from genrl_jax.run import cli

if __name__ == "__main__":
  cli.main("genrl_jax.rl.reinforce_run")
