"""Exact dynamic programming on small MDPs: the chain MDP and the short corridor.

  python -m experiments.tabular [--workdir=runs/tabular]

Prints, for the chain MDP (states -1, 0, 1, 2), the optimal policy and state values at each
--gammas (value iteration, checked against policy iteration), and the values at the largest gamma
of the policy that is optimal at the smallest one. For the short corridor with switched actions
(Sutton & Barto 2018, Example 13.1) it tabulates and plots J(p) = v_pi(s0) for pi(right) = p,
finds its maximiser (grid + golden-section search) and checks dJ/dp there two ways: the policy
gradient theorem and autodiff through the linear solve.
"""

from __future__ import annotations

import os

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax import run as runner
from genrl_jax.rl import tabular
from genrl_jax.run import info
from genrl_jax.run.results import results_document, write_json
from genrl_jax.run.workdir import RESULTS_FILE, RUN_INFO_FILE

_WORKDIR = flags.DEFINE_string("workdir", "runs/tabular",
                               "Directory for the J(p) plot (corridor_J.png), results.json and "
                               "run_info.json.")
_GAMMAS = flags.DEFINE_list("gammas", ["0.1", "0.99"],
                            "Discounts for the chain MDP, comma-separated, each in [0, 1).")
_TABLE_STEP = flags.DEFINE_float("table_step", 0.05,
                                 "Spacing of p in the printed J(p) table, in (0, 0.5].")
_GRID = flags.DEFINE_integer("grid", 1001,
                             "Grid points on [0.001, 0.999] before golden-section search "
                             "(and in the plot); at least 3.")


def _parse_gammas(values: list[str]) -> list[float]:
  try:
    gammas = [float(v) for v in values]
  except ValueError:
    raise runner.UserError(f"--gammas must be numbers, got {','.join(values)!r} "
                           "(e.g. --gammas=0.1,0.99)") from None
  if not gammas or any(not 0.0 <= g < 1.0 for g in gammas):
    raise runner.UserError("--gammas must lie in [0, 1) (the chain MDP is continuing), "
                           f"got {gammas}")
  return gammas


def _policy_str(pi: np.ndarray) -> str:
  actions = np.argmax(pi, axis=-1)
  return "  ".join(f"{s:>2}:{tabular.CHAIN_ACTIONS[a]}"
                   for s, a in zip(tabular.CHAIN_STATES, actions))


def _values_str(v: np.ndarray) -> str:
  return "  ".join(f"v({s:>2})={x:.4f}" for s, x in zip(tabular.CHAIN_STATES, v))


def chain_report(gammas: list[float]) -> dict:
  """Optimal policies and values of the chain MDP at each gamma; prints them."""
  print("Chain MDP: states -1 0 1 2, actions - +, start 0; "
        "- in -1 pays 1 -> 0, + in 2 pays 3 -> 0, other moves pay 0")
  results = {}
  solve = jax.jit(lambda gamma: (tabular.value_iteration(tabular.chain_mdp(gamma, jnp.float64)),
                                 tabular.policy_iteration(tabular.chain_mdp(gamma, jnp.float64))))
  for gamma in gammas:
    (v_vi, pi_vi), (v_pi, pi_pi) = jax.device_get(solve(gamma))
    if not (np.array_equal(pi_vi, pi_pi) and np.allclose(v_vi, v_pi, atol=1e-8)):
      raise RuntimeError(f"value and policy iteration disagree at gamma={gamma}")
    print(f"  gamma={gamma:<5}  optimal policy  {_policy_str(pi_vi)}")
    print(f"  {'':12s}  optimal values  {_values_str(v_pi)}")
    results[gamma] = {"policy": [tabular.CHAIN_ACTIONS[a] for a in np.argmax(pi_pi, -1)],
                      "v": v_pi.tolist(), "pi": pi_pi}
  lo, hi = min(gammas), max(gammas)
  if lo != hi:
    v_cross = np.asarray(jax.jit(lambda pi: tabular.evaluate_policy(
        tabular.chain_mdp(hi, jnp.float64), pi))(results[lo]["pi"]))
    print(f"  the gamma={lo} optimal policy evaluated at gamma={hi}:")
    print(f"  {'':12s}  values          {_values_str(v_cross)}")
    print(f"  {'':12s}  shortfall at the start state 0: "
          f"{results[hi]['v'][1] - v_cross[1]:.4f}")
    results["cross"] = {"policy_gamma": lo, "eval_gamma": hi, "v": v_cross.tolist()}
  for gamma in gammas:
    del results[gamma]["pi"]
  return {str(k): v for k, v in results.items()}


def corridor_report(workdir: str, table_step: float, grid: int) -> dict:
  """J(p) of the short corridor: table, plot, maximiser, dJ/dp at the maximiser; prints them."""
  mdp = tabular.short_corridor_mdp(jnp.float64)
  f = lambda p: tabular.corridor_objective(p, mdp)
  policy_fn = lambda p: tabular.corridor_policy(p, mdp.num_states)
  table_p = np.round(np.arange(table_step, 1.0 - 1e-9, table_step), 10)
  ps = np.linspace(1e-3, 1.0 - 1e-3, grid)

  @jax.jit
  def analyse(table_p, ps):
    p_star, j_star = tabular.maximize_scalar(f, 1e-3, 1.0 - 1e-3, num_grid=grid)
    return (jax.vmap(f)(table_p), jax.vmap(f)(ps), p_star, j_star,
            tabular.policy_gradient_theorem_fn(mdp, policy_fn, p_star),
            tabular.policy_gradient_autodiff(mdp, policy_fn, p_star))

  table_j, js, p_star, j_star, d_theorem, d_autodiff = jax.device_get(analyse(table_p, ps))
  print("\nShort corridor with switched actions (S&B Example 13.1), pi(right|s) = p in all states")
  print(f"  {'p':>5}  {'J(p)':>10}")
  for p, j in zip(table_p, table_j):
    print(f"  {p:5.2f}  {j:10.4f}")
  print(f"  maximiser p* = {p_star:.3f} ({p_star:.8f}), J(p*) = {j_star:.4f}")
  print(f"  dJ/dp at p*: theorem {d_theorem:.2e}, autodiff through the solve {d_autodiff:.2e}")

  keep = js > -100.0
  png = runner.plots.panels(
      os.path.join(workdir, "corridor_J.png"), ps[keep],
      [{"curves": {"J(p) = v_pi(s0)": js[keep]}, "xlabel": "p = probability of right",
        "ylabel": "J(p)", "hlines": {f"max {j_star:.2f} at p={p_star:.3f}": float(j_star)}}],
      title="Short corridor with switched actions")
  print(f"  plot: {png}")
  return {"p_star": float(p_star), "J_star": float(j_star), "dJdp_theorem": float(d_theorem),
          "dJdp_autodiff": float(d_autodiff),
          "table": {f"{p:.2f}": float(j) for p, j in zip(table_p, table_j)}}


def main(argv):
  gammas = _parse_gammas(_GAMMAS.value)
  if not 0.0 < _TABLE_STEP.value <= 0.5:
    raise runner.UserError(f"--table_step must be in (0, 0.5], got {_TABLE_STEP.value}")
  if _GRID.value < 3:
    raise runner.UserError(f"--grid must be at least 3, got {_GRID.value}")
  jax.config.update("jax_enable_x64", True)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  info.write(os.path.join(_WORKDIR.value, RUN_INFO_FILE), "tabular",
             runner.flags_dict(flags.FLAGS), seed=0, seeds=0)  # exact: no randomness.
  results = {"chain": chain_report(gammas),
             "corridor": corridor_report(_WORKDIR.value, _TABLE_STEP.value, _GRID.value)}
  write_json(os.path.join(_WORKDIR.value, RESULTS_FILE), results_document(
      "tabular", runner.flags_dict(flags.FLAGS), [], {}, results))  # the one schema; tables in extra


if __name__ == "__main__":
  runner.cli_main(main)
