"""The one place that talks to orbax: save, find and restore the runner's state.

State pytrees may hold typed PRNG keys; orbax stores arrays, so keys go to disk as
``jax.random.key_data`` and are re-wrapped from the template's key type on restore. Arrays are
copied to host before an (asynchronous) save, so buffers donated to the next chunk cannot race
the writer.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from genrl_jax.run.errors import UserError


def _is_key(x) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_storable(state):
  """Typed keys -> their uint32 key data; everything copied to host numpy."""
  state = jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)
  return jax.device_get(state)


def from_storable(stored, template):
  """Inverse of ``to_storable`` given a template state of the same structure."""
  def restore_leaf(saved, like):
    if _is_key(like):
      return jax.random.wrap_key_data(np.asarray(saved), impl=jax.random.key_impl(like))
    return jax.numpy.asarray(saved, dtype=like.dtype)
  return jax.tree.map(restore_leaf, stored, template)


class Checkpointer:
  """Keeps the latest ``keep`` checkpoints of a state pytree under ``directory``."""

  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(n=keep), create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(to_storable(state)))

  def restore(self, template) -> tuple[object, int]:
    """Restores the newest readable checkpoint into ``template``'s structure: (state, step).

    A checkpoint that cannot be read (truncated file, wrong structure) is left on disk untouched
    and the next older one is tried; if none can be read, one clear error.
    """
    target = to_storable(template)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), target)
    failures = []
    for step in reversed(self.all_steps()):
      try:
        stored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return from_storable(stored, template), step
      except Exception as e:  # noqa: BLE001 -- any failure means this step is unusable.
        failures.append(f"step {step}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        print(f"warning: checkpoint step {step} in {self.directory} is unreadable "
              f"({failures[-1]}); trying an older one", flush=True)
    raise UserError(
        f"no readable checkpoint in {self.directory} ({'; '.join(failures)}); move that directory "
        "away or pass a new --workdir to start afresh")

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
