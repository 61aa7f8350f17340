"""REINFORCE gradient estimators against the exact policy gradient; REINFORCE with/without baseline.

  python -m experiments.pg_estimators [--episodes=100000] [--seeds=100] [--workdir=...]

Part 1. On the short corridor (Sutton & Barto 2018, Example 13.1) with a tabular softmax policy
(one preference per state and action, so the gradient has one component per (s, a)), samples
--episodes whole episodes (vmapped ``lax.scan`` with masks) and computes four Monte Carlo
estimates of grad J per episode, each the gradient of ``genrl_jax.losses.reinforce_surrogate``:
total return, reward-to-go, reward-to-go minus a constant baseline (J itself), reward-to-go minus
v_pi(s_t). Each is compared with the exact gradient from the policy-gradient theorem: bias in
standard errors, and total variance (trace of the covariance of one episode's estimate).

Part 2. REINFORCE and REINFORCE with a learned baseline on the short corridor with the book's
state-blind policy, --seeds runs vmapped (the shape of Sutton & Barto's Figure 13.2), with the
area under each learning curve.
"""

from __future__ import annotations

import os

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax import run as runner
from genrl_jax.rl import tabular
from genrl_jax.rl import tabular_pg
from genrl_jax.run import info
from genrl_jax.run.results import results_document, write_json
from genrl_jax.run.workdir import RESULTS_FILE, RUN_INFO_FILE

_WORKDIR = flags.DEFINE_string("workdir", "runs/pg_estimators",
                               "Directory for the plots (estimators.png, learning_curves.png), "
                               "results.json and run_info.json.")
_SEED = flags.DEFINE_integer("seed", 0, "Root PRNG seed.")
_EPISODES = flags.DEFINE_integer("episodes", 100_000,
                                 "Episodes for the estimator comparison (a multiple of --batch).")
_BATCH = flags.DEFINE_integer("batch", 25_000, "Episodes per vmapped batch (bounds memory).")
_MAX_STEPS = flags.DEFINE_integer("max_steps", 100,
                                  "Episode length cap for the estimator comparison; the exact "
                                  "probability of reaching it is printed and must be tiny.")
_P_RIGHT = flags.DEFINE_list("p_right", ["0.6", "0.4", "0.7"],
                             "pi(right|s) in the corridor's three states for part 1, each in "
                             "(0, 1).")
_GAMMA = flags.DEFINE_float("gamma", 1.0, "Discount for part 1, in (0, 1] (the book uses 1).")
_SEEDS = flags.DEFINE_integer("seeds", 100, "Independent runs (vmapped) for the learning curves; "
                              "0 skips part 2.")
_LEARN_EPISODES = flags.DEFINE_integer("learn_episodes", 1000, "Episodes per learning run.")
_LEARN_MAX_STEPS = flags.DEFINE_integer("learn_max_steps", 1000,
                                        "Episode length cap while learning (episodes are cut).")
_ALPHA = flags.DEFINE_float("alpha", 2.0**-13, "REINFORCE step size (S&B Figure 13.2: 2^-13).")
_ALPHA_THETA = flags.DEFINE_float("alpha_theta", 2.0**-9,
                                  "Policy step size of REINFORCE with baseline (S&B: 2^-9).")
_ALPHA_W = flags.DEFINE_float("alpha_w", 2.0**-9,
                              "Baseline step size. The update sums the episode's steps, so "
                              "alpha_w times the episode length must stay below 2 (the book's "
                              "per-step 2^-6 does not).")


def _check_flags() -> np.ndarray:
  try:
    p = np.array([float(x) for x in _P_RIGHT.value])
  except ValueError:
    raise runner.UserError(
        f"--p_right must be three numbers, got {','.join(_P_RIGHT.value)!r}") from None
  if p.shape != (3,) or np.any((p <= 0) | (p >= 1)):
    raise runner.UserError(
        f"--p_right must be three probabilities in (0, 1), got {','.join(_P_RIGHT.value)}")
  if _EPISODES.value < 2 or _BATCH.value < 1 or _EPISODES.value % _BATCH.value:
    raise runner.UserError(f"--episodes ({_EPISODES.value}) must be >= 2 and a multiple of "
                           f"--batch ({_BATCH.value})")
  if not 0.0 < _GAMMA.value <= 1.0:
    raise runner.UserError(f"--gamma must be in (0, 1], got {_GAMMA.value}")
  for flag in (_MAX_STEPS, _LEARN_EPISODES, _LEARN_MAX_STEPS):
    if flag.value < 1:
      raise runner.UserError(f"--{flag.name} must be positive, got {flag.value}")
  if _SEEDS.value < 0:
    raise runner.UserError(f"--seeds must be >= 0, got {_SEEDS.value}")
  for flag in (_ALPHA, _ALPHA_THETA, _ALPHA_W):
    if not flag.value > 0:
      raise runner.UserError(f"--{flag.name} must be positive, got {flag.value}")
  return p


def estimator_comparison(key, p_right: np.ndarray, gamma: float, episodes: int, batch: int,
                         max_steps: int, workdir: str) -> dict:
  """Part 1: bias and variance of the four estimators; prints a table, saves a plot."""
  mdp = tabular.short_corridor_mdp(jnp.float64).replace(gamma=jnp.asarray(gamma, jnp.float64))
  p = np.concatenate([p_right, [0.5]])  # the terminal state's row is never used.
  theta = jnp.asarray(np.stack([np.log1p(-p), np.log(p)], axis=-1))

  @jax.jit
  def exact_quantities(theta):
    pi = tabular.softmax_policy(theta)
    return (tabular.softmax_policy_gradient_theorem(mdp, theta),
            tabular.policy_gradient_autodiff(mdp, tabular.softmax_policy, theta),
            tabular.objective(mdp, pi), tabular_pg.survival_probability(mdp, pi, max_steps))

  exact, autodiff, j, cut = jax.device_get(exact_quantities(theta))
  j, cut = float(j), float(cut)

  sample = jax.jit(lambda k: tabular_pg.gradient_estimates(k, mdp, theta, batch, max_steps))
  outs = [jax.device_get(sample(k)) for k in jax.random.split(key, episodes // batch)]
  live = np.arange(3)  # components of the three non-terminal states.
  print(f"Part 1: REINFORCE estimators on the short corridor, pi(right|s) = {p_right.tolist()}, "
        f"gamma = {gamma}, {episodes} episodes")
  print(f"  J = {j:.4f}; P(episode longer than {max_steps} steps) = {cut:.1e} (exact); "
        f"cut in the sample: {int(sum(o['truncated'].sum() for o in outs))}")
  print("  exact gradient (theorem), rows = states 0..2, cols = left/right:")
  for s in live:
    print(f"    s={s}: {exact[s, 0]:+.4f} {exact[s, 1]:+.4f}")
  print(f"  |theorem - autodiff through the solve| = {np.abs(exact - autodiff).max():.1e}")
  header = (f"  {'estimator':30s} {'max|bias|/SE':>12s} {'max|bias|':>10s} "
            f"{'total variance':>15s} {'vs total':>9s}")
  print(header)
  rows = {}
  for name in tabular_pg.ESTIMATORS:
    g = np.concatenate([o[name] for o in outs])[:, live].reshape(episodes, -1)
    mean = g.mean(0)
    se = g.std(0, ddof=1) / np.sqrt(episodes)
    bias = mean - exact[live].ravel()
    variance = float(np.trace(np.cov(g, rowvar=False)))
    rows[name] = {"mean": mean.tolist(), "se": se.tolist(), "bias": bias.tolist(),
                  "max_abs_z": float(np.max(np.abs(bias) / se)), "total_variance": variance}
  for name, row in rows.items():
    ratio = row["total_variance"] / rows["total_return"]["total_variance"]
    print(f"  {name:30s} {row['max_abs_z']:12.2f} {np.max(np.abs(row['bias'])):10.4f} "
          f"{row['total_variance']:15.2f} {ratio:9.3f}")

  _estimator_plot(os.path.join(workdir, "estimators.png"), exact[live].ravel(), rows)
  return {"J": j, "exact": exact[live].tolist(), "p_cut": cut, "estimators": rows}


def _estimator_plot(path: str, exact: np.ndarray, rows: dict) -> None:
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top  (Agg set by plots)

  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4))
  n = len(rows)
  comp = np.arange(exact.size)
  for i, (name, row) in enumerate(rows.items()):
    ax0.errorbar(comp + (i - n / 2) * 0.12, np.asarray(row["mean"]) - exact,
                 yerr=3 * np.asarray(row["se"]), fmt="o", ms=3, capsize=2, label=name)
  ax0.axhline(0.0, color="k", lw=0.8)
  ax0.set_xticks(comp, [f"s{c // 2},{'LR'[c % 2]}" for c in comp])
  ax0.set_ylabel("mean estimate - exact gradient (bars: 3 SE)")
  ax0.legend(fontsize=7)
  ax1.bar(range(n), [row["total_variance"] for row in rows.values()])
  ax1.set_xticks(range(n), [name.replace("_", "\n") for name in rows], fontsize=7)
  ax1.set_yscale("log")
  ax1.set_ylabel("total variance (trace of covariance)")
  print(f"  plot: {runner.plots.save(fig, path)}")


def _mean_ci(per_seed: np.ndarray) -> tuple[float, float]:
  """Mean over seeds and its 95% bootstrap CI half-width (NaN with one seed: no interval)."""
  mean, half = runner.stats.mean_ci(per_seed)
  return mean, half if per_seed.shape[0] > 1 else float("nan")


def learning_curves(key, seeds: int, episodes: int, max_steps: int, alpha: float,
                    alpha_theta: float, alpha_w: float, workdir: str) -> dict:
  """Part 2: REINFORCE vs REINFORCE with baseline, seeds vmapped; prints AUC, saves a plot."""
  keys = jax.random.split(key, seeds)
  configs = {
      f"REINFORCE (alpha=2^{np.log2(alpha):.3g})":
          dict(alpha_theta=alpha, alpha_w=0.0, use_baseline=False),
      f"with baseline (alpha_theta=2^{np.log2(alpha_theta):.3g}, alpha_w=2^{np.log2(alpha_w):.3g})":
          dict(alpha_theta=alpha_theta, alpha_w=alpha_w, use_baseline=True),
  }
  j_star = float(jax.jit(lambda: tabular.maximize_scalar(
      tabular.corridor_objective, 1e-3, 1 - 1e-3)[1])())
  print(f"\nPart 2: REINFORCE on the short corridor, {seeds} seeds x {episodes} episodes "
        f"(pi(right) starts at 0.05; v*(s0) = {j_star:.2f})")
  print(f"  {'method':58s} {'area under curve (mean return/episode)':>40s} "
        f"{f'last {min(100, episodes)} episodes':>20s} {'final pi(right)':>16s} "
        f"{'episodes cut':>13s}")
  # Both methods and all seeds in one compiled call: vmap over methods of a vmap over seeds.
  cfg = {name: jnp.asarray([c[name] for c in configs.values()])
         for name in ("alpha_theta", "alpha_w", "use_baseline")}
  run = jax.jit(jax.vmap(jax.vmap(
      lambda k, a_theta, a_w, use_b: tabular_pg.corridor_reinforce(
          k, episodes, alpha_theta=a_theta, alpha_w=a_w, use_baseline=use_b,
          max_steps=max_steps),
      in_axes=(0, None, None, None)), in_axes=(None, 0, 0, 0)))
  all_returns, all_p_right, all_cut = jax.device_get(
      run(keys, cfg["alpha_theta"], cfg["alpha_w"], cfg["use_baseline"]))
  curves, table = {}, {}
  for i, label in enumerate(configs):
    returns, p_right, cut = all_returns[i], all_p_right[i], all_cut[i]
    auc = returns.mean(axis=1)  # per seed
    last = returns[:, -min(100, episodes):].mean(axis=1)
    (auc_mean, auc_half), (last_mean, last_half) = (_mean_ci(auc), _mean_ci(last))
    table[label] = {"auc_mean": auc_mean, "auc_ci95": auc_half,
                    "last100_mean": last_mean, "last100_ci95": last_half,
                    "final_p_right_mean": float(np.mean(p_right[:, -1])),
                    "episodes_cut": int(cut.sum())}
    if not np.all(np.isfinite(p_right)):
      print(f"  warning: {label} diverged in {int(np.sum(~np.isfinite(p_right[:, -1])))} seeds "
            "(pi(right) is not finite); lower its step sizes")
    print(f"  {label:58s} {auc_mean:30.2f} +- {auc_half:6.2f} "
          f"{last_mean:12.2f} +- {last_half:5.2f} {np.mean(p_right[:, -1]):16.3f} "
          f"{int(cut.sum()):13d}")
    curves[label] = returns  # [seeds, episodes]: drawn as the mean with a bootstrap CI band.
  png = runner.plots.panels(
      os.path.join(workdir, "learning_curves.png"), np.arange(1, episodes + 1),
      [{"curves": curves, "xlabel": "episode", "ylabel": f"total reward per episode "
        f"(mean of {seeds} seeds, 95% CI)", "hlines": {"v*(s0)": j_star}}],
      title="Short corridor: REINFORCE with/without baseline (cf. S&B Fig. 13.2)")
  print("  (+-: half-width of the 95% percentile-bootstrap CI of the mean over seeds)")
  print(f"  plot: {png}")
  return {"v_star": j_star, "methods": table}


def main(argv):
  p_right = _check_flags()
  jax.config.update("jax_enable_x64", True)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  info.write(os.path.join(_WORKDIR.value, RUN_INFO_FILE), "pg_estimators",
             runner.flags_dict(flags.FLAGS), seed=_SEED.value, seeds=_SEEDS.value)
  k_est, k_learn = jax.random.split(jax.random.key(_SEED.value))
  results = {"estimators": estimator_comparison(
      k_est, p_right, _GAMMA.value, _EPISODES.value, _BATCH.value, _MAX_STEPS.value,
      _WORKDIR.value)}
  if _SEEDS.value:
    results["learning"] = learning_curves(
        k_learn, _SEEDS.value, _LEARN_EPISODES.value, _LEARN_MAX_STEPS.value, _ALPHA.value,
        _ALPHA_THETA.value, _ALPHA_W.value, _WORKDIR.value)
  write_json(os.path.join(_WORKDIR.value, RESULTS_FILE), results_document(
      "pg_estimators", runner.flags_dict(flags.FLAGS), [_SEED.value], {}, results))


if __name__ == "__main__":
  runner.cli_main(main)
