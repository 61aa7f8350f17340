"""VAE library: shapes, the ELBO and IWAE against numpy, the epoch order, one trace per run,
seed semantics through the runner (vmapped seed i == single run with that seed; the same seed
reproduces bit for bit; seeds differ), NaN stop."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrl_jax import run as runner
from genrl_jax.generative import vae
from genrl_jax.models import vae as vae_models

TINY = vae.VAEConfig(latent_dim=3, hidden=(16,), image_shape=(4, 4, 1), batch_size=8,
                     eval_batch_size=16, eval_iw_samples=4, binarize="dynamic")


def _data(n_train=64, n_test=20, pixels=16, seed=0):
  """Two prototype images plus noise, as uint8 — learnable in a few epochs."""
  rng = np.random.default_rng(seed)
  protos = rng.integers(0, 2, size=(2, pixels)) * 255
  def make(n):
    x = protos[rng.integers(0, 2, size=n)] * 0.9 + rng.integers(0, 25, size=(n, pixels))
    return jnp.asarray(np.clip(x, 0, 255).astype(np.uint8))
  return {"train": make(n_train), "test": make(n_test)}


def _init(model, seed, pixels):
  return jax.jit(lambda key: vae.init_params(model, key, pixels))(jax.random.key(seed))


# --- modules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", vae_models.ARCHS)
def test_encoder_decoder_shapes(arch):
  model = vae_models.VAE(latent_dim=5, hidden=(32,), image_shape=(28, 28, 1), arch=arch)
  params = jax.eval_shape(lambda: vae.init_params(model, jax.random.key(0), 784))
  shape = lambda f, *a: jax.tree.map(lambda s: s.shape, jax.eval_shape(f, params, *a))
  encode = lambda p, x: vae.encode(model, p, x)
  decode = lambda p, z: vae.decode(model, p, z)
  x = jax.ShapeDtypeStruct((7, 784), jnp.float32)
  assert shape(encode, x) == ((7, 5), (7, 5))
  assert shape(decode, jax.ShapeDtypeStruct((7, 5), jnp.float32)) == (7, 784)
  # One example without a batch axis (the per-example losses vmap over this form).
  assert shape(encode, jax.ShapeDtypeStruct((784,), jnp.float32)) == ((5,), (5,))
  assert shape(decode, jax.ShapeDtypeStruct((5,), jnp.float32)) == (784,)
  # Two leading axes.
  assert shape(decode, jax.ShapeDtypeStruct((2, 3, 5), jnp.float32)) == (2, 3, 784)


def test_mlp_parameter_count_is_the_canonical_784_400_20():
  model = vae_models.VAE(latent_dim=20, hidden=(400,))
  params = jax.eval_shape(lambda: vae.init_params(model, jax.random.key(0), 784))
  count = sum(p.size for p in jax.tree.leaves(params))
  # Layers 784->400, 400->20 (mean), 400->20 (log-variance), 20->400, 400->784, with biases.
  assert count == (784 * 400 + 400) + 2 * (400 * 20 + 20) + (20 * 400 + 400) + (400 * 784 + 784)


# --- the objective against numpy -------------------------------------------------------------

def _np_forward(params, x, z_eps):
  """Numpy MLP VAE: returns (mean, log_var, z, logits) with z = mean + exp(log_var / 2) * eps."""
  p = jax.tree.map(np.asarray, params)
  relu = lambda a: np.maximum(a, 0)
  h = relu(x @ p["encoder"]["hidden_0"]["kernel"] + p["encoder"]["hidden_0"]["bias"])
  mean = h @ p["encoder"]["mean"]["kernel"] + p["encoder"]["mean"]["bias"]
  log_var = h @ p["encoder"]["log_var"]["kernel"] + p["encoder"]["log_var"]["bias"]
  z = mean + np.exp(0.5 * log_var) * z_eps
  hd = relu(z @ p["decoder"]["hidden_0"]["kernel"] + p["decoder"]["hidden_0"]["bias"])
  logits = hd @ p["decoder"]["logits"]["kernel"] + p["decoder"]["logits"]["bias"]
  return mean, log_var, z, logits


def _np_bernoulli(x, logits):
  # log sigmoid(l) = -log(1 + e^-l), log(1 - sigmoid(l)) = -log(1 + e^l)
  return np.sum(-x * np.logaddexp(0, -logits) - (1 - x) * np.logaddexp(0, logits), axis=-1)


@pytest.mark.parametrize("num_samples,prior_std", [(1, 1.0), (3, 2.5)])
def test_example_neg_elbo_matches_numpy(num_samples, prior_std):
  model = vae.make_model(TINY)
  params = _init(model, 1, 16)
  x = np.random.default_rng(2).random(16).astype(np.float32)
  key = jax.random.key(3)
  neg_elbo, kl = vae.example_neg_elbo(params, model, key, jnp.asarray(x), num_samples,
                                      2 * np.log(prior_std))
  eps = np.asarray(jax.random.normal(key, (num_samples, 3)), np.float64)  # reparameterize's draw
  mean, log_var, _, logits = _np_forward(params, x.astype(np.float64), eps)
  expected_ll = _np_bernoulli(x, logits).mean()
  var_q, var_p = np.exp(log_var), prior_std ** 2
  kl_np = 0.5 * np.sum(np.log(var_p) - log_var + (var_q + mean ** 2) / var_p - 1)
  np.testing.assert_allclose(kl, kl_np, rtol=1e-5)
  np.testing.assert_allclose(neg_elbo, kl_np - expected_ll, rtol=1e-5)


def test_iwae_bound_matches_numpy_logsumexp():
  model = vae.make_model(TINY)
  params = _init(model, 4, 16)
  x = (np.random.default_rng(5).random(16) > 0.5).astype(np.float32)
  key, k = jax.random.key(6), 7
  bound = vae.example_log_likelihood_bound(params, model, key, jnp.asarray(x), k, 0.0)
  eps = np.asarray(jax.random.normal(key, (k, 3)), np.float64)
  mean, log_var, z, logits = _np_forward(params, x.astype(np.float64), eps)
  log_normal = lambda z, m, lv: -0.5 * np.sum(np.log(2 * np.pi) + lv + (z - m) ** 2 / np.exp(lv), -1)
  log_w = _np_bernoulli(x, logits) + log_normal(z, 0.0, 0.0) - log_normal(z, mean, log_var)
  expected = np.logaddexp.reduce(log_w) - np.log(k)
  np.testing.assert_allclose(bound, expected, rtol=1e-5)


def test_nll_estimate_is_tighter_than_the_elbo_and_tightens_with_k():
  model = vae.make_model(TINY)
  params = _init(model, 7, 16)
  images = _data(n_test=200)["test"]
  key = jax.random.key(8)
  neg_elbo = vae.evaluate_neg_elbo(params, model, key, images, TINY)
  nll_1, nll_50 = (float(vae.evaluate_nll(params, model, key, images, TINY, k)) for k in (1, 50))
  # IWAE_1 is the Monte Carlo ELBO (same value in expectation as the closed-form-KL ELBO).
  assert abs(nll_1 - float(neg_elbo)) < 0.05 * abs(float(neg_elbo))
  assert nll_50 < nll_1 - 0.1


def test_eval_mean_ignores_padding():
  """The padded last batch must not enter the mean: compare with an unpadded evaluation."""
  model = vae.make_model(TINY)
  params = _init(model, 9, 16)
  images = _data(n_test=20)["test"]
  key = jax.random.key(10)
  padded = vae.evaluate_neg_elbo(params, model, key, images,
                                 dataclasses.replace(TINY, eval_batch_size=8))
  whole = vae.evaluate_neg_elbo(params, model, key, images,
                                dataclasses.replace(TINY, eval_batch_size=20))
  np.testing.assert_allclose(padded, whole, rtol=1e-5)


# --- epochs ----------------------------------------------------------------------------------

def test_epoch_order_is_a_fresh_permutation_without_the_partial_batch():
  order = np.asarray(vae.epoch_order(jax.random.key(0), 50, 8))
  assert order.shape == (6, 8)
  assert len(set(order.ravel())) == 48 and order.min() >= 0 and order.max() < 50
  again = np.asarray(vae.epoch_order(jax.random.key(0), 50, 8))
  other = np.asarray(vae.epoch_order(jax.random.key(1), 50, 8))
  np.testing.assert_array_equal(order, again)
  assert not np.array_equal(order, other)


def test_chunk_traces_once_and_learns():
  train = vae.make_train(TINY)
  data = _data()
  chunk = jax.jit(jax.vmap(chex.assert_max_traces(train.chunk, n=1), in_axes=(0, None)))
  state = jax.jit(jax.vmap(train.init, in_axes=(0, None)))(runner.seed_keys(0, 2), data)
  losses = []
  for _ in range(4):
    state, metrics = chunk(state, data)
    losses.append(np.asarray(metrics["loss"]))
  assert np.all(np.asarray(state.epoch) == 4)
  assert np.all(losses[-1] < losses[0] - 1.0)
  np.testing.assert_allclose(np.asarray(metrics["recon"]) + np.asarray(metrics["kl"]),
                             np.asarray(metrics["loss"]), rtol=1e-5)


# --- seeds through the runner ----------------------------------------------------------------

def _experiment(config=TINY, epochs=2):
  train = vae.make_train(config)
  return runner.Experiment(name="vae", init=train.init, chunk=train.chunk, num_chunks=epochs,
                           data=_data(), progress=(("loss", "-elbo"),),
                           compiler_options=vae.compiler_options())


def _quiet(_):
  pass


@pytest.mark.parametrize("seed_loop", ["vmap", "map"])
def test_seed_i_of_vmapped_run_equals_single_seed_run_and_seeds_differ(seed_loop):
  many = runner.run(_experiment(), seeds=4, seed=10, seed_loop=seed_loop, log=_quiet)
  one = runner.run(_experiment(), seeds=1, seed=12, seed_loop=seed_loop, log=_quiet)
  # Same seed, same everything: bit for bit.
  again = runner.run(_experiment(), seeds=4, seed=10, seed_loop=seed_loop, log=_quiet)
  chex.assert_trees_all_equal(many.state.params, again.state.params)
  np.testing.assert_array_equal(many.history[-1]["loss"], again.history[-1]["loss"])
  chex.assert_trees_all_close(runner.unstack_seed(many.state.params, 2),
                              runner.unstack_seed(one.state.params, 0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(many.history[-1]["test_neg_elbo"][2],
                             one.history[-1]["test_neg_elbo"][0], rtol=1e-5)
  a, b = (runner.unstack_seed(many.state.params, i) for i in (0, 1))
  assert not np.allclose(a["decoder"]["logits"]["kernel"], b["decoder"]["logits"]["kernel"])


def test_seed_loops_compute_the_same_runs():
  """vmap (seeds batched into every op) and map (seeds one after another) are two schedules of
  the same per-seed computation: equal up to float rounding."""
  batched = runner.run(_experiment(), seeds=3, seed=0, seed_loop="vmap", log=_quiet)
  looped = runner.run(_experiment(), seeds=3, seed=0, seed_loop="map", log=_quiet)
  chex.assert_trees_all_close(looped.state.params, batched.state.params, rtol=1e-5, atol=1e-6)
  for key in ("loss", "kl", "test_neg_elbo"):
    np.testing.assert_allclose(looped.history[-1][key], batched.history[-1][key], rtol=1e-5)


def test_absurd_learning_rate_stops_naming_seed_and_epoch():
  config = dataclasses.replace(TINY, learning_rate=1e9)
  with pytest.raises(runner.TrainingDiverged, match=r"loss is NaN/Inf for seed\(s\) 5.* epoch 1"):
    runner.run(_experiment(config), seeds=2, seed=5, log=_quiet)
