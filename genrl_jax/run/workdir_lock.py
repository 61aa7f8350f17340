"""One live process per workdir: an OS-level lock on ``<workdir>/.lock``, held for the process's life.

A training run holds the lock exclusively; replay holds it shared (any number of replays may read
a finished run together, none while it trains). The lock is ``flock(2)``: the kernel releases it
when its holder exits in any way (normal exit, exception, SIGKILL, a crashed node), so a lock
left by a dead process is never in the way — a stale lock cannot exist. The file itself stays on
disk; it holds the exclusive holder's pid, host, command and start time, so that a refused
second process can say who holds the workdir.

Within one process the lock is taken once per workdir and kept (``acquire`` is idempotent), so
the entry point can take it before loading data and the runner again before it writes.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import platform
import shlex
import sys

from genrl_jax.errors import UserError

LOCK_FILE = ".lock"

_held: dict[str, tuple[int, bool]] = {}  # realpath(workdir) -> (fd, exclusive), this process's
_warned_unsupported = False


class WorkdirBusy(UserError):
  """Another live process holds the workdir."""


def _holder(path: str) -> str:
  """Who the lock file says holds it: ``process 1234 on host (python -m ...) since ...``."""
  try:
    with open(path) as f:
      info = json.load(f)
    who = f"process {int(info['pid'])}"
  except (OSError, ValueError, KeyError, TypeError):
    return "another process (a replay, or a run that is starting)"
  host = info.get("host")
  if host and host != platform.node():
    who += f" on {host}"
  elif not _alive(int(info["pid"])):  # the named process is gone: a reader holds it now
    return "another process (a replay of this run)"
  command = info.get("command")
  return who + (f" ({command})" if command else "") + (
      f" since {info['since']}" if info.get("since") else "")


def command_line() -> str:
  """This process's command as a user types it: ``python -m experiments.vae --seeds=8``."""
  import __main__  # noqa: PLC0415
  spec = getattr(__main__, "__spec__", None)
  program = ["python", "-m", spec.name] if spec is not None and spec.name else ["python", sys.argv[0]]
  return shlex.join(program + sys.argv[1:])


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def acquire(workdir: str, *, exclusive: bool = True, purpose: str = "train in") -> None:
  """Takes the workdir's lock for the rest of this process (a no-op when already held).

  Args:
    workdir: an existing directory.
    exclusive: True for a run that writes (training), False for a reader (replay).
    purpose: what the refused process wanted to do, for the error message.
  Raises:
    WorkdirBusy: one line naming the process that holds it and what to do.
  """
  global _warned_unsupported
  key = os.path.realpath(workdir)
  if key in _held:
    fd, held_exclusive = _held[key]
    if held_exclusive or not exclusive:
      return
    release(workdir)  # shared -> exclusive: let go, then take it like any other process
  path = os.path.join(key, LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise UserError(f"cannot create the lock file {path} ({e.strerror}); pass a writable "
                    "--workdir") from None
  try:
    fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    raise WorkdirBusy(f"{workdir} is in use by {_holder(path)}; cannot {purpose} it now: wait "
                      "for that process to finish (or stop it), or pass another --workdir") \
        from None
  except OSError as e:
    os.close(fd)
    if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
      raise
    if not _warned_unsupported:  # a file system without locks: run, but say it is unguarded
      print(f"warning: the file system of {workdir} has no file locks ({e.strerror}); nothing "
            "stops a second process from writing into this run", flush=True)
      _warned_unsupported = True
    return
  if exclusive:
    info = {"pid": os.getpid(), "host": platform.node(), "command": command_line(),
            "since": datetime.datetime.now().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
  _held[key] = (fd, exclusive)


def release(workdir: str) -> None:
  """Lets go of the lock (the process's exit does the same)."""
  entry = _held.pop(os.path.realpath(workdir), None)
  if entry is not None:
    os.close(entry[0])  # closing the descriptor releases the flock


def held(workdir: str) -> bool:
  """Whether this process holds the workdir's lock."""
  return os.path.realpath(workdir) in _held
