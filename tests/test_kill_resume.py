"""SIGKILL one run at three different random moments (seeded: after a random chunk's progress
line, plus a random fraction of a second, so some land inside a checkpoint write), rerun each to
completion: the final checkpoint and metrics.jsonl are bit-identical to the uninterrupted run.
Real processes of tests/toy_experiment.py."""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNKS = 12
FLAGS = ["--seeds=2", f"--chunks={CHUNKS}", "--steps_per_chunk=20000"]


def _env():
  return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
          "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def _cmd(workdir):
  return [sys.executable, "-m", "tests.toy_experiment", f"--workdir={workdir}", *FLAGS]


def _complete(workdir):
  proc = subprocess.run(_cmd(workdir), cwd=ROOT, capture_output=True, text=True, timeout=400,
                        env=_env())
  assert proc.returncode == 0, proc.stderr
  return proc.stdout


def _kill_at(workdir, chunk, delay):
  """Starts the run, SIGKILLs it ``delay`` s after its progress line of ``chunk``; returns
  the checkpoint steps on disk after the kill."""
  victim = subprocess.Popen(_cmd(workdir), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=_env())
  try:
    for line in victim.stdout:
      if line.startswith(f"chunk {chunk}/{CHUNKS} "):
        break
    else:
      raise AssertionError(f"the run ended before chunk {chunk}")
    time.sleep(delay)
    assert victim.poll() is None, "the run ended before the kill; make it longer"
    victim.send_signal(signal.SIGKILL)
  finally:
    victim.stdout.close()
    victim.wait()
  assert victim.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  checkpoints = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit()) \
      if os.path.isdir(checkpoints) else []


def _final_state(workdir):
  return ocp.tree.to_flat_dict(ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", str(CHUNKS), "default")))


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  for r in rows:
    r.pop("seconds")  # wall time, the one field that may differ
  return rows


def test_sigkill_at_three_random_moments_then_rerun_is_bit_identical(tmp_path):
  rng = np.random.default_rng(20261202)
  chunks = sorted(rng.choice(np.arange(1, CHUNKS - 1), size=3, replace=False).tolist())
  delays = rng.uniform(0.0, 0.6, size=3).tolist()
  reference = str(tmp_path / "uninterrupted")
  victims = [str(tmp_path / f"killed_{c}") for c in chunks]
  # The four processes run side by side (the moments stay random; only the wall time drops).
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    uninterrupted = pool.submit(_complete, reference)
    kills = [pool.submit(_kill_at, w, c, d) for w, c, d in zip(victims, chunks, delays)]
    saved = [k.result() for k in kills]
    uninterrupted.result()
    resumed = list(pool.map(_complete, victims))

  expected_state, expected_rows = _final_state(reference), _rows(reference)
  assert [r["chunk"] for r in expected_rows] == [c for c in range(1, CHUNKS + 1) for _ in "ab"]
  for workdir, chunk, delay, steps, out in zip(victims, chunks, delays, saved, resumed):
    moment = f"killed {delay:.2f} s after chunk {chunk}, checkpoints then: {steps}"
    assert all(s < CHUNKS for s in steps), moment
    # A save waits for the previous one, so at chunk k's line step k - 2 is surely on disk: the
    # later kills test a resume, an early one may test a restart from nothing.
    assert chunk < 3 or max(steps, default=0) >= chunk - 2, moment
    if steps:
      assert f"resuming toy from chunk {max(steps)}/{CHUNKS}" in out, (moment, out)
    state = _final_state(workdir)
    assert state.keys() == expected_state.keys(), moment
    for key in state:
      np.testing.assert_array_equal(state[key], expected_state[key], err_msg=f"{key}; {moment}")
    assert _rows(workdir) == expected_rows, moment
    with open(os.path.join(reference, "results.json")) as f, \
         open(os.path.join(workdir, "results.json")) as g:
      assert json.load(f)["metrics"] == json.load(g)["metrics"], moment
