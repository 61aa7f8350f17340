"""What a run prints while it runs: the per-chunk progress line and a heartbeat line every
~10 s while a long phase (the final evaluation) runs."""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from genrl_jax.run import stats

if TYPE_CHECKING:
  from genrl_jax.run.experiment import Experiment


def format_duration(seconds: float) -> str:
  if seconds < 1:
    return "<1 s"
  if seconds < 90:
    return f"{seconds:.0f} s"
  if seconds < 5400:
    return f"{seconds / 60:.1f} min"
  return f"{seconds / 3600:.1f} h"


def _format_number(x: float) -> str:
  if not math.isfinite(x):
    return str(x)
  if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
    return f"{x:.3g}"
  return f"{x:.4g}" if abs(x) < 100 else f"{x:.1f}"


def _format_half_width(x: float) -> str:
  if not math.isfinite(x):
    return str(x)
  return f"{x:.2g}" if x < 10 else f"{x:.0f}"


def progress_line(exp: Experiment, chunk_index: int, metrics: dict[str, np.ndarray],
                  seconds: float, eta: float | None) -> str:
  """e.g. ``epoch 3/10 | -elbo 104.2 ± 0.3 | test -elbo 103.9 ± 0.4 | 2.1 s/epoch | ETA 15 s``."""
  parts = [f"{exp.chunk_label} {chunk_index}/{exp.num_chunks}"]
  for key, label in exp.progress:
    if key not in metrics:
      continue
    per_seed = np.asarray(metrics[key], dtype=np.float64).reshape(len(metrics[key]), -1)
    per_seed = np.nanmean(per_seed, axis=1) if per_seed.shape[1] else per_seed[:, 0]
    if np.all(np.isnan(per_seed)):
      parts.append(f"{label} n/a")
      continue
    per_seed = per_seed[~np.isnan(per_seed)]
    mean, half = stats.mean_ci(per_seed)
    parts.append(f"{label} {_format_number(mean)} ± {_format_half_width(half)}"
                 if len(per_seed) > 1 else f"{label} {_format_number(mean)}")
  if exp.units_per_chunk:
    n_seeds = len(next(iter(metrics.values()))) if metrics else 1
    parts.append(f"{_format_number(exp.units_per_chunk * n_seeds / seconds)} {exp.units_label}")
  parts.append(f"{seconds:.1f} s/{exp.chunk_label}")
  if eta is not None:
    parts.append(f"ETA {format_duration(eta)}")
  return " | ".join(parts)


HEARTBEAT_SECONDS = 10.0  # a line at least this often while a long phase runs


class Heartbeat:
  """Prints a line every ``every`` seconds while a long phase (an evaluation) runs."""

  def __init__(self, what: str, log: Callable[[str], None], estimate: float | None,
               every: float | None = None):
    self._what, self._log, self._estimate = what, log, estimate
    self._every = HEARTBEAT_SECONDS if every is None else every
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._beat, daemon=True)
    self.t0 = time.perf_counter()

  def _beat(self):
    while not self._done.wait(self._every):
      elapsed = time.perf_counter() - self.t0
      tail = f" of ~{format_duration(self._estimate)} estimated" if self._estimate else ""
      self._log(f"{self._what}: {format_duration(elapsed)} elapsed{tail}")

  def __enter__(self):
    tail = f"; estimate ~{format_duration(self._estimate)}" if self._estimate else ""
    self._log(f"{self._what}: started{tail}")
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._done.set()
    self._thread.join()
