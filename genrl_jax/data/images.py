"""Image datasets (MNIST, Fashion-MNIST) as uint8 arrays, from tensorflow-datasets or raw IDX files.

Two ways in:
  * by name: a prepared tensorflow-datasets copy through ``tfds.data_source`` (no TensorFlow
    needed; offline with ``data_dir`` pointing at a prepared TFDS directory), else the data set's
    raw IDX files, downloaded once by genrl_jax.data.download and cached.
  * a directory of raw IDX files (``train-images-idx3-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``,
    label files optional), detected automatically. A directory holding only one of the two splits
    (e.g. only the 10k test files) is split into train/test with a fixed permutation.

Then ``device_arrays`` puts both splits on the device once, flattened to ``[N, H*W*C]`` uint8, with
the binarization scheme applied where it is a property of the data set (see there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax import config as cfg
from genrl_jax.data import download
from genrl_jax.data import idx as idx_lib
from genrl_jax.errors import UserError

DATASETS = ("mnist", "fashion_mnist")
BINARIZE = ("dynamic", "static", "none")
# The split of a one-split IDX directory and the fixed ("static") binarization are part of the
# data set's definition, identical for every run and seed; they use these fixed numpy seeds.
SPLIT_SEED = 20131220
BINARIZE_SEED = 20080622
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """Both splits of an image data set on the host.

  Attributes:
    train_images, test_images: [N, H, W, C] uint8 in 0..255.
    train_labels, test_labels: [N] int64 class labels, or None when the source has none.
    source: one line saying where the data came from (and how it was split), for the log.
  """
  train_images: np.ndarray
  train_labels: np.ndarray | None
  test_images: np.ndarray
  test_labels: np.ndarray | None
  source: str

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])


def offline_hint(name: str) -> str:
  return (f"to run offline pass --data_dir=DIR, where DIR is either a prepared tensorflow-datasets "
          f"directory (holding {name}/<version>/) or a directory with the raw IDX files "
          "(train-images-idx3-ubyte.gz and/or t10k-images-idx3-ubyte.gz, label files optional)")


def _find(data_dir: str, stem: str) -> str | None:
  """The path of an IDX file under its usual names (with '-' or '.' before idx, gzipped or not)."""
  alt = stem.replace("-idx", ".idx")
  for candidate in (stem + ".gz", stem, alt + ".gz", alt):
    path = os.path.join(data_dir, candidate)
    if os.path.isfile(path):
      return path
  return None


def has_idx_files(data_dir: str) -> bool:
  return any(_find(data_dir, stems[0]) for stems in _IDX_STEMS.values())


def _as_nhwc(images: np.ndarray, path: str) -> np.ndarray:
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.dtype != np.uint8:
    raise UserError(f"{path} holds {images.dtype} images of shape {images.shape}; expected uint8 "
                    "[N, H, W] (an idx3-ubyte images file)")
  return images


def _read_split(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray | None] | None:
  image_stem, label_stem = _IDX_STEMS[split]
  image_path = _find(data_dir, image_stem)
  if image_path is None:
    return None
  try:
    images = _as_nhwc(idx_lib.read_idx(image_path), image_path)
    label_path = _find(data_dir, label_stem)
    labels = idx_lib.read_idx(label_path).astype(np.int64) if label_path else None
  except OSError as e:
    raise UserError(f"cannot read {e.filename}: {e.strerror}; check the file's permissions")
  except idx_lib.IDXError as e:
    raise UserError(f"{e}; replace the file with an intact copy")
  if labels is not None and labels.shape != images.shape[:1]:
    raise UserError(f"{label_path} has {labels.shape[0]} labels for {images.shape[0]} images in "
                    f"{image_path}; the two files must belong together")
  return images, labels


def split_holdout(images: np.ndarray, labels: np.ndarray | None, test_fraction: float):
  """Fixed random split of one set into (train, test) parts; the test part has round(f * N) items."""
  n = images.shape[0]
  n_test = int(round(test_fraction * n))
  if not 0 < n_test < n:
    raise UserError(f"--test_fraction={test_fraction} leaves {n - n_test} train and {n_test} test "
                    f"examples out of {n}; choose a fraction in (0, 1) that leaves both non-empty")
  perm = np.random.default_rng(SPLIT_SEED).permutation(n)
  test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
  pick = lambda a, i: None if a is None else a[i]
  return (images[train_idx], pick(labels, train_idx)), (images[test_idx], pick(labels, test_idx))


def load_idx_dir(data_dir: str, test_fraction: float = 0.2) -> ImageDataset:
  """Loads a directory of raw IDX files; a lone split is divided with ``split_holdout``."""
  train = _read_split(data_dir, "train")
  test = _read_split(data_dir, "test")
  if train is None and test is None:
    raise UserError(f"no IDX image files in {data_dir}; " + offline_hint("mnist"))
  if train is not None and test is not None:
    if train[0].shape[1:] != test[0].shape[1:]:
      raise UserError(f"train images {train[0].shape[1:]} and test images {test[0].shape[1:]} in "
                      f"{data_dir} differ in shape; the files must come from one data set")
    return ImageDataset(train[0], train[1], test[0], test[1],
                        source=f"IDX files in {data_dir}: {len(train[0])} train, {len(test[0])} test")
  only, name = (train, "train") if test is None else (test, "t10k")
  (tr_x, tr_y), (te_x, te_y) = split_holdout(only[0], only[1], test_fraction)
  return ImageDataset(tr_x, tr_y, te_x, te_y, source=(
      f"IDX files in {data_dir} hold only the {name} split ({len(only[0])} images): fixed random "
      f"split into {len(tr_x)} train / {len(te_x)} test (--test_fraction={test_fraction})"))


@contextlib.contextmanager
def _quiet_absl():
  """tensorflow-datasets logs warnings through absl; keep stderr for our own one-line errors."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  previous = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(previous)


def _stack_source(source, split: str) -> tuple[np.ndarray, np.ndarray | None]:
  examples = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(ex["image"], dtype=np.uint8) for ex in examples])
  labels = (np.asarray([ex["label"] for ex in examples], dtype=np.int64)
            if examples and "label" in examples[0] else None)
  return _as_nhwc(images, f"the {split} split"), labels


def load_tfds(name: str, data_dir: str | None = None) -> ImageDataset:
  """Loads both splits of a prepared tensorflow-datasets copy through ``tfds.data_source``.

  No download here: building MNIST-like data sets in TFDS needs TensorFlow (see
  genrl_jax.data.download); ``load`` fetches the raw IDX files instead when this fails.
  """
  with _quiet_absl():
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    tfds.disable_progress_bar()
    sources = {split: tfds.data_source(name, split=split, data_dir=data_dir, download=False)
               for split in ("train", "test")}
    train = _stack_source(sources["train"], "train")
    test = _stack_source(sources["test"], "test")
  where = data_dir or "the default tensorflow-datasets directory"
  return ImageDataset(train[0], train[1], test[0], test[1], source=(
      f"tensorflow-datasets {name!r} from {where}: {len(train[0])} train, {len(test[0])} test"))


def _first_line(e: BaseException) -> str:
  return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"


def load_named(name: str, data_dir: str | None = None) -> ImageDataset:
  """A prepared TFDS copy if there is one, else the raw IDX files, downloaded once and cached
  under ``<data_dir or $TFDS_DATA_DIR or ~/tensorflow_datasets>/downloads/idx/<name>/``."""
  try:
    return load_tfds(name, data_dir)
  except UserError:
    raise
  except Exception as e:  # noqa: BLE001 -- not prepared (or unreadable): fall back to IDX files.
    tfds_reason = _first_line(e)
  root = data_dir or os.environ.get("TFDS_DATA_DIR")
  try:
    directory = download.fetch_idx(name, root)
  except download.NETWORK_ERRORS as e:
    raise UserError(f"cannot load {name!r}: no prepared tensorflow-datasets copy "
                    f"({tfds_reason}) and downloading its IDX files failed ({_first_line(e)}); "
                    f"{offline_hint(name)}") from None
  dataset = load_idx_dir(directory)
  return dataclasses.replace(dataset, source=f"{name} {dataset.source}")


def load(name: str, data_dir: str | None = None, test_fraction: float = 0.2) -> ImageDataset:
  """Loads data set ``name``: raw IDX files if ``data_dir`` holds them, else a prepared
  tensorflow-datasets copy, else the IDX files downloaded (once) by ``load_named``."""
  if name not in DATASETS:
    raise UserError(f"unknown --dataset={name!r}; choose one of {', '.join(DATASETS)}")
  if data_dir:
    data_dir = os.path.expanduser(data_dir)
    if not os.path.isdir(data_dir):
      raise UserError(f"--data_dir={data_dir} is not a directory; {offline_hint(name)}")
    if not os.access(data_dir, os.R_OK | os.X_OK):
      raise UserError(f"--data_dir={data_dir} is not readable; fix its permissions")
    if has_idx_files(data_dir):
      return load_idx_dir(data_dir, test_fraction)
  return load_named(name, data_dir)


def binarize_static(images: np.ndarray, seed: int = BINARIZE_SEED) -> np.ndarray:
  """One fixed Bernoulli draw per pixel with p = intensity / 255, returned as uint8 {0, 255}.

  The fixed stochastic binarization of Salakhutdinov & Murray (2008), used by Larochelle & Murray
  (2011) and Burda et al. (2015); kept in 0/255 so every scheme decodes as ``x = image / 255``.
  """
  rng = np.random.default_rng(seed)
  p = images.astype(np.float32) / 255.0
  return np.where(rng.random(images.shape, dtype=np.float32) < p, 255, 0).astype(np.uint8)


def dynamic_binarize(key: jax.Array, x: jax.Array) -> jax.Array:
  """A fresh Bernoulli(x) draw of intensities x in [0, 1] (inside jit, once per batch)."""
  return jax.random.bernoulli(key, x).astype(x.dtype)


def device_arrays(dataset: ImageDataset, binarize: str,
                  with_labels: bool = False) -> dict[str, jax.Array]:
  """Both splits on the device as flat uint8 [N, P], binarization applied where it is fixed;
  ``with_labels`` adds ``train_labels`` / ``test_labels`` as int32 [N] (one clear error when the
  data set has none).

  dynamic: train stays grayscale (binarized per batch in the train step); test binarized once.
  static:  train and test binarized once (``binarize_static``).
  none:    both grayscale; targets are intensities in [0, 1] (the PyTorch VAE example's BCE).
  """
  if binarize not in BINARIZE:
    raise UserError(f"unknown --binarize={binarize!r}; choose one of {', '.join(BINARIZE)}")
  train, test = dataset.train_images, dataset.test_images
  if binarize in ("dynamic", "static"):
    test = binarize_static(test, BINARIZE_SEED + 1)
  if binarize == "static":
    train = binarize_static(train, BINARIZE_SEED)
  flat = lambda a: jnp.asarray(a.reshape(a.shape[0], -1))
  arrays = {"train": flat(train), "test": flat(test)}
  if with_labels:
    if dataset.train_labels is None or dataset.test_labels is None:
      raise UserError(f"this experiment needs class labels, and {dataset.source} has none; add "
                      "the *-labels-idx1-ubyte files beside the image files")
    arrays["train_labels"] = jnp.asarray(dataset.train_labels, jnp.int32)
    arrays["test_labels"] = jnp.asarray(dataset.test_labels, jnp.int32)
  return arrays


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which image data set an experiment trains on, and where it comes from (its flags)."""
  dataset: str = cfg.field("mnist", f"tensorflow-datasets name: {', '.join(DATASETS)}.",
                           choices=DATASETS)
  data_dir: str | None = cfg.field(
      None, "Offline data: a prepared tensorflow-datasets directory, or a directory of raw IDX "
      "files (train-/t10k-images-idx3-ubyte[.gz], labels optional; auto-detected). Unset: a "
      "prepared copy in tensorflow-datasets' default directory, else the IDX files downloaded "
      "once into ~/tensorflow_datasets/downloads/idx/<dataset>/.")
  test_fraction: float = cfg.field(0.2, "Only when --data_dir holds a single IDX split (e.g. "
                                   "only the t10k files): the fraction held out as the test set "
                                   "(fixed split).", check=cfg.open_unit_interval)

  def load(self) -> ImageDataset:
    return load(self.dataset, self.data_dir, self.test_fraction)
