"""metrics.jsonl: one row per (chunk, seed), written as the run goes and read back on resume."""

from __future__ import annotations

import json
import math
import os
import shutil

import jax
import numpy as np

from genrl_jax.run import files
from genrl_jax.run.tensorboard import TensorBoardLog


def to_host(metrics) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}


def jsonable(x):
  x = np.asarray(x)
  if x.ndim == 0:
    v = x.item()
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)
  return [jsonable(v) for v in x]


class MetricsLog:
  """workdir/metrics.jsonl: one line per (chunk, seed). Lines of chunks past a resumed checkpoint
  are dropped on resume (they are recomputed bit for bit), never earlier ones. Each line also
  goes to workdir/tensorboard/seed_<s>/ (``genrl_jax.run.tensorboard``)."""

  def __init__(self, path: str, tensorboard: TensorBoardLog | None = None):
    self.path = path
    self.tensorboard = tensorboard  # the same lines as TensorBoard events, one run per seed

  def read(self) -> list[dict]:
    """The rows; a last line cut by a kill is dropped (its chunk is recomputed). Damage further
    up (an edited line, a row without its chunk and seed) is one warning, and the rows before
    it are used; ``damaged`` is then True."""
    self.damaged = False
    try:
      rows = files.read_jsonl(self.path, "the run's metrics")
    except files.DamagedFile as e:
      rows, self.damaged = e.partial or [], True
      print(f"warning: {e}; the {len(rows)} rows before it are used", flush=True)
    for i, r in enumerate(rows):
      if not all(isinstance(r.get(k), int) for k in ("chunk", "seed")):
        print(f"warning: {self.path} (the run's metrics) row {i + 1} has no integer chunk and "
              f"seed; the {i} rows before it are used", flush=True)
        rows, self.damaged = rows[:i], True
        break
    return rows

  def keep_until(self, chunk: int) -> list[dict]:
    """Rewrites the file with the rows of chunks <= ``chunk`` (atomically) and returns them. A
    damaged file is first kept beside it as ``metrics.jsonl.damaged``: nothing is lost."""
    rows = [r for r in self.read() if r["chunk"] <= chunk]
    if self.damaged:
      shutil.copy2(self.path, self.path + ".damaged")
      print(f"warning: the damaged file is kept as {self.path}.damaged", flush=True)
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")
    os.replace(tmp, self.path)
    return rows

  def append(self, chunk: int, seeds: np.ndarray, metrics: dict[str, np.ndarray],
             seconds: float, cells: list[dict] | None = None) -> None:
    """One row per seed; with a sweep (``cells``: one dict per cell) each row also carries its
    cell index and swept values."""
    with open(self.path, "a") as f:
      for i, seed in enumerate(seeds):
        row = {"chunk": chunk, "seed": int(seed), **(cells[i] if cells else {}),
               "seconds": round(seconds, 4)}
        row.update({k: jsonable(v[i]) for k, v in metrics.items()})
        f.write(json.dumps(row) + "\n")
    if self.tensorboard is not None:
      names = None if not cells else _cell_names(cells, seeds)
      self.tensorboard.append(chunk, seeds, metrics, seconds, **({"names": names} if names else {}))

  def close(self) -> None:
    if self.tensorboard is not None:
      self.tensorboard.close()


def _cell_names(cells: list[dict], seeds) -> list[str]:
  """TensorBoard run names of sweep cells: ``learning_rate-0.001_seed_3``."""
  return ["_".join(f"{k}-{v:g}" for k, v in cell.items() if k != "cell") + f"_seed_{int(s)}"
          for cell, s in zip(cells, seeds)]


def history_from_rows(rows: list[dict], seeds: np.ndarray, upto: int,
                      cells: list[dict] | None = None) -> list[dict[str, np.ndarray]]:
  """Rebuilds per-chunk [n_seeds] arrays for chunks 1..upto from metrics.jsonl rows (with a
  sweep, [n_cells] arrays, the rows matched by their ``cell``)."""
  by_chunk: dict[int, dict[int, dict]] = {}
  for r in rows:
    by_chunk.setdefault(r["chunk"], {})[r["cell"] if cells else r["seed"]] = r
  ids = [c["cell"] for c in cells] if cells else [int(s) for s in seeds]
  labels = set(cells[0]) if cells else set()
  history = []
  for c in range(1, upto + 1):
    per_seed = by_chunk.get(c, {})
    keys = [k for k in (next(iter(per_seed.values())) if per_seed else {})
            if k not in ("chunk", "seed", "seconds") and k not in labels]
    entry = {}
    for k in keys:
      try:
        entry[k] = np.asarray([np.asarray(per_seed[i][k], dtype=np.float64) for i in ids])
      except (KeyError, ValueError, TypeError):
        continue
    history.append(entry)
  return history
