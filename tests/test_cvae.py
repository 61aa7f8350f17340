"""CVAE (the VAE with a label input): the learned prior's KL equals losses.gaussian_kl on
hand-set values and the textbook formula, conditional ELBO pieces, a tiny trained CVAE's
samples for label k are classified as k well above chance, and a SIGKILLed run resumes
bit-identically."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrl_jax import losses
from genrl_jax import run as runner
from genrl_jax.generative import cvae_run
from genrl_jax.generative import evaluator
from genrl_jax.generative import vae
from tests import gen_data
from tests.test_gan import assert_same_final_state, metrics_rows, sigkill_and_resume

TINY = cvae_run.CVAEConfig(latent_dim=3, hidden=(8,), image_shape=(4, 4, 1), num_classes=2,
                           prior="learned", batch_size=4)


def test_learned_prior_kl_equals_gaussian_kl_on_hand_set_values():
  model = vae.make_model(TINY)
  params = vae.init_params(model, jax.random.key(0), 16)
  params = dict(params)
  params["prior_mean"] = {"kernel": jnp.array([[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]]),
                          "bias": jnp.array([0.1, 0.0, -0.1])}
  params["prior_log_var"] = {"kernel": jnp.array([[0.2, -0.4, 0.0], [1.0, 0.0, -1.5]]),
                             "bias": jnp.array([0.0, 0.1, 0.0])}
  x = jnp.asarray(np.random.default_rng(0).uniform(size=16), jnp.float32)
  for label in (0, 1):
    y = jax.nn.one_hot(label, 2)
    mean_q, log_var_q = vae.encode(model, params, x, y)
    mu_p = np.asarray(params["prior_mean"]["kernel"][label] + params["prior_mean"]["bias"])
    lv_p = np.asarray(params["prior_log_var"]["kernel"][label] + params["prior_log_var"]["bias"])
    _, kl = vae.example_neg_elbo(params, model, jax.random.key(1), x, 1, 0.0, y, "learned")
    np.testing.assert_allclose(kl, losses.gaussian_kl(mean_q, log_var_q, mu_p, lv_p), rtol=1e-6)
    # Textbook: sum_j log(s_p/s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2.
    m_q, v_q, v_p = np.asarray(mean_q, np.float64), np.exp(np.asarray(log_var_q, np.float64)), np.exp(lv_p)
    textbook = np.sum(0.5 * np.log(v_p / v_q) + (v_q + (m_q - mu_p) ** 2) / (2 * v_p) - 0.5)
    np.testing.assert_allclose(kl, textbook, rtol=1e-5)
  # The standard prior ignores the prior's parameters: KL to N(0, I).
  _, kl_std = vae.example_neg_elbo(params, model, jax.random.key(1), x, 1, 0.0, y, "standard")
  np.testing.assert_allclose(kl_std, losses.gaussian_kl(mean_q, log_var_q), rtol=1e-6)


def test_label_changes_the_decoder_and_the_conditional_iwae_bounds_the_elbo():
  model = vae.make_model(TINY)
  params = vae.init_params(model, jax.random.key(0), 16)
  z = jnp.ones(3)
  assert not np.allclose(vae.decode(model, params, z, jax.nn.one_hot(0, 2)),
                         vae.decode(model, params, z, jax.nn.one_hot(1, 2)))
  x = jnp.asarray(np.random.default_rng(1).integers(0, 2, 16), jnp.float32)
  y = jax.nn.one_hot(1, 2)
  neg_elbos = [vae.example_neg_elbo(params, model, jax.random.key(i), x, 1, 0.0, y, "learned")[0]
               for i in range(400)]
  iwae = vae.example_log_likelihood_bound(params, model, jax.random.key(9), x, 400, 0.0, y,
                                          "learned")
  # IWAE_k >= E[ELBO] (Burda et al. 2015, theorem 1), up to Monte Carlo error.
  assert float(iwae) >= -float(np.mean(neg_elbos)) - 0.05


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
  return evaluator.load_or_train(gen_data.dataset(), "banded",
                                 str(tmp_path_factory.mktemp("evaluators")),
                                 evaluator.TrainSettings(epochs=3, batch_size=64, feature_dim=32))


@pytest.mark.parametrize("prior", ["standard", "learned"])
def test_tiny_trained_cvae_samples_are_classified_as_their_label(judge, prior):
  dataset = gen_data.dataset()
  config = cvae_run.CVAEConfig(latent_dim=4, hidden=(64,), num_classes=10, prior=prior,
                               batch_size=16, learning_rate=3e-3, binarize="none")
  from genrl_jax.data import images  # noqa: PLC0415
  data = images.device_arrays(dataset, "none", with_labels=True)
  train = vae.make_train(config)
  exp = runner.Experiment(name="cvae", init=train.init, chunk=train.chunk, num_chunks=15, data=data)
  result = runner.run(exp, seeds=2, seed_loop="map", log=lambda s: None)
  accuracy, by_label = cvae_run.conditional_accuracy(result.state, train.static.model, config,
                                                     judge, 30)
  assert accuracy.shape == (2,) and by_label.shape == (2, 10)
  assert np.all(accuracy > 0.5), accuracy  # chance is 0.1
  # 30 samples of each label: the overall share is the mean of the per-label shares.
  np.testing.assert_allclose(by_label.mean(axis=1), accuracy, rtol=1e-12)


def test_sigkill_then_rerun_resumes_bit_identically(tmp_path):
  data = str(tmp_path / "data")
  gen_data.write_banded_idx(data, 800, 100)
  flags = ["--hidden=16", "--latent_dim=3", "--batch_size=16", "--epochs=6", "--seeds=2",
           "--eval_iw_samples=4", "--seed=3", "--prior=learned", "--samples_per_label=10",
           f"--evaluator_dir={tmp_path / 'evaluators'}"]
  reference, killed = sigkill_and_resume("experiments.cvae", flags, data, tmp_path, 6, "cvae")
  state = assert_same_final_state(reference, killed, 6)
  assert any("prior_mean" in str(k) for k in state)
  assert metrics_rows(reference) == metrics_rows(killed)
  with open(os.path.join(reference, "results.json")) as f, \
       open(os.path.join(killed, "results.json")) as g:
    ra, rb = json.load(f), json.load(g)
  for key in ("test_neg_elbo", "test_nll_iwae", "conditional_accuracy"):
    assert ra["metrics"][key]["per_seed"] == rb["metrics"][key]["per_seed"], key
  assert os.path.exists(os.path.join(reference, "conditional_samples.png"))
