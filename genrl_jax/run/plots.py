"""Learning curves with seed bands, image grids. PNGs only (Agg backend, no display needed)."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from genrl_jax.run import stats  # noqa: E402


def band(ax, x, y, label: str | None = None, statistic: str = "mean", color=None,
         confidence: float = 0.95):
  """Plots the statistic over seeds of y [n_seeds, T] against x [T] with a bootstrap CI band.

  statistic: "mean" or "iqm" (interquartile mean; Agarwal et al. 2021).
  """
  y = np.asarray(y, dtype=np.float64)
  fn = np.mean if statistic == "mean" else stats.iqm
  point, low, high = stats.bootstrap_ci(y, fn, confidence)
  line, = ax.plot(x, point, label=label, color=color)
  if y.shape[0] > 1:
    ax.fill_between(x, low, high, alpha=0.25, color=line.get_color(), linewidth=0)
  return line


def curves(path: str, x, series: dict[str, np.ndarray], xlabel: str, ylabel: str,
           title: str | None = None, statistic: str = "mean", logy: bool = False) -> str:
  """One panel, one band per series ({label: [n_seeds, T]}); saved to ``path``."""
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for label, y in series.items():
    band(ax, x, y, label=label, statistic=statistic)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if logy:
    ax.set_yscale("log")
  if title:
    ax.set_title(title)
  if len(series) > 1:
    ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def image_grid(path: str, images, rows: int | None = None, title: str | None = None,
               row_labels: Sequence[str] | None = None) -> str:
  """Saves images [N, H, W] (values in [0, 1]) as one grid PNG."""
  images = np.asarray(images, dtype=np.float32)
  n, h, w = images.shape[:3]
  rows = rows or int(np.ceil(np.sqrt(n)))
  cols = int(np.ceil(n / rows))
  canvas = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1), np.float32)
  for i in range(n):
    r, c = divmod(i, cols)
    canvas[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = images[i]
  fig, ax = plt.subplots(figsize=(cols * 0.6 + 0.6, rows * 0.6 + 0.4), dpi=120)
  ax.imshow(np.clip(canvas, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  ax.set_xticks([])
  if row_labels:
    ax.set_yticks([1 + r * (h + 1) + h / 2 for r in range(len(row_labels))], row_labels)
  else:
    ax.set_yticks([])
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path
