"""Learning curves with seed bands, multi-panel line plots, image grids.

PNGs only (Agg backend, no display needed).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from genrl_jax.run import stats  # noqa: E402


def _line_and_band(ax, x, point, low=None, high=None, **line_kw):
  """One line and, when ``low``/``high`` are given, a shaded band between them in its colour."""
  line, = ax.plot(x, point, **line_kw)
  if low is not None:
    ax.fill_between(x, low, high, alpha=0.25, color=line.get_color(), linewidth=0)
  return line


def band(ax, x, y, label: str | None = None, statistic: str = "mean", color=None,
         confidence: float = 0.95, **line_kw):
  """Plots the statistic over seeds of y [n_seeds, T] against x [T] with a bootstrap CI band.

  statistic: "mean" or "iqm" (interquartile mean; Agarwal et al. 2021). With one seed there is
  no band. ``line_kw`` go to ``ax.plot`` (e.g. ``lw``).
  """
  y = np.asarray(y, dtype=np.float64)
  fn = np.mean if statistic == "mean" else stats.iqm
  point, low, high = stats.bootstrap_ci(y, fn, confidence)
  if y.shape[0] < 2:
    low = high = None
  return _line_and_band(ax, x, point, low, high, label=label, color=color, **line_kw)


def save(fig, path: str, dpi: int = 120) -> str:
  """Lays out, writes ``fig`` as a PNG to ``path`` (making its directory) and closes it."""
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


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
  return save(fig, path)


def panels(path: str, x, panels: Sequence[Mapping[str, object]], title: str | None = None,
           statistic: str = "mean") -> str:
  """Side-by-side line plots sharing ``x`` [T], saved to ``path``.

  Each panel is a dict with "curves" ({label: y}), "xlabel", "ylabel" and optionally
  "hlines" ({label: y value}, dashed reference lines). A curve y of shape [T] is drawn as a
  plain line; one of shape [n_seeds, T] as the ``statistic`` over seeds with its 95 % bootstrap
  CI band (as in ``band``).
  """
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
  for ax, panel in zip(axes[0], panels):
    for label, y in panel["curves"].items():
      y = np.asarray(y)
      if y.ndim == 2:
        band(ax, x, y, label=label, statistic=statistic, lw=1.2)
      else:
        _line_and_band(ax, x, y, label=label, lw=1.2)
    for label, y in panel.get("hlines", {}).items():
      ax.axhline(y, color="k", ls="--", lw=0.8, label=label)
    ax.set_xlabel(panel["xlabel"])
    ax.set_ylabel(panel["ylabel"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  return save(fig, path)


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
  return save(fig, path)
