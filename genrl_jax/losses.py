"""Pure losses for generative models and RL.

Convention (rlax's): one example in, a scalar (or per-example array) out; batch with ``jax.vmap``
at the call site. Every function is jittable, vmappable and checks its inputs' ranks with chex.
Time-indexed RL inputs carry ``_t`` / ``_tm1`` suffixes and have a leading time axis ``[T]``.

Sources:
  Kingma & Welling (2013), Auto-Encoding Variational Bayes, eqs. 3, 10 and appendix B.
  Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders, eq. 8.
  Williams (1992); Sutton & Barto (2018), ch. 13 (REINFORCE, baselines).
  Goodfellow et al. (2014); Radford et al. (2015) (DCGAN).
  Mnih et al. (2015) (DQN); van Hasselt et al. (2016) (Double DQN).
"""

from __future__ import annotations

import math
from typing import Callable

import chex
import jax
import jax.numpy as jnp

Array = chex.Array
# A Python float (weakly typed): exact in float64, not a float32 array frozen at import.
LOG_2PI = math.log(2.0 * math.pi)

# ---------------------------------------------------------------------------------------------
# Gaussians, likelihoods, variational bounds.
# ---------------------------------------------------------------------------------------------


def gaussian_kl(mean_q: Array, log_var_q: Array, mean_p: Array | float = 0.0,
                log_var_p: Array | float = 0.0) -> Array:
  """KL(q || p) between diagonal Gaussians, in closed form.

      KL(N(mu_q, s_q^2) || N(mu_p, s_p^2))
          = sum_j [ log(s_p/s_q) + (s_q^2 + (mu_q - mu_p)^2) / (2 s_p^2) - 1/2 ]

  With the standard-normal prior (mean_p = 0, log_var_p = 0) this is Kingma & Welling (2013),
  appendix B: -1/2 sum_j (1 + log s_q^2 - mu_q^2 - s_q^2).

  Computed as 1/2 sum_j [ expm1(d_j) - d_j + (mu_q - mu_p)^2 / s_p^2 ], d_j = log s_q^2 - log s_p^2,
  which is the same sum with every term non-negative: accurate (and never negative) when q is
  close to p, e.g. for collapsed latent units, where the textbook form cancels catastrophically
  in float32.

  Args:
    mean_q: [D] mean of q.
    log_var_q: [D] log-variance log s_q^2 of q.
    mean_p: [D] or scalar mean of p (broadcast); default 0.
    log_var_p: [D] or scalar log-variance of p (broadcast); default 0.
  Returns:
    scalar KL divergence (nats).
  """
  chex.assert_rank([mean_q, log_var_q], 1)
  chex.assert_equal_shape([mean_q, log_var_q])
  mean_p = jnp.broadcast_to(mean_p, mean_q.shape)
  log_var_p = jnp.broadcast_to(log_var_p, mean_q.shape)
  log_var_ratio = log_var_q - log_var_p
  mahalanobis = jnp.square(mean_q - mean_p) * jnp.exp(-log_var_p)
  return 0.5 * jnp.sum(jnp.expm1(log_var_ratio) - log_var_ratio + mahalanobis)


def reparameterize(key: chex.PRNGKey, mean: Array, log_var: Array, num_samples: int = 1) -> Array:
  """J reparameterized samples z_j = mu + s * eps_j, eps_j ~ N(0, I) (Kingma & Welling 2013, eq. 10).

  Gradients flow to ``mean`` and ``log_var`` through the deterministic map; eps carries no gradient.

  Args:
    key: PRNG key.
    mean: [D] mean mu.
    log_var: [D] log-variance log s^2.
    num_samples: J.
  Returns:
    [J, D] samples.
  """
  chex.assert_rank([mean, log_var], 1)
  chex.assert_equal_shape([mean, log_var])
  eps = jax.random.normal(key, (num_samples,) + mean.shape, dtype=mean.dtype)
  return mean + jnp.exp(0.5 * log_var) * eps


def gaussian_log_prob(x: Array, mean: Array, log_var: Array | float = 0.0) -> Array:
  """log N(x; mu, diag(s^2)) = -1/2 sum_j [ log 2pi + log s_j^2 + (x_j - mu_j)^2 / s_j^2 ].

  Args:
    x: [D] point.
    mean: [D] mean.
    log_var: [D] or scalar log-variance (broadcast).
  Returns:
    scalar log density.
  """
  chex.assert_rank([x, mean], 1)
  chex.assert_equal_shape([x, mean])
  log_var = jnp.broadcast_to(log_var, x.shape)
  return -0.5 * jnp.sum(LOG_2PI + log_var + jnp.square(x - mean) * jnp.exp(-log_var))


def bernoulli_log_likelihood(x: Array, logits: Array) -> Array:
  """log p(x | logits) = sum_j [ x_j l_j - softplus(l_j) ] for x in [0, 1] (continuous x allowed).

  The softplus form is exact and finite for |l| up to float range (no sigmoid, no log of 0); it
  equals -BCE(x, sigmoid(l)), which is the grayscale-target loss of the PyTorch VAE example.

  Args:
    x: [D] targets in [0, 1].
    logits: [D] Bernoulli logits.
  Returns:
    scalar log-likelihood.
  """
  chex.assert_rank([x, logits], 1)
  chex.assert_equal_shape([x, logits])
  return jnp.sum(x * logits - jax.nn.softplus(logits))


def elbo(key: chex.PRNGKey, mean_q: Array, log_var_q: Array,
         log_likelihood_fn: Callable[[Array], Array], num_samples: int = 1,
         mean_p: Array | float = 0.0, log_var_p: Array | float = 0.0) -> Array:
  """ELBO with the closed-form KL (Kingma & Welling 2013, eq. 10, the SGVB estimator B):

      L(x) = (1/J) sum_j log p(x | z_j) - KL(q(z|x) || p(z)),   z_j = mu + s * eps_j.

  Args:
    key: PRNG key for the J samples.
    mean_q, log_var_q: [D] encoder outputs for one x.
    log_likelihood_fn: z [D] -> scalar log p(x | z) (the decoder, closed over x).
    num_samples: J.
    mean_p, log_var_p: prior parameters ([D] or scalars).
  Returns:
    scalar ELBO (an unbiased estimate of it).
  """
  z = reparameterize(key, mean_q, log_var_q, num_samples)
  if num_samples == 1:
    # The same value as the mean below; without the size-1 sample axis, XLA's CPU layout
    # assignment keeps the batched decoder's matmuls free of transposes (~10 % of a VAE step).
    expected_ll = log_likelihood_fn(z[0])
  else:
    expected_ll = jnp.mean(jax.vmap(log_likelihood_fn)(z))
  return expected_ll - gaussian_kl(mean_q, log_var_q, mean_p, log_var_p)


def importance_log_weights(key: chex.PRNGKey, mean_q: Array, log_var_q: Array,
                           log_joint_fn: Callable[[Array], Array], num_samples: int) -> Array:
  """log w_i = log p(x, z_i) - log q(z_i | x), z_i ~ q(z|x) reparameterized.

  Args:
    key: PRNG key.
    mean_q, log_var_q: [D] parameters of q(z|x).
    log_joint_fn: z [D] -> scalar log p(x, z) (closed over x).
    num_samples: k.
  Returns:
    [k] log importance weights.
  """
  z = reparameterize(key, mean_q, log_var_q, num_samples)
  log_q = jax.vmap(lambda zi: gaussian_log_prob(zi, mean_q, log_var_q))(z)
  return jax.vmap(log_joint_fn)(z) - log_q


def elbo_monte_carlo(key: chex.PRNGKey, mean_q: Array, log_var_q: Array,
                     log_joint_fn: Callable[[Array], Array], num_samples: int = 1) -> Array:
  """Fully Monte Carlo ELBO, for priors without a closed-form KL (Kingma & Welling 2013, eq. 6-7):

      L(x) = E_q[ log p(x, z) - log q(z | x) ] ~= (1/J) sum_j log w_j.
  """
  return jnp.mean(importance_log_weights(key, mean_q, log_var_q, log_joint_fn, num_samples))


def iwae_bound(key: chex.PRNGKey, mean_q: Array, log_var_q: Array,
               log_joint_fn: Callable[[Array], Array], num_samples: int) -> Array:
  """Importance-weighted bound (Burda et al. 2015, eq. 8), computed with logsumexp:

      IWAE_k(x) = log (1/k) sum_{i=1..k} p(x, z_i) / q(z_i | x),   z_i ~ q(z|x).

  E[IWAE_k] <= log p(x), is non-decreasing in k, and converges to log p(x) as k -> infinity;
  IWAE_1 is the Monte Carlo ELBO. Used as the test log-likelihood estimate.
  """
  log_w = importance_log_weights(key, mean_q, log_var_q, log_joint_fn, num_samples)
  return jax.nn.logsumexp(log_w) - jnp.log(num_samples)


# ---------------------------------------------------------------------------------------------
# Policy gradient.
# ---------------------------------------------------------------------------------------------


def discounted_returns(r_t: Array, terminated_t: Array, truncated_t: Array, gamma: float,
                       v_next_t: Array | None = None) -> Array:
  """Reward-to-go over a rollout that may hold several episodes (auto-reset between them).

      G_t = r_t + gamma * (1 - term_t) * [ (1 - trunc_t) * G_{t+1} + trunc_t * v(s'_t) ],

  with G_T = v(s'_{T-1}) past the rollout's end. ``terminated`` means the MDP ended (no bootstrap,
  the value of a terminal state is 0); ``truncated`` means a time limit cut the episode: the return
  is bootstrapped with the value of the true next state s'_t (gymnax's
  ``info["final_observation"]``), or cut there when ``v_next_t`` is None (Monte Carlo REINFORCE).
  Sutton & Barto (2018), eq. 3.9 and §13.3.

  Args:
    r_t: [T] rewards.
    terminated_t: [T] bool/0-1, episode ended in a terminal state after step t.
    truncated_t: [T] bool/0-1, episode cut by a time limit after step t (and not terminated).
    gamma: discount factor.
    v_next_t: [T] value estimate of s'_t, the state reached by step t; None means 0.
  Returns:
    [T] returns G_t.
  """
  chex.assert_rank([r_t, terminated_t, truncated_t], 1)
  chex.assert_equal_shape([r_t, terminated_t, truncated_t])
  term = terminated_t.astype(r_t.dtype)
  trunc = truncated_t.astype(r_t.dtype) * (1.0 - term)
  v_next = jnp.zeros_like(r_t) if v_next_t is None else v_next_t
  chex.assert_equal_shape([r_t, v_next])

  def step(g_next, xs):
    r, te, tr, v = xs
    g = r + gamma * (1.0 - te) * ((1.0 - tr) * g_next + tr * v)
    return g, g

  _, g_t = jax.lax.scan(step, v_next[-1], (r_t, term, trunc, v_next), reverse=True)
  return g_t


def episode_start_returns(r_t: Array, terminated_t: Array, truncated_t: Array,
                          gamma: float, v_next_t: Array | None = None) -> Array:
  """The 'total return' estimator's weight: G_0 of the episode that step t belongs to.

  REINFORCE in its first form (Williams 1992) weights every grad log pi(a_t|s_t) of an episode by
  the same whole-episode return G_0 = sum_k gamma^k r_k; reward-to-go replaces it with G_t.
  The rollout must start at an episode's first step.

  Args:
    r_t, terminated_t, truncated_t: [T] as in ``discounted_returns``.
    gamma: discount factor.
    v_next_t: [T] or None, as in ``discounted_returns``: a truncated episode's G_0 then ends
      with gamma^k v(s'_k) instead of being cut.
  Returns:
    [T] the return from the start of t's episode, repeated over that episode's steps.
  """
  g_t = discounted_returns(r_t, terminated_t, truncated_t, gamma, v_next_t)
  done_t = jnp.logical_or(terminated_t, truncated_t)
  starts = jnp.concatenate([jnp.ones((1,), bool), done_t[:-1].astype(bool)])

  def step(g0, xs):
    start, g = xs
    g0 = jnp.where(start, g, g0)
    return g0, g0

  _, g0_t = jax.lax.scan(step, g_t[0], (starts, g_t))
  return g0_t


def reinforce_surrogate(logits_t: Array, a_t: Array, returns_t: Array, baseline_t: Array,
                        mask_t: Array | None = None) -> Array:
  """REINFORCE surrogate whose gradient is the policy-gradient estimate (Williams 1992):

      L(theta) = - sum_t m_t log pi_theta(a_t | s_t) * stop_grad(G_t - b(s_t)),
      grad L   = - sum_t m_t (G_t - b(s_t)) grad log pi_theta(a_t | s_t).

  Any b that does not depend on a_t keeps the estimate unbiased (Sutton & Barto 2018, eq. 13.11).

  Args:
    logits_t: [T, A] policy logits.
    a_t: [T] int actions taken.
    returns_t: [T] G_t (reward-to-go or total return).
    baseline_t: [T] b(s_t) (zeros for none).
    mask_t: [T] 1 for real steps, 0 for padding after an episode ended; None means all ones.
  Returns:
    scalar surrogate loss (to minimise).
  """
  chex.assert_rank([logits_t, a_t, returns_t, baseline_t], [2, 1, 1, 1])
  chex.assert_equal_shape_prefix([logits_t, a_t, returns_t, baseline_t], 1)
  mask_t = jnp.ones_like(returns_t) if mask_t is None else mask_t.astype(returns_t.dtype)
  log_pi = jax.nn.log_softmax(logits_t)
  log_pi_a = jnp.take_along_axis(log_pi, a_t[:, None].astype(jnp.int32), axis=-1)[:, 0]
  advantage = jax.lax.stop_gradient(returns_t - baseline_t)
  return -jnp.sum(mask_t * log_pi_a * advantage)


def value_baseline_loss(v_t: Array, returns_t: Array, mask_t: Array | None = None) -> Array:
  """Regression of a state-value baseline on the returns: 1/2 sum_t m_t (stop_grad(G_t) - v(s_t))^2.

  Sutton & Barto (2018), §13.4 (REINFORCE with baseline), the w-update's squared error.
  """
  chex.assert_rank([v_t, returns_t], 1)
  chex.assert_equal_shape([v_t, returns_t])
  mask_t = jnp.ones_like(v_t) if mask_t is None else mask_t.astype(v_t.dtype)
  return 0.5 * jnp.sum(mask_t * jnp.square(jax.lax.stop_gradient(returns_t) - v_t))


def entropy(logits: Array) -> Array:
  """Entropy of a categorical distribution, H = -sum_a pi(a) log pi(a). Args: [A] logits."""
  chex.assert_rank(logits, 1)
  log_pi = jax.nn.log_softmax(logits)
  return -jnp.sum(jnp.exp(log_pi) * log_pi)


# ---------------------------------------------------------------------------------------------
# GAN.
# ---------------------------------------------------------------------------------------------


def gan_discriminator_loss(real_logit: Array, fake_logit: Array) -> Array:
  """Discriminator binary cross-entropy (Goodfellow et al. 2014, eq. 1):

      -log D(x) - log(1 - D(G(z))) = softplus(-l_real) + softplus(l_fake),   D = sigmoid(l).

  Args:
    real_logit: scalar discriminator logit on a data example.
    fake_logit: scalar discriminator logit on a generated example.
  Returns:
    scalar loss.
  """
  chex.assert_rank([real_logit, fake_logit], 0)
  return jax.nn.softplus(-real_logit) + jax.nn.softplus(fake_logit)


def gan_generator_loss(fake_logit: Array) -> Array:
  """Non-saturating generator loss (Goodfellow et al. 2014, §3): -log D(G(z)) = softplus(-l_fake)."""
  chex.assert_rank(fake_logit, 0)
  return jax.nn.softplus(-fake_logit)


# ---------------------------------------------------------------------------------------------
# DQN.
# ---------------------------------------------------------------------------------------------


def td_target(r_t: Array, terminated_t: Array, gamma: float, q_t_target: Array,
              q_t_online: Array | None = None) -> Array:
  """One-step Q-learning target, bootstrapping only where the episode did not terminate:

      y = r_t + gamma * (1 - term_t) * Q_target(s_t, argmax_a Q_sel(s_t, a)),

  where Q_sel = Q_target (DQN, Mnih et al. 2015) or Q_online (Double DQN, van Hasselt et al. 2016).
  On a truncated step, s_t must be the true next state (gymnax ``info["final_observation"]``),
  not the auto-reset one: truncation bootstraps, termination does not.

  Args:
    r_t: scalar reward.
    terminated_t: scalar bool/0-1.
    gamma: discount.
    q_t_target: [A] target-network values at s_t.
    q_t_online: [A] online-network values at s_t (Double DQN's selector) or None.
  Returns:
    scalar target (gradient stopped).
  """
  chex.assert_rank([r_t, terminated_t, q_t_target], [0, 0, 1])
  selector = q_t_target if q_t_online is None else q_t_online
  a_star = jnp.argmax(selector)
  bootstrap = q_t_target[a_star]
  y = r_t + gamma * (1.0 - terminated_t.astype(r_t.dtype)) * bootstrap
  return jax.lax.stop_gradient(y)


def huber(x: Array, delta: float = 1.0) -> Array:
  """Huber loss: x^2/2 for |x| <= delta, delta (|x| - delta/2) beyond (Huber 1964)."""
  abs_x = jnp.abs(x)
  quadratic = jnp.minimum(abs_x, delta)
  return 0.5 * jnp.square(quadratic) + delta * (abs_x - quadratic)


TD_LOSSES = ("huber", "mse", "squared")


def td_loss(q_tm1: Array, a_tm1: Array, r_t: Array, terminated_t: Array, gamma: float,
            q_t_target: Array, q_t_online: Array | None = None, loss: str = "huber",
            huber_delta: float = 1.0) -> Array:
  """DQN loss on one transition: rho(y - Q(s_{t-1}, a_{t-1})) with y = ``td_target``.

      huber:   rho(x) = x^2 / 2 for |x| <= delta, else delta (|x| - delta / 2)  (Mnih et al.
               2015's error clipping; torch's smooth_l1_loss with beta = delta = 1);
      mse:     rho(x) = x^2         (torch's mse_loss, as in CleanRL's dqn.py);
      squared: rho(x) = x^2 / 2.

  Args:
    q_tm1: [A] online values at s_{t-1}.
    a_tm1: scalar int action.
    r_t, terminated_t, gamma, q_t_target, q_t_online: see ``td_target``.
    loss: one of ``TD_LOSSES``.
    huber_delta: Huber's threshold.
  Returns:
    scalar loss.
  """
  chex.assert_rank([q_tm1, a_tm1], [1, 0])
  if loss not in TD_LOSSES:
    raise ValueError(f"loss must be one of {TD_LOSSES}, got {loss!r}")
  td_error = td_target(r_t, terminated_t, gamma, q_t_target, q_t_online) - q_tm1[a_tm1]
  if loss == "huber":
    return huber(td_error, huber_delta)
  if loss == "mse":
    return jnp.square(td_error)
  return 0.5 * jnp.square(td_error)
