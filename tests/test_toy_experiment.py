"""The experiment contract: tests/toy_experiment.py (under 60 lines of its own) gets from the
runner alone seeds over devices, a progress line, metrics.jsonl, results.json in the one schema,
checkpoints, SIGKILL-resume, SIGTERM-stop and one-line errors for bad flags. Real processes."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, "tests", "toy_experiment.py")


def _env(devices=4):
  return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _cmd(workdir, *flags):
  return [sys.executable, "-m", "tests.toy_experiment", f"--workdir={workdir}", *flags]


def _run(workdir, *flags):
  return subprocess.run(_cmd(workdir, *flags), cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=_env())


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in rows),
                key=lambda r: (r["chunk"], r["seed"]))


def _final(workdir, step):
  return ocp.tree.to_flat_dict(ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", str(step), "default")))


def test_the_toy_is_short():
  with open(TOY) as f:
    code = [l for l in f if l.strip() and not l.lstrip().startswith(("#", '"""'))]
  assert len(code) <= 60, len(code)


def test_everything_the_runner_gives_a_new_experiment(tmp_path):
  workdir = str(tmp_path / "run")
  proc = _run(workdir, "--seeds=4", "--steps_per_chunk=10")
  assert proc.returncode == 0, proc.stderr
  # A progress line per chunk with the mean ± CI over seeds and the throughput.
  lines = [l for l in proc.stdout.splitlines() if l.startswith("chunk ")]
  assert [l.split(" |")[0] for l in lines] == [f"chunk {i}/4" for i in range(1, 5)]
  assert all(re.search(r"loss \S+ ± \S+ \| \S+ steps/s", l) for l in lines), lines
  # Seeds over the 4 devices, recorded in run_info.json.
  with open(os.path.join(workdir, "run_info.json")) as f:
    info = json.load(f)
  assert info["sessions"][-1]["placement"].startswith("4 seeds (0..3) on 4 cpu devices")
  # metrics.jsonl: one row per chunk and seed; the seeds are different computations.
  rows = _rows(workdir)
  assert [(r["chunk"], r["seed"]) for r in rows] == [(c, s) for c in range(1, 5) for s in range(4)]
  assert len({r["loss"] for r in rows if r["chunk"] == 1}) == 4
  # results.json in the one schema; the aggregate is computed from the per-seed values.
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert set(results) == {"experiment", "config", "seeds", "metrics", "extra"}
  assert results["experiment"] == "toy" and results["seeds"] == [0, 1, 2, 3]
  assert results["config"]["learning_rate"] == 0.05
  distance = results["metrics"]["distance"]
  assert set(distance) == {"per_seed", "mean", "ci95_half_width", "iqm"}
  assert np.isclose(distance["mean"], np.mean(distance["per_seed"]))
  assert np.isclose(distance["iqm"], np.mean(np.sort(distance["per_seed"])[1:3]))
  # 40 SGD steps contract the error by about (1 - 2 lr)^40 = 0.015 from ~|N(0, I) - w*|.
  assert 0 < distance["mean"] < 0.3
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "4"


def test_sigkill_then_rerun_is_bit_identical_and_sigterm_stops_cleanly(tmp_path):
  flags = ["--seeds=2", "--chunks=40", "--steps_per_chunk=20000"]
  reference, killed, stopped = (str(tmp_path / n) for n in ("reference", "killed", "stopped"))
  proc = _run(reference, *flags)
  assert proc.returncode == 0, proc.stderr

  for workdir, sig in ((killed, signal.SIGKILL), (stopped, signal.SIGTERM)):
    victim = subprocess.Popen(_cmd(workdir, *flags), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env())
    checkpoints = os.path.join(workdir, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline and victim.poll() is None:
      if os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints)):
        break
      time.sleep(0.02)
    assert victim.poll() is None, "the run ended before the signal; make it longer"
    victim.send_signal(sig)
    out, err = victim.communicate(timeout=240)
    saved = sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit())
    assert saved and saved[-1] < 40, saved
    if sig == signal.SIGTERM:
      # Finish the chunk, checkpoint it, exit 0 with the command that resumes.
      assert victim.returncode == 0, err
      last = out.strip().splitlines()[-1]
      assert f"stopped after chunk {saved[-1]}/40" in last, out
      assert "resume with: python -m tests.toy_experiment" in last and "--chunks=40" in last
      assert "Traceback" not in out + err
    resumed = _run(workdir, *flags)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming toy from chunk {saved[-1]}/40" in resumed.stdout
    a, b = _final(reference, 40), _final(workdir, 40)
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))
    assert _rows(reference) == _rows(workdir)


def test_bad_flags_are_one_line_errors(tmp_path):
  from experiment_cli import assert_one_line_error  # noqa: PLC0415
  workdir = str(tmp_path / "run")
  for flags, expected in ((["--learning_rate=-1"], "--learning_rate must be a positive number"),
                          (["--chunks=0"], "--chunks must be >= 1"),
                          (["--chunks=four"], "--chunks=four"),
                          (["--seeds=0"], "--seeds must be >= 1")):
    assert_one_line_error(_run(workdir, *flags), expected)
  (tmp_path / "file").write_text("x")
  assert_one_line_error(_run(str(tmp_path / "file")), "is a file, not a directory")


def test_a_new_experiment_is_its_module_alone_it_sweeps_and_replays(tmp_path):
  """The toy copied as ``my_regression.py`` into a directory of its own (nothing in the package
  names it): it trains from the command line, sweeps its learning rate in one program, and
  ``experiments.replay`` finds it from its run_info.json and reproduces it, ``--verify`` too."""
  home = tmp_path / "mine"
  home.mkdir()
  (home / "my_regression.py").write_text(open(TOY).read())
  env = {**_env(), "PYTHONPATH": os.pathsep.join([str(home), ROOT])}
  run = lambda *args: subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                                     text=True, timeout=300, env=env)
  workdir = str(tmp_path / "run")
  proc = run("my_regression", f"--workdir={workdir}", "--seeds=2", "--steps_per_chunk=10",
             "--sweep=learning_rate=0.05,0.1")
  assert proc.returncode == 0, proc.stderr
  with open(os.path.join(workdir, "run_info.json")) as f:
    info = json.load(f)
  assert (info["experiment"], info["spec"], info["entry_point"]) == (
      "toy", "my_regression", "my_regression")
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  # One program, two sweep points x two seeds; the larger step gets closer to the truth.
  near = {k: v["mean"] for k, v in results["metrics"].items() if k.startswith("distance")}
  assert len(near) == 2 and near["distance[learning_rate=0.1]"] < near[
      "distance[learning_rate=0.05]"], near
  out = str(tmp_path / "replayed")
  replayed = run("experiments.replay", f"--workdir={workdir}", f"--out={out}")
  assert replayed.returncode == 0, replayed.stderr
  assert "saved values reproduced exactly" in replayed.stdout.splitlines()[-1], replayed.stdout
  verify = run("experiments.replay", f"--workdir={workdir}", "--verify")
  assert verify.returncode == 0, verify.stdout + verify.stderr
  assert "reproduces the saved step 4 bit for bit" in verify.stdout, verify.stdout
  # Without the module on the path, replay says which module it needs, in one line.
  env["PYTHONPATH"] = ROOT
  from experiment_cli import assert_one_line_error  # noqa: PLC0415
  assert_one_line_error(run("experiments.replay", f"--workdir={workdir}"),
                        "cannot import 'my_regression'")
