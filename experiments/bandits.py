"""Epsilon-greedy action-value methods on the 10-armed testbed or on gymnax's bandits.

  python -m experiments.bandits [--epsilons=0,0.01,0.1] [--update=sample_average|constant]
                                [--initial_value=5] [--env=testbed|BernoulliBandit-misc|...]

The testbed is Sutton & Barto (2018) §2.3: k arms, q*(a) ~ N(0, 1), rewards N(q*(a), 1). All
--runs and all --epsilons are one jitted vmap of a ``lax.scan`` over --steps. Prints average
reward and % optimal action at the last step (and over the last 10% of steps) and saves the two
curves as a PNG (the shape of the book's Figure 2.2).
"""

from __future__ import annotations

import os
import time

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax import run as runner
from genrl_jax.rl import bandits
from genrl_jax.run import info
from genrl_jax.run.results import results_document, write_json
from genrl_jax.run.workdir import RESULTS_FILE, RUN_INFO_FILE

_WORKDIR = flags.DEFINE_string("workdir", "runs/bandits",
                               "Directory for the plot (bandits_<env>.png), results.json and "
                               "run_info.json.")
_SEED = flags.DEFINE_integer("seed", 0, "Root PRNG seed.")
_ENV = flags.DEFINE_enum("env", "testbed", ("testbed",) + bandits.GYMNAX_BANDITS,
                         "'testbed' (S&B's k-armed testbed) or a gymnax bandit environment "
                         "(one problem per run; the episode is made as long as the run).")
_RUNS = flags.DEFINE_integer("runs", 2000, "Independent runs (each a new bandit problem).")
_STEPS = flags.DEFINE_integer("steps", 1000, "Pulls per run.")
_ARMS = flags.DEFINE_integer("arms", 10, "Arms of the testbed (gymnax bandits have 2).")
_EPSILONS = flags.DEFINE_list("epsilons", ["0", "0.01", "0.1"],
                              "Exploration probabilities to compare, each in [0, 1].")
_UPDATE = flags.DEFINE_enum("update", "sample_average", ["sample_average", "constant"],
                            "Action-value update: sample averages (alpha = 1/N(a), S&B eq. 2.3) "
                            "or a constant step size --step_size (eq. 2.5).")
_STEP_SIZE = flags.DEFINE_float("step_size", 0.1, "alpha for --update=constant, in (0, 1].")
_INITIAL_VALUE = flags.DEFINE_float("initial_value", 0.0,
                                    "Initial estimates Q_1(a); e.g. 5 for optimistic initial "
                                    "values (S&B §2.6).")


def _check_flags() -> list[float]:
  try:
    epsilons = [float(e) for e in _EPSILONS.value]
  except ValueError:
    raise runner.UserError(f"--epsilons must be numbers, got {','.join(_EPSILONS.value)!r} "
                           "(e.g. --epsilons=0,0.01,0.1)") from None
  if not epsilons or any(not 0.0 <= e <= 1.0 for e in epsilons):
    raise runner.UserError(f"--epsilons must lie in [0, 1], got {','.join(_EPSILONS.value)}")
  for flag in (_RUNS, _STEPS):
    if flag.value < 1:
      raise runner.UserError(f"--{flag.name} must be positive, got {flag.value}")
  if _ARMS.value < 2:
    raise runner.UserError(f"--arms must be at least 2, got {_ARMS.value}")
  if _UPDATE.value == "constant" and not 0.0 < _STEP_SIZE.value <= 1.0:
    raise runner.UserError("--step_size must be in (0, 1] for --update=constant, "
                           f"got {_STEP_SIZE.value}")
  return epsilons


def simulate(key, epsilons: list[float]) -> tuple[bandits.Trace, float, float]:
  """All runs for all epsilons in one compiled call.

  Returns:
    (Trace of [E, runs, steps] arrays, compile seconds, run seconds).
  """
  step_size = _STEP_SIZE.value if _UPDATE.value == "constant" else None
  runs, steps = _RUNS.value, _STEPS.value
  if _ENV.value == "testbed":
    one = lambda k, eps: bandits.testbed_run(
        k, steps, num_arms=_ARMS.value, epsilon=eps, step_size=step_size,
        initial_value=_INITIAL_VALUE.value)[0]
  else:
    env, params = bandits.make_gymnax_bandit(_ENV.value, steps)
    one = lambda k, eps: bandits.gymnax_run(k, env, params, steps, epsilon=eps,
                                            step_size=step_size,
                                            initial_value=_INITIAL_VALUE.value)
  run_all = jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(None, 0)))
  args = (jax.random.split(key, runs), jnp.asarray(epsilons))
  start = time.perf_counter()
  compiled = run_all.lower(*args).compile()
  compile_seconds = time.perf_counter() - start
  start = time.perf_counter()
  trace = jax.device_get(compiled(*args))
  return trace, compile_seconds, time.perf_counter() - start


def main(argv):
  epsilons = _check_flags()
  os.makedirs(_WORKDIR.value, exist_ok=True)
  info.write(os.path.join(_WORKDIR.value, RUN_INFO_FILE), "bandits",
             runner.flags_dict(flags.FLAGS), seed=_SEED.value, seeds=_RUNS.value)
  trace, compile_seconds, seconds = simulate(jax.random.key(_SEED.value), epsilons)
  reward, optimal = np.asarray(trace.reward), np.asarray(trace.optimal)
  arms = _ARMS.value if _ENV.value == "testbed" else 2
  update = ("sample averages" if _UPDATE.value == "sample_average"
            else f"constant alpha={_STEP_SIZE.value}")
  print(f"{_ENV.value}: {arms} arms, {_RUNS.value} runs x {_STEPS.value} steps, {update}, "
        f"Q_1 = {_INITIAL_VALUE.value}")
  print(f"  one jitted call for all runs and epsilons: compile {compile_seconds:.1f} s, "
        f"run {seconds:.1f} s")
  tail = max(1, _STEPS.value // 10)
  print(f"  {'epsilon':>8s} {'avg reward @last':>17s} {'% optimal @last':>16s} "
        f"{f'avg reward, last {tail}':>22s} {f'% optimal, last {tail}':>21s}")
  results = {}
  for i, eps in enumerate(epsilons):
    row = {"reward_last": float(reward[i, :, -1].mean()),
           "optimal_last": float(optimal[i, :, -1].mean()),
           "reward_tail": float(reward[i, :, -tail:].mean()),
           "optimal_tail": float(optimal[i, :, -tail:].mean())}
    results[str(eps)] = row
    print(f"  {eps:8g} {row['reward_last']:17.3f} {100 * row['optimal_last']:15.1f}% "
          f"{row['reward_tail']:22.3f} {100 * row['optimal_tail']:20.1f}%")
  steps = np.arange(1, _STEPS.value + 1)
  png = runner.plots.panels(
      os.path.join(_WORKDIR.value, f"bandits_{_ENV.value}.png"), steps,
      [{"curves": {f"eps={e:g}": reward[i].mean(0) for i, e in enumerate(epsilons)},
        "xlabel": "steps", "ylabel": "average reward"},
       {"curves": {f"eps={e:g}": 100 * optimal[i].mean(0) for i, e in enumerate(epsilons)},
        "xlabel": "steps", "ylabel": "% optimal action"}],
      title=f"{_ENV.value}, {_RUNS.value} runs, {update}, Q_1={_INITIAL_VALUE.value}")
  print(f"  plot: {png}")
  write_json(os.path.join(_WORKDIR.value, RESULTS_FILE), results_document(
      "bandits", runner.flags_dict(flags.FLAGS), [_SEED.value], {},
      {"arms": arms, "seconds": seconds, "compile_seconds": compile_seconds, "epsilons": results}))


if __name__ == "__main__":
  runner.cli_main(main)
