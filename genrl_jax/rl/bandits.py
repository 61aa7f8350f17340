"""Multi-armed bandits: the k-armed testbed and epsilon-greedy action-value methods.

Sutton & Barto (2018), ch. 2: the 10-armed testbed (§2.3: q*(a) ~ N(0, 1), rewards
N(q*(a), 1)), epsilon-greedy selection with sample-average or constant step-size updates
(§2.4-2.5, eq. 2.3 and 2.5), optimistic initial values (§2.6). One run is a ``lax.scan`` over
steps; many runs are a ``vmap`` of it. Also epsilon-greedy on gymnax's bandit environments.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

Array = chex.Array


class AgentState(NamedTuple):
  """Action-value estimates Q[a] and pull counts N[a]."""
  q: Array
  n: Array


def init_agent(num_arms: int, initial_value: float = 0.0, dtype=jnp.float32) -> AgentState:
  """Q_1(a) = initial_value (optimistic when > 0, S&B §2.6), N(a) = 0."""
  return AgentState(q=jnp.full((num_arms,), initial_value, dtype),
                    n=jnp.zeros((num_arms,), jnp.int32))


def argmax_random_tie(key: chex.PRNGKey, x: Array) -> Array:
  """argmax_a x[a], ties broken uniformly at random (S&B §2.2)."""
  chex.assert_rank(x, 1)
  is_max = x == jnp.max(x)
  return jax.random.categorical(key, jnp.where(is_max, 0.0, -jnp.inf))


def epsilon_greedy(key: chex.PRNGKey, q: Array, epsilon: float | Array) -> Array:
  """With probability epsilon a uniformly random arm, else a greedy one (random ties)."""
  k_explore, k_arm, k_tie = jax.random.split(key, 3)
  random_arm = jax.random.randint(k_arm, (), 0, q.shape[-1])
  greedy_arm = argmax_random_tie(k_tie, q)
  return jnp.where(jax.random.uniform(k_explore) < epsilon, random_arm, greedy_arm)


def update(agent: AgentState, action: Array, reward: Array,
           step_size: float | Array | None = None) -> AgentState:
  """Incremental action-value update (S&B eq. 2.3 and 2.5):

      N(a) <- N(a) + 1,   Q(a) <- Q(a) + alpha (R - Q(a)),

  with alpha = 1 / N(a) (sample average) when ``step_size`` is None, else the constant alpha.
  """
  n = agent.n.at[action].add(1)
  alpha = 1.0 / n[action] if step_size is None else step_size
  q_a = agent.q[action]
  q = agent.q.at[action].set(q_a + alpha * (reward.astype(q_a.dtype) - q_a))
  return AgentState(q=q, n=n)


class Trace(NamedTuple):
  """Per-step outputs of one run: [T] each."""
  action: Array
  reward: Array
  optimal: Array  # 1.0 if the action was an optimal arm.


def testbed_run(key: chex.PRNGKey, num_steps: int, num_arms: int = 10, epsilon: float = 0.1,
                step_size: float | None = None, initial_value: float = 0.0,
                q_star_mean: float = 0.0) -> tuple[Trace, AgentState, Array]:
  """One run on a fresh k-armed testbed problem (S&B §2.3): q*(a) ~ N(q_star_mean, 1),
  R_t ~ N(q*(A_t), 1), epsilon-greedy agent. Pure; ``jax.vmap`` over keys for many runs.

  Args:
    key: PRNG key for the problem and the run.
    num_steps: T.
    num_arms: k.
    epsilon: exploration probability.
    step_size: constant alpha, or None for sample averages.
    initial_value: Q_1(a).
    q_star_mean: mean of the true action values.
  Returns:
    (Trace of [T] arrays, final AgentState, [k] q*).
  """
  k_problem, k_run = jax.random.split(key)
  q_star = q_star_mean + jax.random.normal(k_problem, (num_arms,))
  best = jnp.max(q_star)

  def step(agent, key_t):
    k_act, k_reward = jax.random.split(key_t)
    action = epsilon_greedy(k_act, agent.q, epsilon)
    reward = q_star[action] + jax.random.normal(k_reward)
    agent = update(agent, action, reward, step_size)
    return agent, Trace(action, reward, (q_star[action] == best).astype(jnp.float32))

  agent, trace = jax.lax.scan(step, init_agent(num_arms, initial_value),
                              jax.random.split(k_run, num_steps))
  return trace, agent, q_star


def testbed(key: chex.PRNGKey, num_runs: int, num_steps: int, **kwargs) -> Trace:
  """``num_runs`` independent runs of ``testbed_run`` (vmapped), as a Trace of [runs, T] arrays."""
  trace, _, _ = jax.vmap(lambda k: testbed_run(k, num_steps, **kwargs))(
      jax.random.split(key, num_runs))
  return trace


# ---------------------------------------------------------------------------------------------
# gymnax bandit environments.
# ---------------------------------------------------------------------------------------------

GYMNAX_BANDITS = ("BernoulliBandit-misc", "GaussianBandit-misc")


def gymnax_arm_means(env_name: str, env_state: Any) -> Array:
  """The true expected reward of each arm, read from a gymnax bandit's state (for % optimal)."""
  if env_name == "BernoulliBandit-misc":
    return env_state.reward_probs
  if env_name == "GaussianBandit-misc":  # arm 0 pays 0; arm 1 pays N(mu, sigma_l^2).
    return jnp.stack([jnp.zeros_like(env_state.mu), env_state.mu])
  raise ValueError(f"unknown gymnax bandit {env_name!r}; expected one of {GYMNAX_BANDITS}")


def gymnax_run(key: chex.PRNGKey, env: Any, env_params: Any, num_steps: int,
               epsilon: float = 0.1, step_size: float | None = None,
               initial_value: float = 0.0) -> Trace:
  """Epsilon-greedy on a gymnax bandit for ``num_steps`` pulls of one sampled problem.

  gymnax bandits resample their arms on reset and auto-reset after ``max_steps_in_episode``;
  pass ``env_params.replace(max_steps_in_episode=num_steps)`` to keep one problem per run
  (``make_gymnax_bandit`` does). Rewards come from ``env.step`` (gymnax >= 1.0 returns obs,
  state, reward, terminated, truncated, info); the agent ignores the observation.
  """
  k_reset, k_run = jax.random.split(key)
  _, env_state = env.reset(k_reset, env_params)
  num_arms = env.num_actions

  def step(carry, key_t):
    agent, env_state = carry
    k_act, k_env = jax.random.split(key_t)
    action = epsilon_greedy(k_act, agent.q, epsilon)
    means = gymnax_arm_means(env.name, env_state)
    optimal = (means[action] == jnp.max(means)).astype(jnp.float32)
    _, env_state, reward, _, _, _ = env.step(k_env, env_state, action, env_params)
    reward = jnp.asarray(reward, jnp.float32)
    agent = update(agent, action, reward, step_size)
    return (agent, env_state), Trace(action, reward, optimal)

  _, trace = jax.lax.scan(step, (init_agent(num_arms, initial_value), env_state),
                          jax.random.split(k_run, num_steps))
  return trace


def make_gymnax_bandit(env_name: str, num_steps: int) -> tuple[Any, Any]:
  """(env, params) for a gymnax bandit, with the episode as long as the run (one problem)."""
  import gymnax  # pylint: disable=g-import-not-at-top

  if env_name not in GYMNAX_BANDITS:
    raise ValueError(f"unknown gymnax bandit {env_name!r}; expected one of {GYMNAX_BANDITS}")
  env, params = gymnax.make(env_name)
  return env, params.replace(max_steps_in_episode=num_steps)
