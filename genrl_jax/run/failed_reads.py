"""orbax's leftovers after a failed read.

orbax runs a restore's reads as asyncio tasks on a fresh event loop and closes that loop as soon
as the first read fails. The reads still in flight finish later on tensorstore's threads and
their completion callbacks find the loop closed: each prints a ``RuntimeError: Event loop is
closed`` traceback through ``sys.unraisablehook``, and asyncio logs "Task exception was never
retrieved" for the failed reads nobody awaited. Both are noise about a failure already reported
in one line; the two filters below drop exactly those and pass everything else on."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
import time
import traceback

_unreadable_dirs: set[str] = set()  # step directories found unreadable in this process
_previous_unraisablehook = sys.unraisablehook


_drain_registered = False
DRAIN_SECONDS = 0.2  # time for a failed restore's reads still in flight to deliver callbacks


def _is_closed_loop_error(exc_type, exc_value, exc_traceback) -> bool:
  """RuntimeError('Event loop is closed') raised by asyncio's own _check_closed."""
  if exc_type is not RuntimeError or str(exc_value) != "Event loop is closed":
    return False
  frames = traceback.extract_tb(exc_traceback)
  return bool(frames) and frames[-1].name == "_check_closed" and "asyncio" in frames[-1].filename


def _is_closed_loop_callback(unraisable) -> bool:
  return _is_closed_loop_error(unraisable.exc_type, unraisable.exc_value,
                               unraisable.exc_traceback)


def _unraisablehook(unraisable) -> None:
  if not _is_closed_loop_callback(unraisable):
    _previous_unraisablehook(unraisable)


def drain_late_callbacks() -> None:
  """After a failed restore, and at exit before the interpreter finalizes (once it finalizes,
  the hooks above are no longer consulted and a read callback that arrives then prints its
  traceback raw): waiting a moment lets the reads still in flight (local file reads:
  milliseconds) report through the filters."""
  time.sleep(DRAIN_SECONDS)
  gc.collect()


class _UnretrievedReadFilter(logging.Filter):
  """Drops asyncio's 'Task (or Future) exception was never retrieved' records about a damaged
  step."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    if not message.startswith(("Task exception was never retrieved",
                               "Future exception was never retrieved")):
      return True
    return not any(path + os.sep in message for path in _unreadable_dirs)


def silence_leftovers(step_dir: str) -> None:
  """Installs the filters (once; again if someone replaced the hook) for ``step_dir``."""
  global _previous_unraisablehook, _drain_registered
  _unreadable_dirs.add(step_dir)
  if sys.unraisablehook is not _unraisablehook:
    _previous_unraisablehook = sys.unraisablehook
    sys.unraisablehook = _unraisablehook
  if not _drain_registered:
    atexit.register(drain_late_callbacks)
    _drain_registered = True
  asyncio_logger = logging.getLogger("asyncio")
  if not any(isinstance(f, _UnretrievedReadFilter) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_UnretrievedReadFilter())
