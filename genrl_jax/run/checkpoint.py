"""The one place that talks to orbax: save, find, check and restore the runner's state.

State pytrees may hold typed PRNG keys; orbax stores arrays, so keys go to disk as
``jax.random.key_data`` and are re-wrapped from the template's key type on restore. Arrays are
copied to host before an (asynchronous) save, so buffers donated to the next chunk cannot race
the writer.

Damaged checkpoints (a truncated array file, deleted metadata) are a normal event here, not a
crash: ``Checkpointer.restore`` reports each unreadable step in one line, leaves it on disk
untouched, uses the newest readable one, and the retention policy never counts or deletes it.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from genrl_jax.errors import UserError
from genrl_jax.run import failed_reads
from genrl_jax.run.schedule import Every


def _is_key(x) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_storable(state):
  """Typed keys -> their uint32 key data; everything copied to host numpy (across processes:
  a device copy that keeps the global sharding, each process then writes its own shards)."""
  state = jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)
  if jax.process_count() > 1:
    return jax.jit(lambda t: jax.tree.map(jax.numpy.copy, t))(state)
  return jax.device_get(state)


def to_storable_abstract(state):
  """``to_storable``'s shapes and dtypes (typed keys as their key data), copying nothing."""
  def leaf(x):
    x = jax.eval_shape(jax.random.key_data, x) if _is_key(x) else x
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype)
  return jax.tree.map(leaf, state)


def _abstract(target):
  """orbax's restore target: shapes and dtypes (and, across processes, the global shardings)."""
  if jax.process_count() > 1:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        target)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), target)


def _on_one_device(abstract):
  """``abstract`` with this process's first device named: how one process restores a
  checkpoint that several processes wrote (orbax otherwise asks for the saved topology)."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)


def from_storable(stored, template):
  """Inverse of ``to_storable`` given a template state of the same structure."""
  def restore_leaf(saved, like):
    if _is_key(like):
      data = saved if isinstance(saved, jax.Array) else np.asarray(saved)  # global across processes
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(like))
    return jax.numpy.asarray(saved, dtype=like.dtype)
  return jax.tree.map(restore_leaf, stored, template)


# --- the saved state's layout --------------------------------------------------------------------

def _key_name(entry) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def layout(tree) -> dict[str, tuple[tuple[int, ...], str]]:
  """{"params/Dense_0/kernel": (shape, dtype)} of every leaf: what a checkpoint's metadata and a
  configured state are compared by (dicts, dataclasses and tuples named alike)."""
  return {"/".join(_key_name(k) for k in path): (tuple(np.shape(x)), str(np.dtype(x.dtype)))
          for path, x in jax.tree_util.tree_leaves_with_path(tree)}


class StateMismatch(UserError):
  """A checkpoint holds a state of other shapes, dtypes or structure than the configured one.

  Attributes:
    step: the checkpoint's step.
    differences: (leaf path, saved (shape, dtype) or None, configured (shape, dtype) or None).
  """

  def __init__(self, directory: str, step: int, differences: list[tuple]):
    self.directory, self.step, self.differences = directory, step, differences
    super().__init__(self.describe())

  def describe(self, hint: str = "") -> str:
    path, saved, now = self.differences[0]
    show = lambda x: "absent" if x is None else f"{x[1]}{list(x[0])}"
    more = f" (and {len(self.differences) - 1} more leaves)" if len(self.differences) > 1 else ""
    return (f"the checkpoint of step {self.step} in {self.directory} holds a state of other "
            f"shapes than this run's: {path} is {show(saved)} there, {show(now)} now{more}"
            f"{hint}; rerun with the flags it was made with, or pass a new --workdir")


# --- retention -----------------------------------------------------------------------------------

class _Retention(ocp.checkpoint_managers.PreservationPolicy):
  """orbax preservation policy: the newest ``keep`` readable steps, every step that is a multiple
  of ``keep_every`` (None: none), and every step found unreadable (never deleted, never counted)."""

  def __init__(self, keep: int, keep_every: int | None, unreadable: set[int]):
    self.keep, self.kept, self.unreadable = keep, Every(keep_every or 0), unreadable

  def should_preserve(self, checkpoints, *, context):
    del context
    steps = [info.step for info in checkpoints]
    newest = set(sorted((s for s in steps if s not in self.unreadable), reverse=True)[:self.keep])
    return [s in newest or s in self.unreadable
            or self.kept.due(s) for s in steps]


def _first_line(e: BaseException, limit: int = 200) -> str:
  return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:limit]}"


class Checkpointer:
  """Checkpoints of a state pytree under ``directory``, one subdirectory per step.

  Retention: the newest ``keep`` readable checkpoints, plus (``keep_every=K``) every checkpoint
  whose step is a multiple of K, so a study can replay any K-th chunk later. A step that
  ``restore`` found unreadable is left on disk untouched and does not count among the ``keep``:
  the run keeps ``keep`` readable ones beside it. Older checkpoints are deleted only after a newer
  one is fully written (orbax deletes them when it finalizes the new save).
  """

  def __init__(self, directory: str, keep: int = 3, keep_every: int | None = None):
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
      raise UserError(f"keep={keep!r} checkpoints: pass an integer >= 1")
    if keep_every is not None and (isinstance(keep_every, bool) or not isinstance(keep_every, int)
                                   or keep_every < 1):
      raise UserError(f"--keep_every={keep_every!r}: pass an integer >= 1, or leave it unset")
    self.directory = os.path.abspath(directory)
    self.keep, self.keep_every = keep, keep_every
    self._unreadable: set[int] = set()
    options = ocp.CheckpointManagerOptions(
        preservation_policy=_Retention(keep, keep_every, self._unreadable), create=True)
    # One unnamed item, fixed here: left open, orbax infers it from the first step it reads,
    # and a damaged step without its item directory would make every other step unreadable.
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=ocp.StandardCheckpointHandler())

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def unreadable_steps(self) -> list[int]:
    """Steps ``restore`` found unreadable (kept on disk, outside the retention count)."""
    return sorted(self._unreadable)

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state) -> None:
    """Starts an asynchronous save of ``state`` as ``step``. A step found unreadable is not
    overwritten (it stays as it is, already reported); the run simply has no checkpoint there."""
    if step in self._unreadable:
      return
    self._manager.save(step, args=ocp.args.StandardSave(to_storable(state)))

  def saved_layout(self, step: int) -> dict | None:
    """The layout (``layout``) of checkpoint ``step`` from its metadata, without reading its
    arrays; None when the metadata is unreadable (``restore`` then reports the step)."""
    try:
      saved = layout(self._manager.item_metadata(step))
    except Exception:  # noqa: BLE001 -- damaged metadata: the step is reported by restore.
      return None
    return saved or None  # no leaves: the metadata is gone, restore reports the step

  def check_layout(self, step: int, template) -> None:
    """Raises ``StateMismatch`` when checkpoint ``step`` holds other shapes, dtypes or leaves
    than ``template`` (a state of this run), before orbax or flax see the mismatch."""
    saved = self.saved_layout(step)
    if saved is None:
      return
    now = layout(to_storable_abstract(template))
    differences = [(k, saved.get(k), now.get(k))  # shallow leaves (the parameters) first
                   for k in sorted(set(saved) | set(now), key=lambda k: (k.count("/"), k))
                   if saved.get(k) != now.get(k)]
    if differences:
      raise StateMismatch(self.directory, step, differences)

  def _read(self, step: int, abstract):
    """orbax's restore of one step, or the exception that made it unreadable."""
    try:
      try:
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract)), None
      except ValueError as e:
        if "Topology mismatch" not in str(e) or jax.process_count() > 1:
          raise
        return self._manager.restore(step, args=ocp.args.StandardRestore(
            _on_one_device(abstract))), None
    except Exception as e:  # noqa: BLE001 -- any failure means this step is unusable.
      failed_reads.silence_leftovers(self.step_dir(step))
      failed_reads.drain_late_callbacks()  # let this step's reads still in flight finish under the filters
      return None, e

  def _mark_unreadable(self, step: int, error: BaseException) -> None:
    self._unreadable.add(step)
    print(f"warning: checkpoint step {step} is unreadable, left untouched in {self.step_dir(step)} "
          f"and not counted among the {self.keep} kept ({_first_line(error, 160)})", flush=True)

  def restore(self, template) -> tuple[object, int]:
    """Restores the newest readable checkpoint into ``template``'s structure: (state, step).

    Each unreadable step (truncated file, missing metadata, wrong structure) gives one warning
    line and is left on disk untouched. The older steps that retention would count or delete are
    read too, so that a damaged one among them is neither counted as kept nor deleted. If no step
    can be read: one ``UserError``.
    """
    target = to_storable(template)
    abstract = _abstract(target)
    restored = None
    readable = 0
    for step in reversed(self.all_steps()):
      multiple = Every(self.keep_every or 0).due(step)
      if restored is not None and readable >= self.keep and multiple:
        continue  # kept by keep_every whatever its state, and outside the newest-`keep` count.
      if restored is None:
        self.check_layout(step, template)  # other shapes: refused, not taken for damage
      stored, error = self._read(step, abstract)
      if error is not None:
        self._mark_unreadable(step, error)
        continue
      readable += 1
      if restored is None:
        restored = (from_storable(stored, template), step)
    if restored is None:
      damaged = ", ".join(str(s) for s in sorted(self._unreadable, reverse=True))
      why = f"steps {damaged} are unreadable, see the warnings above" if damaged else "none saved"
      raise UserError(f"no readable checkpoint in {self.directory} ({why}); nothing was deleted: "
                      "move that directory away or pass a new --workdir to start afresh")
    return restored

  def restore_step(self, template, step: int):
    """Restores checkpoint ``step`` exactly (for replay); one ``UserError`` if it is missing or
    unreadable, naming the steps that exist."""
    if step not in self.all_steps():
      raise UserError(f"no checkpoint of step {step} in {self.directory}; it holds steps "
                      f"{', '.join(map(str, self.all_steps())) or 'none'} (keep more with "
                      "--keep_every)")
    self.check_layout(step, template)
    target = to_storable(template)
    abstract = _abstract(target)
    stored, error = self._read(step, abstract)
    if error is not None:
      raise UserError(f"checkpoint step {step} in {self.step_dir(step)} is unreadable "
                      f"({_first_line(error, 160)}); pick another --step")
    return from_storable(stored, template)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
