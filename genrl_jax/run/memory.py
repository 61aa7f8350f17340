"""Whether a run's state fits in memory, decided before anything is compiled.

The estimate is a floor, from shapes alone (``jax.eval_shape`` of one seed's ``init``: no
compile, no allocation):

    need = copies_of_data x data + STATE_COPIES x cells x state_per_cell

where the data is replicated on every seed device and the state is held twice at a chunk
boundary (the live state, and its host copy handed to the asynchronous checkpoint writer). A
chunk's own working memory (activations, a batch) comes on top and is not estimated, so a run
refused here could never have run, and a run let through may still need more.

Available memory: on an accelerator, the device's free bytes (``memory_stats``) per device; on
the CPU, the host's available memory (``MemAvailable``, or the cgroup's limit when lower),
shared by the CPU devices.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import jax
import numpy as np

from genrl_jax.errors import UserError

STATE_COPIES = 2  # the live state and the checkpoint writer's host copy


def tree_bytes(tree) -> int:
  """Bytes of every leaf (typed PRNG keys count their key data, whatever the key's impl)."""
  total = 0
  for x in jax.tree.leaves(tree):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.eval_shape(jax.random.key_data, x)
    total += np.dtype(x.dtype).itemsize * math.prod(np.shape(x))
  return total


def _read_int(path: str) -> int | None:
  try:
    with open(path) as f:
      text = f.read().strip()
  except OSError:
    return None
  return int(text) if text.isdigit() else None


def host_available_bytes() -> int | None:
  """The host's available memory: MemAvailable, capped by a cgroup (v2 or v1) limit."""
  available = None
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          available = int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                  "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
    limit, usage = _read_int(limit_file), _read_int(usage_file)
    if limit is not None and usage is not None and limit < 1 << 60:
      free = max(limit - usage, 0)
      available = free if available is None else min(available, free)
  return available


def device_available_bytes(device) -> int | None:
  """Free bytes of an accelerator's memory, or None when the device does not say."""
  try:
    stats = device.memory_stats() or {}
  except Exception:  # noqa: BLE001 -- a backend without memory statistics
    return None
  if "bytes_limit" not in stats:
    return None
  return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def _gib(n: float) -> str:
  return f"{n / 2**30:.1f} GiB" if n >= 2**29 else f"{n / 2**20:.0f} MiB"


def check_fits(init: Callable[[jax.Array, Any], Any], data, *, num_cells: int,
               num_devices: int, cells_per_seed: int = 1, devices=None,
               available: int | None = None) -> dict:
  """Refuses (``UserError``, one line: what is needed, what there is, how many seeds fit) a run
  whose state and data cannot fit; returns the estimate otherwise.

  Args:
    init: one seed's (key, data) -> state.
    data: the shared data (arrays or their shapes).
    num_cells: seeds (x sweep points) of the run.
    num_devices: the devices the cells are split over (each holds a replica of the data).
    cells_per_seed: cells per seed (a sweep's grid points), to say how many seeds fit.
    devices: the devices (default ``jax.local_devices()``).
    available: bytes available (default: measured; for tests).
  """
  devices = list(devices or jax.local_devices())
  per_cell = tree_bytes(jax.eval_shape(init, jax.random.key(0), data))
  data_bytes = tree_bytes(data) if data is not None else 0
  on_cpu = devices[0].platform == "cpu"
  if available is None:
    if on_cpu:
      available = host_available_bytes()
    else:  # per device: the cells split evenly, each device a replica of the data
      free = [device_available_bytes(d) for d in devices[:num_devices]]
      available = min(free) * num_devices if free and None not in free else None
  need = num_devices * data_bytes + STATE_COPIES * num_cells * per_cell
  estimate = {"state_bytes_per_seed": per_cell, "data_bytes": data_bytes, "need_bytes": need,
              "available_bytes": available}
  if available is None or need <= available:
    return estimate
  fit_cells = max((available - num_devices * data_bytes) // (STATE_COPIES * per_cell), 0)
  fit_seeds = fit_cells // cells_per_seed
  where = "this host has" if on_cpu else f"the {num_devices} {devices[0].platform} devices have"
  seeds = num_cells // cells_per_seed
  advice = (f"at most {fit_seeds} seeds fit: pass --seeds={fit_seeds} or fewer (or split the "
            "seeds over several jobs with --seed)" if fit_seeds else
            "not even one seed fits: make the model or the data smaller")
  raise UserError(
      f"{seeds} seeds need at least {_gib(need)} ({_gib(per_cell)} of state per seed"
      f"{' per sweep point' if cells_per_seed > 1 else ''} x {STATE_COPIES} copies x {num_cells}"
      f"{' cells' if cells_per_seed > 1 else ''} + {_gib(data_bytes)} of data"
      f"{f' x {num_devices} devices' if num_devices > 1 else ''}), and {where} "
      f"{_gib(available)} available; {advice}")


def available_env_override() -> int | None:
  """``GENRL_JAX_MEMORY_BYTES``: the memory to assume available (for tests and shared hosts)."""
  value = os.environ.get("GENRL_JAX_MEMORY_BYTES")
  return int(value) if value and value.isdigit() else None
