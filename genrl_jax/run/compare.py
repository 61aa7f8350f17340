"""What a replay compares with the run it replays: the saved results.json (a table of saved vs
replayed values) and checkpointed states (per leaf, the largest difference in ULPs)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax.run import checkpoint as checkpoint_lib
from genrl_jax.run import files
from genrl_jax.run import workdir as workdir_lib


TIMING_KEYS = ("eval_seconds", "chunk_seconds", "chunks_done")


def read_saved_results(workdir: str, log=print) -> dict | None:
  """The run's own results.json to compare with; None when missing, or when damaged (one
  warning line: nothing is compared, the file is left as it is)."""
  path = os.path.join(workdir, workdir_lib.RESULTS_FILE)
  try:
    saved = files.read_json(path, "the run's saved results", missing_ok=True)
    if saved is not None:
      _check_results_shape(saved, path)
    return saved
  except files.DamagedFile as e:
    log(f"warning: {e}; nothing is compared with it")
    return None


def _check_results_shape(saved: dict, path: str) -> None:
  """What ``compare_results`` reads: ``metrics`` {name: {"mean": ...}}, ``extra`` an object."""
  metrics, extra = saved.get("metrics", {}), saved.get("extra", {})
  if not isinstance(metrics, dict) or not all(isinstance(m, dict) and "mean" in m
                                              for m in metrics.values()):
    raise files.DamagedFile(path, "the run's saved results",
                            "has no 'metrics' object of {name: {\"mean\": ...}}")
  if not isinstance(extra, dict):
    raise files.DamagedFile(path, "the run's saved results", "has an 'extra' that is not an "
                                                             "object")


MISSING = "(missing)"  # a saved metric or extra the replay did not produce


def compare_results(saved: dict | None, replayed: dict, step: int) -> list[tuple]:
  """(name, saved, replayed, equal) rows for every metric mean and non-timing extra, of the
  replay and of the saved results (one the replay lacks is a row that is not equal)."""
  same_step = saved is not None and saved.get("extra", {}).get("chunks_done", step) == step
  rows = []
  for name, s in replayed["metrics"].items():
    old = (saved or {}).get("metrics", {}).get(name) if same_step else None
    rows.append((name, None if old is None else old["mean"], s["mean"],
                 None if old is None else old == s))
  for name, value in replayed["extra"].items():
    if name in TIMING_KEYS:
      continue
    old = (saved or {}).get("extra", {}).get(name, "-") if same_step else "-"
    rows.append((name, old, value, None if old == "-" else old == value))
  if same_step:
    for name, old in saved.get("metrics", {}).items():
      if name not in replayed["metrics"]:
        rows.append((name, old["mean"], MISSING, False))
    for name, old in saved.get("extra", {}).items():
      if name not in replayed["extra"] and name not in TIMING_KEYS:
        rows.append((name, old, MISSING, False))
  return rows


def format_table(rows: list[tuple]) -> str:
  def show(v):
    if isinstance(v, float):
      return f"{v:.6g}"
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 40 else text[:37] + "..."
  lines = ["| metric | saved | replayed | equal |", "|---|---|---|---|"]
  for name, old, new, equal in rows:
    lines.append(f"| {name} | {'-' if old is None else show(old)} | {show(new)} | "
                 f"{'-' if equal is None else ('yes' if equal else 'NO')} |")
  return "\n".join(lines)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> int:
  """The largest number of representable floats between a and b (0 for equal arrays)."""
  a, b = np.asarray(a), np.asarray(b)
  # jnp.issubdtype, not np's: bfloat16 (ml_dtypes) is not a subtype of np.floating, and as an
  # integer it would be truncated (1.0 and 1.0078125 would count as 0 ULP apart).
  if not jnp.issubdtype(a.dtype, jnp.floating):
    return int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)))) if a.size else 0
  ints = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]

  def ordered(x):  # the float bit patterns as integers that sort like the floats
    i = x.view(ints).astype(np.int64)
    return np.where(i < 0, np.iinfo(ints).min - i, i)
  return int(np.max(np.abs(ordered(a) - ordered(b)))) if a.size else 0


def compare_states(expected, actual) -> list[tuple[str, float, int]]:
  """(leaf path, max |difference|, max ULP distance) for every leaf that is not bit-identical."""
  expected = checkpoint_lib.to_storable(expected)
  actual = checkpoint_lib.to_storable(actual)
  out = []
  for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(expected),
                               jax.tree_util.tree_leaves_with_path(actual)):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes():
      continue
    if a.shape != b.shape or a.dtype != b.dtype:
      out.append((jax.tree_util.keystr(path), float("inf"), -1))
      continue
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    out.append((jax.tree_util.keystr(path), float(np.nanmax(diff)) if diff.size else 0.0,
                ulp_distance(a, b)))
  return out
