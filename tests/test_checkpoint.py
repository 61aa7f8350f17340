"""The checkpoint wrapper's failure paths and retention, on real orbax checkpoints of small pytrees.

A damaged step (truncated array file, deleted metadata) is reported in one line, left on disk
byte for byte, skipped for the previous readable step, and never counted among (or deleted by)
the newest-``keep`` retention; ``keep_every=K`` also keeps every multiple of K.
"""

import asyncio
import gc
import glob
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrl_jax.run import Checkpointer, UserError
from genrl_jax.run import failed_reads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(value: float):
  """A small state with a typed key, several arrays (so orbax reads several files at once)."""
  rng = np.random.default_rng(int(value))
  return {"w": {f"layer_{i}": jnp.asarray(rng.normal(size=(32, 64)), jnp.float32) + value
                for i in range(6)},
          "step": jnp.asarray(int(value), jnp.int32), "key": jax.random.key(int(value))}


def _save(directory, steps, **kwargs):
  ckpt = Checkpointer(str(directory), **kwargs)
  for s in steps:
    ckpt.save(s, _state(s))
  ckpt.close()


def _step_dirs(directory):
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def _truncate_largest_file(step_dir):
  files = [f for f in glob.glob(os.path.join(step_dir, "**"), recursive=True) if os.path.isfile(f)]
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(100)


def _digest(path):
  """{relative path: sha256} of every file under ``path``."""
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _warnings(text):
  return [line for line in text.splitlines() if line.startswith("warning:")]


def test_damaged_newest_step_falls_back_with_one_line_and_is_kept_byte_for_byte(tmp_path, capsys):
  _save(tmp_path, [1, 2, 3])
  _truncate_largest_file(tmp_path / "3")
  before = _digest(tmp_path / "3")
  ckpt = Checkpointer(str(tmp_path))
  state, step = ckpt.restore(_state(0))
  ckpt.close()
  assert step == 2
  expected = _state(2)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)),
                                   jax.tree.map(np.asarray, {"w": state["w"], "step": state["step"]}),
                                   {"w": expected["w"], "step": expected["step"]}))
  assert np.array_equal(jax.random.key_data(state["key"]), jax.random.key_data(expected["key"]))
  out = capsys.readouterr().out
  assert len(_warnings(out)) == 1 and out.count("\n") == 1
  assert f"step 3 is unreadable, left untouched in {tmp_path / '3'}" in out
  assert _digest(tmp_path / "3") == before
  assert ckpt.unreadable_steps() == [3]


def _remove(path):
  shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


@pytest.mark.parametrize("damage", [
    lambda d: _remove(d / "default" / "_METADATA"),
    lambda d: _remove(d / "default"),  # the whole item directory
    lambda d: [_remove(d), d.mkdir()],  # an empty step directory
    lambda d: (d / "default" / "manifest.ocdbt").write_bytes(b"junk"),
], ids=["metadata_deleted", "item_dir_deleted", "empty_step_dir", "junk_manifest"])
def test_other_damage_falls_back_to_the_previous_step(tmp_path, capsys, damage):
  _save(tmp_path, [1, 2])
  damage(tmp_path / "2")
  state, step = Checkpointer(str(tmp_path)).restore(_state(0))
  assert step == 1 and int(state["step"]) == 1
  assert len(_warnings(capsys.readouterr().out)) == 1
  assert _step_dirs(tmp_path) == [1, 2]


def test_every_step_damaged_is_one_error_and_nothing_changes(tmp_path, capsys):
  _save(tmp_path, [1, 2, 3])
  for s in (1, 2, 3):
    _truncate_largest_file(tmp_path / str(s))
  before = _digest(tmp_path)
  with pytest.raises(UserError, match=r"no readable checkpoint .*steps 3, 2, 1 are unreadable"):
    Checkpointer(str(tmp_path)).restore(_state(0))
  warnings = _warnings(capsys.readouterr().out)
  assert [w.split()[3] for w in warnings] == ["3", "2", "1"]  # one line per damaged step
  assert _digest(tmp_path) == before


def test_retention_keeps_three_readable_beside_a_damaged_step(tmp_path, capsys):
  # The reported case: steps 2, 3, 4 kept of 1..4; 4 damaged; the resumed run redoes 4 and 5.
  _save(tmp_path, [1, 2, 3, 4])
  assert _step_dirs(tmp_path) == [2, 3, 4]
  _truncate_largest_file(tmp_path / "4")
  damaged = _digest(tmp_path / "4")
  ckpt = Checkpointer(str(tmp_path), keep=3)
  _, step = ckpt.restore(_state(0))
  assert step == 3
  for s in (4, 5):  # step 4 is not overwritten: it stays as found.
    ckpt.save(s, _state(s))
  ckpt.wait()
  assert _step_dirs(tmp_path) == [2, 3, 4, 5]  # readable 5, 3, 2 + the damaged 4
  ckpt.save(6, _state(6))
  ckpt.close()
  assert _step_dirs(tmp_path) == [3, 4, 5, 6]
  # A later run finds step 4 damaged again and still neither counts nor deletes it.
  ckpt = Checkpointer(str(tmp_path), keep=3)
  _, step = ckpt.restore(_state(0))
  assert step == 6
  ckpt.save(7, _state(7))
  ckpt.close()
  assert _step_dirs(tmp_path) == [4, 5, 6, 7]
  assert _digest(tmp_path / "4") == damaged
  assert len(_warnings(capsys.readouterr().out)) == 2  # once per run


def test_keep_every_keeps_the_multiples_beside_the_newest(tmp_path):
  _save(tmp_path, range(1, 11), keep=2, keep_every=3)
  assert _step_dirs(tmp_path) == [3, 6, 9, 10]
  _save(tmp_path / "off", range(1, 11), keep=2)
  assert _step_dirs(tmp_path / "off") == [9, 10]


def test_keep_every_multiples_survive_resume(tmp_path):
  _save(tmp_path, range(1, 7), keep=2, keep_every=4)
  ckpt = Checkpointer(str(tmp_path), keep=2, keep_every=4)
  state, step = ckpt.restore(_state(0))
  assert step == 6 and int(state["step"]) == 6
  for s in range(7, 10):
    ckpt.save(s, _state(s))
  ckpt.close()
  assert _step_dirs(tmp_path) == [4, 8, 9]


@pytest.mark.parametrize("kwargs", [{"keep": 0}, {"keep_every": 0}, {"keep_every": 2.5}])
def test_bad_retention_settings_are_user_errors(tmp_path, kwargs):
  with pytest.raises(UserError):
    Checkpointer(str(tmp_path), **kwargs)


_NOISE_SCRIPT = textwrap.dedent("""
    import gc, sys
    sys.path.insert(0, {root!r})
    from tests.test_checkpoint import _save, _state, _truncate_largest_file
    from genrl_jax.run import Checkpointer, UserError
    d = {directory!r}
    _save(d, [1, 2, 3])
    _truncate_largest_file(d + "/3")
    ckpt = Checkpointer(d)
    print("restored", ckpt.restore(_state(0))[1], flush=True)
    ckpt.close()
    for s in (1, 2):
      _truncate_largest_file(d + "/" + str(s))
    try:
      Checkpointer(d).restore(_state(0))
    except UserError as e:
      print("error:", e, flush=True)
    gc.collect()
""")


def _noise_script_output(tmp_path) -> list[str]:
  script = _NOISE_SCRIPT.format(root=ROOT, directory=str(tmp_path / "ckpt"))
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return (proc.stdout + proc.stderr).splitlines()


_EXPECTED_KINDS = ["warning:", "restored", "warning:", "warning:", "warning:", "error:"]


def test_no_traceback_from_orbax_reader_threads(tmp_path):
  # orbax's failed reads print their tracebacks from background threads, so only a real process
  # shows them: everything the run prints must be the warning lines, the result and the error.
  lines = _noise_script_output(tmp_path)
  kinds = [line.split()[0] for line in lines]
  assert "error:" in kinds, "\n".join(lines)
  during_run = lines[:kinds.index("error:") + 1]
  assert [line.split()[0] for line in during_run] == _EXPECTED_KINDS, "\n".join(lines)


@pytest.mark.xfail(strict=False, reason=(
    "known, not fixed yet: a tensorstore read callback that outlives a failed restore can fire "
    "while the interpreter shuts down, after the run's last line, and then prints one raw "
    "'RuntimeError: Event loop is closed' traceback (the hooks are no longer consulted then)"))
def test_nothing_at_all_after_the_last_line(tmp_path):
  lines = _noise_script_output(tmp_path)
  assert [line.split()[0] for line in lines] == _EXPECTED_KINDS, "\n".join(lines)


class _CallsIntoClosedLoop:
  """Its finalizer does what a late tensorstore callback does: it schedules on a closed loop.
  Python reports an exception from a finalizer through ``sys.unraisablehook``, as it does for
  that callback."""

  def __init__(self, loop, error=None):
    self.loop, self.error = loop, error

  def __del__(self):
    if self.error is not None:
      raise self.error
    self.loop.call_soon_threadsafe(lambda: None)


def test_closed_loop_callbacks_are_dropped_and_other_unraisables_passed_on(tmp_path, monkeypatch):
  seen = []
  monkeypatch.setattr("sys.unraisablehook", lambda u: seen.append(str(u.exc_value)))
  failed_reads.silence_leftovers(str(tmp_path / "4"))
  loop = asyncio.new_event_loop()
  loop.close()
  obj = _CallsIntoClosedLoop(loop)
  del obj
  other = _CallsIntoClosedLoop(loop, RuntimeError("Event loop is closed, but raised elsewhere"))
  del other
  gc.collect()
  assert seen == ["Event loop is closed, but raised elsewhere"]


def test_unretrieved_read_errors_of_a_damaged_step_are_not_logged(tmp_path, caplog):
  damaged, other = str(tmp_path / "4"), str(tmp_path / "40")
  failed_reads.silence_leftovers(damaged)

  async def read(path):
    raise ValueError(f'OUT_OF_RANGE: Error reading "w/0.0" at local file "{path}/default/"')

  def fail_unretrieved(path):
    loop = asyncio.new_event_loop()
    task = loop.create_task(read(path))
    loop.run_until_complete(asyncio.sleep(0))  # the task runs and fails; nobody awaits it
    loop.close()
    del task
    gc.collect()

  with caplog.at_level(logging.ERROR, logger="asyncio"):
    fail_unretrieved(damaged)
    fail_unretrieved(other)  # a step not known to be damaged: still logged
  messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
  assert len(messages) == 1 and other + "/default/" in messages[0]


def test_unretrieved_future_errors_of_a_damaged_step_are_not_logged(tmp_path, caplog):
  # The same read failure on a bare Future (asyncio words it "Future exception ...").
  damaged, other = str(tmp_path / "7"), str(tmp_path / "70")
  failed_reads.silence_leftovers(damaged)

  def fail_unretrieved(path):
    loop = asyncio.new_event_loop()
    future = loop.create_future()
    future.set_exception(ValueError(f'OUT_OF_RANGE: Error reading at local file "{path}/default/"'))
    loop.close()
    del future
    gc.collect()

  with caplog.at_level(logging.ERROR, logger="asyncio"):
    fail_unretrieved(damaged)
    fail_unretrieved(other)
  messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
  assert len(messages) == 1 and messages[0].startswith("Future exception was never retrieved")
  assert other + "/default/" in messages[0]
