"""Reading back the files the project wrote: any damage is one ``DamagedFile`` naming the file.

A workdir's side files (run_info.json, results.json, metrics.jsonl, snapshot arrays, evaluator
caches) can be missing, cut short by a kill or a full disk, or edited by hand. Every reader here
turns each kind of damage (missing, unreadable, truncated, not JSON, the wrong top-level type,
not an .npy/.npz file) into the one exception ``DamagedFile``, whose message names the file, what
it holds and what is wrong, so each caller chooses its recovery in one place: refuse
(``cli_main`` prints ``error: <message>``), recompute, retrain, or warn and leave it out. Nothing
here writes, moves or deletes a file.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from typing import Any

import numpy as np

from genrl_jax.errors import UserError

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number",
               float: "a number", bool: "true/false", type(None): "null"}


class DamagedFile(UserError):
  """A file read back is missing or damaged: ``path``, what it holds, what is wrong.

  ``partial`` holds what could be read before the damage (the rows of a JSON-lines file before
  its first damaged line), else None.
  """

  def __init__(self, path: str, what: str, damage: str, partial: Any = None):
    super().__init__(f"{path} ({what}) {damage}")
    self.path, self.what, self.damage, self.partial = path, what, damage, partial


def _first_line(error: BaseException, limit: int = 160) -> str:
  text = str(error).strip().splitlines()
  return (text[0] if text else type(error).__name__)[:limit]


def _read_text(path: str, what: str) -> str:
  """The file's text; missing, unreadable or not UTF-8 is a DamagedFile."""
  if not os.path.exists(path):
    raise DamagedFile(path, what, "is missing")
  if os.path.isdir(path):
    raise DamagedFile(path, what, "is a directory, not a file")
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except OSError as e:
    raise DamagedFile(path, what, f"cannot be read ({e.strerror or _first_line(e)})") from None
  except UnicodeDecodeError:
    raise DamagedFile(path, what, "is not text (not UTF-8)") from None


def read_json(path: str, what: str, kind: type = dict, missing_ok: bool = False) -> Any:
  """The JSON document in ``path``, which must be of type ``kind`` (dict: a JSON object).

  Damage: missing (None instead when ``missing_ok``), unreadable, empty, not valid JSON (cut
  short, or not JSON at all), or valid JSON of another top-level type.
  """
  if missing_ok and not os.path.exists(path):
    return None
  text = _read_text(path, what)
  if not text.strip():
    raise DamagedFile(path, what, "is empty")
  try:
    document = json.loads(text)
  except json.JSONDecodeError as e:
    raise DamagedFile(path, what, f"is not valid JSON ({e.msg} at line {e.lineno}, column "
                                  f"{e.colno}); it may be cut short or edited") from None
  if not isinstance(document, kind):
    raise DamagedFile(path, what, f"holds {_JSON_TYPES.get(type(document), 'a value')} where "
                                  f"{_JSON_TYPES.get(kind, kind.__name__)} was expected")
  return document


def read_jsonl(path: str, what: str, missing_ok: bool = True) -> list[dict]:
  """The rows (JSON objects, one a line; blank lines skipped) of a JSON-lines file.

  A last line without its newline that does not parse is a row cut by a kill: it is left out
  silently (the writer recomputes it). Damage: missing (``[]`` when ``missing_ok``), unreadable,
  or any other line that is not a JSON object; ``partial`` then holds the rows before it.
  """
  if missing_ok and not os.path.exists(path):
    return []
  text = _read_text(path, what)
  lines = text.split("\n")
  rows = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      if number == len(lines):  # the last line, no newline after it: cut by a kill
        break
      raise DamagedFile(path, what, f"line {number} is not valid JSON", partial=rows) from None
    if not isinstance(row, dict):
      raise DamagedFile(path, what, f"line {number} holds "
                                    f"{_JSON_TYPES.get(type(row), 'a value')}, not an object",
                        partial=rows)
    rows.append(row)
  return rows


def load_npy(path: str, what: str, shape: tuple | None = None) -> np.ndarray:
  """The array in an .npy file (no pickled objects), of ``shape`` if given (None: any size on
  that axis). Damage: missing, unreadable, truncated (fewer bytes than its header promises), not
  an .npy file, or an array of another shape."""
  if not os.path.exists(path):
    raise DamagedFile(path, what, "is missing")
  try:
    array = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise DamagedFile(path, what, f"cannot be read as an .npy array ({_first_line(e)})") from None
  if not isinstance(array, np.ndarray):
    array.close()
    raise DamagedFile(path, what, "is an .npz archive, not an .npy array")
  if shape is not None and (array.ndim != len(shape) or any(
      want is not None and want != got for want, got in zip(shape, array.shape))):
    wanted = "(" + ", ".join("N" if n is None else str(n) for n in shape) + ")"
    raise DamagedFile(path, what, f"holds an array of shape {tuple(array.shape)}, not {wanted}")
  return array


def load_npz(path: str, what: str) -> dict[str, np.ndarray]:
  """{name: array} of an .npz archive, every array read now. Damage: missing, unreadable, not a
  zip archive, a member cut short or not an .npy array."""
  if not os.path.exists(path):
    raise DamagedFile(path, what, "is missing")
  try:
    stored = np.load(path, allow_pickle=False)
    if not isinstance(stored, np.lib.npyio.NpzFile):
      raise ValueError("an .npy array, not an .npz archive")
    with stored:
      return {k: stored[k] for k in stored.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
    raise DamagedFile(path, what, f"cannot be read as an .npz archive ({_first_line(e)})") from None
