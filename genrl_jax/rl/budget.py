"""The env-step budget loop every RL algorithm here stands on, its curve marks and the
recent-returns window.

An RL run has a budget of env steps (or of updates) per seed, cut into ``num_chunks`` equal
intervals. A chunk runs the algorithm's update (one "iteration": e.g. N whole episodes for
REINFORCE, N x K auto-reset steps plus gradient steps for DQN) in a ``lax.while_loop`` until the
seed's counter reaches the chunk's end, so every seed's chunk k ends at the same x on an
env-steps axis (overshooting by less than one update) and the run ends at the budget:

    end_k = ceil(budget * k / num_chunks),        k = 0..num_chunks.

Inside a chunk the learning curve is recorded at ``points_per_chunk`` marks equally spaced in
[end_{k-1}, end_k]: the first update whose counter reaches mark j records the curve values it
produced (``curve_fn``), so curves of several seeds share their x positions.

The recent-returns window holds the returns of the last ``RECENT_EPISODES`` episodes that ended,
oldest first: the "average return over the last 100 episodes" of Gym's solved criterion.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import chex
import jax
import jax.numpy as jnp

from genrl_jax.rl import rollout

Array = chex.Array
RECENT_EPISODES = 100  # window of the "average return over the last 100 episodes"


def chunk_end(budget: int, num_chunks: int, chunk: int) -> int:
  """The counter value at which chunk ``chunk`` (1-based; 0 = the start) ends."""
  return -(-budget * chunk // num_chunks)


def curve_marks(budget: int, num_chunks: int, points_per_chunk: int) -> list[int]:
  """The counter values of all recorded learning-curve points, chunk after chunk."""
  out = []
  for c in range(num_chunks):
    start, end = chunk_end(budget, num_chunks, c), chunk_end(budget, num_chunks, c + 1)
    out += [start + (end - start) * j // points_per_chunk for j in range(1, points_per_chunk + 1)]
  return out


def push_recent(recent: Array, count: Array, new: Array, valid: Array) -> tuple[Array, Array]:
  """Appends the valid entries of ``new`` (in order) to a chronological window, dropping the oldest.

  Args:
    recent: [W] window, oldest first; its last ``count`` entries are filled.
    count: scalar int, filled entries.
    new: [N] candidate returns, in chronological order.
    valid: [N] bool, which of ``new`` are real (episodes that ended).
  Returns:
    (the new [W] window, the new count = min(count + #valid, W)).
  """
  order = jnp.argsort(jnp.logical_not(valid), stable=True)   # valid entries first, in order
  num_new = jnp.sum(valid.astype(jnp.int32))
  combined = jnp.concatenate([recent, new[order]])           # [W + N]
  shifted = jax.lax.dynamic_slice_in_dim(combined, num_new, recent.shape[0])
  return shifted, jnp.minimum(count + num_new, recent.shape[0])


def recent_mean(recent: Array, count: Array) -> Array:
  """Mean of the filled entries of a ``push_recent`` window; 0 before the first episode."""
  window = recent.shape[0]
  filled = jnp.arange(window) >= window - count
  return jnp.sum(recent * filled) / jnp.maximum(count, 1)


def empty_recent() -> tuple[Array, Array]:
  """An empty window: ([RECENT_EPISODES] zeros, count 0)."""
  return jnp.zeros((RECENT_EPISODES,), jnp.float32), jnp.zeros((), jnp.int32)


def chunk_bounds(budget: int, num_chunks: int, chunk: Array) -> tuple[Array, Array]:
  """(start, end) counter values of the chunk after ``chunk`` completed ones (traced index)."""
  ends = jnp.asarray([chunk_end(budget, num_chunks, c) for c in range(num_chunks + 1)], jnp.int32)
  index = jnp.minimum(chunk, num_chunks - 1)
  return ends[index], ends[index + 1]


def run_until(update: Callable[[Any], tuple[Any, dict[str, Array]]], state: Any, *,
              start: Array, end: Array, counter: Callable[[Any], Array], points: int,
              sum_keys: Sequence[str], max_keys: Mapping[str, str],
              curve_fn: Callable[[Any, dict[str, Array]], dict[str, Array]],
              seed_axis: str | None, lockstep: bool = False) -> tuple[Any, dict[str, Array]]:
  """Applies ``update`` until ``counter(state) >= end``; sums and maxima of its metrics, curve.

  Under a vmap that names ``seed_axis`` the loop runs until every seed is done, and a seed that
  is done keeps its state (its extra updates are discarded), so each seed's result does not
  depend on the others.

  Args:
    update: state -> (state, metrics of scalars): one iteration of the algorithm.
    state: the seed's state at the chunk's start.
    start, end: the chunk's counter interval.
    counter: state -> the budget counter (env steps or updates).
    points: learning-curve marks in the chunk, at start + (end - start) * j // points.
    sum_keys: metrics summed over the chunk's (active) updates.
    max_keys: {output name: metric}: maxima over the chunk's updates (0 floor).
    curve_fn: (state after the update, its metrics) -> {name: value} recorded at each mark.
    seed_axis: the seeds' vmap axis name, or None.
    lockstep: every update moves every seed's counter by the same amount (e.g. a fixed number
      of env steps), so all seeds start and end the chunk together and no seed is ever done
      while another runs: the per-seed select of the whole state (a copy of, e.g., a replay
      buffer per update) is skipped.
  Returns:
    (state at the chunk's end, acc) where acc holds the sums (``sum_keys``), ``updates`` (the
    number applied), the maxima, each curve value as a [points] array, and ``recorded``.
  """
  marks = start + ((end - start) * jnp.arange(1, points + 1)) // points      # [P]

  def cond(carry):
    s, _ = carry
    return rollout.any_over_axis(counter(s) < end, seed_axis)

  def body(carry):
    s, acc = carry
    active = counter(s) < end
    new_s, m = update(s)
    crossed = active & ~acc["recorded"] & (marks <= counter(new_s))             # [P]
    s = new_s if lockstep else jax.tree.map(lambda a, b: jnp.where(active, a, b), new_s, s)
    acc = {k: acc[k] + jnp.where(active, m[k], 0.0) for k in sum_keys} | {
        "updates": acc["updates"] + active.astype(jnp.float32)} | {
        out: jnp.maximum(acc[out], jnp.where(active, m[key], 0.0))
        for out, key in max_keys.items()} | {
        name: jnp.where(crossed, value, acc[name])
        for name, value in curve_fn(new_s, m).items()} | {
        "recorded": acc["recorded"] | crossed}
    return s, acc

  acc0 = {k: jnp.zeros((), jnp.float32) for k in tuple(sum_keys) + ("updates",) + tuple(max_keys)}
  curve_shapes = jax.eval_shape(lambda s: curve_fn(*update(s)), state)
  acc0 |= {name: jnp.zeros((points,) + v.shape, v.dtype) for name, v in curve_shapes.items()}
  acc0["recorded"] = jnp.zeros((points,), bool)
  return jax.lax.while_loop(cond, body, (state, acc0))
