"""Action-value networks for discrete-action value learning (flax.linen).

Q(s, .) = MLP(s): one output per action (Mnih et al. 2015, "Human-level control through deep
reinforcement learning", the DQN head), on the same flattening MLP as the policies, so
classic-control vectors, bsuite grids and MinAtar images all fit.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from genrl_jax.models.policies import MLP


class QNetwork(nn.Module):
  """Q(s, a) for every action a; returns ``[..., num_actions]``."""
  hidden_sizes: Sequence[int]
  num_actions: int
  activation: str = "relu"
  obs_ndim: int = 1

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    return MLP(self.hidden_sizes, self.num_actions, self.activation, self.obs_ndim,
               out_scale=1.0)(obs)


def epsilon_greedy(key: jax.Array, q: jax.Array, epsilon: jax.Array) -> jax.Array:
  """a = argmax_a Q(s, a) with probability 1 - epsilon, else uniform over the A actions.

  (Sutton & Barto 2018, §2.2; the greedy action is also drawn in the epsilon branch with
  probability 1/A, as in Mnih et al. 2015.)

  Args:
    key: PRNG key.
    q: [..., A] action values.
    epsilon: scalar exploration probability.
  Returns:
    [...] int32 actions.
  """
  key_explore, key_action = jax.random.split(key)
  batch = q.shape[:-1]
  greedy = jnp.argmax(q, axis=-1).astype(jnp.int32)
  random = jax.random.randint(key_action, batch, 0, q.shape[-1], dtype=jnp.int32)
  explore = jax.random.uniform(key_explore, batch) < epsilon
  return jnp.where(explore, random, greedy)
