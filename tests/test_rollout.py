"""Rollouts: truncation vs termination in returns, masks after an episode ends, episode stats."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_envs
from genrl_jax import losses
from genrl_jax.rl import rollout


def _constant_policy(action):
  return lambda key, obs: jnp.full(obs.shape[:1], action, jnp.int32)


def _loop_returns(r, term, trunc, v_next, gamma):
  """G_t by explicit sums over the rest of t's episode (independent of the scan)."""
  T = len(r)
  out = np.zeros(T)
  for t in range(T):
    g = 0.0
    for k in range(t, T):
      g += gamma ** (k - t) * r[k]
      if term[k]:
        break
      if trunc[k]:
        g += gamma ** (k - t + 1) * v_next[k]
        break
    else:
      g += gamma ** (T - t) * v_next[T - 1]
    out[t] = g
  return out


@pytest.mark.parametrize("goal,action,expect_term,expect_trunc", [
    (3, 0, [], [3, 7]),            # never reaches the goal: truncated every 4 steps
    (3, 1, [2, 5, 8], []),         # reaches it in 3 steps: terminated
    (4, 1, [3, 7], [3, 7]),        # reaches it exactly at the time limit: both flags
])
def test_returns_across_truncation_in_mid_rollout(goal, action, expect_term, expect_trunc):
  env = tiny_envs.Chain(goal=goal, max_steps=4)
  params = env.default_params
  carry = rollout.reset(env, params, jax.random.key(0), 1)
  carry, tr = jax.jit(lambda c, k: rollout.rollout(env, params, _constant_policy(action), k, c,
                                                   10))(carry, jax.random.key(1))
  term = np.asarray(tr.terminated[:, 0])
  trunc = np.asarray(tr.truncated[:, 0])
  np.testing.assert_array_equal(np.flatnonzero(term), expect_term)
  np.testing.assert_array_equal(np.flatnonzero(trunc), expect_trunc)
  next_obs = np.asarray(tr.next_obs[:, 0])
  obs = np.asarray(tr.obs[:, 0])
  start = 0
  for t in sorted(set(expect_term) | set(expect_trunc)):
    # next_obs is the true last observation (its time = the episode's length, its position = the
    # steps walked), while the next step's observation is gymnax's reset.
    np.testing.assert_array_equal(next_obs[t], [action * (t + 1 - start), t + 1 - start])
    if t + 1 < 10:
      np.testing.assert_array_equal(obs[t + 1], [0.0, 0.0])
    start = t + 1
  # A value that depends on the state; bootstrapped only through truncation.
  value = lambda o: 10.0 + 2.0 * o[..., 0] + o[..., 1]
  v_next = np.asarray(value(tr.next_obs[:, 0]))
  r = np.asarray(tr.reward[:, 0])
  got = losses.discounted_returns(tr.reward[:, 0], tr.terminated[:, 0], tr.truncated[:, 0], 0.9,
                                  jnp.asarray(v_next))
  np.testing.assert_allclose(got, _loop_returns(r, term, trunc & ~term, v_next, 0.9), rtol=1e-6)
  if action == 0:  # the truncated step's return ends with gamma * v(s') of the pre-reset state
    np.testing.assert_allclose(got[3], 0.5 + 0.9 * (10.0 + 0.0 + 4.0), rtol=1e-6)
  if goal == 4:    # terminated at the limit too: no bootstrap, G = r = 1 + pos = 4
    np.testing.assert_allclose(got[3], 4.0, rtol=1e-6)


def test_continuing_rollout_reports_returns_only_of_ended_episodes():
  env = tiny_envs.Chain(goal=3, max_steps=4)
  params = env.default_params
  carry = rollout.reset(env, params, jax.random.key(0), 1)
  carry, tr = rollout.rollout(env, params, _constant_policy(1), jax.random.key(1), carry, 7)
  returned = np.asarray(tr.returned[:, 0])
  np.testing.assert_array_equal(np.flatnonzero(returned), [2, 5])
  # Each ended episode: rewards 1 + 0, 1 + 1, 1 + 2 = 6 over 3 steps.
  np.testing.assert_allclose(np.asarray(tr.returned_return[:, 0])[returned], [6.0, 6.0])
  np.testing.assert_array_equal(np.asarray(tr.returned_length[:, 0])[returned], [3, 3])
  # The third episode is running (1 step, return 1) and not reported yet.
  assert float(carry.episode_return[0]) == 1.0 and int(carry.episode_length[0]) == 1
  assert bool(carry.returned_episode_valid[0])
  assert float(carry.returned_episode_return[0]) == 6.0


def test_episode_rollout_masks_steps_after_the_episode_ends():
  # Column 0 stays (truncated after 5 steps), column 1 walks (terminates after 3 steps).
  env = tiny_envs.Chain(goal=3, max_steps=5)
  params = env.default_params
  policy = lambda key, obs: jnp.arange(obs.shape[0], dtype=jnp.int32) % 2
  carry = rollout.reset(env, params, jax.random.key(0), 2)
  carry, tr, final_obs, steps_run = jax.jit(
      lambda c, k: rollout.episode_rollout(env, params, policy, k, c, 5, buffer_steps=8))(
          carry, jax.random.key(1))
  assert tr.mask.shape == (8, 2)
  np.testing.assert_array_equal(tr.mask[:, 0], [1, 1, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(tr.mask[:, 1], [1, 1, 1, 0, 0, 0, 0, 0])
  np.testing.assert_allclose(tr.reward[:, 0], [0.5] * 5 + [0.0] * 3)
  np.testing.assert_allclose(tr.reward[:, 1], [1.0, 2.0, 3.0] + [0.0] * 5)
  np.testing.assert_array_equal(tr.terminated[:, 1], [0, 0, 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(tr.truncated[:, 0], [0, 0, 0, 0, 1, 0, 0, 0])
  assert not np.any(np.asarray(tr.terminated[:, 0])) and not np.any(np.asarray(tr.truncated[:, 1]))
  # Padding carries no done flags, and the loop stopped when the last episode ended.
  assert int(steps_run) == 5
  np.testing.assert_array_equal(np.asarray(tr.terminated | tr.truncated).sum(axis=0), [1, 1])
  # The observation each episode ended in (before gymnax's reset), for bootstrapping.
  np.testing.assert_array_equal(final_obs, [[0.0, 5.0], [3.0, 3.0]])
  # Both environments now sit at the first step of a fresh episode.
  np.testing.assert_array_equal(carry.obs, [[0.0, 0.0], [0.0, 0.0]])
  np.testing.assert_array_equal(carry.env_state.time, [0, 0])
  np.testing.assert_allclose(carry.returned_episode_return, [2.5, 6.0])
  np.testing.assert_array_equal(carry.episode_length, [0, 0])


def test_episode_rollout_on_cartpole_random_policy_is_consistent():
  env, params, num_actions, _, limit = rollout.make_env("CartPole-v1", max_episode_steps=60)
  policy = lambda key, obs: jax.random.randint(key, obs.shape[:1], 0, num_actions)
  carry = rollout.reset(env, params, jax.random.key(0), 16)
  fn = jax.jit(lambda c, k: rollout.episode_rollout(env, params, policy, k, c, limit))
  carry, tr, final_obs, _ = fn(carry, jax.random.key(1))
  mask = np.asarray(tr.mask)
  lengths = mask.sum(axis=0)
  # Masks are a prefix of ones: the real steps come first, padding after.
  np.testing.assert_array_equal(mask, np.arange(limit)[:, None] < lengths[None, :])
  done = np.asarray(tr.terminated | tr.truncated)
  np.testing.assert_array_equal(done.sum(axis=0), np.ones(16))
  np.testing.assert_array_equal(np.argmax(done, axis=0), lengths - 1)
  # CartPole pays 1 per real step and nothing on padding; the carry logged each return.
  np.testing.assert_allclose(np.asarray(tr.reward).sum(axis=0), lengths)
  np.testing.assert_allclose(carry.returned_episode_return, lengths)
  np.testing.assert_array_equal(carry.returned_episode_length, lengths)
  assert np.all(np.asarray(carry.returned_episode_valid))
  trunc = np.asarray(tr.truncated)[lengths - 1, np.arange(16)]
  np.testing.assert_array_equal(trunc, lengths == limit)
  # Terminated episodes ended outside the pole/cart limits; the carry is at fresh starts.
  term = np.asarray(tr.terminated)[lengths - 1, np.arange(16)]
  fo = np.asarray(final_obs)
  assert np.all((np.abs(fo[term, 0]) > 2.4) | (np.abs(fo[term, 2]) > 12 * 2 * np.pi / 360))
  np.testing.assert_array_equal(carry.env_state.time, np.zeros(16))
  assert np.all(np.abs(np.asarray(carry.obs)) <= 0.05)
  # The next rollout starts from exactly that carry.
  _, tr2, _, _ = fn(carry, jax.random.key(2))
  np.testing.assert_array_equal(tr2.obs[0], carry.obs)


def test_vmapped_rollouts_with_a_named_axis_equal_single_rollouts():
  """Seeds stop together (the loop runs for the slowest) without changing any seed's result."""
  env = tiny_envs.Chain(goal=3, max_steps=6)
  params = env.default_params

  def one(action, key):
    carry = rollout.reset(env, params, key, 3)
    policy = lambda k, obs: jnp.full(obs.shape[:1], action, jnp.int32)
    return rollout.episode_rollout(env, params, policy, key, carry, 6, axis_name="seeds")

  actions = jnp.array([1, 0])
  keys = jax.random.split(jax.random.key(0), 2)
  many = jax.jit(jax.vmap(one, axis_name="seeds"))(actions, keys)
  assert np.all(np.asarray(many[3]) == 6)  # the slowest seed's steps, for both
  for i in range(2):
    single = jax.jit(one)(actions[i], keys[i])
    assert int(single[3]) == (3 if i == 0 else 6)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[i], b), many[:3], single[:3])


def test_make_env_rejects_continuous_and_unknown_envs():
  with pytest.raises(rollout.UserError, match="discrete"):
    rollout.make_env("Pendulum-v1")
  with pytest.raises(rollout.UserError, match="unknown --env"):
    rollout.make_env("CartPole-v9")
  _, params, _, _, limit = rollout.make_env("Acrobot-v1", max_episode_steps=50)
  assert limit == 50 and params.max_steps_in_episode == 50
  assert "Acrobot-v1" in gymnax.registered_envs


def test_episode_rollout_matches_gymnax_auto_reset_step():
  """The fast path (transition only, reset after the loop) gives env.step's transitions."""
  env = tiny_envs.Chain(goal=3, max_steps=5)
  params = env.default_params
  assert rollout.uses_base_step(env)
  policy = lambda key, obs: jax.random.bernoulli(key, 0.6, obs.shape[:1]).astype(jnp.int32)
  carry = rollout.reset(env, params, jax.random.key(0), 6)
  _, ep, final_obs, _ = rollout.episode_rollout(env, params, policy, jax.random.key(1), carry, 5)
  # Replay the same actions through gymnax's own auto-resetting step.
  actions = np.asarray(ep.action)
  state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(2), 6), params)[1]
  for t in range(5):
    obs, state, reward, term, trunc, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
        jax.random.split(jax.random.key(3 + t), 6), state, jnp.asarray(actions[t]), params)
    live = np.asarray(ep.mask[t])
    np.testing.assert_allclose(np.asarray(reward)[live], np.asarray(ep.reward[t])[live])
    np.testing.assert_array_equal(np.asarray(term)[live], np.asarray(ep.terminated[t])[live])
    np.testing.assert_array_equal(np.asarray(trunc)[live], np.asarray(ep.truncated[t])[live])
    ended = live & np.asarray(ep.terminated[t] | ep.truncated[t])
    np.testing.assert_array_equal(np.asarray(info["final_observation"])[ended],
                                  np.asarray(final_obs)[ended])
    if t + 1 < 5:
      still = np.asarray(ep.mask[t + 1])
      np.testing.assert_array_equal(np.asarray(obs)[still], np.asarray(ep.obs[t + 1])[still])
