"""Tests of genrl_jax.losses: Gaussians, likelihoods, variational bounds, GAN losses.

Every expectation is computed independently of the code under test: a Monte Carlo estimate with
numpy's generator, scipy densities, distrax's KL, a linear-Gaussian model whose marginal
likelihood and posterior are known in closed form, or a float64 numpy formula. The RL losses are
checked in test_returns.py; the jit/vmap consistency of every loss is checked at the end of this
file.
"""

from __future__ import annotations

import functools

from absl.testing import parameterized
import chex
import distrax
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from scipy import stats

from genrl_jax import losses

# Monte Carlo checks use a 3-standard-error margin with fixed seeds, so each is deterministic.
NUM_SE = 3.0


@pytest.fixture
def x64():
  """Runs a test with 64-bit floats, restoring the previous setting afterwards."""
  with jax.enable_x64(True):
    yield


def _mean_se(x):
  x = np.asarray(x, np.float64)
  return x.mean(), x.std(ddof=1) / np.sqrt(x.size)


def _numpy_log_normal(z, mean, var):
  """Sum over the last axis of log N(z; mean, var), via scipy (not the code under test)."""
  return stats.norm.logpdf(z, loc=mean, scale=np.sqrt(var)).sum(axis=-1)


# ---------------------------------------------------------------------------------------------
# gaussian_kl
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prior", ["standard", "general"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_matches_monte_carlo(x64, prior, seed):
  rng = np.random.default_rng(seed)
  dim, n = 4, 200_000
  mean_q = rng.normal(size=dim)
  log_var_q = rng.uniform(-1.5, 1.5, size=dim)
  if prior == "standard":
    mean_p, log_var_p = np.zeros(dim), np.zeros(dim)
    kl = losses.gaussian_kl(jnp.asarray(mean_q), jnp.asarray(log_var_q))
  else:
    mean_p = rng.normal(size=dim)
    log_var_p = rng.uniform(-1.5, 1.5, size=dim)
    kl = losses.gaussian_kl(jnp.asarray(mean_q), jnp.asarray(log_var_q), jnp.asarray(mean_p),
                            jnp.asarray(log_var_p))
  # KL(q || p) = E_q[log q(z) - log p(z)], z drawn by numpy.
  z = mean_q + np.exp(0.5 * log_var_q) * rng.standard_normal((n, dim))
  log_ratio = (_numpy_log_normal(z, mean_q, np.exp(log_var_q))
               - _numpy_log_normal(z, mean_p, np.exp(log_var_p)))
  mc_mean, mc_se = _mean_se(log_ratio)
  assert abs(float(kl) - mc_mean) < NUM_SE * mc_se, (float(kl), mc_mean, mc_se)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-10)])
def test_kl_matches_distrax(dtype, tol):
  rng = np.random.default_rng(3)
  n, dim = 300, 5
  mean_q, mean_p = rng.normal(size=(2, n, dim)) * 2.0
  log_var_q, log_var_p = rng.uniform(-3.0, 3.0, size=(2, n, dim))

  def distrax_kl(mq, lq, mp, lp):
    q = distrax.MultivariateNormalDiag(mq, jnp.exp(0.5 * lq))
    p = distrax.MultivariateNormalDiag(mp, jnp.exp(0.5 * lp))
    return q.kl_divergence(p)

  def distrax_kl_standard(mq, lq):
    q = distrax.MultivariateNormalDiag(mq, jnp.exp(0.5 * lq))
    p = distrax.MultivariateNormalDiag(jnp.zeros_like(mq), jnp.ones_like(mq))
    return q.kl_divergence(p)

  with jax.enable_x64(dtype == np.float64):
    args = [jnp.asarray(a, dtype) for a in (mean_q, log_var_q, mean_p, log_var_p)]
    ours = jax.jit(jax.vmap(losses.gaussian_kl))(*args)
    theirs = jax.jit(jax.vmap(distrax_kl))(*args)
    ours_std = jax.jit(jax.vmap(losses.gaussian_kl))(*args[:2])
    theirs_std = jax.jit(jax.vmap(distrax_kl_standard))(*args[:2])
    assert ours.dtype == dtype
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)
    np.testing.assert_allclose(ours_std, theirs_std, rtol=tol, atol=tol)


_jit_kl = jax.jit(losses.gaussian_kl)
_floats = functools.partial(st.floats, allow_nan=False, allow_infinity=False)


@st.composite
def _gaussian_pair(draw, max_dim=6):
  """Two diagonal Gaussians (mean_q, log_var_q, mean_p, log_var_p) of a drawn dimension."""
  dim = draw(st.integers(1, max_dim))
  vec = lambda lo, hi: np.asarray(draw(st.lists(_floats(lo, hi), min_size=dim, max_size=dim)))
  return vec(-10, 10), vec(-6, 6), vec(-10, 10), vec(-6, 6)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(pair=_gaussian_pair(), near=st.booleans(), scale=_floats(1e-6, 1e-2))
def test_kl_non_negative(pair, near, scale):
  mean_q, log_var_q, mean_p, log_var_p = pair
  if near:  # p a tiny perturbation of q: the regime where cancellation can make KL negative.
    mean_p = mean_q + scale * np.sign(mean_p)
    log_var_p = log_var_q + scale * np.sign(log_var_p)
  for dtype in (np.float32, np.float64):
    with jax.enable_x64(dtype == np.float64):
      kl = _jit_kl(*[jnp.asarray(a, dtype) for a in (mean_q, log_var_q, mean_p,
                                                                  log_var_p)])
      assert np.isfinite(kl)
      assert kl >= 0.0, (dtype, float(kl))


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(pair=_gaussian_pair(),
                  which=st.sampled_from(["mean", "log_var"]),
                  delta=_floats(1e-3, 3.0))
def test_kl_zero_iff_equal(pair, which, delta):
  mean_q, log_var_q, _, _ = pair
  with jax.enable_x64(True):
    mq, lq = jnp.asarray(mean_q, jnp.float64), jnp.asarray(log_var_q, jnp.float64)
    assert _jit_kl(mq, lq, mq, lq) == 0.0
    # Any difference in one coordinate makes KL strictly positive. With equal variances it is
    # (dmu)^2 / (2 s^2), with equal means (e^d - 1 - d) / 2 for d the log-variance difference.
    bump = jnp.zeros_like(mq).at[-1].set(delta)
    if which == "mean":
      kl = _jit_kl(mq, lq, mq + bump, lq)
      expected = delta**2 / (2.0 * np.exp(log_var_q[-1]))
    else:
      kl = _jit_kl(mq, lq, mq, lq + bump)
      expected = 0.5 * (np.expm1(-delta) + delta)
    assert kl > 0.0
    np.testing.assert_allclose(kl, expected, rtol=1e-6)


@pytest.mark.parametrize("prior", ["standard", "general"])
def test_kl_gradient_matches_finite_differences(x64, prior):
  """jax.grad of the KL against float64 central differences in every coordinate."""
  rng = np.random.default_rng(4)
  dim, eps = 3, 1e-6
  num_args = 2 if prior == "standard" else 4
  # The arguments (mean_q, log_var_q[, mean_p, log_var_p]) flattened into one vector.
  params = np.concatenate([rng.normal(size=dim) if i % 2 == 0 else rng.uniform(-1, 1, size=dim)
                           for i in range(num_args)])
  kl_flat = jax.jit(lambda p: losses.gaussian_kl(*jnp.split(p, num_args)))
  steps = eps * np.eye(params.size)
  finite_diff = (np.asarray(jax.vmap(kl_flat)(params + steps))
                 - np.asarray(jax.vmap(kl_flat)(params - steps))) / (2 * eps)
  np.testing.assert_allclose(jax.grad(kl_flat)(params), finite_diff, rtol=1e-7, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# reparameterize
# ---------------------------------------------------------------------------------------------


def test_reparameterize_moments_and_normality():
  mean = jnp.array([1.5, -2.0, 0.0])
  log_var = jnp.array([0.3, -1.2, 2.0])
  n = 200_000
  z = np.asarray(losses.reparameterize(jax.random.key(5), mean, log_var, n), np.float64)
  assert z.shape == (n, 3)
  var = np.exp(np.asarray(log_var, np.float64))
  sample_mean = z.mean(axis=0)
  sample_var = z.var(axis=0, ddof=1)
  np.testing.assert_array_less(np.abs(sample_mean - mean), NUM_SE * np.sqrt(var / n))
  # The sample variance of n normal draws has standard error s^2 sqrt(2 / (n - 1)).
  np.testing.assert_array_less(np.abs(sample_var - var), NUM_SE * var * np.sqrt(2.0 / (n - 1)))
  # Standardised draws are N(0, 1) and the coordinates are uncorrelated.
  std = (z - np.asarray(mean)) / np.sqrt(var)
  for j in range(3):
    assert stats.kstest(std[:, j], "norm").pvalue > 1e-3
  corr = np.corrcoef(std.T)[np.triu_indices(3, 1)]
  np.testing.assert_array_less(np.abs(corr), NUM_SE / np.sqrt(n))
  # Different keys, different draws; same key, same draws.
  a = losses.reparameterize(jax.random.key(6), mean, log_var, 4)
  b = losses.reparameterize(jax.random.key(7), mean, log_var, 4)
  np.testing.assert_array_equal(a, losses.reparameterize(jax.random.key(6), mean, log_var, 4))
  assert not np.allclose(a, b)


def test_reparameterized_gradients_match_closed_form():
  """E[z^2] = mu^2 + s^2: d/dmu = 2 mu and d/dlog s^2 = s^2, estimated through the samples."""
  mean = jnp.array([0.7, -1.3])
  log_var = jnp.array([0.4, -0.9])
  n = 100_000
  key = jax.random.key(8)

  def per_sample_sq(mean, log_var):
    return jnp.sum(jnp.square(losses.reparameterize(key, mean, log_var, n)), axis=-1)  # [n]

  # Per-sample gradients (rows of the [n, 2] Jacobians) give the estimate and its standard error.
  jac_mean, jac_log_var = jax.jit(jax.jacfwd(per_sample_sq, argnums=(0, 1)))(mean, log_var)
  for jac, expected in ((jac_mean, 2.0 * mean), (jac_log_var, jnp.exp(log_var))):
    jac = np.asarray(jac, np.float64)
    est = jac.mean(axis=0)
    se = jac.std(axis=0, ddof=1) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(est - np.asarray(expected)), NUM_SE * se)
  # And the gradient of the sample mean is that same estimate (the loss a user would write).
  g_mean, g_log_var = jax.jit(jax.grad(lambda m, lv: jnp.mean(per_sample_sq(m, lv)),
                                       argnums=(0, 1)))(mean, log_var)
  np.testing.assert_allclose(g_mean, np.asarray(jac_mean).mean(0), rtol=1e-4)
  np.testing.assert_allclose(g_log_var, np.asarray(jac_log_var).mean(0), rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Likelihoods
# ---------------------------------------------------------------------------------------------


def _numpy_log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def test_bernoulli_log_likelihood_is_stable_for_large_logits():
  logits = np.concatenate([np.linspace(-100.0, 100.0, 41), [-100.0, 100.0, -30.0, 30.0]])
  x = np.concatenate([np.linspace(0.0, 1.0, 41), [0.0, 1.0, 1.0, 0.0]])
  # float64 reference: x log sigmoid(l) + (1 - x) log sigmoid(-l), and its derivative x - sigma(l).
  expected = x * _numpy_log_sigmoid(logits) + (1.0 - x) * _numpy_log_sigmoid(-logits)
  expected_grad = x - special.expit(logits)
  fn = lambda xi, li: losses.bernoulli_log_likelihood(xi[None], li[None])
  xs, ls = jnp.asarray(x, jnp.float32), jnp.asarray(logits, jnp.float32)
  per_elem = jax.vmap(fn)(xs, ls)
  grads = jax.vmap(jax.grad(fn, argnums=1))(xs, ls)
  assert np.all(np.isfinite(per_elem)) and np.all(np.isfinite(grads))
  np.testing.assert_allclose(per_elem, expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(grads, expected_grad, rtol=1e-6, atol=1e-6)
  # The vector form is the sum over coordinates.
  np.testing.assert_allclose(losses.bernoulli_log_likelihood(xs, ls), expected.sum(), rtol=1e-6)


@pytest.mark.parametrize("scalar_log_var", [False, True])
def test_gaussian_log_prob_matches_scipy(x64, scalar_log_var):
  rng = np.random.default_rng(9)
  x, mean = rng.normal(size=(2, 6)) * 3.0
  log_var = rng.uniform(-4.0, 4.0) if scalar_log_var else rng.uniform(-4.0, 4.0, size=6)
  expected = stats.norm.logpdf(x, loc=mean, scale=np.exp(0.5 * log_var)).sum()
  got = losses.gaussian_log_prob(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(log_var))
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  # Default log_var = 0 is the standard normal.
  np.testing.assert_allclose(losses.gaussian_log_prob(jnp.asarray(x), jnp.asarray(mean)),
                             stats.norm.logpdf(x, loc=mean).sum(), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Variational bounds on a linear-Gaussian model with an exact log p(x)
# ---------------------------------------------------------------------------------------------


class LinearGaussian:
  """p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I), so p(x) = N(b, W W^T + s^2 I).

  W has orthogonal columns, which makes the exact posterior p(z | x) diagonal and therefore
  representable by the diagonal q of the losses. Everything here is numpy/scipy.
  """

  def __init__(self, seed=10, dx=4, dz=2, noise_std=0.5):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dx, dz)))
    self.w = basis * np.array([1.5, 0.7])[:dz]
    self.b = rng.normal(size=dx)
    self.noise_var = noise_std**2
    cov_x = self.w @ self.w.T + self.noise_var * np.eye(dx)
    self.x = rng.multivariate_normal(self.b, cov_x)
    self.log_px = stats.multivariate_normal(self.b, cov_x).logpdf(self.x)
    # Exact posterior from the Gaussian conditioning formulas.
    post_cov = np.linalg.inv(np.eye(dz) + self.w.T @ self.w / self.noise_var)
    self.post_mean = post_cov @ self.w.T @ (self.x - self.b) / self.noise_var
    assert np.allclose(post_cov, np.diag(np.diag(post_cov)), atol=1e-12)
    self.post_log_var = np.log(np.diag(post_cov))

  def kl_to_posterior(self, mean_q, log_var_q):
    """KL(q || p(z|x)) with the general (matrix) Gaussian formula."""
    cov_q = np.diag(np.exp(log_var_q))
    cov_p = np.diag(np.exp(self.post_log_var))
    prec_p = np.linalg.inv(cov_p)
    diff = self.post_mean - mean_q
    return 0.5 * (np.trace(prec_p @ cov_q) + diff @ prec_p @ diff - len(mean_q)
                  + np.linalg.slogdet(cov_p)[1] - np.linalg.slogdet(cov_q)[1])

  def log_likelihood_fn(self, z):
    return losses.gaussian_log_prob(jnp.asarray(self.x), jnp.asarray(self.w) @ z
                                    + jnp.asarray(self.b), jnp.log(self.noise_var))

  def log_joint_fn(self, z):
    return self.log_likelihood_fn(z) + losses.gaussian_log_prob(z, jnp.zeros_like(z))

  def q_star(self):
    return jnp.asarray(self.post_mean), jnp.asarray(self.post_log_var)

  def q_off(self):
    """A non-optimal q, a few nats from the posterior."""
    return (jnp.asarray(self.post_mean + np.array([0.8, -0.5])),
            jnp.asarray(self.post_log_var + np.array([1.0, -0.7])))


@pytest.fixture
def model(x64):
  return LinearGaussian()


def _estimates(fn, num_keys, seed=11):
  keys = jax.random.split(jax.random.key(seed), num_keys)
  return np.asarray(jax.jit(jax.vmap(fn))(keys))


def test_bounds_are_tight_at_the_exact_posterior(model):
  mean, log_var = model.q_star()
  # At q = p(z|x) every importance weight equals p(x): ELBO_MC and IWAE_k are exact per sample.
  mc = _estimates(lambda k: losses.elbo_monte_carlo(k, mean, log_var, model.log_joint_fn, 3), 200)
  np.testing.assert_allclose(mc, model.log_px, rtol=0, atol=1e-9)
  for k in (1, 64):
    iw = _estimates(lambda key: losses.iwae_bound(key, mean, log_var, model.log_joint_fn, k), 50)
    np.testing.assert_allclose(iw, model.log_px, rtol=0, atol=1e-9)
  # The closed-form-KL ELBO is exact in expectation (its likelihood term is still random).
  cf = _estimates(lambda k: losses.elbo(k, mean, log_var, model.log_likelihood_fn), 20_000)
  m, se = _mean_se(cf)
  assert se > 0
  assert abs(m - model.log_px) < NUM_SE * se, (m, model.log_px, se)


def test_elbo_equals_log_px_minus_kl_to_posterior(model):
  """log p(x) - ELBO(q) = KL(q || p(z|x)) > 0, for both ELBO estimators, and they agree."""
  mean, log_var = model.q_off()
  gap = model.kl_to_posterior(np.asarray(mean), np.asarray(log_var))
  assert gap > 0.5  # the test is only informative if q is clearly not the posterior
  expected = model.log_px - gap
  cf = _estimates(lambda k: losses.elbo(k, mean, log_var, model.log_likelihood_fn), 40_000)
  mc = _estimates(lambda k: losses.elbo_monte_carlo(k, mean, log_var, model.log_joint_fn), 40_000,
                  seed=12)
  cf_mean, cf_se = _mean_se(cf)
  mc_mean, mc_se = _mean_se(mc)
  for m, se in ((cf_mean, cf_se), (mc_mean, mc_se)):
    assert abs(m - expected) < NUM_SE * se, (m, expected, se)
    assert m + NUM_SE * se < model.log_px  # a strict lower bound, beyond noise
  assert abs(cf_mean - mc_mean) < NUM_SE * np.hypot(cf_se, mc_se)
  # The closed-form KL removes the KL term's noise: lower variance than the pure MC estimator.
  assert cf.std() < mc.std()
  # With J samples the estimator's mean is unchanged.
  cf8 = _estimates(lambda k: losses.elbo(k, mean, log_var, model.log_likelihood_fn, 8), 5_000)
  m8, se8 = _mean_se(cf8)
  assert abs(m8 - expected) < NUM_SE * se8


def test_iwae_is_monotone_in_k_and_converges_to_log_px(model):
  mean, log_var = model.q_off()
  ks = (1, 8, 64, 512)
  means, ses = [], []
  for k in ks:
    est = _estimates(lambda key: losses.iwae_bound(key, mean, log_var, model.log_joint_fn, k),
                     2_000, seed=13 + k)
    m, se = _mean_se(est)
    means.append(m)
    ses.append(se)
    assert m <= model.log_px + NUM_SE * se  # a lower bound for every k
  means, ses = np.array(means), np.array(ses)
  # E[IWAE_k] is non-decreasing in k (Burda et al. 2015, theorem 1) ...
  np.testing.assert_array_less(-np.diff(means), NUM_SE * np.hypot(ses[1:], ses[:-1]))
  # ... strictly increasing over this range, beyond noise ...
  assert means[-1] - means[0] > NUM_SE * np.hypot(ses[-1], ses[0])
  # ... and the gap to log p(x) shrinks towards zero (it is O(1/k) asymptotically).
  gaps = model.log_px - means
  assert gaps[0] > 0.5
  assert gaps[-1] < 0.02 * gaps[0] + NUM_SE * ses[-1]
  # IWAE_1 estimates the ELBO, log p(x) - KL(q || p(z|x)).
  expected_elbo = model.log_px - model.kl_to_posterior(np.asarray(mean), np.asarray(log_var))
  assert abs(means[0] - expected_elbo) < NUM_SE * ses[0]


# ---------------------------------------------------------------------------------------------
# GAN losses
# ---------------------------------------------------------------------------------------------


def _numpy_bce(logit, label):
  """Binary cross-entropy of sigmoid(logit) against label, the textbook way, in float64."""
  d = 1.0 / (1.0 + np.exp(-np.asarray(logit, np.float64)))
  return -(label * np.log(d) + (1.0 - label) * np.log(1.0 - d))


def test_gan_losses_match_numpy_bce():
  rng = np.random.default_rng(14)
  real, fake = rng.uniform(-12.0, 12.0, size=(2, 500))
  real, fake = np.append(real, [0.0, 12.0, -12.0]), np.append(fake, [0.0, -12.0, 12.0])
  d_loss = jax.vmap(losses.gan_discriminator_loss)(jnp.asarray(real, jnp.float32),
                                                   jnp.asarray(fake, jnp.float32))
  g_loss = jax.vmap(losses.gan_generator_loss)(jnp.asarray(fake, jnp.float32))
  # Discriminator: real labelled 1, fake labelled 0. Generator (non-saturating): fake labelled 1.
  np.testing.assert_allclose(d_loss, _numpy_bce(real, 1.0) + _numpy_bce(fake, 0.0),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g_loss, _numpy_bce(fake, 1.0), rtol=1e-5, atol=1e-6)
  # Gradients: d/dl BCE(sigmoid(l), y) = sigmoid(l) - y.
  sig = special.expit(fake)
  g_grad = jax.vmap(jax.grad(losses.gan_generator_loss))(jnp.asarray(fake, jnp.float32))
  np.testing.assert_allclose(g_grad, sig - 1.0, rtol=1e-5, atol=1e-6)
  d_grad_real, d_grad_fake = jax.vmap(jax.grad(losses.gan_discriminator_loss, argnums=(0, 1)))(
      jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32))
  np.testing.assert_allclose(d_grad_real, special.expit(real) - 1.0, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(d_grad_fake, sig, rtol=1e-5, atol=1e-6)
  # Finite where the textbook form overflows: a confident wrong discriminator costs ~|logit|.
  big = jnp.float32(100.0)
  np.testing.assert_allclose(losses.gan_discriminator_loss(-big, big), 200.0, rtol=1e-6)
  np.testing.assert_allclose(losses.gan_generator_loss(-big), 100.0, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Every loss: same result with and without jit, and vmap equals a Python loop over examples.
# ---------------------------------------------------------------------------------------------

_B = 4  # examples per batch


def _lg_fns():
  rng = np.random.default_rng(15)
  w, b, x = jnp.asarray(rng.normal(size=(3, 2))), jnp.asarray(rng.normal(size=3)), None
  x = jnp.asarray(rng.normal(size=3), jnp.float32)
  w, b = w.astype(jnp.float32), b.astype(jnp.float32)
  ll = lambda z: losses.gaussian_log_prob(x, w @ z + b, -0.5)
  joint = lambda z: ll(z) + losses.gaussian_log_prob(z, jnp.zeros_like(z))
  return ll, joint


@functools.cache
def _cases():
  """name -> (function of arrays only, tuple of batched arguments with leading axis _B).

  Built once, so that both variants of a case share the compiled reference.
  """
  rng = np.random.default_rng(16)
  f32 = lambda *shape: jnp.asarray(rng.normal(size=(_B,) + shape), jnp.float32)
  keys = jax.random.split(jax.random.key(17), _B)
  ll, joint = _lg_fns()
  t, a = 9, 3
  bools = lambda p: jnp.asarray(rng.random((_B, t)) < p)
  actions = jnp.asarray(rng.integers(0, a, size=(_B, t)))
  return {
      "gaussian_kl_standard": (losses.gaussian_kl, (f32(3), f32(3))),
      "gaussian_kl_general": (losses.gaussian_kl, (f32(3), f32(3), f32(3), f32(3))),
      "reparameterize": (lambda k, m, lv: losses.reparameterize(k, m, lv, 5),
                         (keys, f32(3), f32(3))),
      "gaussian_log_prob": (losses.gaussian_log_prob, (f32(3), f32(3), f32(3))),
      "bernoulli_log_likelihood": (
          losses.bernoulli_log_likelihood,
          (jnp.asarray(rng.random((_B, 6)), jnp.float32), f32(6) * 30.0)),
      "elbo": (lambda k, m, lv: losses.elbo(k, m, lv, ll, 3), (keys, f32(2), f32(2))),
      "importance_log_weights": (lambda k, m, lv: losses.importance_log_weights(k, m, lv, joint, 6),
                                 (keys, f32(2), f32(2))),
      "elbo_monte_carlo": (lambda k, m, lv: losses.elbo_monte_carlo(k, m, lv, joint, 3),
                           (keys, f32(2), f32(2))),
      "iwae_bound": (lambda k, m, lv: losses.iwae_bound(k, m, lv, joint, 6),
                     (keys, f32(2), f32(2))),
      "discounted_returns": (lambda r, te, tr: losses.discounted_returns(r, te, tr, 0.9),
                             (f32(t), bools(0.2), bools(0.2))),
      "discounted_returns_bootstrap": (
          lambda r, te, tr, v: losses.discounted_returns(r, te, tr, 0.9, v),
          (f32(t), bools(0.2), bools(0.2), f32(t))),
      "episode_start_returns": (lambda r, te, tr: losses.episode_start_returns(r, te, tr, 0.9),
                                (f32(t), bools(0.2), bools(0.2))),
      "reinforce_surrogate": (losses.reinforce_surrogate,
                              (f32(t, a), actions, f32(t), f32(t), bools(0.7))),
      "reinforce_surrogate_grad": (jax.grad(losses.reinforce_surrogate),
                                   (f32(t, a), actions, f32(t), f32(t))),
      "value_baseline_loss": (losses.value_baseline_loss, (f32(t), f32(t), bools(0.7))),
      "entropy": (losses.entropy, (f32(a),)),
      "gan_discriminator_loss": (losses.gan_discriminator_loss, (f32(), f32())),
      "gan_generator_loss": (losses.gan_generator_loss, (f32(),)),
      "td_target_dqn": (lambda r, te, qt: losses.td_target(r, te, 0.9, qt),
                        (f32(), jnp.asarray(rng.random(_B) < 0.5), f32(a))),
      "td_target_double": (lambda r, te, qt, qo: losses.td_target(r, te, 0.9, qt, qo),
                           (f32(), jnp.asarray(rng.random(_B) < 0.5), f32(a), f32(a))),
      "td_loss_huber": (lambda q, a_, r, te, qt, qo: losses.td_loss(q, a_, r, te, 0.9, qt, qo),
                        (f32(a) * 3, actions[:, 0], f32(), jnp.asarray(rng.random(_B) < 0.5),
                         f32(a), f32(a))),
      "td_loss_squared": (lambda q, a_, r, te, qt: losses.td_loss(q, a_, r, te, 0.9, qt,
                                                                 loss="squared"),
                          (f32(a) * 3, actions[:, 0], f32(), jnp.asarray(rng.random(_B) < 0.5),
                           f32(a))),
      "huber": (lambda x: losses.huber(x, 0.5), (f32(5) * 2,)),
  }


_CASE_NAMES = tuple(_cases())


@functools.cache
def _jitted(fn):
  return jax.jit(fn)


class JitAndVmapTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters((name, name) for name in _CASE_NAMES)
  def test_matches_eager_python_loop(self, name):
    fn, batched = _cases()[name]
    examples = [tuple(arg[i] for arg in batched) for i in range(_B)]
    # The reference: a Python loop over single examples, each through jax.jit. The without_jit
    # variant checks op-by-op execution against it; both variants check vmap against it.
    expected = [np.asarray(_jitted(fn)(*ex)) for ex in examples]
    variant_fn = self.variant(fn)
    for ex, exp in zip(examples, expected):
      np.testing.assert_allclose(variant_fn(*ex), exp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.vmap(variant_fn)(*batched), np.stack(expected),
                               rtol=1e-5, atol=1e-5)
    assert all(np.all(np.isfinite(e)) for e in expected)
