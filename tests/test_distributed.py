"""Two local processes on jax.distributed (CPU, gloo) give the one-process run's results."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from genrl_jax.errors import UserError
from genrl_jax.run import distributed
from genrl_jax.run.checkpoint import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _bindable(port: int) -> bool:
  with socket.socket() as s:
    try:
      s.bind(("127.0.0.1", port))
      return True
    except OSError:
      return False


def _env(devices: int):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)
  if devices > 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  for k in [k for k in env if k.startswith("SLURM_") or k == "TPU_WORKER_HOSTNAMES"]:
    env.pop(k)
  return env


def _toy(workdir, args=(), process=None, port=None):
  cmd = [sys.executable, "-m", "tests.toy_experiment", "--seeds=4", f"--workdir={workdir}", *args]
  if process is not None:
    cmd += [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
            f"--process_id={process}"]
  return subprocess.Popen(cmd, cwd=ROOT, env=_env(2 if process is not None else 1),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _pair(workdir, args=()):
  port = _free_port()
  return [_toy(workdir, args, i, port) for i in range(2)]


def _finish(procs, timeout=240):
  outs = [p.communicate(timeout=timeout)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


def _rows(workdir):
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def _restore(workdir):
  from tests import toy_experiment  # noqa: PLC0415
  train = toy_experiment.make_train(toy_experiment.ToyConfig())
  from genrl_jax.run.placement import SeedPlacement  # noqa: PLC0415
  placement = SeedPlacement(4)
  template = placement.jit(train.init)(placement.keys(), None)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return checkpointer.restore(template)
  finally:
    checkpointer.close()


def test_two_processes_equal_one(tmp_path):
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  single = _toy(one)
  outs = _finish(_pair(two))
  _finish([single])
  assert "4 seeds (0..3) on 4 cpu devices of 2 processes" in json.load(
      open(os.path.join(two, "run_info.json")))["sessions"][-1]["placement"]
  assert "chunk 4/4" in outs[0] and "chunk" not in outs[1]  # process 0 prints the progress
  got, want = (json.load(open(os.path.join(d, "results.json"))) for d in (two, one))
  np.testing.assert_allclose(got["metrics"]["distance"]["per_seed"],
                             want["metrics"]["distance"]["per_seed"], rtol=1e-4, atol=1e-9)
  # One metrics file, written once: 4 chunks x 4 seeds rows, equal to the one-process rows.
  assert sorted(os.listdir(two)) == sorted(os.listdir(one))
  rows_two, rows_one = _rows(two), _rows(one)
  assert [(r["chunk"], r["seed"]) for r in rows_two] == [(r["chunk"], r["seed"]) for r in rows_one]
  np.testing.assert_allclose([r["loss"] for r in rows_two], [r["loss"] for r in rows_one],
                             rtol=1e-4, atol=1e-12)
  # The two processes wrote one checkpoint per step, which this single process restores.
  (state_two, step_two), (state_one, step_one) = _restore(two), _restore(one)
  assert step_two == step_one == 4
  np.testing.assert_allclose(np.asarray(state_two["w"]), np.asarray(state_one["w"]), rtol=1e-5)
  np.testing.assert_array_equal(jax.random.key_data(state_two["key"]),
                                jax.random.key_data(state_one["key"]))


def test_killing_one_process_then_rerunning_both_resumes(tmp_path):
  args = ["--chunks=8", "--steps_per_chunk=40000"]
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  single = _toy(one, args)
  procs = _pair(two, args)
  ckpt = os.path.join(two, "checkpoints", "2", "commit_success.txt")
  deadline = time.time() + 240
  while not os.path.exists(ckpt) and time.time() < deadline and procs[1].poll() is None:
    time.sleep(0.05)
  assert os.path.exists(ckpt), procs[1].communicate()[0][-3000:]
  procs[1].send_signal(signal.SIGKILL)
  procs[1].wait()
  time.sleep(1.0)
  procs[0].kill()  # it would wait for its peer until the heartbeat timeout
  procs[0].wait()
  assert not os.path.exists(os.path.join(two, "results.json")), "the run ended before the kill"
  outs = _finish(_pair(two, args))
  _finish([single])
  assert "resuming toy from chunk" in outs[0], outs[0][-2000:]
  got, want = (json.load(open(os.path.join(d, "results.json"))) for d in (two, one))
  np.testing.assert_allclose(got["metrics"]["distance"]["per_seed"],
                             want["metrics"]["distance"]["per_seed"], rtol=1e-4, atol=1e-9)
  rows = _rows(two)
  assert [(r["chunk"], r["seed"]) for r in rows] == [(c, s) for c in range(1, 9) for s in range(4)]


def test_sigterm_to_one_process_stops_both_after_the_same_chunk(tmp_path):
  args = ["--chunks=8", "--steps_per_chunk=40000"]
  two = str(tmp_path / "two")
  procs = _pair(two, args)
  ckpt = os.path.join(two, "checkpoints", "1", "commit_success.txt")
  deadline = time.time() + 240
  while not os.path.exists(ckpt) and time.time() < deadline and procs[1].poll() is None:
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)  # as SLURM would, but to one process only
  outs = _finish(procs)
  stopped = [line for line in outs[0].splitlines() if line.startswith("stopped after chunk")]
  assert stopped and "resume with:" in stopped[0], outs[0][-2000:]
  done = int(stopped[0].split("chunk ")[1].split("/")[0])
  assert done < 8 and os.path.exists(os.path.join(two, "checkpoints", str(done)))
  assert max(r["chunk"] for r in _rows(two)) == done


def test_bad_distributed_flags_are_one_line():
  with pytest.raises(UserError, match="need all of"):
    distributed.initialize("127.0.0.1:1234", None, 0)
  with pytest.raises(UserError, match="HOST:PORT"):
    distributed.initialize("localhost", 2, 0)
  with pytest.raises(UserError, match=r"must be in 0\.\.1"):
    distributed.initialize("127.0.0.1:1234", 2, 2)
  with pytest.raises(UserError, match="must be an integer"):
    distributed.initialize_from_argv(["x", "--num_processes=two"])
  assert distributed.argv_values(["p", "--process_id", "1", "--coordinator_address=a:1"]) == {
      "process_id": "1", "coordinator_address": "a:1"}
  assert not distributed.initialize()  # no flags, no cluster: one process


def test_cluster_detection(monkeypatch):
  for k in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID",
            "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(k, raising=False)
  assert distributed.detected_cluster() is None
  monkeypatch.setenv("SLURM_JOB_ID", "7")
  monkeypatch.setenv("SLURM_NTASKS", "1")
  monkeypatch.setenv("SLURM_PROCID", "0")
  assert distributed.detected_cluster() is None  # an array task: one process
  monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
  assert distributed.detected_cluster() == "slurm"
  for k in ("SLURM_JOB_ID", "SLURM_STEP_NUM_TASKS"):
    monkeypatch.delenv(k)
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.2,10.0.0.3")
  assert distributed.detected_cluster() == "tpu"


FAKE_SRUN = r"""#!/usr/bin/env bash
# srun stand-in: starts SLURM_NTASKS local tasks of the command, each with its SLURM_PROCID.
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i "$@" > "$FAKE_SRUN_LOGS/task$i.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""


def test_slurm_multinode_script_runs_one_process_per_task(tmp_path):
  # The script's coordinator port is 20000 + job id % 20000: a job id whose port is free.
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "srun").write_text(FAKE_SRUN)
  (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\necho 127.0.0.1\n")
  for f in bin_dir.iterdir():
    f.chmod(0o755)
  port = next(p for p in range(20000 + os.getpid() % 10000, 40000) if _bindable(p))
  env = {**_env(2), "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": str(port - 20000),
         "SLURM_NTASKS": "2", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "node[1]",
         "SLURM_SUBMIT_DIR": ROOT, "FAKE_SRUN_LOGS": str(tmp_path)}
  workdir = tmp_path / "run"
  proc = subprocess.run(["bash", os.path.join(ROOT, "launch", "slurm_multinode.sh"),
                         sys.executable, "-m", "tests.toy_experiment", "--seeds=4",
                         f"--workdir={workdir}"], env=env, capture_output=True, text=True,
                        timeout=300)
  logs = [(tmp_path / f"task{i}.log").read_text() for i in range(2)]
  assert proc.returncode == 0, proc.stderr[-2000:] + logs[0][-2000:] + logs[1][-2000:]
  assert "2 processes on 1 nodes, coordinator 127.0.0.1" in proc.stdout
  info = json.load(open(workdir / "run_info.json"))
  assert "on 4 cpu devices of 2 processes" in info["sessions"][-1]["placement"]
  assert len(_rows(workdir)) == 4 * 4
