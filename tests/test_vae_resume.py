"""SIGKILL a real training process mid-run, rerun the same command: it resumes from the last
checkpoint and ends bit-identical to an uninterrupted run (params, optimizer, keys, metrics)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp

from tests.test_data import write_mnist_like
from tests.test_vae_experiment import ROOT, _env

EPOCHS = 8
FLAGS = ["--hidden=32", "--latent_dim=4", "--batch_size=16", f"--epochs={EPOCHS}", "--seeds=2",
         "--eval_iw_samples=4", "--seed=7"]


def _command(data_dir, workdir):
  return [sys.executable, "-m", "experiments.vae", f"--data_dir={data_dir}",
          f"--workdir={workdir}", *FLAGS]


def _final_state(workdir):
  path = os.path.join(workdir, "checkpoints", str(EPOCHS), "default")
  return ocp.StandardCheckpointer().restore(path)


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  for r in rows:
    r.pop("seconds")
  return sorted(rows, key=lambda r: (r["chunk"], r["seed"]))


def test_sigkill_then_rerun_resumes_bit_identically(tmp_path):
  data = str(tmp_path / "data")
  write_mnist_like(data, sizes=(1600, 64))
  reference, killed = str(tmp_path / "uninterrupted"), str(tmp_path / "killed")

  proc = subprocess.run(_command(data, reference), cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=_env())
  assert proc.returncode == 0, proc.stderr

  victim = subprocess.Popen(_command(data, killed), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env())
  checkpoints = os.path.join(killed, "checkpoints")
  deadline = time.time() + 240
  while time.time() < deadline and victim.poll() is None:
    done = [d for d in os.listdir(checkpoints) if d.isdigit()] if os.path.isdir(checkpoints) else []
    if done:
      break
    time.sleep(0.02)
  assert victim.poll() is None, "the run ended before it could be killed; make it longer"
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  saved = sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit())
  assert saved and saved[-1] < EPOCHS, saved

  resumed = subprocess.run(_command(data, killed), cwd=ROOT, capture_output=True, text=True,
                           timeout=300, env=_env())
  assert resumed.returncode == 0, resumed.stderr
  assert "resuming vae from epoch" in resumed.stdout

  a, b = _final_state(reference), _final_state(killed)
  flat_a, flat_b = ocp.tree.to_flat_dict(a), ocp.tree.to_flat_dict(b)
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=str(key))
  assert _metrics(reference) == _metrics(killed)
  with open(os.path.join(reference, "results.json")) as f, \
       open(os.path.join(killed, "results.json")) as g:
    ra, rb = json.load(f), json.load(g)
  assert ra["metrics"]["test_nll_iwae"]["per_seed"] == rb["metrics"]["test_nll_iwae"]["per_seed"]
