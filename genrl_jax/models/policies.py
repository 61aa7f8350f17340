"""Policy and value networks for discrete-action RL (flax.linen).

Observations of any shape are flattened, so classic-control vectors, bsuite grids and MinAtar
images all go through the same MLP. Both heads start small (output layer scaled by 0.01 for the
policy, as in Andrychowicz et al. 2021, "What matters in on-policy RL", §3.2), so the initial
policy is close to uniform.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "elu": nn.elu,
}


class MLP(nn.Module):
  """Fully connected network: flatten the trailing ``obs_ndim`` axes, hidden layers, linear out.

  Attributes:
    hidden_sizes: widths of the hidden layers (may be empty: a linear model).
    out_dim: output width.
    activation: one of ``ACTIVATIONS``.
    obs_ndim: number of trailing axes that make one observation; leading axes are batch axes.
    out_scale: scale of the orthogonal initialisation of the output layer.
  """
  hidden_sizes: Sequence[int]
  out_dim: int
  activation: str = "tanh"
  obs_ndim: int = 1
  out_scale: float = 1.0

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    batch_shape = obs.shape[:obs.ndim - self.obs_ndim]
    x = jnp.reshape(obs, batch_shape + (-1,)).astype(jnp.float32)
    act = ACTIVATIONS[self.activation]
    for width in self.hidden_sizes:
      x = act(nn.Dense(width, kernel_init=nn.initializers.orthogonal(jnp.sqrt(2.0)))(x))
    return nn.Dense(self.out_dim, kernel_init=nn.initializers.orthogonal(self.out_scale))(x)


class CategoricalPolicy(nn.Module):
  """pi(a | s) = softmax(MLP(s))_a; returns the logits ``[..., num_actions]``."""
  hidden_sizes: Sequence[int]
  num_actions: int
  activation: str = "tanh"
  obs_ndim: int = 1

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    return MLP(self.hidden_sizes, self.num_actions, self.activation, self.obs_ndim,
               out_scale=0.01)(obs)


class ValueNetwork(nn.Module):
  """State-value baseline v(s) = MLP(s); returns ``[...]`` (the output axis is squeezed)."""
  hidden_sizes: Sequence[int]
  activation: str = "tanh"
  obs_ndim: int = 1

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    return MLP(self.hidden_sizes, 1, self.activation, self.obs_ndim, out_scale=1.0)(obs)[..., 0]


def sample_actions(key: jax.Array, logits: jax.Array) -> jax.Array:
  """a ~ softmax(logits) for each row, by inverting the CDF with one uniform draw per row.

  P(a = k) = P(F_{k-1} <= u < F_k) = pi_k with F the cumulative sum of pi: the distribution of
  ``jax.random.categorical`` (Gumbel-max), from one random number per row instead of one per
  action and no logarithms: cheaper inside a rollout loop.

  Args:
    key: PRNG key.
    logits: [..., A].
  Returns:
    [...] int32 actions.
  """
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  u = jax.random.uniform(key, logits.shape[:-1] + (1,), jnp.float32)
  cdf = jnp.cumsum(probs, axis=-1)[..., :-1]
  return jnp.sum(cdf <= u, axis=-1, dtype=jnp.int32)
