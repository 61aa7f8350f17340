"""Diagnostics of a policy-gradient estimator: its spread at a fixed policy.

tr Cov[g] = sum_i Var[g_i] of the gradient estimate over independent batches, and ||E[g]||^2:
at the same policy, a lower tr Cov[g] is the variance reduction a baseline or reward-to-go buys
(Greensmith, Bartlett & Baxter 2004).
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp

Array = chex.Array


def gradient_variance(sample_gradient: Callable[[chex.PRNGKey], Any], key: chex.PRNGKey,
                      num_samples: int, axis_name: str | None = None) -> tuple[Array, Array]:
  """(tr Cov[g], ||mean g||^2) of ``num_samples`` draws of ``sample_gradient(key)``.

  Args:
    sample_gradient: key -> a gradient pytree, one independent batch per key.
    key: PRNG key, split into ``num_samples`` keys.
    num_samples: draws (>= 2 for the unbiased variance).
    axis_name: name bound on the vmap over draws (for collectives inside the sampler).
  Returns:
    (sum_i Var[g_i] with ddof=1, ||mean g||^2), scalars.
  """
  def one(k):
    return jax.flatten_util.ravel_pytree(sample_gradient(k))[0]

  grads = jax.jit(jax.vmap(one, axis_name=axis_name))(jax.random.split(key, num_samples))
  return jnp.sum(jnp.var(grads, axis=0, ddof=1)), jnp.sum(jnp.square(jnp.mean(grads, axis=0)))
