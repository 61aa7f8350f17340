"""Tests of the RL losses in genrl_jax.losses: returns, REINFORCE, value baseline, entropy, TD.

Expectations come from plain Python loops written forwards (the code under test recurses
backwards with lax.scan), hand-derived numbers, analytic softmax gradients and piecewise
formulas.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from scipy import stats

from genrl_jax import losses


@pytest.fixture
def x64():
  """Runs a test with 64-bit floats, restoring the previous setting afterwards."""
  with jax.enable_x64(True):
    yield


# ---------------------------------------------------------------------------------------------
# Returns
# ---------------------------------------------------------------------------------------------


def python_returns(r, terminated, truncated, gamma, v_next=None):
  """G_t by walking forwards from t to the end of t's episode (or of the rollout).

  G_t = sum_{k=t..e} gamma^(k-t) r_k + gamma^(e-t+1) * bootstrap, where e is the first step at or
  after t that ends the episode (or the rollout's last step). The bootstrap is 0 after a
  termination, v(s'_e) after a truncation or at the rollout's end (0 when no values are given).
  A step that is both terminated and truncated counts as terminated.
  """
  n = len(r)
  out = []
  for t in range(n):
    g, discount = 0.0, 1.0
    for k in range(t, n):
      g += discount * r[k]
      discount *= gamma
      if terminated[k]:
        break
      if truncated[k] or k == n - 1:
        g += discount * (0.0 if v_next is None else v_next[k])
        break
    out.append(g)
  return np.array(out)


def python_episode_start_returns(r, terminated, truncated, gamma):
  """Split the rollout into episodes; every step gets sum_k gamma^k r_k of its own episode."""
  out, episode = [], []
  for t in range(len(r)):
    episode.append(r[t])
    if terminated[t] or truncated[t] or t == len(r) - 1:
      g0 = sum(gamma**k * rk for k, rk in enumerate(episode))
      out += [g0] * len(episode)
      episode = []
  return np.array(out)


def _returns(r, term, trunc, gamma, v_next=None):
  return np.asarray(losses.discounted_returns(
      jnp.asarray(r), jnp.asarray(term), jnp.asarray(trunc), gamma,
      None if v_next is None else jnp.asarray(v_next)))


def test_returns_hand_computed(x64):
  r = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
  v = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
  none = np.zeros(5, bool)
  gamma = 0.5
  # Truncation in the middle (after step 1), bootstrapped with v(s'_1) = 20; the rollout's end
  # bootstraps with v(s'_4) = 50:
  #   G4 = 5 + .5*50 = 30, G3 = 4 + .5*30 = 19, G2 = 3 + .5*19 = 12.5,
  #   G1 = 2 + .5*20 = 12, G0 = 1 + .5*12 = 7.
  trunc = np.array([False, True, False, False, False])
  np.testing.assert_allclose(_returns(r, none, trunc, gamma, v), [7.0, 12.0, 12.5, 19.0, 30.0])
  # The same truncation without values: cut there and at the rollout's end.
  #   G4 = 5, G3 = 6.5, G2 = 6.25, G1 = 2, G0 = 2.
  np.testing.assert_allclose(_returns(r, none, trunc, gamma), [2.0, 2.0, 6.25, 6.5, 5.0])
  # Termination after step 1 never bootstraps, even when values are given.
  np.testing.assert_allclose(_returns(r, trunc, none, gamma, v), [2.0, 2.0, 12.5, 19.0, 30.0])
  # Terminated and truncated on the same step: terminated wins.
  np.testing.assert_allclose(_returns(r, trunc, trunc, gamma, v), [2.0, 2.0, 12.5, 19.0, 30.0])
  # Termination on the last step: nothing beyond the rollout.
  last = np.array([False, False, False, False, True])
  np.testing.assert_allclose(_returns(r, last, none, 1.0, v), [15.0, 14.0, 12.0, 9.0, 5.0])
  # Truncation on the last step bootstraps like the end of the rollout.
  np.testing.assert_allclose(_returns(r, none, last, 1.0, v), [65.0, 64.0, 62.0, 59.0, 55.0])


def _random_rollouts(seed, num, length):
  """num random rollouts of one length: rewards, terminations, truncations, next-state values.

  About 15 % of steps terminate and 15 % truncate (some both), so rollouts hold several
  episodes, truncations in the middle, and unfinished episodes at the end.
  """
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(num, length)), rng.random((num, length)) < 0.15,
          rng.random((num, length)) < 0.15, rng.normal(size=(num, length)) * 5)


# One compilation per rollout length: gamma is traced, rollouts are vmapped.
_batched_returns = jax.jit(jax.vmap(losses.discounted_returns, in_axes=(0, 0, 0, None, 0)))
_batched_returns_no_bootstrap = jax.jit(
    jax.vmap(losses.discounted_returns, in_axes=(0, 0, 0, None)))
_batched_episode_start_returns = jax.jit(
    jax.vmap(losses.episode_start_returns, in_axes=(0, 0, 0, None)))


@pytest.mark.parametrize("length", [1, 2, 7, 25])
def test_returns_match_python_loop(x64, length):
  num = 200
  r, term, trunc, v = _random_rollouts(length, num, length)
  for gamma in (0.0, 0.5, 0.99, 1.0):
    expected_boot = [python_returns(r[i], term[i], trunc[i], gamma, v[i]) for i in range(num)]
    expected_no_boot = [python_returns(r[i], term[i], trunc[i], gamma) for i in range(num)]
    np.testing.assert_allclose(_batched_returns(r, term, trunc, gamma, v), expected_boot,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_batched_returns_no_bootstrap(r, term, trunc, gamma),
                               expected_no_boot, rtol=1e-12, atol=1e-12)
  # 0/1 floats work like bools.
  np.testing.assert_allclose(
      _batched_returns(r, term.astype(np.float64), trunc.astype(np.float64), 0.9, v),
      _batched_returns(r, term, trunc, 0.9, v), rtol=1e-12)


@pytest.mark.parametrize("length", [1, 2, 7, 25])
def test_episode_start_returns_match_python_loop(x64, length):
  num = 200
  r, term, trunc, _ = _random_rollouts(100 + length, num, length)
  for gamma in (0.5, 0.9, 1.0):
    expected = [python_episode_start_returns(r[i], term[i], trunc[i], gamma) for i in range(num)]
    np.testing.assert_allclose(_batched_episode_start_returns(r, term, trunc, gamma), expected,
                               rtol=1e-12, atol=1e-12)


def test_episode_start_returns_hand_computed(x64):
  # Episodes [1, 2 | 3, 4, 5 | 6], gamma = 0.5: G0 = 1 + 1 = 2; 3 + 2 + 1.25 = 6.25; 6.
  r = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
  term = jnp.array([False, True, False, False, False, False])
  trunc = jnp.array([False, False, False, False, True, False])
  np.testing.assert_allclose(losses.episode_start_returns(r, term, trunc, 0.5),
                             [2.0, 2.0, 6.25, 6.25, 6.25, 6.0])


# ---------------------------------------------------------------------------------------------
# REINFORCE and the value baseline
# ---------------------------------------------------------------------------------------------


def _softmax(x):
  return special.softmax(np.asarray(x, np.float64), axis=-1)


@pytest.mark.parametrize("policy", ["tabular", "linear"])
def test_reinforce_gradient_matches_analytic_softmax_gradient(x64, policy):
  """grad L = -sum_t m_t (G_t - b_t) grad log pi(a_t|s_t), with grad_logits log pi = onehot - pi."""
  rng = np.random.default_rng(0)
  t, num_states, num_actions, num_features = 12, 4, 3, 5
  a = rng.integers(0, num_actions, size=t)
  g = rng.normal(size=t) * 3
  b = rng.normal(size=t)
  mask = (rng.random(t) < 0.7).astype(np.float64)
  if policy == "tabular":
    s = rng.integers(0, num_states, size=t)
    theta = rng.normal(size=(num_states, num_actions))
    logits_fn = lambda th: th[jnp.asarray(s)]
  else:
    phi = rng.normal(size=(t, num_features))
    theta = rng.normal(size=(num_features, num_actions))
    logits_fn = lambda th: jnp.asarray(phi) @ th

  def loss(th):
    return losses.reinforce_surrogate(logits_fn(th), jnp.asarray(a), jnp.asarray(g),
                                      jnp.asarray(b), jnp.asarray(mask))

  expected = np.zeros_like(theta)
  for step in range(t):
    logits = theta[s[step]] if policy == "tabular" else phi[step] @ theta
    grad_logits = np.eye(num_actions)[a[step]] - _softmax(logits)
    weight = -mask[step] * (g[step] - b[step])
    if policy == "tabular":
      expected[s[step]] += weight * grad_logits
    else:
      expected += weight * np.outer(phi[step], grad_logits)
  np.testing.assert_allclose(jax.jit(jax.grad(loss))(jnp.asarray(theta)), expected, rtol=1e-10,
                             atol=1e-12)
  # The loss value itself: -sum_t m_t log pi(a_t|s_t) (G_t - b_t).
  log_pi = np.log(_softmax(np.asarray(logits_fn(jnp.asarray(theta)))))
  np.testing.assert_allclose(loss(jnp.asarray(theta)),
                             -np.sum(mask * log_pi[np.arange(t), a] * (g - b)), rtol=1e-10)


def test_reinforce_masked_steps_contribute_nothing(x64):
  rng = np.random.default_rng(1)
  t, num_actions = 10, 4
  logits = rng.normal(size=(t, num_actions))
  a = rng.integers(0, num_actions, size=t)
  g, b = rng.normal(size=(2, t))
  mask = np.array([1, 1, 0, 1, 0, 0, 1, 1, 0, 1], np.float64)
  keep = mask.astype(bool)

  def value_and_grad(logits, a, g, b, mask):
    return jax.jit(jax.value_and_grad(losses.reinforce_surrogate))(
        jnp.asarray(logits), jnp.asarray(a), jnp.asarray(g), jnp.asarray(b),
        None if mask is None else jnp.asarray(mask))

  val, grad = value_and_grad(logits, a, g, b, mask)
  # Equal to the surrogate over the unmasked steps alone ...
  val_kept, grad_kept = value_and_grad(logits[keep], a[keep], g[keep], b[keep], None)
  np.testing.assert_allclose(val, val_kept, rtol=1e-12)
  np.testing.assert_allclose(grad[keep], grad_kept, rtol=1e-12)
  # ... with exactly zero gradient on masked steps, whatever garbage they hold.
  np.testing.assert_array_equal(grad[~keep], 0.0)
  junk_logits, junk_g = logits.copy(), g.copy()
  junk_logits[~keep] = 1e3 * rng.normal(size=((~keep).sum(), num_actions))
  junk_g[~keep] = 1e6
  junk_a = np.where(keep, a, (a + 1) % num_actions)
  val_junk, grad_junk = value_and_grad(junk_logits, junk_a, junk_g, b, mask)
  np.testing.assert_allclose(val_junk, val, rtol=1e-12)
  np.testing.assert_allclose(grad_junk, grad, rtol=1e-12)
  # A boolean mask is the same as a 0/1 float mask.
  np.testing.assert_allclose(value_and_grad(logits, a, g, b, keep)[0], val, rtol=1e-12)


def test_reinforce_returns_and_baseline_carry_no_gradient(x64):
  rng = np.random.default_rng(2)
  logits, g, b = jnp.asarray(rng.normal(size=(6, 3))), *jnp.asarray(rng.normal(size=(2, 6)))
  a = jnp.asarray(rng.integers(0, 3, size=6))
  grad_g, grad_b = jax.grad(losses.reinforce_surrogate, argnums=(2, 3))(logits, a, g, b)
  np.testing.assert_array_equal(grad_g, 0.0)
  np.testing.assert_array_equal(grad_b, 0.0)


def test_reinforce_is_unbiased_policy_gradient_on_a_bandit(x64):
  """Averaged over sampled actions, the surrogate's gradient is grad E_pi[r] (with a baseline)."""
  theta = jnp.array([0.3, -0.2, 0.5])
  rewards = jnp.array([1.0, 3.0, -2.0])
  pi = _softmax(np.asarray(theta))
  # grad_theta sum_a pi(a) r(a) = pi * (r - pi . r)
  exact = pi * (np.asarray(rewards) - pi @ np.asarray(rewards))
  n = 50_000
  a = jax.random.categorical(jax.random.key(3), theta, shape=(n,))
  r = rewards[a]
  per_sample = jax.jit(jax.vmap(jax.grad(lambda th, ai, ri: -losses.reinforce_surrogate(
      th[None], ai[None], ri[None], jnp.full((1,), 0.7))), in_axes=(None, 0, 0)))(theta, a, r)
  est = np.asarray(per_sample).mean(0)
  se = np.asarray(per_sample).std(0, ddof=1) / np.sqrt(n)
  np.testing.assert_array_less(np.abs(est - exact), 3.0 * se)


def test_value_baseline_loss_value_and_gradient(x64):
  rng = np.random.default_rng(4)
  v, g = rng.normal(size=(2, 8))
  mask = (rng.random(8) < 0.6).astype(np.float64)
  val, (grad_v, grad_g) = jax.value_and_grad(losses.value_baseline_loss, argnums=(0, 1))(
      jnp.asarray(v), jnp.asarray(g), jnp.asarray(mask))
  np.testing.assert_allclose(val, 0.5 * sum(m * (gi - vi)**2 for m, gi, vi in zip(mask, g, v)),
                             rtol=1e-12)
  np.testing.assert_allclose(grad_v, -mask * (g - v), rtol=1e-12)
  np.testing.assert_array_equal(grad_g, 0.0)  # the target is a constant
  grad_v_nomask = jax.grad(losses.value_baseline_loss)(jnp.asarray(v), jnp.asarray(g))
  np.testing.assert_allclose(grad_v_nomask, -(g - v), rtol=1e-12)


def test_entropy_matches_scipy(x64):
  rng = np.random.default_rng(5)
  for logits in (rng.normal(size=4) * 3, np.zeros(6), np.array([50.0, -50.0, 0.0])):
    np.testing.assert_allclose(losses.entropy(jnp.asarray(logits)),
                               stats.entropy(_softmax(logits)), rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(losses.entropy(jnp.zeros(6)), np.log(6.0), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# TD targets and losses
# ---------------------------------------------------------------------------------------------


def test_td_targets_on_a_hand_built_batch(x64):
  gamma = 0.9
  # (r, terminated, Q_target(s_t, .), Q_online(s_t, .)); targets derived by hand:
  batch = [
      # ongoing: DQN takes max Q_target = 5 -> 1 + .9*5 = 5.5; Double DQN takes the online
      # argmax (action 2) evaluated by the target net: 1 + .9*2 = 2.8.
      (1.0, False, [1.0, 5.0, 2.0], [3.0, 0.0, 4.0], 5.5, 2.8),
      # terminated: no bootstrap for either.
      (2.0, True, [1.0, 5.0, 2.0], [3.0, 0.0, 4.0], 2.0, 2.0),
      # truncated by a time limit: the caller passes terminated=False and Q at the true final
      # observation, so it bootstraps: DQN 0.5 + .9*(-1) = -0.4; Double picks action 0:
      # 0.5 + .9*(-3) = -2.2.
      (0.5, False, [-3.0, -1.0, -2.0], [1.0, 0.0, -1.0], -0.4, -2.2),
      # selectors agree: both give -1 + .9*7 = 5.3.
      (-1.0, False, [7.0, 0.0, 1.0], [9.0, 1.0, 2.0], 5.3, 5.3),
  ]
  for r, term, q_target, q_online, dqn, double in batch:
    args = (jnp.asarray(r), jnp.asarray(term), gamma, jnp.asarray(q_target))
    np.testing.assert_allclose(losses.td_target(*args), dqn, rtol=1e-12)
    np.testing.assert_allclose(losses.td_target(*args, jnp.asarray(q_online)), double,
                               rtol=1e-12)
  # Batched with vmap, as at the call site.
  r, term, qt, qo, dqn, double = (np.array(c) for c in zip(*batch))
  np.testing.assert_allclose(
      jax.vmap(losses.td_target, in_axes=(0, 0, None, 0, 0))(
          jnp.asarray(r), jnp.asarray(term), gamma, jnp.asarray(qt), jnp.asarray(qo)), double,
      rtol=1e-12)
  np.testing.assert_allclose(
      jax.vmap(losses.td_target, in_axes=(0, 0, None, 0))(
          jnp.asarray(r), jnp.asarray(term), gamma, jnp.asarray(qt)), dqn, rtol=1e-12)


def python_huber(x, delta):
  return 0.5 * x * x if abs(x) <= delta else delta * (abs(x) - 0.5 * delta)


@pytest.mark.parametrize("delta", [0.5, 1.0, 3.0])
def test_huber_matches_piecewise_formula(x64, delta):
  xs = np.concatenate([np.linspace(-8, 8, 161), [delta, -delta, 0.0]])
  got = jax.jit(jax.vmap(lambda x: losses.huber(x, delta)))(jnp.asarray(xs))
  np.testing.assert_allclose(got, [python_huber(x, delta) for x in xs], rtol=1e-12)
  grads = jax.jit(jax.vmap(jax.grad(lambda x: losses.huber(x, delta))))(jnp.asarray(xs))
  # Derivative: x inside [-delta, delta], delta * sign(x) outside; continuous at the joins.
  np.testing.assert_allclose(grads, np.clip(xs, -delta, delta), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", ["huber", "squared", "mse"])
def test_td_loss_value_and_gradient(x64, loss):
  rng = np.random.default_rng(6)
  gamma, delta, num_actions = 0.9, 1.0, 4
  for _ in range(20):
    q_tm1 = rng.normal(size=num_actions) * 3
    a_tm1 = int(rng.integers(num_actions))
    r = float(rng.normal())
    term = bool(rng.random() < 0.3)
    q_t = rng.normal(size=num_actions) * 3
    y = r + (0.0 if term else gamma * q_t.max())
    err = y - q_tm1[a_tm1]
    expected = {"huber": python_huber(err, delta), "squared": 0.5 * err * err,
                "mse": err * err}[loss]
    expected_grad = np.zeros(num_actions)
    expected_grad[a_tm1] = -{"huber": np.clip(err, -delta, delta), "squared": err,
                             "mse": 2.0 * err}[loss]
    fn = lambda q, qt: losses.td_loss(q, jnp.asarray(a_tm1), jnp.asarray(r), jnp.asarray(term),
                                      gamma, qt, loss=loss, huber_delta=delta)
    val, (grad_q, grad_qt) = jax.value_and_grad(fn, argnums=(0, 1))(jnp.asarray(q_tm1),
                                                                    jnp.asarray(q_t))
    np.testing.assert_allclose(val, expected, rtol=1e-12)
    np.testing.assert_allclose(grad_q, expected_grad, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(grad_qt, 0.0)  # the target network gets no gradient


def test_td_loss_rejects_unknown_loss():
  with pytest.raises(ValueError, match="huber"):
    losses.td_loss(jnp.zeros(2), jnp.asarray(0), jnp.asarray(0.0), jnp.asarray(False), 0.9,
                   jnp.zeros(2), loss="l1")
