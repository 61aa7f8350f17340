"""IDX download: served on the loopback interface, checked against size and SHA-256."""

import functools
import hashlib
import http.server
import os
import threading

import pytest

from genrl_jax.data import download
from genrl_jax.run import UserError


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
  assert os.listdir(download.cache_dir("toy", str(tmp_path))) == []


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
