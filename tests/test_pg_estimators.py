"""Tests for genrl_jax.rl.tabular_pg: REINFORCE estimators against the exact policy gradient."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiment_cli
from genrl_jax import losses
from genrl_jax.rl import tabular
from genrl_jax.rl import tabular_pg
from genrl_jax.run.results import read as read_results


@pytest.fixture(autouse=True)
def _float64():
  with jax.enable_x64(True):
    yield


def _corridor_theta(p_right):
  p = jnp.asarray(list(p_right) + [0.5])
  return jnp.stack([jnp.log1p(-p), jnp.log(p)], axis=-1)


def _sample_estimates(mdp, theta, episodes, max_steps, batch=25_000, seed=0):
  fn = jax.jit(lambda k: tabular_pg.gradient_estimates(k, mdp, theta, batch, max_steps))
  outs = [jax.device_get(fn(k))
          for k in jax.random.split(jax.random.key(seed), episodes // batch)]
  return {name: np.concatenate([o[name] for o in outs]) for name in outs[0]}


def test_estimators_unbiased_and_baselines_reduce_variance():
  """100k corridor episodes: every estimator within 3 SE of the theorem's gradient in every
  component; total variance total-return >= reward-to-go >= reward-to-go - v_pi."""
  mdp = tabular.short_corridor_mdp(jnp.float64)
  theta = _corridor_theta([0.6, 0.4, 0.7])
  max_steps = 100
  pi = tabular.softmax_policy(theta)
  assert float(tabular_pg.survival_probability(mdp, pi, max_steps)) < 1e-8  # truncation bias
  exact = np.asarray(tabular.softmax_policy_gradient_theorem(mdp, theta))[:3].ravel()
  est = _sample_estimates(mdp, theta, 100_000, max_steps)
  assert not est["truncated"].any()
  variance = {}
  for name in tabular_pg.ESTIMATORS:
    g = est[name][:, :3].reshape(len(est[name]), -1)  # the terminal state's row is always 0.
    assert np.all(est[name][:, 3] == 0.0)
    se = g.std(0, ddof=1) / np.sqrt(len(g))
    z = (g.mean(0) - exact) / se
    assert np.all(np.abs(z) < 3.0), (name, z)
    variance[name] = np.trace(np.cov(g, rowvar=False))
  assert variance["total_return"] > variance["reward_to_go"] > variance["reward_to_go_minus_v"]
  assert variance["reward_to_go_minus_constant"] < variance["reward_to_go"]


def test_discounted_estimators_unbiased_and_missing_discount_detected():
  """gamma = 0.7 on a random episodic MDP: the four estimators (gamma^t in the mask) are within
  3 SE; reward-to-go without the gamma^t factor, on the same episodes, is not (so the 3-SE check
  has power)."""
  k_mdp, k_theta = jax.random.split(jax.random.key(11))
  mdp = tabular.random_mdp(k_mdp, 4, 2, 0.7, num_terminal=1)
  theta = jax.random.normal(k_theta, (4, 2))
  pi = tabular.softmax_policy(theta)
  v = tabular.evaluate_policy(mdp, pi)
  max_steps = 60
  assert float(tabular_pg.survival_probability(mdp, pi, max_steps)) < 1e-8
  exact = np.asarray(tabular.softmax_policy_gradient_theorem(mdp, theta))[:3].ravel()

  def one(key):
    ep = tabular_pg.sample_episode(key, mdp, pi, max_steps)
    out = {name: tabular_pg.gradient_estimate(theta, ep, mdp.gamma, name, v, 1.0)
           for name in tabular_pg.ESTIMATORS}
    g_t, zeros, _ = tabular_pg.surrogate_weights(ep, mdp.gamma, "reward_to_go")
    loss = lambda th: losses.reinforce_surrogate(th[ep.s_t], ep.a_t, g_t, zeros, ep.mask_t)
    out["no_discount"] = -jax.grad(loss)(theta)
    return out

  episodes = 50_000
  est = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(12), episodes))
  z = {}
  for name, g in est.items():
    g = np.asarray(g)[:, :3].reshape(episodes, -1)
    z[name] = (g.mean(0) - exact) / (g.std(0, ddof=1) / np.sqrt(episodes))
  assert np.max(np.abs(z.pop("no_discount"))) > 6.0
  for name, z_name in z.items():
    assert np.all(np.abs(z_name) < 3.0), (name, z_name)


def test_corridor_update_matches_hand_computed_gradient():
  """theta <- theta + alpha sum_t (G_t - w) grad log pi(A_t), with grad log pi = onehot - pi."""
  mdp = tabular.short_corridor_mdp(jnp.float64)
  agent = tabular_pg.CorridorAgent(theta=jnp.array([0.3, -0.2]), w=jnp.asarray(-5.0))
  pi_row = np.asarray(jax.nn.softmax(agent.theta))
  ep = tabular_pg.sample_episode(jax.random.key(5), mdp, tabular.corridor_policy(pi_row[1]), 50)
  a = np.asarray(ep.a_t)
  n = int(ep.length)
  assert n > 3 and not bool(ep.truncated)
  expected_theta = np.asarray(agent.theta, np.float64).copy()
  expected_w = float(agent.w)
  for t in range(n):
    g = -(n - t)  # reward -1 per step, gamma = 1
    expected_theta += 0.01 * (g - float(agent.w)) * (np.eye(2)[a[t]] - pi_row)
    expected_w += 0.001 * (g - float(agent.w))
  new = tabular_pg.corridor_reinforce_update(agent, ep, 0.01, 0.001, use_baseline=True)
  np.testing.assert_allclose(new.theta, expected_theta, rtol=1e-12)
  assert float(new.w) == pytest.approx(expected_w, rel=1e-12)
  plain = tabular_pg.corridor_reinforce_update(agent, ep, 0.01, 0.001, use_baseline=False)
  expected_plain = np.asarray(agent.theta) + 0.01 * sum(
      -(n - t) * (np.eye(2)[a[t]] - pi_row) for t in range(n))
  np.testing.assert_allclose(plain.theta, expected_plain, rtol=1e-12)
  assert float(plain.w) == float(agent.w)


def test_reinforce_with_baseline_learns_faster():
  seeds, episodes = 24, 300
  keys = jax.random.split(jax.random.key(1), seeds)
  auc = {}
  for use_baseline, alpha in ((False, 2.0**-13), (True, 2.0**-9)):
    run = jax.jit(jax.vmap(lambda k, b=use_baseline, a=alpha: tabular_pg.corridor_reinforce(
        k, episodes, alpha_theta=a, alpha_w=2.0**-9, use_baseline=b, max_steps=500)))
    returns, p_right, _ = run(keys)
    assert np.all(np.isfinite(np.asarray(p_right)))
    auc[use_baseline] = np.asarray(returns).mean(axis=1)
  diff = auc[True] - auc[False]  # paired by seed key
  assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(seeds), (auc[True].mean(), auc[False].mean())


def test_experiment_end_to_end(tmp_path):
  proc = experiment_cli.run_experiment(
      "experiments.pg_estimators", f"--workdir={tmp_path}", "--episodes=4000", "--batch=2000",
      "--seeds=3", "--learn_episodes=20", "--learn_max_steps=200")
  assert proc.returncode == 0, proc.stderr
  for name in tabular_pg.ESTIMATORS:
    assert name in proc.stdout
  assert (tmp_path / "estimators.png").stat().st_size > 1000
  assert (tmp_path / "learning_curves.png").stat().st_size > 1000
  results = read_results(str(tmp_path / "results.json"))["extra"]
  exact = tabular.softmax_policy_gradient_theorem(tabular.short_corridor_mdp(jnp.float64),
                                                  _corridor_theta([0.6, 0.4, 0.7]))
  np.testing.assert_allclose(results["estimators"]["exact"], np.asarray(exact)[:3], rtol=1e-10)
  assert len(results["learning"]["methods"]) == 2


def test_experiment_bad_flag_is_one_line():
  proc = experiment_cli.run_experiment("experiments.pg_estimators", "--p_right=0.5,1.2,0.3")
  experiment_cli.assert_one_line_error(proc, "--p_right")
