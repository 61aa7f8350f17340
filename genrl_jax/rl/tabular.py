"""Finite MDPs as arrays, exact dynamic programming and the exact policy gradient.

A finite MDP is P[s, a, s'] (transition probabilities), R[s, a] (expected reward), a start
distribution mu0[s], a discount gamma and, for episodic MDPs, a mask of terminal states. Terminal
states are absorbing with value 0: every Bellman backup multiplies the next state's value by
(1 - terminal[s']), and the rows of terminal states are zeroed. The matrices are the textbook
ones (Sutton & Barto 2018, ch. 3-4), so values come from one linear solve:

    v_pi = (I - gamma P_pi)^-1 r_pi,   P_pi[s, s'] = sum_a pi(a|s) P[s, a, s'] (1 - term[s']).

Everything here is a pure jnp function of arrays (jittable, vmappable, differentiable through the
solve). Policies are [S, A] arrays of probabilities pi(a|s); deterministic policies are one-hot.
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp
from flax import struct

Array = chex.Array


@struct.dataclass
class MDP:
  """A finite MDP.

  Attributes:
    P: [S, A, S] transition probabilities p(s' | s, a); each P[s, a] sums to 1.
    R: [S, A] expected reward r(s, a) of taking a in s.
    mu0: [S] start-state distribution.
    gamma: scalar discount (an array leaf, so changing it does not recompile).
    terminal: [S] bool, terminal states of an episodic MDP (all False for a continuing MDP).
  """
  P: Array
  R: Array
  mu0: Array
  gamma: Array
  terminal: Array

  @property
  def num_states(self) -> int:
    return self.P.shape[0]

  @property
  def num_actions(self) -> int:
    return self.P.shape[1]


def make_mdp(P, R, mu0, gamma: float, terminal=None, dtype=None) -> MDP:
  """Builds an ``MDP`` from array-likes (float dtype: ``dtype`` or JAX's default float)."""
  P = jnp.asarray(P, dtype)
  R = jnp.asarray(R, P.dtype)
  mu0 = jnp.asarray(mu0, P.dtype)
  chex.assert_rank([P, R, mu0], [3, 2, 1])
  num_states, num_actions = R.shape
  chex.assert_shape(P, (num_states, num_actions, num_states))
  chex.assert_shape(mu0, (num_states,))
  terminal = (jnp.zeros(num_states, bool) if terminal is None
              else jnp.asarray(terminal, bool))
  chex.assert_shape(terminal, (num_states,))
  return MDP(P=P, R=R, mu0=mu0, gamma=jnp.asarray(gamma, P.dtype), terminal=terminal)


def _live(mdp: MDP) -> Array:
  """[S] 1.0 for non-terminal states, 0.0 for terminal ones."""
  return 1.0 - mdp.terminal.astype(mdp.P.dtype)


def _live_transitions(mdp: MDP) -> Array:
  """[S, A, S] P with the rows of terminal states and the columns into them zeroed."""
  live = _live(mdp)
  return mdp.P * live[:, None, None] * live[None, None, :]


def policy_matrices(mdp: MDP, pi: Array) -> tuple[Array, Array]:
  """P_pi[s, s'] = sum_a pi(a|s) P[s, a, s'] and r_pi[s] = sum_a pi(a|s) R[s, a] (S&B eq. 4.4).

  Terminal rows and columns into terminal states are zero, so terminal values are 0.

  Args:
    mdp: the MDP.
    pi: [S, A] policy probabilities.
  Returns:
    ([S, S] P_pi, [S] r_pi).
  """
  chex.assert_shape(pi, (mdp.num_states, mdp.num_actions))
  p_pi = jnp.einsum("sa,sat->st", pi, _live_transitions(mdp))
  r_pi = jnp.sum(pi * mdp.R, axis=-1) * _live(mdp)
  return p_pi, r_pi


def evaluate_policy(mdp: MDP, pi: Array) -> Array:
  """Exact policy evaluation: v_pi = (I - gamma P_pi)^-1 r_pi (S&B §4.1, eq. 4.4 in matrix form).

  Args:
    mdp: the MDP (gamma < 1, or gamma = 1 with a policy that terminates with probability 1).
    pi: [S, A] policy.
  Returns:
    [S] v_pi (0 at terminal states).
  """
  p_pi, r_pi = policy_matrices(mdp, pi)
  eye = jnp.eye(mdp.num_states, dtype=p_pi.dtype)
  return jnp.linalg.solve(eye - mdp.gamma * p_pi, r_pi)


def q_from_v(mdp: MDP, v: Array) -> Array:
  """One Bellman backup: q(s, a) = r(s, a) + gamma sum_s' p(s'|s,a) v(s') (S&B eq. 3.13, 4.6).

  Returns [S, A], zero in terminal states.
  """
  chex.assert_shape(v, (mdp.num_states,))
  q = mdp.R + mdp.gamma * jnp.einsum("sat,t->sa", _live_transitions(mdp), v)
  return q * _live(mdp)[:, None]


def q_pi(mdp: MDP, pi: Array) -> Array:
  """Action values of pi: q_pi(s, a) = r(s, a) + gamma E[v_pi(s') | s, a]. Returns [S, A]."""
  return q_from_v(mdp, evaluate_policy(mdp, pi))


def iterative_policy_evaluation(mdp: MDP, pi: Array, num_iters: int) -> Array:
  """Iterative policy evaluation, v <- r_pi + gamma P_pi v, from v = 0 (S&B §4.1).

  A second, independent route to v_pi (no linear solve), used to check ``evaluate_policy``.
  """
  p_pi, r_pi = policy_matrices(mdp, pi)
  v, _ = jax.lax.scan(lambda v, _: (r_pi + mdp.gamma * p_pi @ v, None),
                      jnp.zeros_like(r_pi), None, length=num_iters)
  return v


def greedy_policy(q: Array) -> Array:
  """Deterministic greedy policy as one-hot [S, A] (ties to the lowest action index)."""
  return jax.nn.one_hot(jnp.argmax(q, axis=-1), q.shape[-1], dtype=q.dtype)


def value_iteration(mdp: MDP, tol: float | None = None,
                    max_iters: int = 100_000) -> tuple[Array, Array]:
  """Value iteration, v <- max_a [r + gamma P v] (S&B §4.4), until a sweep changes v by < tol.

  Args:
    mdp: the MDP.
    tol: relative accuracy. Sweeps stop when max_s |v_new - v| < (1 + max_s |v|) max(tol (1 -
      gamma), 4 eps), so that ||v - v*|| <= gamma/(1 - gamma) max_s |v_new - v| is about tol
      (1 + max |v|), down to the dtype's resolution eps. Default: 100 eps.
    max_iters: hard cap on sweeps.
  Returns:
    ([S] v*, [S, A] one-hot greedy policy w.r.t. v*).
  """
  dtype = mdp.P.dtype
  eps = float(jnp.finfo(dtype).eps)
  tol = 100 * eps if tol is None else tol
  rel_threshold = jnp.maximum(tol * (1.0 - mdp.gamma), 4 * eps)

  def cond(carry):
    v, delta, it = carry
    return jnp.logical_and(delta >= rel_threshold * (1.0 + jnp.max(jnp.abs(v))), it < max_iters)

  def body(carry):
    v, _, it = carry
    v_new = jnp.max(q_from_v(mdp, v), axis=-1)
    return v_new, jnp.max(jnp.abs(v_new - v)), it + 1

  v0 = jnp.zeros(mdp.num_states, dtype)
  v, _, _ = jax.lax.while_loop(cond, body, (v0, jnp.asarray(jnp.inf, dtype), 0))
  return v, greedy_policy(q_from_v(mdp, v))


def policy_iteration(mdp: MDP, initial_actions: Array | None = None,
                     max_iters: int = 1000) -> tuple[Array, Array]:
  """Policy iteration with exact evaluation (S&B §4.3).

  Improvement keeps the current action unless another one is strictly better (by a relative
  1e-12), which is the textbook fix for cycling between equally good policies.

  Args:
    mdp: the MDP.
    initial_actions: [S] int, the deterministic policy to start from (default: action 0
      everywhere). With gamma = 1 it must be proper, i.e. reach a terminal state with
      probability 1, or its values are infinite (stochastic shortest paths, Bertsekas &
      Tsitsiklis 1996, §2.2); with gamma < 1 any policy works.
    max_iters: cap on improvement steps.
  Returns:
    ([S] v*, [S, A] one-hot optimal policy).
  """
  num_actions = mdp.num_actions
  dtype = mdp.P.dtype
  eps = 1e-12 if dtype == jnp.float64 else 1e-6

  def improve(actions):
    q = q_pi(mdp, jax.nn.one_hot(actions, num_actions, dtype=dtype))
    best = jnp.argmax(q, axis=-1).astype(actions.dtype)
    q_cur = jnp.take_along_axis(q, actions[:, None], axis=-1)[:, 0]
    q_best = jnp.max(q, axis=-1)
    better = q_best > q_cur + eps * (1.0 + jnp.abs(q_cur))
    return jnp.where(better, best, actions)

  def cond(carry):
    _, stable, it = carry
    return jnp.logical_and(jnp.logical_not(stable), it < max_iters)

  def body(carry):
    actions, _, it = carry
    new = improve(actions)
    return new, jnp.all(new == actions), it + 1

  actions0 = (jnp.zeros(mdp.num_states, jnp.int32) if initial_actions is None
              else jnp.asarray(initial_actions, jnp.int32))
  actions, _, _ = jax.lax.while_loop(cond, body, (actions0, jnp.asarray(False), 0))
  pi = jax.nn.one_hot(actions, num_actions, dtype=dtype)
  return evaluate_policy(mdp, pi), pi


def on_policy_distribution(mdp: MDP, pi: Array) -> tuple[Array, Array]:
  """Expected (discounted) visits eta and the on-policy distribution mu = eta / sum eta.

      eta(s) = mu0(s) + gamma sum_s~ eta(s~) sum_a pi(a|s~) p(s|s~, a),   s non-terminal,

  i.e. eta^T = mu0^T (I - gamma P_pi)^-1 (Sutton & Barto 2018, eq. 9.2 for gamma = 1; with
  gamma < 1 visits at time t are weighted gamma^t, which is the weighting under which the
  policy-gradient theorem holds for J = E_{mu0}[v_pi(s0)]).

  Returns:
    ([S] eta, [S] mu), both 0 at terminal states.
  """
  p_pi, _ = policy_matrices(mdp, pi)
  eye = jnp.eye(mdp.num_states, dtype=p_pi.dtype)
  eta = jnp.linalg.solve((eye - mdp.gamma * p_pi).T, mdp.mu0 * _live(mdp))
  return eta, eta / jnp.sum(eta)


def objective(mdp: MDP, pi: Array) -> Array:
  """J(pi) = sum_s mu0(s) v_pi(s), the expected discounted return from the start (S&B eq. 13.4)."""
  return jnp.dot(mdp.mu0, evaluate_policy(mdp, pi))


def softmax_policy(theta: Array) -> Array:
  """Tabular softmax policy pi(a|s) = exp(theta[s, a]) / sum_b exp(theta[s, b]) (S&B eq. 13.2)."""
  chex.assert_rank(theta, 2)
  return jax.nn.softmax(theta, axis=-1)


def policy_gradient_theorem(mdp: MDP, pi: Array, dpi: Array) -> Array:
  """The policy-gradient theorem as a computation (Sutton & Barto 2018, eq. 13.5 and its proof):

      grad J(theta) = (sum_s eta(s)) sum_s mu(s) sum_a q_pi(s, a) grad pi(a|s, theta).

  Args:
    mdp: the MDP.
    pi: [S, A] the policy at theta.
    dpi: [S, A, *theta_shape] the Jacobian d pi(a|s) / d theta.
  Returns:
    [*theta_shape] the exact gradient of J = E_{mu0}[v_pi(s0)].
  """
  eta, mu = on_policy_distribution(mdp, pi)
  q = q_pi(mdp, pi)
  return jnp.sum(eta) * jnp.tensordot(mu[:, None] * q, dpi, axes=([0, 1], [0, 1]))


def softmax_jacobian(theta: Array) -> Array:
  """d pi(a|s) / d theta[s~, b] = 1[s = s~] pi(a|s) (1[a = b] - pi(b|s)) for the tabular softmax.

  Returns [S, A, S, A].
  """
  pi = softmax_policy(theta)
  num_states, num_actions = theta.shape
  eye_a = jnp.eye(num_actions, dtype=pi.dtype)
  per_state = pi[:, :, None] * (eye_a[None] - pi[:, None, :])  # [S, A, B]
  eye_s = jnp.eye(num_states, dtype=pi.dtype)
  return eye_s[:, None, :, None] * per_state[:, :, None, :]


def softmax_policy_gradient_theorem(mdp: MDP, theta: Array) -> Array:
  """Exact grad_theta J of the tabular softmax policy from the theorem (closed-form grad pi)."""
  return policy_gradient_theorem(mdp, softmax_policy(theta), softmax_jacobian(theta))


def policy_gradient_autodiff(mdp: MDP, policy_fn: Callable[[Array], Array], theta: Array) -> Array:
  """grad_theta J(theta) by reverse-mode autodiff through the linear solve of v_pi.

  Independent of the theorem: no eta, no q, only J(theta) = mu0 . (I - gamma P_pi)^-1 r_pi.
  """
  return jax.grad(lambda th: objective(mdp, policy_fn(th)))(theta)


def policy_gradient_theorem_fn(mdp: MDP, policy_fn: Callable[[Array], Array],
                               theta: Array) -> Array:
  """The theorem's gradient for any differentiable parameterization pi = policy_fn(theta).

  grad pi comes from ``jax.jacobian(policy_fn)`` (a map of theta alone: nothing differentiates
  through the MDP); the rest is ``policy_gradient_theorem``.
  """
  return policy_gradient_theorem(mdp, policy_fn(theta), jax.jacobian(policy_fn)(theta))


# ---------------------------------------------------------------------------------------------
# Example MDPs.
# ---------------------------------------------------------------------------------------------

CHAIN_STATES = (-1, 0, 1, 2)
CHAIN_ACTIONS = ("-", "+")


def chain_mdp(gamma: float, dtype=None) -> MDP:
  """The four-state chain, states -1, 0, 1, 2 (indices 0..3), actions - (0) and + (1).

  In state -1 action - pays 1 and moves to 0; in state 2 action + pays 3 and moves to 0; every
  other action moves one step left (-) or right (+) with reward 0 (so + in -1 moves to 0 and - in
  2 moves to 1). Start in 0. Continuing (no terminal state).
  """
  num_states = len(CHAIN_STATES)
  index = {s: i for i, s in enumerate(CHAIN_STATES)}
  P = [[[0.0] * num_states for _ in range(2)] for _ in range(num_states)]
  R = [[0.0, 0.0] for _ in range(num_states)]
  for s in CHAIN_STATES:
    i = index[s]
    for a, step in ((0, -1), (1, +1)):
      if s == -1 and a == 0:
        nxt, r = 0, 1.0
      elif s == 2 and a == 1:
        nxt, r = 0, 3.0
      else:
        nxt, r = s + step, 0.0
      P[i][a][index[nxt]] = 1.0
      R[i][a] = r
  mu0 = [0.0] * num_states
  mu0[index[0]] = 1.0
  return make_mdp(P, R, mu0, gamma, dtype=dtype)


def short_corridor_mdp(dtype=None) -> MDP:
  """Short corridor with switched actions (Sutton & Barto 2018, Example 13.1).

  States 0, 1, 2 and the terminal state 3; actions left (0) and right (1); reward -1 per step;
  gamma = 1; start in 0. Left in state 0 stays in 0; in state 1 the actions are reversed (right
  moves to 0, left to 2); right in state 2 reaches the goal.
  """
  P = jnp.zeros((4, 2, 4))
  P = P.at[0, 0, 0].set(1.0).at[0, 1, 1].set(1.0)
  P = P.at[1, 0, 2].set(1.0).at[1, 1, 0].set(1.0)
  P = P.at[2, 0, 1].set(1.0).at[2, 1, 3].set(1.0)
  P = P.at[3, :, 3].set(1.0)
  R = jnp.full((4, 2), -1.0).at[3].set(0.0)
  mu0 = jnp.array([1.0, 0.0, 0.0, 0.0])
  return make_mdp(P, R, mu0, 1.0, terminal=[False, False, False, True], dtype=dtype)


def corridor_policy(p: Array, num_states: int = 4) -> Array:
  """The corridor's policy class: pi(right|s) = p in every state (the states look alike)."""
  p = jnp.asarray(p)
  row = jnp.stack([1.0 - p, p])
  return jnp.broadcast_to(row, (num_states, 2))


def corridor_objective(p: Array, mdp: MDP | None = None) -> Array:
  """J(p) = v_pi(s0) of the short corridor under pi(right) = p, by exact evaluation."""
  mdp = short_corridor_mdp(jnp.asarray(p).dtype) if mdp is None else mdp
  return objective(mdp, corridor_policy(p, mdp.num_states))


def random_mdp(key: chex.PRNGKey, num_states: int, num_actions: int, gamma: float,
               num_terminal: int = 0, dtype=None) -> MDP:
  """A random MDP: Dirichlet(1) transitions, N(0, 1) rewards, random start distribution.

  With ``num_terminal`` > 0 the last states are terminal, and every non-terminal (s, a) reaches a
  terminal state with probability >= 0.1, so every policy terminates (gamma = 1 is allowed).
  """
  k_p, k_r, k_0 = jax.random.split(key, 3)
  dtype = jnp.zeros((), dtype).dtype

  def dirichlet_ones(k, shape):  # normalised Exp(1) draws are Dirichlet(1, ..., 1).
    e = jax.random.exponential(k, shape + (num_states,), dtype)
    return e / jnp.sum(e, axis=-1, keepdims=True)

  P = dirichlet_ones(k_p, (num_states, num_actions))
  R = jax.random.normal(k_r, (num_states, num_actions), dtype)
  mu0 = dirichlet_ones(k_0, ())
  terminal = jnp.arange(num_states) >= num_states - num_terminal
  if num_terminal:
    into_terminal = jnp.sum(P * terminal, axis=-1, keepdims=True)
    P = jnp.where(into_terminal < 0.1,
                  0.9 * P + 0.1 * terminal / num_terminal, P)
    mu0 = jnp.where(terminal, 0.0, mu0)
    mu0 = mu0 / jnp.sum(mu0)
  return make_mdp(P, R, mu0, gamma, terminal=terminal, dtype=dtype)


def maximize_scalar(f: Callable[[Array], Array], lo: float, hi: float, num_grid: int = 1001,
                    num_golden: int = 80) -> tuple[Array, Array]:
  """Maximises a scalar function of one variable on [lo, hi]: a grid, then golden-section search.

  The grid picks the best of ``num_grid`` points; golden-section search (Kiefer 1953) then
  shrinks the bracket [x_{i-1}, x_{i+1}] around it by 0.618 per step, which finds the maximiser
  to machine precision when f is unimodal on the bracket (J(p) of the short corridor is).

  Returns:
    (argmax x*, f(x*)).
  """
  xs = jnp.linspace(lo, hi, num_grid)
  i = jnp.argmax(jax.vmap(f)(xs))
  a, b = xs[jnp.maximum(i - 1, 0)], xs[jnp.minimum(i + 1, num_grid - 1)]
  inv_phi = (jnp.sqrt(5.0) - 1.0) / 2.0

  def body(_, bracket):
    a, b = bracket
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    left = f(c) >= f(d)
    return jnp.where(left, a, c), jnp.where(left, d, b)

  a, b = jax.lax.fori_loop(0, num_golden, body, (a, b))
  x = 0.5 * (a + b)
  return x, f(x)
