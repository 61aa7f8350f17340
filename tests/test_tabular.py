"""Tests for genrl_jax.rl.tabular: DP against brute force, the policy-gradient theorem, J(p)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiment_cli
from genrl_jax.rl import tabular
from genrl_jax.rl import tabular_pg
from genrl_jax.run.results import read as read_results


@pytest.fixture(autouse=True)
def _float64():
  with jax.enable_x64(True):
    yield


# ---------------------------------------------------------------------------------------------
# Independent references (plain Python / numpy, written from the problem statements).
# ---------------------------------------------------------------------------------------------


def _chain_step(s, a):
  """The chain MDP's rule, as stated: returns (next state, reward)."""
  if s == -1 and a == "-":
    return 0, 1.0
  if s == 2 and a == "+":
    return 0, 3.0
  return s + (1 if a == "+" else -1), 0.0


def _chain_brute_force(gamma):
  """Best of the 16 deterministic policies, each evaluated by numpy.linalg.solve."""
  states = [-1, 0, 1, 2]
  evaluated = []
  for actions in itertools.product("-+", repeat=4):
    p = np.zeros((4, 4))
    r = np.zeros(4)
    for i, (s, a) in enumerate(zip(states, actions)):
      nxt, reward = _chain_step(s, a)
      p[i, states.index(nxt)] = 1.0
      r[i] = reward
    evaluated.append((actions, np.linalg.solve(np.eye(4) - gamma * p, r)))
  best_actions, best_v = max(evaluated, key=lambda x: x[1].sum())
  for _, v in evaluated:  # an optimal policy dominates every other one in every state.
    assert np.all(best_v >= v - 1e-12)
  return best_actions, best_v


def _brute_force(P, R, gamma, terminal):
  """Best deterministic policy of a finite MDP by enumeration; terminal states are cut out of the
  linear system (v = 0 there), not masked."""
  P, R = np.asarray(P), np.asarray(R)
  live = np.flatnonzero(~np.asarray(terminal))
  num_states, num_actions = R.shape
  best = None
  for actions in itertools.product(range(num_actions), repeat=len(live)):
    p_pi = np.array([P[s, a, live] for s, a in zip(live, actions)])
    r_pi = np.array([R[s, a] for s, a in zip(live, actions)])
    v = np.zeros(num_states)
    v[live] = np.linalg.solve(np.eye(len(live)) - gamma * p_pi, r_pi)
    if best is None or v.sum() > best[1].sum():
      best = (actions, v)
  return best


def _corridor_j_numpy(ps):
  """J(p) of the short corridor from its three Bellman equations (S&B Example 13.1), numpy:

      v0 = -1 + p v1 + (1-p) v0;  v1 = -1 + p v0 + (1-p) v2;  v2 = -1 + (1-p) v1 + p * 0.
  """
  ps = np.asarray(ps, np.float64)
  a = np.zeros(ps.shape + (3, 3))
  a[..., 0, 0] = ps
  a[..., 0, 1] = -ps
  a[..., 1, 0] = -ps
  a[..., 1, 1] = 1.0
  a[..., 1, 2] = -(1.0 - ps)
  a[..., 2, 1] = -(1.0 - ps)
  a[..., 2, 2] = 1.0
  return np.linalg.solve(a, -np.ones(ps.shape + (3, 1)))[..., 0, 0]


# (seed, gamma, terminal states) of random MDPs with 5 states and 3 actions. One shape, so each
# jitted function compiles once (gamma and the terminal mask are array leaves of the MDP).
NUM_STATES, NUM_ACTIONS = 5, 3
RANDOM_CASES = [(0, 0.9, 0), (1, 0.99, 0), (2, 1.0, 1), (3, 0.5, 1), (4, 0.95, 2)]

_value_iteration = jax.jit(tabular.value_iteration)
_policy_iteration = jax.jit(tabular.policy_iteration)
_theorem = jax.jit(tabular.softmax_policy_gradient_theorem)
_theorem_fn = jax.jit(lambda mdp, theta: tabular.policy_gradient_theorem_fn(
    mdp, tabular.softmax_policy, theta))
_autodiff = jax.jit(lambda mdp, theta: tabular.policy_gradient_autodiff(
    mdp, tabular.softmax_policy, theta))


# ---------------------------------------------------------------------------------------------
# Chain MDP.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.1, 0.99])
def test_chain_optimal_policy_matches_brute_force(gamma):
  actions, v_star = _chain_brute_force(gamma)
  mdp = tabular.chain_mdp(gamma, jnp.float64)
  for solver in (tabular.value_iteration, tabular.policy_iteration):
    v, pi = jax.jit(solver)(mdp)
    got = tuple(tabular.CHAIN_ACTIONS[a] for a in np.argmax(np.asarray(pi), -1))
    assert got == actions, solver.__name__
    np.testing.assert_allclose(v, v_star, rtol=1e-9, atol=1e-9)


def test_chain_values_closed_form():
  # gamma = 0.1: from 0 the loop 0 -> -1 -> 0 pays 1 at t = 1 every 2 steps.
  v = np.asarray(tabular.value_iteration(tabular.chain_mdp(0.1))[0])
  assert v[1] == pytest.approx(0.1 / (1 - 0.1**2), rel=1e-10)
  # gamma = 0.99: from 0 the loop 0 -> 1 -> 2 -> 0 pays 3 at t = 2 every 3 steps.
  v = np.asarray(tabular.policy_iteration(tabular.chain_mdp(0.99))[0])
  assert v[1] == pytest.approx(3 * 0.99**2 / (1 - 0.99**3), rel=1e-10)
  # The myopic (gamma = 0.1) policy, run at gamma = 0.99, keeps taking the 1-reward loop.
  pi_myopic = tabular.policy_iteration(tabular.chain_mdp(0.1))[1]
  v_cross = np.asarray(tabular.evaluate_policy(tabular.chain_mdp(0.99), pi_myopic))
  assert v_cross[1] == pytest.approx(0.99 / (1 - 0.99**2), rel=1e-10)


# ---------------------------------------------------------------------------------------------
# Random MDPs: DP, evaluation, on-policy distribution, policy-gradient theorem.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,gamma,num_terminal", RANDOM_CASES)
def test_value_iteration_policy_iteration_brute_force_agree(seed, gamma, num_terminal):
  mdp = tabular.random_mdp(jax.random.key(seed), NUM_STATES, NUM_ACTIONS, gamma, num_terminal)
  _, v_bf = _brute_force(mdp.P, mdp.R, gamma, mdp.terminal)
  v_vi, pi_vi = _value_iteration(mdp)
  v_pi, pi_pi = _policy_iteration(mdp)
  scale = 1.0 + np.abs(v_bf).max()
  np.testing.assert_allclose(v_pi, v_bf, atol=1e-9 * scale)
  np.testing.assert_allclose(v_vi, v_bf, atol=1e-8 * scale)
  live = ~np.asarray(mdp.terminal)
  np.testing.assert_array_equal(np.argmax(pi_vi, -1)[live], np.argmax(pi_pi, -1)[live])


@pytest.mark.parametrize("seed,gamma,num_terminal", RANDOM_CASES)
def test_exact_evaluation_matches_iterative_evaluation(seed, gamma, num_terminal):
  k_mdp, k_pi = jax.random.split(jax.random.key(100 + seed))
  mdp = tabular.random_mdp(k_mdp, NUM_STATES, NUM_ACTIONS, gamma, num_terminal)
  pi = tabular.softmax_policy(jax.random.normal(k_pi, (NUM_STATES, NUM_ACTIONS)))
  np.testing.assert_allclose(tabular.evaluate_policy(mdp, pi),
                             tabular.iterative_policy_evaluation(mdp, pi, 5000), atol=1e-9)
  # q_pi is consistent with v_pi: v_pi(s) = sum_a pi(a|s) q_pi(s, a) (S&B eq. 3.12 / ex. 3.12).
  np.testing.assert_allclose(jnp.sum(pi * tabular.q_pi(mdp, pi), -1),
                             tabular.evaluate_policy(mdp, pi), atol=1e-10)


def test_evaluation_and_visits_match_monte_carlo():
  """v_pi(start) and eta (expected visits, S&B eq. 9.2) against 40k sampled episodes."""
  k_mdp, k_pi, k_mc = jax.random.split(jax.random.key(7), 3)
  mdp = tabular.random_mdp(k_mdp, 5, 3, 1.0, num_terminal=1)
  pi = tabular.softmax_policy(jax.random.normal(k_pi, (5, 3)))
  assert float(tabular_pg.survival_probability(mdp, pi, 120)) < 1e-9
  episodes = jax.vmap(lambda k: tabular_pg.sample_episode(k, mdp, pi, 120))(
      jax.random.split(k_mc, 40_000))
  returns = np.sum(np.asarray(episodes.r_t), axis=1)  # gamma = 1
  j = float(tabular.objective(mdp, pi))
  assert abs(returns.mean() - j) < 4 * returns.std() / np.sqrt(len(returns))
  s_t, mask = np.asarray(episodes.s_t), np.asarray(episodes.mask_t)
  visits = np.stack([np.sum((s_t == s) * mask, axis=1) for s in range(5)], axis=1)
  eta, mu = tabular.on_policy_distribution(mdp, pi)
  se = visits.std(0) / np.sqrt(len(visits)) + 1e-12
  assert np.all(np.abs(visits.mean(0) - np.asarray(eta)) < 4 * se)
  assert float(eta[4]) == 0.0 and float(jnp.sum(mu)) == pytest.approx(1.0)


@pytest.mark.parametrize("seed,gamma,num_terminal", RANDOM_CASES)
def test_policy_gradient_theorem_equals_autodiff_through_solve(seed, gamma, num_terminal):
  k_mdp, k_theta = jax.random.split(jax.random.key(200 + seed))
  mdp = tabular.random_mdp(k_mdp, NUM_STATES, NUM_ACTIONS, gamma, num_terminal)
  theta = 2.0 * jax.random.normal(k_theta, (NUM_STATES, NUM_ACTIONS))
  theorem = _theorem(mdp, theta)
  autodiff = _autodiff(mdp, theta)
  assert theorem.dtype == jnp.float64
  np.testing.assert_allclose(theorem, autodiff, rtol=1e-6, atol=1e-6)
  # The general form (grad pi by jax.jacobian of the policy alone) gives the same numbers.
  np.testing.assert_allclose(_theorem_fn(mdp, theta), theorem, rtol=1e-9, atol=1e-12)
  assert np.abs(np.asarray(theorem)).max() > 1e-3  # a non-trivial gradient was compared.


def test_policy_gradient_theorem_vmaps_over_mdps():
  keys = jax.random.split(jax.random.key(3), 4)
  mdps = jax.vmap(lambda k: tabular.random_mdp(k, NUM_STATES, NUM_ACTIONS, 0.9))(keys)
  thetas = jax.vmap(lambda k: jax.random.normal(k, (NUM_STATES, NUM_ACTIONS)))(keys)
  batched = jax.jit(jax.vmap(tabular.softmax_policy_gradient_theorem))(mdps, thetas)
  for i in range(len(keys)):
    one = jax.tree.map(lambda x, i=i: x[i], mdps)
    np.testing.assert_allclose(batched[i], _autodiff(one, thetas[i]), atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Short corridor.
# ---------------------------------------------------------------------------------------------


def test_corridor_optimal_deterministic_policy():
  """With full state information the corridor is solved by right, left, right: 3, 2, 1 steps."""
  mdp = tabular.short_corridor_mdp(jnp.float64)
  v, pi = _value_iteration(mdp)
  np.testing.assert_allclose(v, [-3.0, -2.0, -1.0, 0.0], atol=1e-12)
  np.testing.assert_array_equal(np.argmax(np.asarray(pi), -1)[:3], [1, 0, 1])
  # At gamma = 1 policy iteration must start from a proper policy (the default, always left,
  # never leaves state 0); here the only proper deterministic one is the optimum itself.
  v_pi, pi_pi = _policy_iteration(mdp, jnp.array([1, 0, 1, 0]))
  np.testing.assert_allclose(v_pi, [-3.0, -2.0, -1.0, 0.0], atol=1e-12)
  np.testing.assert_array_equal(np.argmax(np.asarray(pi_pi), -1)[:3], [1, 0, 1])


def test_corridor_objective_matches_bellman_equations():
  ps = np.linspace(0.02, 0.98, 49)
  np.testing.assert_allclose(jax.vmap(tabular.corridor_objective)(jnp.asarray(ps)),
                             _corridor_j_numpy(ps), rtol=1e-12)


def test_corridor_maximiser_three_decimals():
  p_star, j_star = jax.jit(lambda: tabular.maximize_scalar(
      tabular.corridor_objective, 1e-3, 1 - 1e-3))()
  # Independent: numpy Bellman solves on a 1e-6 grid.
  grid = np.arange(0.5, 0.7, 1e-6)
  js = _corridor_j_numpy(grid)
  assert round(float(p_star), 3) == round(float(grid[np.argmax(js)]), 3) == 0.586
  assert float(j_star) == pytest.approx(js.max(), abs=1e-9)
  # Hand-derived closed form: J(p) = 2 (p - 2) / (p (1 - p)), maximised at p = 2 - sqrt(2).
  assert float(p_star) == pytest.approx(2 - np.sqrt(2), abs=1e-6)
  # The book: "p ~ 0.59, value ~ -11.6".
  assert 0.58 < float(p_star) < 0.60 and -11.7 < float(j_star) < -11.6


def test_corridor_gradient_theorem_matches_finite_differences():
  mdp = tabular.short_corridor_mdp(jnp.float64)
  policy_fn = lambda p: tabular.corridor_policy(p, 4)
  for p in (0.2, 0.5, 0.8):
    theorem = float(tabular.policy_gradient_theorem_fn(mdp, policy_fn, jnp.asarray(p)))
    h = 1e-6
    fd = (_corridor_j_numpy(p + h) - _corridor_j_numpy(p - h)) / (2 * h)
    assert theorem == pytest.approx(float(fd), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# End to end.
# ---------------------------------------------------------------------------------------------


def test_experiment_end_to_end(tmp_path):
  proc = experiment_cli.run_experiment("experiments.tabular", f"--workdir={tmp_path}",
                                       "--grid=201", "--table_step=0.25")
  assert proc.returncode == 0, proc.stderr
  assert "maximiser p* = 0.586" in proc.stdout
  assert (tmp_path / "corridor_J.png").stat().st_size > 1000
  results = read_results(str(tmp_path / "results.json"))["extra"]
  for gamma in (0.1, 0.99):
    actions, v_star = _chain_brute_force(gamma)
    assert tuple(results["chain"][str(gamma)]["policy"]) == actions
    np.testing.assert_allclose(results["chain"][str(gamma)]["v"], v_star, rtol=1e-8)
    assert f"v( 0)={v_star[1]:.4f}" in proc.stdout


def test_experiment_bad_flag_is_one_line():
  experiment_cli.assert_one_line_error(
      experiment_cli.run_experiment("experiments.tabular", "--gammas=0.5,1.5"), "--gammas")
