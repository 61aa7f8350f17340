"""Convolutions computed as matmuls, for XLA's CPU backend inside training loops.

Every convolution is computed as patches @ kernel (``patch_conv``: strided slices of the
padded input, stacked, then one matmul): the same numbers as ``lax.conv_general_dilated``, and a
program of slices and matmuls only. XLA's CPU backend compiles convolutions inside a while loop
(a ``lax.scan`` over training iterations, a ``lax.map`` over seeds) with their gradients'
dimension layouts left uncanonicalised, to a generic loop 50-100x slower than the same
convolution outside a loop (a discriminator gradient: 4 ms alone, 470 ms per iteration in a
``fori_loop``); matmuls do not suffer from this, and batch over vmapped seeds as batched matmuls
rather than grouped convolutions.

Transposed convolutions are ``ConvTranspose4x4``: the same function and parameters as
``flax.linen.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")``, computed in
scatter (col2im) form: one matmul of every input pixel with all 16 kernel taps, then an
overlap-add of the 4x4 output tiles (``scatter_conv_transpose``). That is exactly the transposed
convolution's multiply count (H W I 16 O per example), 2.25x fewer than the sub-pixel form (a
3x3 convolution to 4 O channels, 5 of whose 9 taps are zero per phase), and its gradients are a
matmul each plus shifted slices. On XLA's CPU backend the kernel gradient of
``lax.conv_transpose`` runs about 10x slower than that of an ordinary convolution (114 ms vs
12 ms for 64 x [7, 7, 64] -> 32 channels); the scatter form's forward + backward took 17 ms where
the sub-pixel form took 27 ms.

Used by the DCGAN (``dcgan``), the VAE's ``--arch=conv`` (``vae``) and the evaluator's classifier.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

Array = jnp.ndarray
_FLAX_DEFAULT_INIT = nn.initializers.lecun_normal()  # nn.Conv's and nn.ConvTranspose's


def scatter_conv_transpose(x: Array, kernel: Array) -> Array:
  """``lax.conv_transpose(x, kernel, (2, 2), "SAME")`` for x [B, H, W, I] and a 4x4 kernel
  [4, 4, I, O] (flax's ConvTranspose layout) -> [B, 2H, 2W, O], in scatter (col2im) form.

  Per axis, stride 2 with 4 taps and "SAME" padding gives y[2m - 1 + t] += x[m] w[3 - t],
  t = 0..3. Write t = 2a + p (a: which of two neighbouring input pixels, p: the output phase):
  one matmul P = x @ W' with W'[i, (t_h, t_w, o)] = w[3 - t_h, 3 - t_w, i, o] gives every
  pixel's 4x4 output tile; the tiles are added into a padded output of size 2H + 2 as
  Q_p[m'] = P[m', a=0, p] + P[m' - 1, a=1, p] (m' = 0..H), interleaved as y_pad[2m' + p] = Q_p[m'],
  and y = y_pad[1 : 2H + 1].
  """
  b, h, w, i = x.shape
  o = kernel.shape[3]
  taps = jnp.transpose(kernel[::-1, ::-1], (2, 0, 1, 3)).reshape(i, 16 * o)
  tiles = (x.reshape(b * h * w, i) @ taps).reshape(b, h, w, 2, 2, 2, 2, o)  # a_h p_h a_w p_w

  # Along H: tiles[:, m, :, a_h] lands on m' = m + a_h.
  pad_h = lambda t, before: jnp.pad(t, [(0, 0), (before, 1 - before)] + [(0, 0)] * (t.ndim - 2))
  rows = pad_h(tiles[:, :, :, 0], 0) + pad_h(tiles[:, :, :, 1], 1)  # [B, H+1, W, p_h, a_w, p_w, O]
  pad_w = lambda t, before: jnp.pad(t, [(0, 0), (0, 0), (before, 1 - before)]
                                    + [(0, 0)] * (t.ndim - 3))
  both = pad_w(rows[:, :, :, :, 0], 0) + pad_w(rows[:, :, :, :, 1], 1)  # [B, H+1, W+1, p_h, p_w, O]
  y = jnp.transpose(both, (0, 1, 3, 2, 4, 5)).reshape(b, 2 * h + 2, 2 * w + 2, o)
  return y[:, 1:2 * h + 1, 1:2 * w + 1]


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
  kernel_init: nn.initializers.Initializer = _FLAX_DEFAULT_INIT
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
    y = patch_conv(x, kernel, self.stride)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


class ConvTranspose4x4(nn.Module):
  """Stride-2 4x4 transposed convolution, [B, H, W, I] -> [B, 2H, 2W, O]; equal to
  ``nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")`` with the same ``kernel``
  [4, 4, I, O] and ``bias`` [O] parameters, computed in scatter form
  (``scatter_conv_transpose``)."""
  features: int
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = _FLAX_DEFAULT_INIT

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features))
    y = scatter_conv_transpose(x, kernel)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y
