"""Failure paths of the shared runner and entry points: a silent final evaluation, buffered
progress lines, a late workdir check, another experiment's workdir, NaN with nothing or
something to keep. Real processes where the terminal or files are involved."""

import hashlib
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrl_jax import run as runner
from genrl_jax.run import progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _toy_init(key, data):
  return {"w": jax.random.normal(key, (3,)), "step": jnp.zeros((), jnp.int32)}


def _toy_chunk(state, data):
  state = {"w": state["w"] * 0.9, "step": state["step"] + 1}
  return state, {"loss": jnp.sum(state["w"] ** 2)}


def test_a_long_final_evaluation_prints_a_start_line_an_estimate_and_a_heartbeat(monkeypatch):
  monkeypatch.setattr(progress, "HEARTBEAT_SECONDS", 0.2)

  def slow_evaluate(state, data):
    def sleep(x):
      time.sleep(1.0)
      return x
    w = jax.pure_callback(sleep, jax.ShapeDtypeStruct((3,), jnp.float32), state["w"],
                          vmap_method="sequential")
    return {"norm": jnp.linalg.norm(w)}

  exp = runner.Experiment(name="toy", init=_toy_init, chunk=_toy_chunk, num_chunks=2,
                          evaluate=slow_evaluate, evaluate_cost=50.0)
  lines = []
  result = runner.run(exp, seeds=2, log=lines.append)
  evaluation = [l for l in lines if "final evaluation" in l]
  assert evaluation[0].startswith("toy: final evaluation: started; estimate ~")
  assert any("elapsed" in l for l in evaluation[1:-1]), evaluation
  assert evaluation[-1].startswith("toy: final evaluation done in")
  np.testing.assert_allclose(result.final["norm"],
                             np.linalg.norm(np.asarray(result.state["w"]), axis=1), rtol=1e-6)


def test_progress_lines_reach_a_pipe_while_the_run_goes_on(tmp_path):
  # No PYTHONUNBUFFERED: the entry point itself must flush each line.
  env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.reinforce", "--max_episode_steps=20", "--num_envs=4",
       "--total_env_steps=2000000", "--num_chunks=1000", "--seeds=1",
       f"--workdir={tmp_path / 'run'}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL, text=True)
  try:
    line = proc.stdout.readline()
    assert line.startswith("chunk 1/1000"), line
    assert proc.poll() is None  # read while the run was still going
  finally:
    proc.kill()
    proc.wait()


def _run(module, *flags):
  return subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_a_workdir_that_is_a_file_is_reported_before_any_data_is_loaded(tmp_path):
  from experiment_cli import assert_one_line_error  # noqa: PLC0415
  (tmp_path / "file").write_text("x")
  # The data directory does not exist either: the workdir must be the first thing checked.
  proc = _run("experiments.vae", f"--workdir={tmp_path / 'file'}", "--data_dir=/nonexistent")
  assert_one_line_error(proc, "is a file, not a directory")


def test_another_experiments_workdir_is_refused_by_name(tmp_path):
  from experiment_cli import assert_one_line_error  # noqa: PLC0415
  workdir = tmp_path / "run"
  proc = _run("tests.toy_experiment", f"--workdir={workdir}", "--seeds=1", "--chunks=1",
              "--steps_per_chunk=1")
  assert proc.returncode == 0, proc.stderr
  for module in ("experiments.vae", "experiments.reinforce"):
    assert_one_line_error(_run(module, f"--workdir={workdir}"),
                          f"{workdir} holds a 'toy' run, not a")


def _digest(directory):
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(directory)):
    for name in sorted(files):
      with open(os.path.join(root, name), "rb") as f:
        h.update(name.encode() + f.read())
  return h.hexdigest()


def _diverging_at(chunk_index):
  def chunk(state, data):
    state, metrics = _toy_chunk(state, data)
    return state, {"loss": jnp.where(state["step"] >= chunk_index, jnp.nan, metrics["loss"])}
  return runner.Experiment(name="toy", init=_toy_init, chunk=chunk, num_chunks=6)


def test_nan_before_any_checkpoint_says_nothing_was_saved(tmp_path):
  with pytest.raises(runner.TrainingDiverged, match="at epoch 1; no checkpoint exists yet"):
    runner.run(_diverging_at(1), seeds=2, workdir=str(tmp_path), log=lambda _: None)


def test_nan_at_a_later_chunk_leaves_the_earlier_checkpoints_untouched(tmp_path):
  # Run 1: two good chunks, checkpointed. Run 2 resumes and diverges at chunk 3.
  good = runner.Experiment(name="toy", init=_toy_init, chunk=_toy_chunk, num_chunks=2)
  runner.run(good, seeds=2, workdir=str(tmp_path), log=lambda _: None)
  checkpoints = tmp_path / "checkpoints"
  before = {d: _digest(checkpoints / d) for d in os.listdir(checkpoints) if d.isdigit()}
  assert sorted(before) == ["1", "2"]
  with pytest.raises(runner.TrainingDiverged,
                     match=r"at epoch 3; the last good checkpoint \(epoch 2\) is kept"):
    runner.run(_diverging_at(3), seeds=2, workdir=str(tmp_path), log=lambda _: None)
  after = {d: _digest(checkpoints / d) for d in os.listdir(checkpoints) if d.isdigit()}
  assert after == before
