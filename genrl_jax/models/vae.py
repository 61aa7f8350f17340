"""Encoder/decoder modules of the variational autoencoder (Kingma & Welling 2013, appendix C).

q(z|x) = N(mu(x), diag(exp(log_var(x)))) from an encoder with a mean head and a log-variance head;
p(x|z) = prod_j Bernoulli(x_j; sigmoid(l_j(z))) from a decoder that outputs logits l(z).

Conditional VAE (Sohn, Lee & Yan 2015, "Learning structured output representation using deep
conditional generative models"): with ``num_classes > 0`` the label's one-hot vector y is an
input of q(z|x,y) and p(x|z,y) — concatenated to x (MLP) or to the flattened convolution
features (conv) in the encoder, and to z in the decoder — and ``prior(y)`` gives the parameters
of a label-conditional prior p(z|y) = N(mu(y), diag(exp(log_var(y)))) (one linear layer on y,
i.e. a learned mean and log-variance per label).

Images travel as flat pixel vectors ``[..., P]`` (P = H * W * C) with values in [0, 1]; the conv
modules reshape to ``[..., H, W, C]`` internally. Any number of leading batch axes is accepted, so
the same module serves one example (under ``jax.vmap``) and whole batches.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from genrl_jax.models import conv

Array = jnp.ndarray
ARCHS = ("mlp", "conv")


def _flatten_leading(x: Array, trailing: int) -> tuple[Array, tuple[int, ...]]:
  """Collapses all but the last ``trailing`` axes into one batch axis (added if absent)."""
  lead = x.shape[:x.ndim - trailing]
  return x.reshape((math.prod(lead),) + x.shape[x.ndim - trailing:]), lead


class MLPEncoder(nn.Module):
  """x [..., P] -> (mean, log_var) [..., D]: ReLU hidden layers, then two linear heads."""
  hidden: Sequence[int]
  latent_dim: int

  @nn.compact
  def __call__(self, x: Array, y: Array | None = None) -> tuple[Array, Array]:
    h = x if y is None else jnp.concatenate([x, y], axis=-1)
    for i, width in enumerate(self.hidden):
      h = nn.relu(nn.Dense(width, name=f"hidden_{i}")(h))
    return nn.Dense(self.latent_dim, name="mean")(h), nn.Dense(self.latent_dim, name="log_var")(h)


class MLPDecoder(nn.Module):
  """z [..., D] -> Bernoulli logits [..., P]: ReLU hidden layers (reversed), then a linear layer."""
  hidden: Sequence[int]
  num_pixels: int

  @nn.compact
  def __call__(self, z: Array, y: Array | None = None) -> Array:
    h = z if y is None else jnp.concatenate([z, y], axis=-1)
    for i, width in enumerate(reversed(self.hidden)):
      h = nn.relu(nn.Dense(width, name=f"hidden_{i}")(h))
    return nn.Dense(self.num_pixels, name="logits")(h)


class ConvEncoder(nn.Module):
  """x [..., H*W*C] -> (mean, log_var) [..., D].

  Two 4x4 stride-2 convolutions (32, 64 channels, ReLU), a ReLU dense layer of width hidden[-1],
  then the two linear heads. H and W must be divisible by 4. The convolutions are
  ``conv.PatchConv`` / ``conv.ConvTranspose4x4``: flax's ``nn.Conv`` / ``nn.ConvTranspose`` as
  matmuls (same parameters), which XLA's CPU backend runs fast inside the epoch's scan.
  """
  hidden: Sequence[int]
  latent_dim: int
  image_shape: tuple[int, int, int]

  @nn.compact
  def __call__(self, x: Array, y: Array | None = None) -> tuple[Array, Array]:
    x, lead = _flatten_leading(x, 1)
    h = x.reshape((x.shape[0],) + tuple(self.image_shape))
    h = nn.relu(conv.PatchConv(32, name="conv_0")(h))
    h = nn.relu(conv.PatchConv(64, name="conv_1")(h))
    h = h.reshape((h.shape[0], -1))
    if y is not None:
      h = jnp.concatenate([h, _flatten_leading(y, 1)[0]], axis=-1)
    h = nn.relu(nn.Dense(self.hidden[-1], name="hidden")(h))
    mean = nn.Dense(self.latent_dim, name="mean")(h)
    log_var = nn.Dense(self.latent_dim, name="log_var")(h)
    return mean.reshape(lead + mean.shape[1:]), log_var.reshape(lead + log_var.shape[1:])


class ConvDecoder(nn.Module):
  """z [..., D] -> logits [..., H*W*C]: the mirror of ``ConvEncoder`` with transposed convs."""
  hidden: Sequence[int]
  image_shape: tuple[int, int, int]

  @nn.compact
  def __call__(self, z: Array, y: Array | None = None) -> Array:
    if y is not None:
      z = jnp.concatenate([z, y], axis=-1)
    z, lead = _flatten_leading(z, 1)
    height, width, channels = self.image_shape
    h = nn.relu(nn.Dense(self.hidden[-1], name="hidden")(z))
    h = nn.relu(nn.Dense((height // 4) * (width // 4) * 64, name="project")(h))
    h = h.reshape((h.shape[0], height // 4, width // 4, 64))
    h = nn.relu(conv.ConvTranspose4x4(32, name="deconv_0")(h))
    h = conv.ConvTranspose4x4(channels, name="deconv_1")(h)
    return h.reshape(lead + (height * width * channels,))


class VAE(nn.Module):
  """Gaussian encoder q(z|x) and Bernoulli decoder p(x|z).

  Attributes:
    latent_dim: D, the size of z.
    hidden: widths of the hidden layers (encoder order; the decoder mirrors them).
    image_shape: (H, W, C) of one image; P = H * W * C pixels.
    arch: "mlp" or "conv".
    num_classes: K > 0 makes it a conditional VAE: encode, decode and prior take the label
      one-hot y [..., K]; 0 = unconditional (y must be None).
  """
  latent_dim: int
  hidden: Sequence[int] = (400,)
  image_shape: tuple[int, int, int] = (28, 28, 1)
  arch: str = "mlp"
  num_classes: int = 0

  def setup(self):
    if self.arch == "mlp":
      self.encoder = MLPEncoder(tuple(self.hidden), self.latent_dim)
      self.decoder = MLPDecoder(tuple(self.hidden), math.prod(self.image_shape))
    elif self.arch == "conv":
      self.encoder = ConvEncoder(tuple(self.hidden), self.latent_dim, tuple(self.image_shape))
      self.decoder = ConvDecoder(tuple(self.hidden), tuple(self.image_shape))
    else:
      raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
    if self.num_classes:
      self.prior_mean = nn.Dense(self.latent_dim, name="prior_mean")
      self.prior_log_var = nn.Dense(self.latent_dim, name="prior_log_var")

  def encode(self, x: Array, y: Array | None = None) -> tuple[Array, Array]:
    """x [..., P] in [0, 1] (and y [..., K]) -> (mean, log_var), each [..., D]."""
    return self.encoder(x, y)

  def decode(self, z: Array, y: Array | None = None) -> Array:
    """z [..., D] (and y [..., K]) -> Bernoulli logits [..., P]."""
    return self.decoder(z, y)

  def prior(self, y: Array) -> tuple[Array, Array]:
    """The learned prior p(z|y): y [..., K] one-hot -> (mean, log_var), each [..., D]."""
    return self.prior_mean(y), self.prior_log_var(y)

  def __call__(self, x: Array, y: Array | None = None) -> tuple[Array, Array, Array]:
    """Deterministic pass x -> (mean, log_var, logits at z = mean); used to create parameters
    (with y, also the learned prior's)."""
    mean, log_var = self.encode(x, y)
    if y is not None:
      self.prior(y)  # creates the prior's parameters (unused by the standard-normal prior)
    return mean, log_var, self.decode(mean, y)
