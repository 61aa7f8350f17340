"""A workdir has one live process; a resume with other shapes, a run too large for the memory and
^C^C end in one line, with the files on disk complete. Real processes (tests/toy_experiment.py,
experiments.dqn) where processes, signals or the terminal are involved."""

import concurrent.futures
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from genrl_jax import run as runner
from genrl_jax.run import memory
from genrl_jax.run import workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNKS = 12
TOY = ["--seeds=2", f"--chunks={CHUNKS}", "--steps_per_chunk=20000"]
LOCK_TRIALS = 20


def _env(**extra):
  return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1", **extra}


def _toy(workdir, *flags, **env):
  return [sys.executable, "-m", "tests.toy_experiment", f"--workdir={workdir}", *TOY, *flags]


def _run(cmd, **env):
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=_env(**env))


def _final_state(workdir, step=CHUNKS):
  return ocp.tree.to_flat_dict(ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", str(step), "default")))


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  for r in rows:
    r.pop("seconds")  # wall time, the one field that may differ
  return rows


def _assert_same_run(workdir, reference, what="", step=CHUNKS):
  expected, state = _final_state(reference, step), _final_state(workdir, step)
  assert state.keys() == expected.keys(), what
  for key in state:
    np.testing.assert_array_equal(state[key], expected[key], err_msg=f"{key} {what}")
  assert _rows(workdir) == _rows(reference), what


def _digests(directory):
  """{relative path: sha256} of every file under ``directory`` but the lock file (which names
  the newest process that held the workdir)."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      if name == workdir_lock.LOCK_FILE:
        continue
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _one_error_line(stderr, text):
  lines = [l for l in stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and text in lines[0], stderr
  assert "Traceback" not in stderr, stderr
  return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An undisturbed toy run."""
  workdir = str(tmp_path_factory.mktemp("reference") / "run")
  proc = _run(_toy(workdir))
  assert proc.returncode == 0, proc.stderr
  return workdir


# --- 1. two processes on one workdir ------------------------------------------------------------

def _pair(workdir, offset):
  """Starts two identical runs ``offset`` s apart on one workdir; their (returncode, stderr)."""
  first = subprocess.Popen(_toy(workdir), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
  time.sleep(offset)
  second = subprocess.Popen(_toy(workdir), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
  return [(p.wait(timeout=300), p.stderr.read()) for p in (first, second)]


def test_two_runs_started_together_one_trains_the_other_is_refused_in_one_line(tmp_path,
                                                                              reference):
  rng = np.random.default_rng(20261204)
  offsets = rng.uniform(0.0, 1.0, size=LOCK_TRIALS)
  for trial, offset in enumerate(offsets):
    workdir = str(tmp_path / f"trial_{trial}")
    outcomes = _pair(workdir, float(offset))
    what = f"trial {trial}, second process {offset:.2f} s after the first"
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 2], (what, outcomes)
    refused = next(err for code, err in outcomes if code == 2)
    line = _one_error_line(refused, f"{workdir} is in use by process ")
    assert "tests.toy_experiment" in line, line  # names the other process's command
    _assert_same_run(workdir, reference, what)


def test_a_stale_lock_file_from_a_killed_run_does_not_block_its_resume(tmp_path, reference):
  workdir = str(tmp_path / "run")
  victim = subprocess.Popen(_toy(workdir), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
  for line in victim.stdout:
    if line.startswith("chunk 4/"):
      break
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  victim.stdout.close()
  with open(os.path.join(workdir, workdir_lock.LOCK_FILE)) as f:
    assert json.load(f)["pid"] == victim.pid  # the dead holder is still named in the file
  proc = _run(_toy(workdir))
  assert proc.returncode == 0, proc.stderr
  _assert_same_run(workdir, reference)


def test_the_lock_is_released_when_a_library_run_returns(tmp_path):
  workdir = str(tmp_path / "run")
  exp = runner.Experiment(name="toy", init=_init, chunk=_chunk, num_chunks=1)
  runner.run(exp, seeds=1, workdir=workdir, log=lambda _: None)
  assert not workdir_lock.held(workdir)
  # Another process can now take it (an in-process lock would make this exit 2).
  proc = _run(_toy(workdir, "--chunks=1", "--steps_per_chunk=1", "--seeds=1"))
  assert "is in use" not in proc.stderr, proc.stderr


def test_in_one_process_the_lock_is_taken_once_and_a_second_descriptor_is_refused(tmp_path):
  workdir = str(tmp_path)
  workdir_lock.acquire(workdir)
  try:
    workdir_lock.acquire(workdir)  # idempotent in the holder
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from genrl_jax.run import workdir_lock as w\n"
         "try:\n  w.acquire(sys.argv[1], exclusive=False, purpose='replay')\n"
         "except w.WorkdirBusy as e:\n  print(e)\n", workdir],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert f"{workdir} is in use by process {os.getpid()}" in probe.stdout, probe
    assert "cannot replay it now" in probe.stdout
  finally:
    workdir_lock.release(workdir)
  assert not workdir_lock.held(workdir)


# --- 2. resume with other shapes ----------------------------------------------------------------

def _init(key, data):
  return {"w": jax.random.normal(key, (3,)), "step": jnp.zeros((), jnp.int32)}


def _chunk(state, data):
  return {"w": state["w"] * 0.5, "step": state["step"] + 1}, {"loss": jnp.sum(state["w"] ** 2)}


def test_a_library_resume_with_other_shapes_is_refused_before_flax_sees_them(tmp_path):
  exp = runner.Experiment(name="toy", init=_init, chunk=_chunk, num_chunks=2)
  runner.run(exp, seeds=2, workdir=str(tmp_path), log=lambda _: None)
  before = _digests(tmp_path / "checkpoints")
  wider = runner.Experiment(name="toy", num_chunks=3, chunk=_chunk, init=lambda k, d: {
      "w": jax.random.normal(k, (5,)), "step": jnp.zeros((), jnp.int32)})
  os.remove(tmp_path / "run_info.json")  # no flags to compare: the shapes are the last guard
  with pytest.raises(runner.UserError, match=r"w is float32\[2, 3\] there, float32\[2, 5\] now"):
    runner.run(wider, seeds=2, workdir=str(tmp_path), log=lambda _: None)
  with pytest.raises(runner.UserError, match=r"2 seeds there, 3 now: --seeds differs"):
    runner.run(exp, seeds=3, workdir=str(tmp_path), log=lambda _: None)
  assert _digests(tmp_path / "checkpoints") == before


DQN = ["--max_episode_steps=20", "--num_envs=4", "--train_frequency=4", "--buffer_size=2000",
       "--batch_size=32", "--learning_starts=1000", "--target_update_period=200",
       "--total_env_steps=4000", "--num_chunks=2", "--points_per_chunk=2", "--eval_episodes=2",
       "--seeds=2"]


@pytest.fixture(scope="module")
def dqn_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("dqn") / "run")
  proc = _run([sys.executable, "-m", "experiments.dqn", f"--workdir={workdir}", *DQN,
               "--hidden_sizes=16"])
  assert proc.returncode == 0, proc.stderr
  os.remove(os.path.join(workdir, "run_info.json"))  # lost: the flags cannot be compared
  return workdir


@pytest.mark.parametrize("flag,expected", [
    ("--hidden_sizes=24", r"is float32\[2, 16\] there, float32\[2, 24\] now .*--hidden_sizes"),
    ("--seeds=3", r"2 seeds there, 3 now: --seeds differs"),
])
def test_a_dqn_resume_with_another_shape_and_no_run_info_is_one_line(dqn_run, flag, expected):
  before = _digests(dqn_run)
  proc = _run([sys.executable, "-m", "experiments.dqn", f"--workdir={dqn_run}", *DQN,
               "--hidden_sizes=16", flag])
  assert proc.returncode == 2, proc.stderr
  line = _one_error_line(proc.stderr, "holds a state of other shapes than this run's")
  import re  # noqa: PLC0415
  assert re.search(expected, line), line
  assert _digests(dqn_run) == before


# --- 6. memory ----------------------------------------------------------------------------------

def test_the_memory_floor_counts_state_and_data_and_says_how_many_seeds_fit():
  init = lambda key, data: {"w": jnp.zeros((1000,), jnp.float32), "k": key}  # 4000 + 8 bytes
  data = {"x": np.zeros((250,), np.float32)}  # 1000 bytes
  per_seed, copies = 4008, memory.STATE_COPIES
  fits = memory.check_fits(init, data, num_cells=10, num_devices=2,
                           available=2 * 1000 + copies * 10 * per_seed)
  assert fits["state_bytes_per_seed"] == per_seed and fits["data_bytes"] == 1000
  assert fits["need_bytes"] == 2 * 1000 + copies * 10 * per_seed
  with pytest.raises(runner.UserError, match="at most 9 seeds fit: pass --seeds=9"):
    memory.check_fits(init, data, num_cells=10, num_devices=2,
                      available=2 * 1000 + copies * 10 * per_seed - 1)
  with pytest.raises(runner.UserError, match="at most 3 seeds fit"):  # 2 sweep points per seed
    memory.check_fits(init, data, num_cells=10, num_devices=1, cells_per_seed=2,
                      available=1000 + copies * 7 * per_seed)


def test_the_host_memory_reading_is_positive_and_below_the_machine_total():
  available = memory.host_available_bytes()
  total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  assert available is not None and 0 < available <= total


def test_too_many_seeds_are_refused_before_compiling_in_one_line(tmp_path):
  workdir = str(tmp_path / "run")
  t0 = time.perf_counter()
  proc = _run(_toy(workdir, "--seeds=100000"), GENRL_JAX_MEMORY_BYTES="1000000")
  seconds = time.perf_counter() - t0
  assert proc.returncode == 2, proc.stderr
  line = _one_error_line(proc.stderr, "100000 seeds need at least")
  # The toy's state per seed: w float32[3] + key 2 x uint32 + step int32 = 24 bytes, held twice:
  # 1,000,000 bytes hold 1000000 // 48 = 20833 seeds.
  assert "at most 20833 seeds fit: pass --seeds=20833 or fewer" in line, line
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))
  assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))
  assert seconds < 60


# --- 7. ^C twice --------------------------------------------------------------------------------

def _interrupt(workdir, flags, after_line, delay, gap):
  """Starts a toy run, sends SIGINT ``delay`` s after its progress line ``after_line`` and a
  second one ``gap`` s after the run said it is stopping; (returncode, stdout, stderr)."""
  proc = subprocess.Popen(_toy(workdir, *flags), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  out = []
  for line in proc.stdout:
    out.append(line)
    if line.startswith(after_line):
      break
  time.sleep(delay)
  proc.send_signal(signal.SIGINT)
  for line in proc.stdout:
    out.append(line)
    if line.startswith("SIGINT: stopping"):
      break
  time.sleep(gap)
  if proc.poll() is None:
    proc.send_signal(signal.SIGINT)
  rest, err = proc.communicate(timeout=300)
  return proc.returncode, "".join(out) + rest, err


def _no_partial_checkpoints(workdir):
  names = os.listdir(os.path.join(workdir, "checkpoints"))
  assert all(n.isdigit() for n in names), names  # no orbax *-tmp-* directory left behind


LONG = ["--chunks=4", "--steps_per_chunk=600000"]  # chunks of about 2 s here


def test_a_second_ctrl_c_aborts_in_one_line_and_the_rerun_matches_an_undisturbed_run(tmp_path):
  reference = str(tmp_path / "reference")
  assert _run(_toy(reference, *LONG)).returncode == 0
  workdir = str(tmp_path / "run")
  # The first ^C inside chunk 2's computation, the second while it still computes.
  code, out, err = _interrupt(workdir, LONG, "chunk 1/", delay=0.2, gap=0.2)
  assert code == 130, (out, err)
  line = _one_error_line(err, "aborted by a second ^C; every checkpoint on disk is complete")
  assert "resume with: python -m tests.toy_experiment" in line
  assert "stopped after" not in out  # not the first ^C's clean stop
  _no_partial_checkpoints(workdir)
  last = max(int(l.split()[1].split("/")[0]) for l in out.splitlines()
             if l.startswith("chunk "))
  saved = sorted(map(int, os.listdir(os.path.join(workdir, "checkpoints"))))
  assert saved[-1] == last, (saved, out)  # the aborted chunk (last + 1) was not saved
  proc = _run(_toy(workdir, *LONG))
  assert proc.returncode == 0, proc.stderr
  assert f"resuming toy from chunk {last}/4" in proc.stdout
  _assert_same_run(workdir, reference, step=4)


@pytest.mark.parametrize("gap", [0.0, 0.02, 0.1])
def test_ctrl_c_twice_quickly_ends_in_one_line_either_way(tmp_path, gap, reference):
  workdir = str(tmp_path / "run")
  code, out, err = _interrupt(workdir, [], "chunk 3/", delay=0.0, gap=gap)
  assert "Traceback" not in err + out, err
  if code == 0:  # the first ^C's clean stop came first
    assert out.count("stopped after chunk") == 1, out
  else:
    assert code == 130, (code, err)
    _one_error_line(err, "aborted by a second ^C")
  _no_partial_checkpoints(workdir)
  proc = _run(_toy(workdir))
  assert proc.returncode == 0, proc.stderr
  _assert_same_run(workdir, reference)


def test_ctrl_c_while_compiling_is_one_line(tmp_path):
  workdir = str(tmp_path / "run")
  proc = subprocess.Popen(_toy(workdir), cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 60
  while not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_FILE)):
    assert time.time() < deadline and proc.poll() is None, proc.communicate()
    time.sleep(0.02)
  proc.send_signal(signal.SIGINT)  # the lock is taken: the run has passed its imports
  out, err = proc.communicate(timeout=120)
  if "chunk 1/" in out:
    pytest.skip("the run got past its compile before the signal (a fast machine)")
  assert proc.returncode == 130, (out, err)
  _one_error_line(err, "interrupted by ^C")


# --- replay and a live run ----------------------------------------------------------------------

def test_replay_of_a_live_run_is_refused_and_a_run_is_refused_while_a_replay_reads(tmp_path):
  workdir = str(tmp_path / "run")
  live = subprocess.Popen(_toy(workdir, *LONG), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    for line in live.stdout:
      if line.startswith("chunk 1/"):
        break
    proc = _run([sys.executable, "-m", "experiments.replay", f"--workdir={workdir}"])
    assert live.poll() is None, "the run ended before the replay; make it longer"
  finally:
    live.communicate(timeout=300)
  assert proc.returncode == 2, proc.stderr
  _one_error_line(proc.stderr, f"{workdir} is in use by process {live.pid} (python -m "
                               "tests.toy_experiment")
  assert "cannot replay it now" in proc.stderr
  assert not os.path.exists(os.path.join(workdir, "replay"))  # replay wrote nothing

  workdir_lock.acquire(workdir, exclusive=False, purpose="replay")  # a replay reads the run
  try:
    before = _digests(workdir)
    proc = _run(_toy(workdir, *LONG))
    assert proc.returncode == 2, proc.stderr
    _one_error_line(proc.stderr, f"{workdir} is in use by another process (a replay of this run)")
    assert _digests(workdir) == before
  finally:
    workdir_lock.release(workdir)


# --- damaged run_info.json and metrics.jsonl on resume ------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("[1]", "holds an array where an object was expected"),
    ('{"experiment": "toy", "seeds": "2"', "is not valid JSON"),
    ('{"experiment": "toy", "seeds": "2"}', "'seeds' is \"2\", not a int"),
])
def test_a_damaged_run_info_refuses_the_resume_in_one_line_and_changes_nothing(
    tmp_path, reference, text, expected):
  import shutil  # noqa: PLC0415
  workdir = str(tmp_path / "run")
  shutil.copytree(reference, workdir)
  with open(os.path.join(workdir, "run_info.json"), "w") as f:
    f.write(text)
  before = _digests(workdir)
  proc = _run(_toy(workdir))
  assert proc.returncode == 2, proc.stderr
  line = _one_error_line(proc.stderr, "run_info.json")
  assert expected in line, line
  assert _digests(workdir) == before


def test_a_damaged_metrics_line_is_one_warning_and_the_file_is_kept_beside(tmp_path, reference):
  import shutil  # noqa: PLC0415
  workdir = str(tmp_path / "run")
  shutil.copytree(reference, workdir)
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    lines = f.readlines()
  lines[5] = "this line was edited\n"
  with open(path, "w") as f:
    f.writelines(lines)
  with open(path, "rb") as f:
    damaged = f.read()
  proc = _run(_toy(workdir))
  assert proc.returncode == 0, proc.stderr
  assert "Traceback" not in proc.stderr + proc.stdout
  warnings = [l for l in proc.stdout.splitlines() if l.startswith("warning:")]
  assert "line 6 is not valid JSON; the 5 rows before it are used" in warnings[0], warnings
  with open(path + ".damaged", "rb") as f:
    assert f.read() == damaged  # nothing lost


# --- a CVAE sweep prints its per-point results ---------------------------------------------------

def test_a_cvae_sweep_runs_to_its_results(tmp_path):
  from tests.test_data import write_mnist_like  # noqa: PLC0415
  write_mnist_like(str(tmp_path / "data"), sizes=(96, 40))
  proc = _run([sys.executable, "-m", "experiments.cvae", f"--data_dir={tmp_path / 'data'}",
               f"--workdir={tmp_path / 'run'}", f"--evaluator_dir={tmp_path / 'evaluators'}",
               "--hidden=16", "--latent_dim=2", "--batch_size=16", "--epochs=2", "--seeds=2",
               "--eval_iw_samples=4", "--samples_per_label=5",
               "--sweep=learning_rate=1e-3,3e-4"])
  assert proc.returncode == 0, proc.stderr
  for point in ("learning_rate=0.001", "learning_rate=0.0003"):
    assert f"conditional accuracy [{point}]" in proc.stdout, proc.stdout
