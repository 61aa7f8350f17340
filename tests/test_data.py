"""Data: the IDX parser against files numpy writes, IDX directories (one or two splits), tfds
through its mock, binarization statistics, and the one-line errors for bad data options."""

import gzip
import os
import struct

import jax
import numpy as np
import pytest

from genrl_jax.data import idx as idx_lib
from genrl_jax.data import images
from genrl_jax.errors import UserError


def write_idx(path, array, type_code, gz):
  """IDX by the letter of the format: 0, 0, type, ndim, big-endian uint32 dims, big-endian data."""
  big_endian = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
  raw = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  raw += np.ascontiguousarray(array).astype(big_endian[type_code]).tobytes()
  with open(path, "wb") as f:
    f.write(gzip.compress(raw) if gz else raw)


def write_mnist_like(directory, splits=("train", "t10k"), sizes=(60, 20), gz=True, seed=0):
  """Random 28x28 uint8 images and labels under the LeCun file names; returns the arrays."""
  rng = np.random.default_rng(seed)
  out = {}
  os.makedirs(directory, exist_ok=True)
  for split, n in zip(splits, sizes):
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=(n,), dtype=np.uint8)
    ext = ".gz" if gz else ""
    write_idx(os.path.join(directory, f"{split}-images-idx3-ubyte{ext}"), x, 0x08, gz)
    write_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte{ext}"), y, 0x08, gz)
    out[split] = (x, y)
  return out


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                        (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)])
def test_idx_reader_matches_numpy_written_files(tmp_path, gz, dtype, code):
  rng = np.random.default_rng(1)
  array = (rng.normal(size=(3, 5, 7)) * 100).astype(dtype)
  path = str(tmp_path / "a.idx")
  write_idx(path, array, code, gz)
  got = idx_lib.read_idx(path)
  assert got.dtype == np.dtype(dtype) and got.dtype.isnative
  np.testing.assert_array_equal(got, array)


def test_idx_reader_rejects_damaged_files(tmp_path):
  path = str(tmp_path / "bad")
  with open(path, "wb") as f:
    f.write(b"\x01\x02\x08\x01" + struct.pack(">I", 3) + b"abc")
  with pytest.raises(idx_lib.IDXError, match="not an IDX file"):
    idx_lib.read_idx(path)
  with open(path, "wb") as f:  # header says 10 bytes, 3 follow
    f.write(b"\x00\x00\x08\x01" + struct.pack(">I", 10) + b"abc")
  with pytest.raises(idx_lib.IDXError, match="implies"):
    idx_lib.read_idx(path)



@pytest.mark.parametrize("damage", ["garbage", "truncated_idx", "truncated_gzip"])
def test_damaged_idx_file_is_named_by_its_full_path(tmp_path, damage):
  write_mnist_like(str(tmp_path), splits=("t10k",), sizes=(20,))
  path = tmp_path / "t10k-images-idx3-ubyte.gz"
  raw = gzip.decompress(path.read_bytes())
  if damage == "garbage":
    path.write_bytes(gzip.compress(b"not an idx file at all"))
  elif damage == "truncated_idx":  # a whole gzip stream of a cut IDX payload
    path.write_bytes(gzip.compress(raw[:-100]))
  else:  # the gzip stream itself cut short
    path.write_bytes(path.read_bytes()[:200])
  with pytest.raises(UserError) as info:
    images.load_idx_dir(str(tmp_path))
  message = str(info.value)
  assert message.startswith(f"{path} "), message
  assert "\n" not in message

def test_idx_directory_with_both_splits(tmp_path):
  arrays = write_mnist_like(str(tmp_path))
  ds = images.load("mnist", str(tmp_path))
  np.testing.assert_array_equal(ds.train_images[..., 0], arrays["train"][0])
  np.testing.assert_array_equal(ds.test_labels, arrays["t10k"][1])
  assert ds.image_shape == (28, 28, 1)
  assert "60 train, 20 test" in ds.source


def test_idx_directory_with_only_t10k_is_split_disjointly(tmp_path):
  arrays = write_mnist_like(str(tmp_path), splits=("t10k",), sizes=(50,), gz=False)
  ds = images.load("fashion_mnist", str(tmp_path), test_fraction=0.2)
  assert ds.train_images.shape[0] == 40 and ds.test_images.shape[0] == 10
  assert "40 train / 10 test" in ds.source and "--test_fraction=0.2" in ds.source
  # Every original image lands in exactly one part, with its own label.
  original = {img.tobytes(): lab for img, lab in zip(*arrays["t10k"])}
  seen = [(img[..., 0].tobytes(), lab) for img, lab in zip(ds.train_images, ds.train_labels)]
  seen += [(img[..., 0].tobytes(), lab) for img, lab in zip(ds.test_images, ds.test_labels)]
  assert len({s for s, _ in seen}) == 50 == len(original)
  assert all(original[s] == lab for s, lab in seen)
  # The split is fixed: loading again gives the same parts.
  again = images.load("fashion_mnist", str(tmp_path), test_fraction=0.2)
  np.testing.assert_array_equal(again.test_images, ds.test_images)


def test_named_data_set_without_tfds_copy_downloads_idx_once(tmp_path, monkeypatch):
  """No prepared TFDS copy: the IDX files come from the (here: loopback) server, then the cache."""
  import functools, hashlib, http.server, threading  # pylint: disable=g-import-not-at-top,multiple-imports
  from genrl_jax.data import download  # pylint: disable=g-import-not-at-top
  served = tmp_path / "served"
  arrays = write_mnist_like(str(served), sizes=(30, 10))
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
  handler.log_message = lambda *a, **k: None
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  base = f"http://127.0.0.1:{httpd.server_address[1]}/"
  files = [download.RemoteFile(base + f, os.path.getsize(served / f),
                               hashlib.sha256((served / f).read_bytes()).hexdigest(), f)
           for f in sorted(os.listdir(served))]
  monkeypatch.setattr(download, "tfds_checksums", lambda name: files)
  root = tmp_path / "tfds"
  root.mkdir()
  try:
    ds = images.load("fashion_mnist", str(root))
  finally:
    httpd.shutdown()
    httpd.server_close()
  np.testing.assert_array_equal(ds.test_images[..., 0], arrays["t10k"][0])
  assert "30 train, 10 test" in ds.source
  again = images.load("fashion_mnist", str(root))  # server gone: the verified cache is used
  np.testing.assert_array_equal(again.train_images, ds.train_images)


def test_tfds_path_through_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):
    ds = images.load("mnist")
  assert ds.train_images.shape == (12, 28, 28, 1) and ds.train_images.dtype == np.uint8
  assert ds.test_images.shape == (12, 28, 28, 1) and ds.train_labels.shape == (12,)
  assert "tensorflow-datasets 'mnist'" in ds.source


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="cifar10"), "unknown --dataset='cifar10'; choose one of mnist, fashion_mnist"),
    (dict(name="mnist", data_dir="/nonexistent/dir"), "is not a directory"),
])
def test_bad_data_options_are_user_errors(kwargs, match):
  with pytest.raises(UserError, match=match):
    images.load(**kwargs)


def test_holdout_fraction_that_empties_a_part_is_a_user_error(tmp_path):
  write_mnist_like(str(tmp_path), splits=("t10k",), sizes=(5,))
  with pytest.raises(UserError, match="leaves"):
    images.load("mnist", str(tmp_path), test_fraction=0.01)


def test_static_binarization_is_an_unbiased_fixed_draw():
  intensities = np.full((200, 28, 28), 64, np.uint8)  # p = 64 / 255
  a = images.binarize_static(intensities)
  assert set(np.unique(a)) <= {0, 255}
  p_hat = (a == 255).mean()
  assert abs(p_hat - 64 / 255) < 4 * np.sqrt(0.25 / a.size)
  np.testing.assert_array_equal(images.binarize_static(intensities), a)  # fixed


def test_dynamic_binarization_mean_and_freshness():
  x = np.linspace(0, 1, 784, dtype=np.float32)[None].repeat(500, axis=0)
  k1, k2 = jax.random.split(jax.random.key(3))
  a, b = np.asarray(images.dynamic_binarize(k1, x)), np.asarray(images.dynamic_binarize(k2, x))
  assert set(np.unique(a)) <= {0.0, 1.0}
  np.testing.assert_allclose(a.mean(0), x[0], atol=4 * np.sqrt(0.25 / 500))
  assert (a != b).mean() > 0.2  # two keys, two draws


@pytest.mark.parametrize("scheme", images.BINARIZE)
def test_device_arrays_layout(scheme):
  rng = np.random.default_rng(0)
  ds = images.ImageDataset(rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8), None,
                           rng.integers(0, 256, (4, 28, 28, 1), dtype=np.uint8), None, "test")
  arrays = images.device_arrays(ds, scheme)
  assert arrays["train"].shape == (6, 784) and arrays["test"].shape == (4, 784)
  assert arrays["train"].dtype == np.uint8
  binary = lambda a: set(np.unique(np.asarray(a))) <= {0, 255}
  assert binary(arrays["test"]) == (scheme != "none")
  assert binary(arrays["train"]) == (scheme == "static")
  if scheme == "none":
    np.testing.assert_array_equal(np.asarray(arrays["train"]), ds.train_images.reshape(6, -1))
