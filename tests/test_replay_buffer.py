"""The replay buffer DQN keeps in its state (flashbax's item buffer): wrap-around, sampling
uniform over the filled slots only, vmap over seeds, a checkpoint round trip as plain arrays."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from genrl_jax.rl import dqn
from genrl_jax.run.checkpoint import Checkpointer


def _item():
  return {"x": jnp.zeros((), jnp.int32), "v": jnp.zeros((2,), jnp.float32)}


def _batch(values):
  values = jnp.asarray(values, jnp.int32)
  return {"x": values, "v": jnp.stack([values, -values], axis=1).astype(jnp.float32)}


def test_wrap_around_overwrites_the_oldest_in_order():
  buf = dqn.make_buffer(capacity=7, batch_size=3)
  state = buf.init(_item())
  stored = []  # a Python ring buffer: the expected contents
  for start in range(0, 5 * 3, 3):                 # 15 items into 7 slots: wraps twice
    new = list(range(start, start + 3))
    state = buf.add(state, _batch(new))
    stored.extend(new)
  expected = [None] * 7
  for i, v in enumerate(stored):
    expected[i % 7] = v
  np.testing.assert_array_equal(np.asarray(state.experience["x"])[0], expected)
  np.testing.assert_array_equal(np.asarray(state.experience["v"])[0, :, 1], -np.asarray(expected))
  assert int(state.current_index) == 15 % 7 and bool(state.is_full)


def test_sampling_is_uniform_over_filled_slots_only():
  """5 of 16 slots filled (values 100..104): every sample is one of them, and the counts of
  20000 draws pass a chi-square test of uniformity; then full after a wrap: all 16 slots."""
  buf = dqn.make_buffer(capacity=16, batch_size=16)
  state = buf.add(buf.init(_item()), _batch(np.arange(100, 105)))
  sample = jax.jit(jax.vmap(lambda s, k: buf.sample(s, k).experience["x"], in_axes=(None, 0)))
  draws = np.asarray(sample(state, jax.random.split(jax.random.key(0), 1250))).ravel()
  assert set(np.unique(draws)) == set(range(100, 105))       # never an empty slot (value 0)
  counts = np.bincount(draws - 100, minlength=5)
  assert stats.chisquare(counts).pvalue > 1e-3, counts
  # The chi-square test does have power here: a sampler that favoured one slot by 10% fails.
  biased = counts.astype(float) * np.asarray([1.1, 1, 1, 1, 1])
  assert stats.chisquare(biased, biased.sum() / 5).pvalue < 1e-3

  state = buf.add(state, _batch(np.arange(200, 215)))          # 20 items: full, wrapped
  draws = np.asarray(sample(state, jax.random.split(jax.random.key(1), 2000))).ravel()
  slots = np.asarray(state.experience["x"])[0]
  assert set(np.unique(draws)) == set(slots.tolist()) and len(set(slots.tolist())) == 16
  counts = np.asarray([np.sum(draws == v) for v in slots])
  assert stats.chisquare(counts).pvalue > 1e-3, counts


def test_buffers_of_vmapped_seeds_are_independent_and_checkpoint(tmp_path):
  buf = dqn.make_buffer(capacity=8, batch_size=4)

  def step(state, key):
    new = jax.random.randint(key, (3,), 0, 1000)
    state = buf.add(state, _batch(new))
    return state, buf.sample(state, key).experience["x"]

  keys = jax.random.split(jax.random.key(3), 2)
  states = jax.vmap(lambda _: buf.init(_item()))(keys)
  states, samples = jax.jit(jax.vmap(step))(states, keys)
  for i in range(2):  # seed i alone gives the same buffer and sample
    single, sample = jax.jit(step)(buf.init(_item()), keys[i])
    np.testing.assert_array_equal(states.experience["x"][i], single.experience["x"])
    np.testing.assert_array_equal(samples[i], sample)
  assert not np.array_equal(states.experience["x"][0], states.experience["x"][1])

  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(1, states)
  restored, step_ = ckpt.restore(template=jax.vmap(lambda _: buf.init(_item()))(keys))
  ckpt.close()
  assert step_ == 1 and type(restored) is type(states)
  for a, b in zip(jax.tree.leaves(states), jax.tree.leaves(restored)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
