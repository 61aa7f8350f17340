"""Batched gymnax rollouts with ``lax.scan``.

Two shapes of rollout share one step function:

* ``episode_rollout``: every environment plays exactly one whole episode from the start state it
  holds. The scan runs for the episode-length limit; once an environment's episode has ended, its
  later steps are padding (``mask`` 0, reward 0, no done flags) and its state is frozen at the
  start state gymnax auto-reset to, so the next rollout begins a fresh episode. This is what
  Monte Carlo REINFORCE needs (Williams 1992; Sutton & Barto 2018, §13.3).
* ``rollout``: a fixed number of steps with gymnax's auto-reset, possibly several episodes per
  environment (the shape used by bootstrapping methods). ``next_obs`` is
  ``info["final_observation"]``: the true next state, also on a step that ended an episode, so a
  value can be bootstrapped through truncation (never through termination).

Both track per-environment episode returns the way gymnax's ``LogWrapper`` does: a return is
reported only on the step that ends its episode (``returned``), and ``returned_episode_valid``
stays true once an environment has finished one episode.
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import gymnax
import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from genrl_jax.errors import UserError

Array = chex.Array
# (key, obs [N, ...]) -> actions [N]
PolicyFn = Callable[[chex.PRNGKey, Array], Array]


@struct.dataclass
class EnvCarry:
  """Everything about N environments that must survive between rollouts (and checkpoints).

  Attributes:
    env_state: gymnax state, leaves batched over N.
    obs: [N, *obs_shape] current observations.
    episode_return: [N] undiscounted return of the running episode so far.
    episode_length: [N] steps of the running episode so far.
    returned_episode_return: [N] return of the last episode that ended.
    returned_episode_length: [N] length of the last episode that ended.
    returned_episode_valid: [N] true once the environment has finished an episode.
  """
  env_state: Any
  obs: Array
  episode_return: Array
  episode_length: Array
  returned_episode_return: Array
  returned_episode_length: Array
  returned_episode_valid: Array


@struct.dataclass
class Transition:
  """One step for N environments (a rollout stacks them to [T, N, ...]).

  Attributes:
    obs: s_t.
    action: a_t.
    reward: r_t (0 on padding steps).
    terminated: the MDP ended after a_t (no bootstrap).
    truncated: a time limit cut the episode after a_t (bootstrap from next_obs when possible).
    mask: 1 for real steps, 0 for padding after an episode ended (``episode_rollout`` only).
    returned: this step ended an episode; ``returned_return`` / ``returned_length`` hold it.
    returned_return: the finished episode's return (valid where ``returned``).
    returned_length: the finished episode's length (valid where ``returned``).
    next_obs: s_{t+1} before any auto-reset (``info["final_observation"]``); only ``rollout``
      fills it, ``episode_rollout`` returns the one bootstrap observation per episode instead.
  """
  obs: Array
  action: Array
  reward: Array
  terminated: Array
  truncated: Array
  mask: Array
  returned: Array | None = None
  returned_return: Array | None = None
  returned_length: Array | None = None
  next_obs: Array | None = None


def make_env(env_id: str, max_episode_steps: int = 0):
  """gymnax.make with checks: a discrete action space, an optional episode-length override.

  Returns:
    (env, env_params, num_actions, obs_shape, episode_limit).
  """
  if env_id not in gymnax.registered_envs:
    raise UserError(f"unknown --env={env_id!r}; gymnax knows: "
                    + ", ".join(gymnax.registered_envs))
  env, env_params = gymnax.make(env_id)
  action_space = env.action_space(env_params)
  if not isinstance(action_space, spaces.Discrete):
    raise UserError(f"--env={env_id} has a {type(action_space).__name__} action space; "
                    "REINFORCE here needs a discrete one (e.g. CartPole-v1, Acrobot-v1)")
  if max_episode_steps < 0:
    raise UserError(f"--max_episode_steps must be >= 0 (0 = the env's limit), "
                    f"got {max_episode_steps}")
  if max_episode_steps:
    limit_type = type(env_params.max_steps_in_episode)
    env_params = env_params.replace(max_steps_in_episode=limit_type(max_episode_steps))
  limit = int(env_params.max_steps_in_episode)
  obs_shape = tuple(env.observation_space(env_params).shape)
  return env, env_params, int(action_space.n), obs_shape, limit


def reset(env, env_params, key: chex.PRNGKey, num_envs: int) -> EnvCarry:
  """Resets N environments with independent keys."""
  keys = jax.random.split(key, num_envs)
  obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(keys, env_params)
  zeros_f = jnp.zeros((num_envs,), jnp.float32)
  zeros_i = jnp.zeros((num_envs,), jnp.int32)
  return EnvCarry(env_state=env_state, obs=obs, episode_return=zeros_f, episode_length=zeros_i,
                  returned_episode_return=zeros_f, returned_episode_length=zeros_i,
                  returned_episode_valid=jnp.zeros((num_envs,), bool))


def _select(pred: Array, on_true, on_false):
  """Per-environment select between two pytrees whose leaves have a leading [N] axis."""
  def sel(a, b):
    p = jnp.reshape(pred, pred.shape + (1,) * (a.ndim - pred.ndim))
    return jnp.where(p, a, b)
  return jax.tree.map(sel, on_true, on_false)


def uses_base_step(env) -> bool:
  """Whether ``env.step`` is gymnax's own (step_env, is_truncated, then an auto-reset)."""
  return getattr(type(env), "step", None) is environment.Environment.step


def _step_keys(key: chex.PRNGKey, num_steps: int, num_envs: int):
  """All keys a rollout needs, drawn at once: [T] for the policy, [T, N] for the environments.

  (One batched draw instead of several small ones per step: on CPU each jax.random call in a
  loop body is itself a small loop, which dominated the cost of a step.)
  """
  key_act, key_env = jax.random.split(key)
  return jax.random.split(key_act, num_steps), jax.random.split(key_env, (num_steps, num_envs))


def _env_step(env, env_params, policy_fn: PolicyFn, carry: EnvCarry, alive: Array,
              key_act: chex.PRNGKey, env_keys: chex.PRNGKey, auto_reset: bool = True):
  """Acts in N environments, updates the episode statistics of the live ones.

  With ``auto_reset=False`` the environments take gymnax's transition without its auto-reset
  (``step_env`` and ``is_truncated``, exactly what ``Environment.step`` computes before it
  resets): an environment that is done stays in its final state and ``obs`` is the final one.
  """
  action = policy_fn(key_act, carry.obs)
  if auto_reset:
    obs, env_state, reward, terminated, truncated, info = jax.vmap(
        env.step, in_axes=(0, 0, 0, None))(env_keys, carry.env_state, action, env_params)
    next_obs = info["final_observation"]
  else:
    obs, env_state, reward, terminated, _ = jax.vmap(
        env.step_env, in_axes=(0, 0, 0, None))(env_keys, carry.env_state, action, env_params)
    truncated = jax.vmap(env.is_truncated, in_axes=(0, None))(env_state, env_params)
    next_obs = obs
  reward = jnp.where(alive, reward.astype(jnp.float32), 0.0)
  terminated = jnp.logical_and(terminated, alive)
  truncated = jnp.logical_and(truncated, alive)
  done = jnp.logical_or(terminated, truncated)
  ep_return = carry.episode_return + reward
  ep_length = carry.episode_length + alive.astype(jnp.int32)
  new_carry = EnvCarry(
      env_state=env_state,
      obs=obs,
      episode_return=jnp.where(done, 0.0, ep_return),
      episode_length=jnp.where(done, 0, ep_length),
      returned_episode_return=jnp.where(done, ep_return, carry.returned_episode_return),
      returned_episode_length=jnp.where(done, ep_length, carry.returned_episode_length),
      returned_episode_valid=jnp.logical_or(carry.returned_episode_valid, done))
  transition = Transition(
      obs=carry.obs, action=action, reward=reward, terminated=terminated, truncated=truncated,
      mask=alive, returned=done, returned_return=ep_return, returned_length=ep_length,
      next_obs=next_obs)
  return new_carry, transition


def any_over_axis(flag: Array, axis_name: str | None) -> Array:
  """``flag`` OR-reduced over a named vmap axis (the seeds), or ``flag`` when none is bound.

  Under ``jax.vmap(..., axis_name=axis_name)`` the result is unbatched, so a ``while_loop``
  conditioned on it runs until the slowest member is done without per-member selects of its
  carry (which would copy whole rollout buffers every step).
  """
  if axis_name is None:
    return flag
  try:
    return jax.lax.pmax(flag.astype(jnp.int32), axis_name) > 0
  except NameError:  # called outside a vmap that names this axis: plain per-member semantics
    return flag


def episode_rollout(env, env_params, policy_fn: PolicyFn, key: chex.PRNGKey, carry: EnvCarry,
                    num_steps: int, buffer_steps: int | None = None,
                    axis_name: str | None = None
                    ) -> tuple[EnvCarry, Transition, Array, Array]:
  """One whole episode per environment, padded to ``buffer_steps`` and masked after it ends.

  Every environment must start at the first step of an episode (true after ``reset`` and after a
  previous ``episode_rollout``), and ``num_steps`` must be at least the episode-length limit so
  that every episode ends (by termination or truncation) inside the loop. The loop (a
  ``lax.while_loop`` writing into [buffer_steps, N] buffers) stops as soon as every episode has
  ended, across ``axis_name`` too. Padding rows (after an episode's end) are all zeros, whether
  the loop reached them or not, so the result does not depend on when the loop stopped.

  Environments whose ``step`` is gymnax's base one are stepped with its transition alone
  (``step_env`` + ``is_truncated``) and reset once after the loop: gymnax's ``step`` computes a
  reset for every environment at every step (keys, draws, selects: about 4x the cost of
  CartPole's transition), and a whole-episode rollout never uses one mid-episode. The
  trajectories are the same transitions with the same done flags and final observations;
  environments that override ``step`` (e.g. DeepSea-bsuite) go through their own ``step``.

  Args:
    env, env_params: a gymnax environment and its parameters.
    policy_fn: (key, obs [N, ...]) -> actions [N].
    key: PRNG key for this rollout.
    carry: the environments, each at an episode's first step.
    num_steps: the most steps to simulate (the episode-length limit).
    buffer_steps: T, the length of the returned arrays (>= num_steps); default num_steps.
    axis_name: name of an enclosing vmap axis (seeds) to stop together with, or None.
  Returns:
    (carry at the first step of the next episodes, Transition of [T, N] arrays with
    ``next_obs`` and the ``returned*`` fields None (an episode's return and length are the sums
    of its column's reward and mask; the carry holds the episode statistics), final_obs
    [N, ...]: the observation each episode ended in, for bootstrapping a truncated episode,
    steps_run: the number of loop iterations).
  """
  num_envs = carry.obs.shape[0]
  buffer_steps = num_steps if buffer_steps is None else buffer_steps
  if buffer_steps < num_steps:
    raise ValueError(f"buffer_steps={buffer_steps} < num_steps={num_steps}")
  auto_reset = not uses_base_step(env)
  key_loop, key_reset = jax.random.split(key)
  alive0 = jnp.ones((num_envs,), bool)
  act_keys, env_keys = _step_keys(key_loop, num_steps, num_envs)
  step_shapes = jax.eval_shape(
      lambda c, ka, ke: _env_step(env, env_params, policy_fn, c, alive0, ka, ke, auto_reset)[1],
      carry, act_keys[0], env_keys[0])
  # Stored per step: what the update reads. Episode statistics live in the carry, and an
  # episode's return and length are the column sums of reward and mask.
  unstored = dict(next_obs=None, returned=None, returned_return=None, returned_length=None)
  step_shapes = step_shapes.replace(**unstored)
  buffers = jax.tree.map(lambda s: jnp.zeros((buffer_steps,) + s.shape, s.dtype), step_shapes)

  def cond(c):
    t, _, alive, _, _ = c
    return jnp.logical_and(t < num_steps, any_over_axis(jnp.any(alive), axis_name))

  def body(c):
    t, env_carry, alive, final_obs, buf = c
    new_carry, tr = _env_step(env, env_params, policy_fn, env_carry, alive, act_keys[t],
                              env_keys[t], auto_reset)
    ended = tr.returned
    final_obs = _select(ended, tr.next_obs, final_obs)
    # Freeze finished environments (at gymnax's reset state, or at their final state when the
    # reset comes after the loop).
    env_carry = _select(alive, new_carry, env_carry)
    alive = jnp.logical_and(alive, jnp.logical_not(ended))
    # Padding rows are all zeros however long the loop runs (it may run on for other seeds).
    tr = tr.replace(**unstored)
    tr = _select(tr.mask, tr, jax.tree.map(jnp.zeros_like, tr))
    buf = jax.tree.map(lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x, t, 0), buf, tr)
    return t + 1, env_carry, alive, final_obs, buf

  init = (jnp.zeros((), jnp.int32), carry, alive0, carry.obs, buffers)
  steps_run, carry, alive, final_obs, traj = jax.lax.while_loop(cond, body, init)
  if not auto_reset:  # start the next episodes, as gymnax's step would have at their ends
    obs0, state0 = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(key_reset, num_envs), env_params)
    env_state, obs = _select(alive, (carry.env_state, carry.obs), (state0, obs0))
    carry = carry.replace(env_state=env_state, obs=obs)
  return carry, traj, final_obs, steps_run


def rollout(env, env_params, policy_fn: PolicyFn, key: chex.PRNGKey, carry: EnvCarry,
            num_steps: int) -> tuple[EnvCarry, Transition]:
  """``num_steps`` steps in N auto-resetting environments (episodes may end anywhere).

  Returns:
    (carry after the last step, Transition of [T, N] arrays, ``mask`` all ones, ``next_obs`` the
    pre-reset next observation).
  """
  alive = jnp.ones((carry.obs.shape[0],), bool)

  def step(c, keys_t):
    return _env_step(env, env_params, policy_fn, c, alive, *keys_t)

  return jax.lax.scan(step, carry, _step_keys(key, num_steps, carry.obs.shape[0]))
