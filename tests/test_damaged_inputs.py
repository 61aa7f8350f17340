"""Damaged side files, edited replay inputs and bad --sweep values, in real processes as a user
meets them: each is one ``error:`` line (exit 2) or one ``warning:`` line and its recovery, never
a traceback, and no file of the run changes. Plus the one reader of files read back
(``genrl_jax.run.files``): every kind of damage is a ``DamagedFile`` naming the file."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from genrl_jax.errors import UserError
from genrl_jax.run import files
from tests import gen_data
from tests.experiment_cli import assert_one_line_error, run_experiment
from tests.test_data import write_mnist_like

GAN_FLAGS = ["--width=2", "--latent_dim=4", "--batch_size=8", "--iterations=50",
             "--iterations_per_chunk=25", "--eval_samples=20", "--seeds=1"]
REINFORCE_FLAGS = ["--max_episode_steps=20", "--num_envs=4", "--total_env_steps=480",
                   "--num_chunks=2", "--seeds=1"]


def _digests(directory) -> dict[str, str]:
  """{relative path: sha256} of every file under ``directory``."""
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _lines(proc, prefix: str, containing: str = "") -> list[str]:
  return [line for line in (proc.stdout + proc.stderr).splitlines()
          if line.startswith(prefix) and containing in line]


def _truncate(path) -> None:
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
  """A finished 1-seed, 2-chunk DCGAN workdir (snapshots at iterations 0 and 50) and its data
  and evaluator cache: (workdir, data_dir, evaluator_dir). Tests copy it before damaging."""
  base = tmp_path_factory.mktemp("gan")
  data, evaluators, workdir = str(base / "data"), str(base / "evaluators"), str(base / "run")
  gen_data.write_banded_idx(data, 300, 100)
  proc = run_experiment("experiments.gan", f"--data_dir={data}", f"--workdir={workdir}",
                        f"--evaluator_dir={evaluators}", *GAN_FLAGS)
  assert proc.returncode == 0, proc.stderr
  return workdir, data, evaluators


@pytest.fixture(scope="module")
def reinforce_run(tmp_path_factory):
  """A finished 1-seed, 2-chunk REINFORCE workdir (the quickest experiment to replay)."""
  workdir = str(tmp_path_factory.mktemp("reinforce") / "run")
  proc = run_experiment("experiments.reinforce", f"--workdir={workdir}", *REINFORCE_FLAGS)
  assert proc.returncode == 0, proc.stderr
  return workdir


def _copy(workdir, tmp_path, name="run") -> str:
  copy = str(tmp_path / name)
  shutil.copytree(workdir, copy)
  return copy


# --- damaged side files -------------------------------------------------------------------------

def test_a_truncated_snapshot_is_left_out_of_the_figure_on_replay_and_rerun(gan_run, tmp_path):
  source, data, evaluators = gan_run
  workdir = _copy(source, tmp_path)
  damaged = os.path.join(workdir, "snapshots", "50.npy")
  _truncate(damaged)
  before = _digests(workdir)
  out = str(tmp_path / "replayed")
  proc = run_experiment("experiments.replay", f"--workdir={workdir}", f"--out={out}")
  assert proc.returncode == 0, proc.stderr
  assert "Traceback" not in proc.stdout + proc.stderr
  warned = _lines(proc, "warning:", "50.npy")
  assert len(warned) == 1 and "snapshots.png leaves iteration 50 out" in warned[0], proc.stdout
  assert os.path.exists(os.path.join(out, "snapshots.png"))  # with the one good snapshot
  assert _digests(workdir) == before
  # The same run's own command, rerun: it resumes (nothing left to train), warns the same way
  # and keeps the damaged file as it is.
  proc = run_experiment("experiments.gan", f"--data_dir={data}", f"--workdir={workdir}",
                        f"--evaluator_dir={evaluators}", *GAN_FLAGS)
  assert proc.returncode == 0, proc.stderr
  assert "Traceback" not in proc.stdout + proc.stderr
  assert len(_lines(proc, "warning:", "50.npy")) == 1, proc.stdout
  after = _digests(workdir)  # the figures are redrawn; the snapshots and their scores are kept
  kept = [k for k in before if k.startswith(("snapshots/", "snapshots.jsonl"))]
  assert len(kept) == 3 and {k: after[k] for k in kept} == {k: before[k] for k in kept}


def test_an_evaluator_cache_that_is_not_a_zip_file_is_retrained(gan_run, tmp_path):
  source, data, evaluators = gan_run
  workdir, cache = _copy(source, tmp_path), _copy(evaluators, tmp_path, "evaluators")
  params = os.path.join(cache, "mnist", "params.npz")
  _truncate(params)  # the zip's central directory is gone: zipfile.BadZipFile
  before = _digests(workdir)
  proc = run_experiment("experiments.gan", f"--data_dir={data}", f"--workdir={workdir}",
                        f"--evaluator_dir={cache}", *GAN_FLAGS)
  assert proc.returncode == 0, proc.stderr
  assert "Traceback" not in proc.stdout + proc.stderr
  warned = _lines(proc, "warning:")
  assert len(warned) == 1 and "params.npz" in warned[0] and "retraining" in warned[0], proc.stdout
  assert _lines(proc, "evaluator: trained on"), proc.stdout
  assert set(files.load_npz(params, "the retrained cache"))  # rewritten, readable
  after = _digests(workdir)  # the run's scores and snapshots are the ones it wrote
  for name in ("snapshots.jsonl", "metrics.jsonl", "snapshots/0.npy", "snapshots/50.npy"):
    assert after[name] == before[name], name


@pytest.mark.parametrize("garbage", ["{\"metrics\": {\"auc", "[1, 2]"],
                         ids=["not_json", "a_list"])
def test_a_garbage_results_json_is_one_warning_and_replay_writes_its_own(reinforce_run, tmp_path,
                                                                         garbage):
  workdir = _copy(reinforce_run, tmp_path)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    f.write(garbage)
  before = _digests(workdir)
  out = str(tmp_path / "replayed")
  proc = run_experiment("experiments.replay", f"--workdir={workdir}", f"--out={out}")
  assert proc.returncode == 0, proc.stderr
  assert "Traceback" not in proc.stdout + proc.stderr
  assert len(_lines(proc, "warning:", "results.json")) == 1, proc.stdout
  assert "nothing to compare" in proc.stdout.splitlines()[-1], proc.stdout
  with open(os.path.join(out, "results.json")) as f:
    assert json.load(f)["metrics"]
  assert _digests(workdir) == before


# --- replay inputs ------------------------------------------------------------------------------

def _drop(key):
  return lambda info: info.pop(key)


def _set(key, value):
  return lambda info: info.update({key: value})


def _set_config(key, value):
  return lambda info: info["config"].update({key: value})


RUN_INFO_EDITS = {
    "experiment_missing": (_drop("experiment"), "'experiment' is missing"),
    "experiment_unknown": (_set("experiment", "sketch"), "no replay for experiment 'sketch'"),
    "seeds_a_string": (_set("seeds", "2"), "'seeds' must be an integer >= 1, got '2'"),
    "seeds_missing": (_drop("seeds"), "'seeds' is missing"),
    "config_a_list": (_set("config", [1]), "'config' must be an object"),
    "config_value_of_another_type": (_set_config("hidden_sizes", 32),
                                     "its config cannot rebuild the 'reinforce' run (TypeError"),
    "config_value_none": (_set_config("total_env_steps", None),
                          "its config cannot rebuild the 'reinforce' run"),
}


@pytest.mark.parametrize("edit", sorted(RUN_INFO_EDITS))
def test_an_edited_run_info_is_one_error_line_naming_the_file(reinforce_run, tmp_path, edit):
  change, message = RUN_INFO_EDITS[edit]
  workdir = _copy(reinforce_run, tmp_path)
  path = os.path.join(workdir, "run_info.json")
  with open(path) as f:
    info = json.load(f)
  change(info)
  with open(path, "w") as f:
    json.dump(info, f)
  before = _digests(workdir)
  out = tmp_path / "replayed"
  proc = run_experiment("experiments.replay", f"--workdir={workdir}", f"--out={out}")
  assert_one_line_error(proc, message)
  assert f"{path}:" in _lines(proc, "error:")[0]
  assert _digests(workdir) == before and not out.exists()


@pytest.mark.parametrize("extra", [[], ["--seed_index=0"]], ids=["replay", "seed_index"])
def test_out_that_is_an_existing_file_is_refused_first_and_left_alone(reinforce_run, tmp_path,
                                                                      extra):
  workdir = _copy(reinforce_run, tmp_path)
  target = tmp_path / "a_file"
  target.write_text("keep me\n")
  before = _digests(workdir)
  proc = run_experiment("experiments.replay", f"--workdir={workdir}", f"--out={target}", *extra)
  assert_one_line_error(proc, f"--out={target} is a file, not a directory")
  assert target.read_text() == "keep me\n" and _digests(workdir) == before
  # A path under that file is refused the same way.
  proc = run_experiment("experiments.replay", f"--workdir={workdir}", f"--out={target}/sub",
                        *extra)
  assert_one_line_error(proc, f"is under {target}, a file")


# --- sweep parsing ------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,message", [
    ("learning_rate=1e-3,3e-4,", "has an empty value (item 3 of 3"),
    ("learning_rate=", "has no values after '='"),
    ("learning_rate=1e-3,,3e-4", "has an empty value (item 2 of 3"),
    ("=1e-3", "has no name before '='"),
], ids=["trailing_comma", "no_values", "doubled_comma", "no_name"])
def test_an_empty_sweep_item_is_refused_before_any_data_is_read(tmp_path, spec, message):
  # The data directory does not exist: the sweep must be refused before it is looked at.
  workdir = tmp_path / "run"
  proc = run_experiment("experiments.cvae", f"--workdir={workdir}", "--data_dir=/nonexistent",
                        f"--sweep={spec}")
  assert_one_line_error(proc, message)
  assert "write " in _lines(proc, "error:")[0]
  assert not workdir.exists()


def test_an_empty_sweep_item_leaves_an_existing_run_as_it_is(reinforce_run, tmp_path):
  workdir = _copy(reinforce_run, tmp_path)
  before = _digests(workdir)
  proc = run_experiment("experiments.reinforce", f"--workdir={workdir}", *REINFORCE_FLAGS,
                        "--sweep=policy_lr=1e-2,3e-3,")
  assert_one_line_error(proc, "write policy_lr=1e-2,3e-3")
  assert _digests(workdir) == before


@pytest.mark.parametrize("module", ["experiments.vae", "experiments.cvae"])
def test_sweep_and_the_swept_fields_own_flag_together_are_refused(tmp_path, module):
  workdir = tmp_path / "run"
  proc = run_experiment(module, f"--workdir={workdir}", "--data_dir=/nonexistent",
                        "--learning_rate=1e-3", "--sweep=learning_rate=1e-3,3e-4")
  assert_one_line_error(proc, "--learning_rate=0.001 and --sweep both set learning_rate; drop "
                              "one of the two")
  assert not workdir.exists()


# --- genrl_jax.run.files: every damage is one DamagedFile naming the file -----------------------

def _damaged(call, path, damage):
  with pytest.raises(files.DamagedFile, match=damage) as info:
    call()
  assert isinstance(info.value, UserError) and str(path) in str(info.value)
  return info.value


def test_read_json_damage(tmp_path):
  path = tmp_path / "doc.json"
  read = lambda **kw: files.read_json(str(path), "a document", **kw)
  assert read(missing_ok=True) is None
  _damaged(read, path, "is missing")
  path.write_text("")
  _damaged(read, path, "is empty")
  path.write_text('{"a": [1, 2')
  _damaged(read, path, "is not valid JSON")
  path.write_bytes(b"\xff\xfe\x00garbage")
  _damaged(read, path, "not UTF-8")
  path.write_text("[1, 2]")
  _damaged(read, path, "holds an array where an object was expected")
  assert files.read_json(str(path), "a list", kind=list) == [1, 2]
  path.write_text('{"a": 1}')
  assert read() == {"a": 1}
  _damaged(lambda: files.read_json(str(tmp_path), "a document"), tmp_path, "is a directory")


def test_read_jsonl_damage(tmp_path):
  path = tmp_path / "rows.jsonl"
  read = lambda: files.read_jsonl(str(path), "rows")
  assert read() == []
  _damaged(lambda: files.read_jsonl(str(path), "rows", missing_ok=False), path, "is missing")
  path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3')  # the last line cut by a kill: left out
  assert read() == [{"a": 1}, {"a": 2}]
  path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
  assert _damaged(read, path, "line 2 is not valid JSON").partial == [{"a": 1}]
  path.write_text('{"a": 1}\n{"a": 2\n')  # with its newline, the line was written whole
  _damaged(read, path, "line 2 is not valid JSON")
  path.write_text('{"a": 1}\n[1]\n')
  assert _damaged(read, path, "line 2 holds an array, not an object").partial == [{"a": 1}]


def test_load_npy_damage(tmp_path):
  path = tmp_path / "a.npy"
  load = lambda shape=None: files.load_npy(str(path), "an array", shape=shape)
  _damaged(load, path, "is missing")
  np.save(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
  np.testing.assert_array_equal(load((None, 3, 4)), np.arange(24).reshape(2, 3, 4))
  _damaged(lambda: load((None, 3, 5)), path, r"shape \(2, 3, 4\), not \(N, 3, 5\)")
  _damaged(lambda: load((2, 12)), path, "shape")
  _truncate(path)  # cut inside the data
  _damaged(load, path, "cannot be read as an .npy array")
  path.write_bytes(path.read_bytes()[:20])  # cut inside the header
  _damaged(load, path, "cannot be read as an .npy array")
  path.write_bytes(b"")
  _damaged(load, path, "cannot be read as an .npy array")
  path.write_text("not an array")
  _damaged(load, path, "cannot be read as an .npy array")
  np.save(path, np.array([{"a": 1}], dtype=object))  # pickled objects are never loaded
  _damaged(load, path, "cannot be read as an .npy array")
  np.savez(tmp_path / "b.npz", x=np.zeros(2))
  _damaged(lambda: files.load_npy(str(tmp_path / "b.npz"), "an array"), tmp_path / "b.npz",
           "an .npz archive, not an .npy array")


def test_load_npz_damage(tmp_path):
  path = tmp_path / "p.npz"
  load = lambda: files.load_npz(str(path), "parameters")
  _damaged(load, path, "is missing")
  np.savez(path, w=np.ones((3, 2)), b=np.zeros(2))
  assert {k: v.shape for k, v in load().items()} == {"w": (3, 2), "b": (2,)}
  _truncate(path)
  _damaged(load, path, "not a zip file")
  path.write_text("not an npz file")
  _damaged(load, path, "cannot be read as an .npz archive")
  np.save(tmp_path / "a.npy", np.zeros(2))
  os.replace(tmp_path / "a.npy", path)
  _damaged(load, path, "an .npy array, not an .npz archive")
