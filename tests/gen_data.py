"""Small labelled image data for the generative tests: class k is a bright band at rows of k."""

import os

import numpy as np

from genrl_jax.data import images
from tests.test_data import write_idx


def banded(n: int, seed: int = 0, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """[n, 28, 28, 1] uint8 images and [n] labels: label k lights rows 2k+4 .. 2k+7 (plus noise)."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, size=n)
  x = rng.integers(0, 40, size=(n, 28, 28)).astype(np.float64)
  for i, k in enumerate(labels):
    x[i, 2 * k + 4:2 * k + 8, 4:24] += rng.uniform(150, 215)
  return np.clip(x, 0, 255).astype(np.uint8)[..., None], labels.astype(np.int64)


def dataset(n_train: int = 600, n_test: int = 200) -> images.ImageDataset:
  (tx, ty), (vx, vy) = banded(n_train, 0), banded(n_test, 1)
  return images.ImageDataset(tx, ty, vx, vy, source="banded test images")


def write_banded_idx(directory: str, n_train: int = 600, n_test: int = 200) -> None:
  os.makedirs(directory, exist_ok=True)
  for split, (x, y) in (("train", banded(n_train, 0)), ("t10k", banded(n_test, 1))):
    write_idx(os.path.join(directory, f"{split}-images-idx3-ubyte.gz"), x[..., 0], 0x08, True)
    write_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte.gz"), y.astype(np.uint8), 0x08,
              True)
