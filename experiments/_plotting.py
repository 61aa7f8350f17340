"""Small matplotlib helpers (Agg backend) for the tabular, bandit and estimator experiments."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np


def line_panels(path: str, x: np.ndarray, panels: Sequence[Mapping[str, object]],
                title: str = "") -> str:
  """Saves side-by-side line plots as a PNG and returns its path.

  Args:
    path: output file.
    x: [T] shared x values.
    panels: one dict per panel with keys "curves" ({label: [T] mean or (mean, half_width)}),
      "xlabel", "ylabel" and optionally "hlines" ({label: y}).
    title: figure title.
  """
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
  for ax, panel in zip(axes[0], panels):
    for label, curve in panel["curves"].items():
      if isinstance(curve, tuple):
        mean, half = (np.asarray(c) for c in curve)
        line, = ax.plot(x, mean, label=label, lw=1.2)
        ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.25, lw=0)
      else:
        ax.plot(x, np.asarray(curve), label=label, lw=1.2)
    for label, y in panel.get("hlines", {}).items():
      ax.axhline(y, color="k", ls="--", lw=0.8, label=label)
    ax.set_xlabel(panel["xlabel"])
    ax.set_ylabel(panel["ylabel"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
