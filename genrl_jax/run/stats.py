"""Aggregates over seeds: mean with a 95 % bootstrap CI, interquartile mean (IQM).

IQM and stratified-bootstrap CIs are the RL reporting recommendation of Agarwal et al. (2021),
Deep RL at the Edge of the Statistical Precipice; with one task the stratification is trivial.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats as scipy_stats

_MAX_RESAMPLED_ELEMENTS = 1 << 24  # float64: 128 MiB per block of resamples.


def iqm(x, axis: int = 0) -> np.ndarray:
  """Interquartile mean: the mean of the middle 50 % (scipy's trim_mean with 25 % cut each side)."""
  return scipy_stats.trim_mean(np.asarray(x, dtype=np.float64), 0.25, axis=axis)


def bootstrap_ci(x, statistic: Callable = np.mean, confidence: float = 0.95,
                 num_resamples: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Percentile bootstrap over axis 0 (the seeds): returns (point, low, high).

  x: [n_seeds, ...]. ``statistic`` must accept ``axis``. Non-finite entries propagate.
  """
  x = np.asarray(x, dtype=np.float64)
  n = x.shape[0]
  point = statistic(x, axis=0)
  if n < 2:
    return point, point, point
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, n, size=(num_resamples, n))
  # Resamples in blocks, so that long curves ([n_seeds, T] with large T) do not materialise all
  # of x[idx] ([B, n_seeds, T]) at once; each resample's statistic is the same either way.
  block = max(1, _MAX_RESAMPLED_ELEMENTS // max(1, x.size))
  resampled = np.concatenate([statistic(x[idx[i:i + block]], axis=1)
                              for i in range(0, num_resamples, block)])  # [B, ...]
  alpha = (1.0 - confidence) / 2.0
  low, high = np.quantile(resampled, [alpha, 1.0 - alpha], axis=0)
  return point, low, high


def mean_ci(x, confidence: float = 0.95) -> tuple[float, float]:
  """Mean over seeds and the half-width of its percentile-bootstrap CI (for a ``m ± h`` line)."""
  point, low, high = bootstrap_ci(x, np.mean, confidence)
  return float(point), float((high - low) / 2.0)
