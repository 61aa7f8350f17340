"""The matmul-form convolutions equal flax's convolution layers: same function on the same
parameters, and the same parameters from the same key (so swapping them in changes no result)."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from genrl_jax.models import conv


def _random_params(variables, seed=2):
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


@pytest.mark.parametrize("shape", [(2, 7, 7, 3), (1, 5, 6, 2), (3, 1, 2, 4)])
def test_scatter_transposed_conv_equals_flax_conv_transpose(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  ours = conv.ConvTranspose4x4(4)
  variables = _random_params(ours.init(jax.random.key(1), x))
  reference = nn.ConvTranspose(4, (4, 4), strides=(2, 2), padding="SAME").apply(variables, x)
  np.testing.assert_allclose(ours.apply(variables, x), reference, atol=1e-4)


@pytest.mark.parametrize("shape,kernel,stride", [((2, 28, 28, 1), 4, 2), ((1, 14, 14, 3), 4, 2),
                                                 ((1, 7, 7, 2), 4, 2), ((2, 28, 28, 1), 3, 2),
                                                 ((1, 9, 8, 2), 3, 1)])
def test_patch_conv_equals_flax_conv(shape, kernel, stride):
  x = jax.random.normal(jax.random.key(0), shape)
  ours = conv.PatchConv(5, kernel, stride)
  variables = _random_params(ours.init(jax.random.key(1), x))
  reference = nn.Conv(5, (kernel, kernel), strides=(stride, stride), padding="SAME")
  np.testing.assert_allclose(ours.apply(variables, x), reference.apply(variables, x), atol=1e-4)


def test_default_initialisation_equals_flax_layers():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  key = jax.random.key(7)
  pairs = [(conv.PatchConv(6, 4, 2), nn.Conv(6, (4, 4), strides=(2, 2), padding="SAME")),
           (conv.ConvTranspose4x4(6), nn.ConvTranspose(6, (4, 4), strides=(2, 2), padding="SAME"))]
  for ours, theirs in pairs:
    a, b = ours.init(key, x), theirs.init(key, x)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(u, v)
