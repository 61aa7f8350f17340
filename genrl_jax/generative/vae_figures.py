"""Figures of a VAE run: learning curves with seed bands, prior samples, reconstructions and the
2-D latent manifold (Kingma & Welling 2013, fig. 4). PNGs through genrl_jax.run.plots."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats as scipy_stats

from genrl_jax.generative import vae
from genrl_jax.run import plots


def _images(probs: jax.Array, image_shape) -> np.ndarray:
  """[N, P] pixel probabilities -> [N, H, W] for display (first channel)."""
  return np.asarray(probs).reshape((-1,) + tuple(image_shape))[..., 0]


def learning_curves(path: str, history: list[dict[str, np.ndarray]]) -> str:
  """Train and test -ELBO per epoch, mean over seeds with a 95 % bootstrap band."""
  epochs = np.arange(1, len(history) + 1)
  series = {label: np.stack([h[key] for h in history], axis=1)
            for key, label in (("loss", "train -ELBO"), ("test_neg_elbo", "test -ELBO"))
            if all(key in h for h in history)}
  n_seeds = next(iter(series.values())).shape[0]
  return plots.curves(path, epochs, series, xlabel="epoch", ylabel="nats per example",
                      title=f"VAE, mean over {n_seeds} seed(s), 95% CI band")


def prior_samples(path: str, model, params, key: jax.Array, config: vae.VAEConfig,
                  num: int = 64) -> str:
  """Bernoulli means sigmoid(decoder(z)) for z ~ p(z) = N(0, prior_std^2 I)."""
  z = config.prior_std * jax.random.normal(key, (num, config.latent_dim))
  probs = jax.nn.sigmoid(vae.decode(model, params, z))
  return plots.image_grid(path, _images(probs, config.image_shape),
                          title="samples from the prior (decoder means)")


def reconstructions(path: str, model, stacked_params, test_u8: jax.Array, config: vae.VAEConfig,
                    num: int = 10, max_seeds: int = 8, test_labels: jax.Array | None = None) -> str:
  """Row 0: test images; row s + 1: seed s's reconstruction sigmoid(decoder(mean of q(z|x)))
  (a CVAE's, with ``test_labels``: sigmoid(decoder(mean of q(z|x,y), y)))."""
  x = vae.to_targets(test_u8[:num])
  y = None if test_labels is None else vae.one_hot(test_labels[:num], config.num_classes)
  n_seeds = min(max_seeds, jax.tree.leaves(stacked_params)[0].shape[0])
  rows = [np.asarray(x)]
  for s in range(n_seeds):
    params = jax.tree.map(lambda a: a[s], stacked_params)
    mean, _ = vae.encode(model, params, x, y)
    rows.append(np.asarray(jax.nn.sigmoid(vae.decode(model, params, mean, y))))
  grid = _images(np.concatenate(rows), config.image_shape)
  labels = ["data"] + [f"seed {s}" for s in range(n_seeds)]
  return plots.image_grid(path, grid, rows=len(rows), row_labels=labels,
                          title="test images and reconstructions")


def latent_manifold(path: str, model, params, config: vae.VAEConfig, n: int = 15) -> str:
  """Decoder means over a grid of z at prior quantiles, for latent_dim = 2 (K&W 2013, fig. 4)."""
  if config.latent_dim != 2:
    raise ValueError("the latent manifold is drawn for latent_dim = 2 only")
  q = scipy_stats.norm.ppf(np.linspace(0.05, 0.95, n)) * config.prior_std
  z = np.stack(np.meshgrid(q, q[::-1]), axis=-1).reshape(-1, 2).astype(np.float32)
  probs = jax.nn.sigmoid(vae.decode(model, params, jnp.asarray(z)))
  return plots.image_grid(path, _images(probs, config.image_shape), rows=n,
                          title="latent manifold (decoder means on a prior-quantile grid)")


def write_all(workdir: str, model, stacked_params, history, test_u8, config: vae.VAEConfig,
              key: jax.Array) -> list[str]:
  """All figures of a run into ``workdir``; returns their paths. Seed 0 draws the single-model ones."""
  params0 = jax.tree.map(lambda a: a[0], stacked_params)
  paths = []
  if history:
    paths.append(learning_curves(os.path.join(workdir, "learning_curves.png"), history))
  paths.append(prior_samples(os.path.join(workdir, "prior_samples.png"), model, params0, key,
                             config))
  paths.append(reconstructions(os.path.join(workdir, "reconstructions.png"), model,
                               stacked_params, test_u8, config))
  if config.latent_dim == 2:
    paths.append(latent_manifold(os.path.join(workdir, "latent_manifold.png"), model, params0,
                                 config))
  return paths
