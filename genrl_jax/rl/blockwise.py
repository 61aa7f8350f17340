"""Block-wise passes over padded [T, N] rollout rows: forward values and accumulate gradients
over row slices, only as far as the rows hold real steps.

A whole-episode rollout (``rollout.episode_rollout``) is padded to T rows; rows past the last
real step are all zeros (mask 0). Slicing the rows into blocks of ``block`` and looping only over
the first ``ceil(steps_run / block)`` blocks (the max over the seeds' axis when it is bound)
gives exactly the full-batch sums, because padded rows contribute zero, at the cost of the real
rows only.
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp

from genrl_jax import losses

Array = chex.Array


def num_blocks(num_rows: Array, block: int, axis_name: str | None) -> Array:
  """Number of [block]-row slices covering ``num_rows`` (max over the seeds' axis if bound)."""
  n = (num_rows + block - 1) // block
  if axis_name is not None:
    try:
      n = jax.lax.pmax(n, axis_name)
    except NameError:
      pass
  return n


def slice_rows(tree, b: Array, block: int):
  """Rows [b * block, (b + 1) * block) of every leaf (leading axis = rows)."""
  return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, b * block, block, 0), tree)


def blockwise_values(value_params, value, obs: Array, num_blocks: Array, block: int) -> Array:
  """v(s) on the first ``num_blocks * block`` rows of [T, N, ...] observations (0 after)."""
  out = jnp.zeros(obs.shape[:2], jnp.float32)

  def body(b, out):
    v = value.apply(value_params, slice_rows(obs, b, block))
    return jax.lax.dynamic_update_slice_in_dim(out, v, b * block, 0)

  return jax.lax.fori_loop(0, num_blocks, body, out)


def batch_gradients(setup: Any, policy_params, value_params, traj, advantages: Array | None,
                    returns: Array, num_blocks: Array,
                    policy_loss: Callable[..., tuple[Array, tuple[Array, Array]]]):
  """Gradients of the policy and value losses averaged over the M real steps, by row blocks.

  Rows past ``num_blocks * block`` are padding (mask 0) and contribute exactly zero, so the sum
  over blocks equals the full-batch gradient. With ``advantages=None`` (a value baseline without
  normalization, where A_t = G_t - v(s_t) needs no batch statistics) each block's value forward
  serves both the advantage and the value gradient: one value pass instead of two.

  Args:
    setup: has ``config`` (``baseline``, ``entropy_coef``), ``policy``, ``value`` and
      ``block_steps``.
    policy_params, value_params: the networks' parameters.
    traj: Transition of [T, N] rows (obs, action, mask).
    advantages: [T, N] A_t, or None (fused with the value pass; needs baseline "value").
    returns: [T, N] G_t.
    num_blocks: blocks to visit (``num_blocks``).
    policy_loss: (params, policy, obs, action, adv, mask, entropy_coef) -> (summed loss,
      (surrogate sum, entropy sum)) over one block.
  Returns:
    (policy grads, value grads, advantages [T, N], dict of the averaged loss terms).
  """
  block = setup.block_steps
  cfg = setup.config
  use_value = cfg.baseline == "value"
  fused = advantages is None
  if fused and not use_value:
    raise ValueError("advantages=None needs baseline='value'")
  adv_all = jnp.zeros_like(returns) if fused else advantages
  rows = (traj.obs, traj.action, traj.mask, returns)
  zeros = lambda p: jax.tree.map(jnp.zeros_like, p)

  def value_fn(vp, obs, ret, mask):
    v = setup.value.apply(vp, obs)
    loss = jnp.sum(jax.vmap(losses.value_baseline_loss, in_axes=1)(v, ret, mask))
    return loss, v

  def body(b, acc):
    g_pi, g_v, sums, adv_all = acc
    obs, action, mask, ret = slice_rows(rows, b, block)
    if use_value:
      (v_loss, v), gv = jax.value_and_grad(value_fn, has_aux=True)(value_params, obs, ret, mask)
      g_v = jax.tree.map(jnp.add, g_v, gv)
    else:
      v_loss = jnp.zeros(())
    if fused:
      adv = jax.lax.stop_gradient((ret - v) * mask.astype(ret.dtype))
      adv_all = jax.lax.dynamic_update_slice_in_dim(adv_all, adv, b * block, 0)
    else:
      adv = slice_rows(adv_all, b, block)
    (_, (surr, ent)), g = jax.value_and_grad(policy_loss, has_aux=True)(
        policy_params, setup.policy, obs, action, adv, mask, cfg.entropy_coef)
    g_pi = jax.tree.map(jnp.add, g_pi, g)
    return g_pi, g_v, sums + jnp.stack([surr, ent, v_loss]), adv_all

  init = (zeros(policy_params), zeros(value_params), jnp.zeros((3,), jnp.float32), adv_all)
  g_pi, g_v, sums, adv_all = jax.lax.fori_loop(0, num_blocks, body, init)
  num_real = jnp.maximum(jnp.sum(traj.mask.astype(jnp.float32)), 1.0)
  scale = lambda g: jax.tree.map(lambda x: x / num_real, g)
  sums = sums / num_real
  return scale(g_pi), scale(g_v), adv_all, {"policy_loss": sums[0], "entropy": sums[1],
                                            "value_loss": sums[2]}
