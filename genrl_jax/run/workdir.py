"""A run's workdir: what is written there, and the checks before a run trains in it (usable,
holding this experiment's run with the same flags)."""

from __future__ import annotations

import json
import os
from typing import Sequence

from genrl_jax.errors import UserError
from genrl_jax.run import files


METRICS_FILE = "metrics.jsonl"


RUN_INFO_FILE = "run_info.json"


CHECKPOINT_DIR = "checkpoints"


RESULTS_FILE = "results.json"


# Run-level flags that may differ on resume (the seed loop may change rounding, see WORKSPACE.md).
RUN_FLAGS_MAY_CHANGE = ("checkpoint_every", "keep_checkpoints", "keep_every", "seed_loop",
                        "coordinator_address", "num_processes", "process_id")


def check_workdir(workdir: str) -> None:
  """A usable --workdir, checked before anything slow (data loading, compiling) starts."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir={workdir} is a file, not a directory; pass a directory path")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create --workdir {workdir}: {e.strerror}; pass a writable path")
  if not os.access(workdir, os.W_OK):
    raise UserError(f"--workdir={workdir} is not writable; pass a writable path")


def read_run_info(workdir: str) -> dict | None:
  """The run_info.json of ``workdir``, or None when there is none. A damaged one (not JSON, not
  an object, a field of the wrong type) is refused in one line: it is written atomically, so
  damage means an edit, and rewriting it on resume would lose what it held."""
  path = os.path.join(workdir, RUN_INFO_FILE)
  try:
    info = files.read_json(path, "the run's flags and facts", missing_ok=True)
  except files.DamagedFile as e:
    raise UserError(f"{e}; restore it, or move it away to resume without comparing the flags "
                    "(the checkpoints' shapes are still checked)") from None
  if info is None:
    return None
  for key, kinds in (("experiment", (str,)), ("config", (dict,)), ("seeds", (int,)),
                     ("seed", (int,)), ("sessions", (list,))):
    if key in info and not isinstance(info[key], kinds) or isinstance(info.get(key), bool):
      raise UserError(f"{path}: {key!r} is {json.dumps(info[key])[:40]}, not a "
                      f"{kinds[0].__name__}; restore the file the run wrote, or move it away")
  return info


def check_resumable(workdir: str, name: str, config: dict | None, seed: int, num_seeds: int,
                    may_change: Sequence[str] = ()) -> None:
  """A workdir holds one run: resuming another experiment, or with other flags, is refused."""
  saved = read_run_info(workdir)
  if saved is None:
    return
  if saved.get("experiment") not in (None, name):
    raise UserError(f"{workdir} holds a {saved['experiment']!r} run, not a {name!r} one; pass "
                    f"another --workdir (e.g. runs/{name})")
  saved_config = dict(saved.get("config") or {})
  saved_config.update(seeds=saved.get("seeds"), seed=saved.get("seed"))
  current = dict(config or {})
  current.update(seeds=num_seeds, seed=seed)
  ignore = set(may_change) | set(RUN_FLAGS_MAY_CHANGE) | {"workdir"}
  # A flag the saved run does not have was added to the program after it started: not compared.
  diffs = [f"--{k}={saved_config.get(k)!r} there, {current.get(k)!r} now"
           for k in sorted(set(saved_config) & set(current) | {"seeds", "seed"})
           if k not in ignore and not _same_flag_value(saved_config.get(k), current.get(k))]
  if diffs:
    raise UserError(
        f"{workdir} holds a run with other flags ({'; '.join(diffs[:4])}); rerun with the same "
        "flags to resume it, or pass a new --workdir")


def _same_flag_value(a, b) -> bool:
  """Equal as JSON; an unset string flag (None) and an empty one ('') are the same."""
  a, b = ("" if a is None else a), ("" if b is None else b)
  return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


def mismatch_hint(error, placement, config: dict | None) -> str:
  """Which flag most likely made the saved state's shapes differ: ``--seeds`` when only the
  leading (seed) axis differs, else the flags whose value is one of the new sizes."""
  pairs = [(saved[0], now[0]) for _, saved, now in error.differences if saved and now]
  if pairs and len(pairs) == len(error.differences) and all(
      len(a) == len(b) and a and a[1:] == b[1:] and a[0] != b[0] for a, b in pairs):
    what = "--seeds (or --sweep)" if placement.sweep is not None else "--seeds"
    return f" ({pairs[0][0][0]} seeds there, {placement.num_cells} now: {what} differs)"
  sizes = {b[i] for a, b in pairs if len(a) == len(b) for i in range(len(a)) if a[i] != b[i]}

  def values(v):
    items = v if isinstance(v, (list, tuple)) else [v]
    return {int(x) for x in items if isinstance(x, int) and not isinstance(x, bool)
            or isinstance(x, str) and x.isdigit()}
  named = [f"--{k}" for k, v in sorted((config or {}).items())
           if k not in ("seeds", "seed") and values(v) & sizes]
  if named:
    return f" (sizes {sorted(sizes)} now come from {' or '.join(named[:3])}, which differs)"
  return " (a flag that sets sizes or layers differs)"
