"""IDX download: served on the loopback interface, checked against size and SHA-256."""

import functools
import hashlib
import http.server
import os
import threading

import urllib.error
import urllib.request

import pytest

from genrl_jax.data import download
from genrl_jax.errors import UserError


@pytest.fixture
def server(tmp_path):
  root = tmp_path / "served"
  root.mkdir()
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
  handler.log_message = lambda *a, **k: None
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
  httpd.shutdown()
  httpd.server_close()


def _remote(root, base, name, payload, sha=None):
  (root / name).write_bytes(payload)
  return download.RemoteFile(base + name, len(payload),
                             sha or hashlib.sha256(payload).hexdigest(), name)


def test_fetch_writes_verified_files_and_reuses_them(server, tmp_path):
  root, base = server
  files = [_remote(root, base, "a.gz", b"first file"), _remote(root, base, "b.gz", b"x" * 70000)]
  out = download.fetch_idx("toy", str(tmp_path / "tfds"), files=files)
  assert out == download.cache_dir("toy", str(tmp_path / "tfds"))
  assert open(os.path.join(out, "a.gz"), "rb").read() == b"first file"
  assert open(os.path.join(out, "b.gz"), "rb").read() == b"x" * 70000
  # Cached: the server may go away, the files are not fetched again.
  (root / "a.gz").unlink()
  (root / "b.gz").unlink()
  assert download.fetch_idx("toy", str(tmp_path / "tfds"), files=files) == out


def test_corrupt_download_is_refused_and_never_looks_complete(server, tmp_path):
  root, base = server
  bad = _remote(root, base, "a.gz", b"payload", sha="0" * 64)
  with pytest.raises(UserError, match="corrupt"):
    download.fetch_idx("toy", str(tmp_path), files=[bad])
  assert not os.path.exists(download.cache_dir("toy", str(tmp_path)))
  assert sorted(os.listdir(tmp_path)) == ["served"]  # nothing left behind


def test_unreachable_network_raises_a_network_error(tmp_path):
  # Port 9 on loopback: nothing listens, the connection is refused at once.
  remote = download.RemoteFile("http://127.0.0.1:9/a.gz", 1, "0" * 64, "a.gz")
  with pytest.raises(download.NETWORK_ERRORS):
    download.fetch_idx("toy", str(tmp_path), files=[remote], timeout=2)


def test_tfds_lists_the_mnist_files_we_would_fetch():
  files = download.tfds_checksums("mnist")
  names = sorted(f.filename for f in files)
  assert names == sorted(["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                          "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])
  # The shared t10k images are the same bytes TFDS would download.
  shared = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist",
                        "t10k-images-idx3-ubyte.gz")
  if os.path.exists(shared):
    t10k = next(f for f in files if f.filename == "t10k-images-idx3-ubyte.gz")
    assert hashlib.sha256(open(shared, "rb").read()).hexdigest() == t10k.sha256


def _tree(path):
  """Every file and directory under ``path``, relative, with file contents."""
  out = {}
  for root, dirs, files in os.walk(path):
    for d in dirs:
      out[os.path.relpath(os.path.join(root, d), path) + "/"] = None
    for f in files:
      full = os.path.join(root, f)
      out[os.path.relpath(full, path)] = open(full, "rb").read()
  return out


class _DroppedConnection:
  """A response that delivers some bytes, then fails like a reset connection."""

  def __init__(self, payload):
    self._blocks = [payload]

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  def read(self, n):
    if self._blocks:
      return self._blocks.pop()
    raise ConnectionResetError(104, "Connection reset by peer")


def _failing_urlopen(url, timeout):
  raise urllib.error.URLError(OSError(101, "Network is unreachable"))


def test_failed_download_without_network_leaves_nothing_behind(tmp_path, monkeypatch):
  # The reported case: a fresh home directory, no network: no empty
  # ~/tensorflow_datasets/downloads/idx/mnist/ afterwards.
  monkeypatch.setattr(urllib.request, "urlopen", _failing_urlopen)
  home = tmp_path / "home"
  home.mkdir()
  remote = download.RemoteFile("http://example.invalid/a.gz", 4, "0" * 64, "a.gz")
  with pytest.raises(download.NETWORK_ERRORS):
    download.fetch_idx("mnist", str(home / "tensorflow_datasets"), files=[remote])
  assert os.listdir(home) == []


def test_dropped_connection_removes_its_part_file_and_keeps_what_existed(tmp_path, monkeypatch):
  monkeypatch.setattr(urllib.request, "urlopen",
                      lambda url, timeout: _DroppedConnection(b"half a file"))
  root = tmp_path / "tfds"
  (root / "downloads" / "manual").mkdir(parents=True)
  (root / "downloads" / "manual" / "mine.bin").write_bytes(b"a user's file")
  (root / "downloads" / "idx").mkdir()
  before = _tree(root)
  remote = download.RemoteFile("http://example.invalid/a.gz", 100, "0" * 64, "a.gz")
  with pytest.raises(ConnectionResetError):
    download.fetch_idx("mnist", str(root), files=[remote])
  assert _tree(root) == before  # idx/ existed and stays; only idx/mnist/ and a.gz.part went


def test_files_verified_before_a_failure_stay_cached(server, tmp_path, monkeypatch):
  root, base = server
  good = _remote(root, base, "a.gz", b"first file")
  missing = download.RemoteFile(base + "b.gz", 5, "0" * 64, "b.gz")  # the server has no b.gz
  with pytest.raises(download.NETWORK_ERRORS):
    download.fetch_idx("toy", str(tmp_path / "tfds"), files=[good, missing])
  cache = download.cache_dir("toy", str(tmp_path / "tfds"))
  assert sorted(os.listdir(cache)) == ["a.gz"]
  assert open(os.path.join(cache, "a.gz"), "rb").read() == b"first file"
