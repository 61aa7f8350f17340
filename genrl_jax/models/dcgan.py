"""DCGAN generator and discriminator for 28x28 images (Radford, Metz & Chintala 2015).

The paper's guidelines (§3), scaled to 28x28: no pooling, strided convolutions in the
discriminator and fractionally strided (transposed) convolutions in the generator; batch norm in
the generator (not on its output layer); ReLU in the generator with a tanh output; LeakyReLU
(slope 0.2) in the discriminator; weights initialised from N(0, 0.02^2).

    G: z [Z] -> Dense(7*7*4w) -> BN -> ReLU -> ConvT(2w, 4x4, /2) -> BN -> ReLU       (14x14)
              -> ConvT(C, 4x4, /2) -> tanh                                            (28x28)
    D: x [28, 28, C] -> Conv(w, 4x4, /2) -> LReLU                                     (14x14)
              -> Conv(2w, 4x4, /2) -> LReLU -> Dense(1)                               (7x7)

The transposed convolutions are ``ConvTranspose4x4``: the same function and parameters as
``flax.linen.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")``, computed as one
3x3 convolution to 4 x features channels followed by a depth-to-space shuffle (the sub-pixel form
of a stride-2 transposed convolution; Shi et al. 2016, "Is the deconvolution layer the same as a
convolutional layer?"). On XLA's CPU backend the kernel gradient of ``lax.conv_transpose`` runs
about 10x slower than that of an ordinary convolution (114 ms vs 12 ms for 64 x [7, 7, 64] -> 32
channels), which made it 90 % of a training iteration.

Every convolution here is computed as patches @ kernel (``patch_conv``: strided slices of the
padded input, stacked, then one matmul): the same numbers as ``lax.conv_general_dilated``, and a
program of slices and matmuls only. XLA's CPU backend compiles convolutions inside a while loop
(a ``lax.scan`` over training iterations, a ``lax.map`` over seeds) with their gradients'
dimension layouts left uncanonicalised, to a generic loop 50-100x slower than the same
convolution outside a loop (a discriminator gradient: 4 ms alone, 470 ms per iteration in a
``fori_loop``); matmuls do not suffer from this, and batch over vmapped seeds as batched matmuls
rather than grouped convolutions.

``w`` is ``width`` (the discriminator's first layer); the generator's widths are 2w and 4w, as
in the paper's generator that halves the channels at each upsampling. The discriminator has no
batch norm, so its output for one example does not depend on the rest of the batch (the losses
in ``genrl_jax.losses`` are per example). Images are ``[..., H, W, C]`` in [-1, 1].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jnp.ndarray
_INIT = nn.initializers.normal(0.02)


# lax.conv_transpose(x, w, strides=2, padding="SAME") with a 4-tap kernel, per output phase r:
#   y[2m] = x[m-1] w[0] + x[m] w[2],   y[2m+1] = x[m] w[1] + x[m+1] w[3].
# _TAP[r, d + 1] is the tap k that multiplies x[m + d] in phase r (-1: none), for d in -1, 0, 1.
_TAP = np.array([[0, 2, -1], [-1, 1, 3]])


def subpixel_kernel(kernel: Array) -> Array:
  """[4, 4, I, O] transposed-conv kernel -> [3, 3, I, 2 * 2 * O] kernel of the equivalent
  stride-1 convolution whose output channels are (phase_h, phase_w, O)."""
  k_in, k_out = kernel.shape[2], kernel.shape[3]
  padded = jnp.concatenate([kernel, jnp.zeros((1, 4, k_in, k_out), kernel.dtype)], axis=0)
  padded = jnp.concatenate([padded, jnp.zeros((5, 1, k_in, k_out), kernel.dtype)], axis=1)
  taps = np.where(_TAP < 0, 4, _TAP)  # index 4 is the zero row/column
  # out[dh, dw, i, rh, rw, o] = padded[taps[rh, dh], taps[rw, dw], i, o]
  gathered = padded[taps.T[:, None, :, None], taps.T[None, :, None, :]]  # [dh, dw, rh, rw, I, O]
  return jnp.transpose(gathered, (0, 1, 4, 2, 3, 5)).reshape(3, 3, k_in, 4 * k_out)


def patch_conv(x: Array, kernel: Array, stride: int) -> Array:
  """``lax.conv_general_dilated(x, kernel, (stride, stride), "SAME")`` for x [B, H, W, I] (NHWC)
  and kernel [k, k, I, O] (HWIO), as im2col: the k*k strided slices of the padded input stacked
  into [B, H', W', k*k*I] patches, times the kernel reshaped to [k*k*I, O]."""
  k = kernel.shape[0]
  b, h, w, c = x.shape
  out_h, out_w = -(-h // stride), -(-w // stride)
  pad_h = max((out_h - 1) * stride + k - h, 0)
  pad_w = max((out_w - 1) * stride + k - w, 0)
  xp = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                   (0, 0)))
  patches = [xp[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride, :]
             for i in range(k) for j in range(k)]
  patches = jnp.stack(patches, axis=3).reshape(b, out_h, out_w, k * k * c)
  return patches @ kernel.reshape(k * k * c, kernel.shape[3])


class PatchConv(nn.Module):
  """k x k convolution with bias and "SAME" padding, computed by ``patch_conv``; equal to
  ``nn.Conv(features, (k, k), strides=(stride, stride), padding="SAME")`` with the same
  parameters."""
  features: int
  kernel_size: int = 4
  stride: int = 2
  kernel_init: nn.initializers.Initializer = _INIT

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return patch_conv(x, kernel, self.stride) + bias


class ConvTranspose4x4(nn.Module):
  """Stride-2 4x4 transposed convolution, [B, H, W, I] -> [B, 2H, 2W, O]; equal to
  ``nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")`` with the same ``kernel``
  [4, 4, I, O] and ``bias`` [O] parameters, computed in sub-pixel form (see the module docstring)."""
  features: int
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = _INIT

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features))
    y = patch_conv(x, subpixel_kernel(kernel), 1)
    b, h, w, _ = x.shape
    y = y.reshape(b, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
    y = y.reshape(b, 2 * h, 2 * w, self.features)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


class Generator(nn.Module):
  """z [B, Z] -> images [B, H, W, C] in (-1, 1); batch norm keeps running statistics in
  the ``batch_stats`` collection (used when ``train=False``)."""
  width: int = 32
  image_shape: tuple[int, int, int] = (28, 28, 1)
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, z: Array, train: bool = True) -> Array:
    height, width_px, channels = self.image_shape
    h0, w0 = height // 4, width_px // 4
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                     name=name)
    h = nn.Dense(h0 * w0 * 4 * self.width, kernel_init=_INIT, name="project")(z)
    h = nn.relu(norm("bn_0")(h))
    h = h.reshape((z.shape[0], h0, w0, 4 * self.width))
    h = ConvTranspose4x4(2 * self.width, use_bias=False, name="deconv_0")(h)
    h = nn.relu(norm("bn_1")(h))
    h = ConvTranspose4x4(channels, name="deconv_1")(h)
    return jnp.tanh(h)


class Discriminator(nn.Module):
  """images [B, H, W, C] in [-1, 1] -> logits [B] of "real"."""
  width: int = 32
  negative_slope: float = 0.2

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = PatchConv(self.width, name="conv_0")(x)
    h = nn.leaky_relu(h, self.negative_slope)
    h = PatchConv(2 * self.width, name="conv_1")(h)
    h = nn.leaky_relu(h, self.negative_slope)
    h = h.reshape((h.shape[0], -1))
    return nn.Dense(1, kernel_init=_INIT, name="logit")(h)[:, 0]
