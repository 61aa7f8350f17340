"""SIGINT / SIGTERM during a run: stop cleanly after the chunk, never cut a file write."""

from __future__ import annotations

import contextlib
import signal
from typing import Callable

from genrl_jax.run.errors import Aborted


class StopRequest:
  """SIGINT or SIGTERM: finish the chunk in flight, checkpoint, stop. A second ^C aborts.

  SIGTERM is what SLURM and preemptible cloud VMs send before they stop a job, so it is treated
  as the first ^C: the run ends at a chunk boundary with its checkpoint saved. A second ^C raises
  ``Aborted`` as soon as Python runs again (a computation in flight on the device finishes
  first), except inside ``saving()``: a checkpoint being handed to orbax is never cut, the abort
  waits for the end of that block.
  """
  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self, log: Callable[[str], None]):
    self.requested = False
    self._log = log
    self._previous = {}
    self._saving = False
    self._abort_pending = False

  @contextlib.contextmanager
  def saving(self):
    """A block a second ^C does not cut; the abort comes at its end."""
    self._saving = True
    try:
      yield
    finally:
      self._saving = False
    if self._abort_pending:
      raise Aborted("aborted by a second ^C")

  def __enter__(self):
    def handler(signum, frame):
      if self.requested and signum == signal.SIGINT:
        if self._saving:
          self._abort_pending = True
          return
        raise Aborted("aborted by a second ^C")
      self.requested = True
      name = signal.Signals(signum).name
      self._log(f"{name}: stopping after this chunk"
                + (" (press ^C again to abort now)" if signum == signal.SIGINT else ""))
    for sig in self.SIGNALS:
      try:
        self._previous[sig] = signal.signal(sig, handler)
      except ValueError:  # not the main thread
        pass
    return self

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)


@contextlib.contextmanager
def signals_ignored():
  """SIGINT/SIGTERM ignored for a short block (a checkpoint's last write), in the main thread."""
  previous = {}
  for sig in (signal.SIGINT, signal.SIGTERM):
    try:
      previous[sig] = signal.signal(sig, signal.SIG_IGN)
    except ValueError:  # not the main thread
      pass
  try:
    yield
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
