"""Fetches the raw IDX files of a TFDS image data set, checked against TFDS's own checksums.

tensorflow-datasets builds ``mnist``/``fashion_mnist`` only with TensorFlow installed (its MNIST
builder reads the downloads through ``tf.io.gfile``); genrl_jax does not need TensorFlow, so on a
fresh machine the first run downloads the same four IDX files TFDS would, from the URLs and with
the sizes and SHA-256 sums listed in the installed package (``tensorflow_datasets/url_checksums``),
into ``<data_dir or ~/tensorflow_datasets>/downloads/idx/<name>/``. Later runs read them from there.
Files are written to ``*.part`` and renamed only once their checksum matches, so an interrupted or
corrupted download never looks complete. A failed download (no network, a dropped connection, a
bad checksum, ^C) removes what it created: its ``*.part`` file, and the cache directories it made
that are still empty. It never removes anything that existed before, nor a file it fetched and
verified (that one is a complete cached download, used by the next attempt).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request

from genrl_jax.errors import UserError

DEFAULT_ROOT = os.path.join("~", "tensorflow_datasets")


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  url: str
  size: int
  sha256: str
  filename: str


def tfds_checksums(name: str) -> list[RemoteFile]:
  """The files TFDS downloads for ``name``, read from the installed tensorflow-datasets."""
  import tensorflow_datasets  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(tensorflow_datasets.__file__), "url_checksums", f"{name}.txt")
  try:
    with open(path) as f:
      rows = [line.split("\t") for line in f.read().splitlines() if line.strip()]
  except OSError:
    raise UserError(f"tensorflow-datasets lists no download for {name!r} ({path} is missing)")
  return [RemoteFile(url, int(size), sha, filename) for url, size, sha, filename in rows]


def cache_dir(name: str, data_dir: str | None = None) -> str:
  return os.path.join(os.path.expanduser(data_dir or DEFAULT_ROOT), "downloads", "idx", name)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _missing_dirs(directory: str) -> list[str]:
  """The directories ``os.makedirs(directory)`` would create, deepest first."""
  missing = []
  path = os.path.abspath(directory)
  while not os.path.exists(path):
    missing.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return missing


def _fetch(remote: RemoteFile, dest: str, timeout: float) -> None:
  part = dest + ".part"
  start = time.perf_counter()
  try:
    with urllib.request.urlopen(remote.url, timeout=timeout) as response, open(part, "wb") as out:
      done = 0
      while True:
        block = response.read(1 << 16)
        if not block:
          break
        out.write(block)
        done += len(block)
  except BaseException:
    if os.path.exists(part):
      os.remove(part)
    raise
  if done != remote.size or _sha256(part) != remote.sha256:
    os.remove(part)
    raise UserError(f"download of {remote.url} is corrupt ({done} bytes, expected {remote.size} "
                    "with a matching SHA-256); run again, or fetch the file by hand")
  os.replace(part, dest)
  print(f"downloaded {remote.filename} ({remote.size / 1e6:.1f} MB, "
        f"{time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)


def fetch_idx(name: str, data_dir: str | None = None, files: list[RemoteFile] | None = None,
              timeout: float = 30.0) -> str:
  """Makes sure ``name``'s IDX files are in the cache directory; returns that directory.

  Args:
    name: a TFDS data set name whose downloads are IDX files ("mnist", "fashion_mnist").
    data_dir: the TFDS root (default ~/tensorflow_datasets).
    files: override the file list (tests serve their own files on the loopback interface).
    timeout: seconds per connection attempt.
  Raises:
    OSError / urllib.error.URLError when the network is unreachable (callers turn that into
    their one-line offline hint); UserError on a corrupt download.
  """
  files = tfds_checksums(name) if files is None else files
  directory = cache_dir(name, data_dir)
  created = _missing_dirs(directory)
  os.makedirs(directory, exist_ok=True)
  try:
    for remote in files:
      dest = os.path.join(directory, remote.filename)
      if (os.path.exists(dest) and os.path.getsize(dest) == remote.size
          and _sha256(dest) == remote.sha256):
        continue
      _fetch(remote, dest, timeout)
  except BaseException:
    for path in created:  # deepest first; rmdir removes only an empty directory
      try:
        os.rmdir(path)
      except OSError:
        break
    raise
  return directory


NETWORK_ERRORS = (urllib.error.URLError, OSError, TimeoutError)
