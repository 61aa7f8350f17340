"""Monte Carlo policy gradients on finite MDPs: episodes, REINFORCE estimators, learning.

Whole episodes are sampled with ``lax.scan`` over a fixed maximum length and a validity mask, so
many episodes are one ``vmap``. The estimators are gradients of
``genrl_jax.losses.reinforce_surrogate`` with the returns of ``genrl_jax.losses`` (Williams 1992;
Sutton & Barto 2018, §13.3-13.4), so the library's loss code is what the exact gradient of
``genrl_jax.rl.tabular`` checks.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from genrl_jax import losses
from genrl_jax.rl import tabular

Array = chex.Array

ESTIMATORS = ("total_return", "reward_to_go", "reward_to_go_minus_constant",
              "reward_to_go_minus_v")


class Episode(NamedTuple):
  """One episode padded to T steps; every field is [T] (``truncated``/``length`` are scalars)."""
  s_t: Array            # state at step t.
  a_t: Array            # action taken at step t.
  r_t: Array            # reward after step t (0 on padding).
  terminated_t: Array   # the step ended the episode in a terminal state (True on padding).
  mask_t: Array         # 1.0 on real steps, 0.0 on padding.
  truncated: Array      # scalar: the episode had not ended after T steps (cut there).
  length: Array         # scalar: number of real steps.


def _inverse_cdf(cdf: Array, u: Array) -> Array:
  """Index i with cdf[i-1] <= u < cdf[i] (the last index absorbs rounding): a categorical draw."""
  return jnp.sum(cdf[:-1] <= u).astype(jnp.int32)


def sample_episode(key: chex.PRNGKey, mdp: tabular.MDP, pi: Array, max_steps: int) -> Episode:
  """One episode of ``pi`` on an episodic ``mdp``: s_0 ~ mu0, a_t ~ pi(.|s_t), s_{t+1} ~ P.

  Steps after termination are padding (mask 0, reward 0, terminated True). An episode that is
  still running after ``max_steps`` is cut (``truncated``); pick max_steps so that this is rare.
  All uniforms are drawn up front and turned into draws by inverse CDFs inside the scan, which
  keeps the random-number generator out of the sequential loop.
  """
  u = jax.random.uniform(key, (max_steps + 1, 2), dtype=mdp.P.dtype)
  cdf_pi = jnp.cumsum(pi, axis=-1)
  cdf_p = jnp.cumsum(mdp.P, axis=-1)
  s0 = _inverse_cdf(jnp.cumsum(mdp.mu0), u[0, 0])

  def step(carry, u_t):
    s, done = carry
    a = _inverse_cdf(cdf_pi[s], u_t[0])
    s_next = _inverse_cdf(cdf_p[s, a], u_t[1])
    valid = jnp.logical_not(done)
    r = jnp.where(valid, mdp.R[s, a], 0.0)
    term = jnp.logical_or(done, mdp.terminal[s_next])
    out = (s, a, r, term, valid.astype(r.dtype))
    return (s_next, term), out

  (_, done), (s_t, a_t, r_t, term_t, mask_t) = jax.lax.scan(
      step, (s0, mdp.terminal[s0]), u[1:])
  return Episode(s_t=s_t, a_t=a_t, r_t=r_t, terminated_t=term_t, mask_t=mask_t,
                 truncated=jnp.logical_not(done), length=jnp.sum(mask_t))


def survival_probability(mdp: tabular.MDP, pi: Array, num_steps: int) -> Array:
  """Exact P(episode still running after num_steps) = mu0^T P_pi^n 1 over non-terminal states."""
  p_pi, _ = tabular.policy_matrices(mdp, pi)
  live = 1.0 - mdp.terminal.astype(p_pi.dtype)
  dist = mdp.mu0 * live
  dist = jax.lax.fori_loop(0, num_steps, lambda _, d: d @ p_pi, dist)
  return jnp.sum(dist)


def surrogate_weights(episode: Episode, gamma: Array | float, estimator: str,
                      v: Array | None = None, constant_baseline: Array | float = 0.0
                      ) -> tuple[Array, Array, Array]:
  """(returns_t, baseline_t, mask_t) that turn ``reinforce_surrogate`` into one estimator.

      total_return:                 grad J ~ sum_t G_0 grad log pi(a_t|s_t)             (Williams)
      reward_to_go:                 grad J ~ sum_t gamma^t G_t grad log pi(a_t|s_t)     (S&B 13.8)
      reward_to_go_minus_constant:  ... gamma^t (G_t - b) ...                            (S&B 13.11)
      reward_to_go_minus_v:         ... gamma^t (G_t - v_pi(s_t)) ...

  The gamma^t factor of J = v_pi(s0)'s gradient rides in the mask (S&B §13.3, the gamma^t in
  REINFORCE's update); G_0 needs none. An episode cut by ``max_steps`` is cut, not bootstrapped.

  Args:
    episode: a sampled Episode.
    gamma: discount.
    estimator: one of ESTIMATORS.
    v: [S] state values for the v_pi baseline.
    constant_baseline: b for reward_to_go_minus_constant.
  """
  truncated_t = jnp.zeros_like(episode.terminated_t)
  t = jnp.arange(episode.r_t.shape[0], dtype=episode.r_t.dtype)
  discount_t = episode.mask_t * jnp.power(gamma, t)
  zeros = jnp.zeros_like(episode.r_t)
  if estimator == "total_return":
    g0 = losses.episode_start_returns(episode.r_t, episode.terminated_t, truncated_t, gamma)
    return g0, zeros, episode.mask_t
  g_t = losses.discounted_returns(episode.r_t, episode.terminated_t, truncated_t, gamma)
  if estimator == "reward_to_go":
    return g_t, zeros, discount_t
  if estimator == "reward_to_go_minus_constant":
    return g_t, jnp.full_like(g_t, constant_baseline), discount_t
  if estimator == "reward_to_go_minus_v":
    if v is None:
      raise ValueError("reward_to_go_minus_v needs the state values v")
    return g_t, v[episode.s_t], discount_t
  raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")


def gradient_estimate(theta: Array, episode: Episode, gamma: Array | float, estimator: str,
                      v: Array | None = None, constant_baseline: Array | float = 0.0) -> Array:
  """One episode's estimate of grad J(theta) for the tabular softmax policy pi = softmax(theta[s]).

  It is minus the gradient of ``losses.reinforce_surrogate`` (a loss to minimise).
  Returns [S, A].
  """
  returns_t, baseline_t, mask_t = surrogate_weights(episode, gamma, estimator, v,
                                                    constant_baseline)

  def surrogate(th):
    return losses.reinforce_surrogate(th[episode.s_t], episode.a_t, returns_t, baseline_t, mask_t)

  return -jax.grad(surrogate)(theta)


def gradient_estimates(key: chex.PRNGKey, mdp: tabular.MDP, theta: Array, num_episodes: int,
                       max_steps: int, constant_baseline: Array | float | None = None,
                       estimators: tuple[str, ...] = ESTIMATORS) -> dict[str, Array]:
  """Every estimator on the same ``num_episodes`` episodes (vmapped): {name: [N, S, A]}.

  The constant baseline defaults to J(theta); v_pi is exact (``tabular.evaluate_policy``).
  Also returns "truncated": [N] (episodes cut at max_steps).
  """
  pi = tabular.softmax_policy(theta)
  v = tabular.evaluate_policy(mdp, pi)
  b = jnp.dot(mdp.mu0, v) if constant_baseline is None else constant_baseline

  def one(k):
    ep = sample_episode(k, mdp, pi, max_steps)
    out = {name: gradient_estimate(theta, ep, mdp.gamma, name, v, b) for name in estimators}
    out["truncated"] = ep.truncated
    return out

  return jax.vmap(one)(jax.random.split(key, num_episodes))


# ---------------------------------------------------------------------------------------------
# REINFORCE on the short corridor (Sutton & Barto 2018, Figures 13.1 and 13.2).
# ---------------------------------------------------------------------------------------------


class CorridorAgent(NamedTuple):
  theta: Array  # [2] action preferences (left, right), shared by all states.
  w: Array      # scalar state-value baseline (all states look alike: one feature, x(s) = 1).


def corridor_initial_agent(p_right: float = 0.05) -> CorridorAgent:
  """Preferences with pi(right) = p_right (S&B's Figure 13.1 starts near 0.05), w = 0."""
  h = 0.5 * jnp.log(p_right / (1.0 - p_right))
  return CorridorAgent(theta=jnp.array([-h, h]), w=jnp.zeros(()))


def corridor_reinforce_update(agent: CorridorAgent, episode: Episode, alpha_theta: float | Array,
                              alpha_w: float | Array, use_baseline: bool | Array
                              ) -> CorridorAgent:
  """One episode's REINFORCE update (S&B §13.3; with baseline §13.4), gamma = 1:

      theta <- theta + alpha_theta sum_t (G_t - b) grad log pi(A_t | theta),   b = w or 0,
      w     <- w + alpha_w sum_t (G_t - w)    (gradient of losses.value_baseline_loss),

  the w-update only with the baseline. The sums are the book's per-step updates applied at the
  episode's end (one batch step). ``use_baseline`` may be traced (one compile for both variants).
  """
  g_t = losses.discounted_returns(episode.r_t, episode.terminated_t,
                                  jnp.zeros_like(episode.terminated_t), 1.0)
  baseline = jnp.where(use_baseline, agent.w, 0.0).astype(g_t.dtype)
  baseline_t = jnp.broadcast_to(baseline, g_t.shape)
  logits = lambda th: jnp.broadcast_to(th, (g_t.shape[0], 2))
  grad_theta = jax.grad(lambda th: losses.reinforce_surrogate(
      logits(th), episode.a_t, g_t, baseline_t, episode.mask_t))(agent.theta)
  grad_w = jax.grad(lambda w: losses.value_baseline_loss(
      jnp.broadcast_to(w, g_t.shape), g_t, episode.mask_t))(agent.w)
  return CorridorAgent(theta=agent.theta - alpha_theta * grad_theta,
                       w=jnp.where(use_baseline, agent.w - alpha_w * grad_w, agent.w))


def corridor_reinforce(key: chex.PRNGKey, num_episodes: int, alpha_theta: float | Array,
                       alpha_w: float | Array = 0.0, use_baseline: bool | Array = False,
                       max_steps: int = 1000,
                       p_right0: float = 0.05) -> tuple[Array, Array, Array]:
  """One REINFORCE run on the short corridor; vmap over keys (and step sizes) for many runs.

  Returns:
    ([E] undiscounted return of each episode, [E] pi(right) before each episode, [E] whether
    the episode was cut at ``max_steps``).
  """
  mdp = tabular.short_corridor_mdp()

  def episode_step(agent, key_e):
    pi = tabular.corridor_policy(jax.nn.softmax(agent.theta)[1])
    ep = sample_episode(key_e, mdp, pi, max_steps)
    new = corridor_reinforce_update(agent, ep, alpha_theta, alpha_w, use_baseline)
    return new, (jnp.sum(ep.r_t), pi[0, 1], ep.truncated)

  _, (returns, p_right, cut) = jax.lax.scan(episode_step, corridor_initial_agent(p_right0),
                                            jax.random.split(key, num_episodes))
  return returns, p_right, cut
