"""Reader for LeCun's IDX format (the raw MNIST / Fashion-MNIST files), gzipped or not.

Layout (http://yann.lecun.com/exdb/mnist/): two zero bytes, one type byte, one byte with the
number of dimensions n, n big-endian uint32 sizes, then the data in C order, big-endian.
"""

from __future__ import annotations

import gzip

import numpy as np

# IDX type byte -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IDXError(ValueError):
  """The bytes are not a well-formed IDX file."""


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
  """Parses the bytes of one (uncompressed) IDX file into an array in native byte order."""
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise IDXError(f"{name} is not an IDX file (it must start with two zero bytes)")
  type_code, ndim = raw[2], raw[3]
  if type_code not in IDX_DTYPES:
    raise IDXError(f"{name} has unknown IDX type byte 0x{type_code:02x}")
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise IDXError(f"{name} is truncated inside its header")
  shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
  dtype = IDX_DTYPES[type_code]
  count = int(np.prod(shape, dtype=np.int64)) if shape else 1
  expected = header + count * dtype.itemsize
  if len(raw) != expected:
    raise IDXError(f"{name} holds {len(raw)} bytes; its header {shape} of {dtype.name} implies "
                   f"{expected}")
  data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
  return data.astype(dtype.newbyteorder("="))


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file; ``.gz`` files (or any file with the gzip magic) are decompressed.

  Every ``IDXError`` names the file by the path it was given (a damaged gzip stream and a bad IDX
  payload alike), so the one-line error says which file to replace."""
  with open(path, "rb") as f:
    raw = f.read()
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
      raise IDXError(f"{path} is a damaged gzip file ({e})") from e
  return parse_idx(raw, path)
