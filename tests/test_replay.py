"""Reproducibility studies through ``python -m experiments.replay``, in real processes: replay of
the final checkpoint gives the saved results.json exactly and ``--verify`` passes, for every
experiment in the package; ``--verify`` catches a one-ULP change in a saved checkpoint; an
extracted seed continues to the original seed's numbers; bad input is one ``error:`` line. Plus
the ULP arithmetic against numpy."""

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from genrl_jax.run import replay
from genrl_jax.run import spec
from tests import gen_data
from tests.experiment_cli import assert_one_line_error
from tests.test_data import write_mnist_like

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
VAE_FLAGS = ["--hidden=16", "--latent_dim=2", "--batch_size=16", "--epochs=3", "--seeds=2",
             "--eval_iw_samples=4", "--keep_every=1"]
REINFORCE_FLAGS = ["--max_episode_steps=20", "--num_envs=4", "--total_env_steps=2400",
                   "--num_chunks=6", "--seeds=2", "--keep_every=1"]
DQN_FLAGS = ["--max_episode_steps=20", "--num_envs=4", "--train_frequency=4", "--hidden_sizes=16",
             "--buffer_size=2000", "--batch_size=32", "--learning_starts=1000",
             "--target_update_period=200", "--total_env_steps=4000", "--num_chunks=4",
             "--points_per_chunk=2", "--eval_episodes=2", "--seeds=2", "--keep_every=1"]
CVAE_FLAGS = ["--hidden=16", "--latent_dim=2", "--batch_size=16", "--epochs=3", "--seeds=2",
              "--eval_iw_samples=4", "--keep_every=1"]
GAN_FLAGS = ["--width=2", "--latent_dim=4", "--batch_size=8", "--iterations=100",
             "--iterations_per_chunk=25", "--eval_samples=20", "--seeds=2", "--keep_every=1"]
TIMING = set(replay.TIMING_KEYS)


def _py(module, *flags, timeout=300):
  return subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout,
                        env={**os.environ, **OFFLINE, "JAX_PLATFORMS": "cpu"})


def _load(path):
  with open(path) as f:
    return json.load(f)


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
  base = tmp_path_factory.mktemp("vae")
  write_mnist_like(str(base / "data"), sizes=(96, 40))
  workdir = str(base / "run")
  proc = _py("experiments.vae", f"--data_dir={base / 'data'}", f"--workdir={workdir}", *VAE_FLAGS)
  assert proc.returncode == 0, proc.stderr
  return workdir


@pytest.fixture(scope="module")
def reinforce_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("reinforce") / "run")
  proc = _py("experiments.reinforce", f"--workdir={workdir}", *REINFORCE_FLAGS)
  assert proc.returncode == 0, proc.stderr
  return workdir


@pytest.fixture(scope="module")
def dqn_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("dqn") / "run")
  proc = _py("experiments.dqn", f"--workdir={workdir}", *DQN_FLAGS)
  assert proc.returncode == 0, proc.stderr
  return workdir


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory):
  base = tmp_path_factory.mktemp("cvae")
  write_mnist_like(str(base / "data"), sizes=(96, 40))
  workdir = str(base / "run")
  proc = _py("experiments.cvae", f"--data_dir={base / 'data'}", f"--workdir={workdir}",
             *CVAE_FLAGS)
  assert proc.returncode == 0, proc.stderr
  return workdir


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
  base = tmp_path_factory.mktemp("gan")
  gen_data.write_banded_idx(str(base / "data"), 300, 100)
  workdir = str(base / "run")
  proc = _py("experiments.gan", f"--data_dir={base / 'data'}", f"--workdir={workdir}",
             f"--evaluator_dir={base / 'evaluators'}", *GAN_FLAGS)
  assert proc.returncode == 0, proc.stderr
  return workdir


def _table(stdout):
  """{name: (saved, replayed, equal)} from the printed markdown table."""
  out = {}
  for line in stdout.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 4 and line.startswith("| ") and cells[0] != "metric":
      out[cells[0]] = tuple(cells[1:])
  return out


FIGURES = {"vae": {"learning_curves.png", "prior_samples.png", "reconstructions.png"},
           "reinforce": {"return.png"}, "dqn": {"return.png"},
           "cvae": {"learning_curves.png", "conditional_samples.png", "reconstructions.png"},
           "gan": {"losses.png", "snapshots.png"}}


def test_every_experiment_of_the_package_has_its_replay_test():
  found = spec.library_specs()
  assert found == {"vae": "genrl_jax.generative.vae_run", "cvae": "genrl_jax.generative.cvae_run",
                   "gan": "genrl_jax.generative.gan_run", "reinforce": "genrl_jax.rl.reinforce_run",
                   "dqn": "genrl_jax.rl.dqn_run"}
  assert set(found) == set(FIGURES)  # add the new one's tiny run above


@pytest.mark.parametrize("which,figures", sorted(FIGURES.items()))
def test_replay_of_the_final_checkpoint_reproduces_results_json_and_verify_passes(
    request, tmp_path, which, figures):
  workdir = request.getfixturevalue(f"{which}_run")
  out = str(tmp_path / "replayed")
  proc = _py("experiments.replay", f"--workdir={workdir}", f"--out={out}")
  assert proc.returncode == 0, proc.stderr
  saved, replayed = _load(os.path.join(workdir, "results.json")), _load(
      os.path.join(out, "results.json"))
  # Every metric's per_seed, mean, ci95_half_width and iqm, and every non-timing extra.
  assert saved["metrics"] and replayed["metrics"] == saved["metrics"]
  strip = lambda extra: {k: v for k, v in extra.items() if k not in TIMING}
  assert strip(replayed["extra"]) == strip(saved["extra"])
  for key in ("experiment", "config", "seeds"):
    assert replayed[key] == saved[key], key
  assert figures <= set(os.listdir(out))
  if which == "gan":  # its scores, from the snapshots the run wrote, are in the replay too
    assert {"classifier_score", "frechet_distance"} <= set(replayed["metrics"])
  # The printed table: one "yes" row per metric and per non-timing extra, nothing else.
  table = _table(proc.stdout)
  assert set(table) == set(saved["metrics"]) | set(strip(saved["extra"])), proc.stdout
  assert all(equal == "yes" for _, _, equal in table.values()), proc.stdout
  for name, summary in saved["metrics"].items():
    assert math.isclose(float(table[name][1]), summary["mean"], rel_tol=1e-5), (name, table)
  assert "saved values reproduced exactly" in proc.stdout.splitlines()[-1]

  verify = _py("experiments.replay", f"--workdir={workdir}", "--verify")
  assert verify.returncode == 0, verify.stdout + verify.stderr
  newest = max(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert (f"one chunk from step {newest - 1} reproduces the saved step {newest} bit for bit"
          in verify.stdout), verify.stdout


def test_replay_of_an_intermediate_step_has_nothing_saved_to_compare(reinforce_run, tmp_path):
  out = str(tmp_path / "at3")
  proc = _py("experiments.replay", f"--workdir={reinforce_run}", "--step=3", f"--out={out}")
  assert proc.returncode == 0, proc.stderr
  table = _table(proc.stdout)
  assert table and all(saved == "-" and equal == "-" for saved, _, equal in table.values())
  assert "replay of step 3: nothing to compare" in proc.stdout.splitlines()[-1], proc.stdout
  # What it wrote is the run as of chunk 3: the metrics.jsonl values of that chunk.
  replayed = _load(os.path.join(out, "results.json"))
  assert replayed["extra"]["chunks_done"] == 3
  rows = sorted((r for r in _rows(reinforce_run) if r["chunk"] == 3), key=lambda r: r["seed"])
  assert replayed["metrics"]["final_return_last100"]["per_seed"] == [r["return_last100"]
                                                                     for r in rows]
  assert replayed["metrics"]["env_steps"]["per_seed"] == [r["env_steps"] for r in rows]


def test_replay_reports_a_saved_value_it_does_not_reproduce(reinforce_run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(reinforce_run, workdir, ignore=shutil.ignore_patterns("replay"))
  path = os.path.join(workdir, "results.json")
  results = _load(path)
  per_seed = results["metrics"]["auc_return"]["per_seed"]
  per_seed[0] = float(np.nextafter(per_seed[0], np.inf))  # one float64 ULP, mean left as it was
  with open(path, "w") as f:
    json.dump(results, f)
  proc = _py("experiments.replay", f"--workdir={workdir}", f"--out={tmp_path / 'out'}")
  assert proc.returncode == 1, proc.stdout + proc.stderr
  table = _table(proc.stdout)
  assert {name for name, (_, _, equal) in table.items() if equal != "yes"} == {"auc_return"}
  assert table["auc_return"][2] == "NO"
  assert "replay of step 6: auc_return differ from the saved results" in proc.stdout


def _perturb_one_ulp(step_dir, path, index):
  """Adds one ULP to one element of one leaf of a saved step, written back in place through
  orbax in the same layout; returns (old, new) of that element."""
  item = os.path.join(step_dir, "default")
  checkpointer = ocp.StandardCheckpointer()
  tree = checkpointer.restore(item)
  parent = tree
  for key in path[:-1]:
    parent = parent[key]
  leaf = np.array(parent[path[-1]])
  old = leaf[index]
  leaf[index] = np.nextafter(old, np.array(np.inf, leaf.dtype))
  parent[path[-1]] = leaf
  checkpointer.save(item + ".new", tree)
  checkpointer.wait_until_finished()
  checkpointer.close()
  shutil.rmtree(item)
  os.rename(item + ".new", item)
  return old, leaf[index]


def test_verify_reports_a_one_ulp_change_of_one_leaf(reinforce_run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(reinforce_run, workdir)
  path = ("policy_params", "params", "MLP_0", "Dense_1", "bias")
  old, new = _perturb_one_ulp(os.path.join(workdir, "checkpoints", "3"), path, (1, 0))
  assert old != new
  proc = _py("experiments.replay", f"--workdir={workdir}", "--verify", "--step=3")
  assert proc.returncode == 1, proc.stdout + proc.stderr
  assert "verify: step 3 is NOT reproduced; 1 leaves differ:" in proc.stdout, proc.stdout
  expected_path = "." + path[0] + "".join(f"[{k!r}]" for k in path[1:])
  line = [l for l in proc.stdout.splitlines() if l.startswith("  ")]
  assert len(line) == 1 and line[0].strip().startswith(expected_path + ":"), proc.stdout
  match = re.search(r"max \|diff\| (\S+), (\d+) ULP", line[0])
  assert match and int(match.group(2)) == 1, line
  assert math.isclose(float(match.group(1)), abs(float(new) - float(old)), rel_tol=1e-2), line
  # The untouched neighbour steps still verify.
  assert _py("experiments.replay", f"--workdir={workdir}", "--verify", "--step=2").returncode == 0


def test_an_extracted_seed_continues_to_the_original_seeds_numbers(vae_run, tmp_path):
  out = str(tmp_path / "seed1")
  proc = _py("experiments.replay", f"--workdir={vae_run}", "--seed_index=1", "--step=1",
             f"--out={out}")
  assert proc.returncode == 0, proc.stderr
  command = shlex.split(proc.stdout.strip().splitlines()[-1].split("continue it with: ", 1)[1])
  assert command[:3] == ["python", "-m", "experiments.vae"], command
  assert {"--seeds=1", "--seed=1", f"--workdir={out}"} <= set(command), command
  resumed = _py(*command[2:])
  assert resumed.returncode == 0, resumed.stderr
  assert "resuming vae from epoch 1/3" in resumed.stdout, resumed.stdout

  original = {r["chunk"]: r for r in _rows(vae_run) if r["seed"] == 1}
  extracted = {r["chunk"]: r for r in _rows(out)}
  assert sorted(extracted) == [1, 2, 3]
  assert extracted[1] == original[1]  # copied, not recomputed
  for chunk in (2, 3):  # recomputed by the 1-seed run
    a, b = original[chunk], extracted[chunk]
    assert a.keys() == b.keys() and b["seed"] == 1
    for key in a.keys() - {"seconds", "chunk", "seed"}:
      np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=f"chunk {chunk} {key}")
  saved, continued = _load(os.path.join(vae_run, "results.json")), _load(
      os.path.join(out, "results.json"))
  assert continued["seeds"] == [1]
  for name, summary in saved["metrics"].items():
    np.testing.assert_allclose(continued["metrics"][name]["per_seed"], summary["per_seed"][1:2],
                               rtol=1e-5, err_msg=name)


def test_bad_workdirs_and_steps_are_one_error_line(reinforce_run, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  assert_one_line_error(_py("experiments.replay", f"--workdir={empty}"),
                        f"{empty} has no readable run_info.json")
  assert_one_line_error(_py("experiments.replay", f"--workdir={tmp_path / 'absent'}"),
                        "is not a directory")
  unknown = tmp_path / "unknown"
  unknown.mkdir()
  (unknown / "run_info.json").write_text(json.dumps(
      {"experiment": "sketch", "config": {}, "seeds": 1, "seed": 0}))
  assert_one_line_error(_py("experiments.replay", f"--workdir={unknown}"),
                        "no replay for experiment 'sketch'")
  assert_one_line_error(_py("experiments.replay", f"--workdir={reinforce_run}", "--step=99"),
                        "no checkpoint of step 99")
  assert_one_line_error(_py("experiments.replay", f"--workdir={reinforce_run}", "--verify",
                            "--step=99"), "--verify at step 99 needs the checkpoint of step 98")
  assert_one_line_error(_py("experiments.replay", f"--workdir={reinforce_run}", "--seed_index=2",
                            f"--out={tmp_path / 'x'}"), "--seed_index=2 is not a seed")


# --- the ULP arithmetic, against numpy's nextafter -------------------------------------------------

def _walk(x, steps):
  """x moved ``steps`` representable values up, one np.nextafter at a time."""
  for _ in range(steps):
    x = np.nextafter(x, np.array(np.inf, x.dtype))
  return x


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_ulp_distance_counts_nextafter_steps(dtype):
  rng = np.random.default_rng(0)
  start = np.array([-3e-3, -1.0, 0.0, 2.5, 1e4, -np.finfo(dtype).tiny, 7.0], dtype)
  steps = rng.integers(0, 40, size=start.shape)
  moved = np.array([_walk(x, int(k)) for x, k in zip(start, steps)], dtype)
  for x, y, k in zip(start, moved, steps):
    assert replay.ulp_distance(x[None], y[None]) == k, (x, y, k)
    assert replay.ulp_distance(y[None], x[None]) == k  # symmetric
  assert replay.ulp_distance(start, moved) == steps.max()
  # Across zero: from the largest negative subnormal to the smallest positive one is two steps
  # below and above zero (the two zeros are one value).
  tiny = np.array([np.finfo(dtype).smallest_subnormal], dtype)
  assert replay.ulp_distance(-tiny, tiny) == 2
  assert replay.ulp_distance(start, start) == 0


def test_ulp_distance_of_bfloat16_counts_its_own_representable_values():
  one = np.array([1.0], jnp.bfloat16)
  up = np.array([1.0 + 2.0 ** -7], jnp.bfloat16)  # bfloat16 has 7 explicit mantissa bits
  assert float(up[0]) != 1.0
  assert replay.ulp_distance(one, up) == 1
  assert replay.ulp_distance(one, np.array([1.0 + 3 * 2.0 ** -7], jnp.bfloat16)) == 3


def test_compare_states_names_each_differing_leaf_with_numpy_distances():
  rng = np.random.default_rng(1)
  key = jax.random.key(3)
  expected = {"params": {"w": rng.normal(size=(4, 3)).astype(np.float32),
                         "b": rng.normal(size=(3,)).astype(np.float32)},
              "step": np.int32(5), "key": key}
  actual = jax.tree.map(lambda x: x, expected)
  w = expected["params"]["w"].copy()
  w[2, 1] = _walk(w[2, 1], 3)
  w[0, 0] = _walk(w[0, 0], 1)
  actual = {"params": {"w": w, "b": expected["params"]["b"]}, "step": np.int32(7),
            "key": jax.random.key(4)}
  got = {path: (max_abs, ulps) for path, max_abs, ulps in replay.compare_states(expected, actual)}
  assert set(got) == {"['params']['w']", "['step']", "['key']"}, got
  diff = np.abs(w.astype(np.float64) - expected["params"]["w"].astype(np.float64))
  assert got["['params']['w']"] == (diff.max(), 3)
  assert got["['step']"] == (2.0, 2)
  key_a = np.asarray(jax.random.key_data(key), np.int64)
  key_b = np.asarray(jax.random.key_data(jax.random.key(4)), np.int64)
  assert got["['key']"][1] == np.abs(key_a - key_b).max()
  assert replay.compare_states(expected, jax.tree.map(lambda x: x, expected)) == []


def test_workspace_python_snippets_on_a_real_vae_run(vae_run):
  from tests.test_workspace_doc import run_block, marked_blocks  # noqa: PLC0415
  in_python, decode = marked_blocks("tests/test_replay.py runs this block on a real VAE run")
  saved = _load(os.path.join(vae_run, "results.json"))
  ns = run_block(in_python, {"runs/vae": vae_run})
  assert ns["steps"] == [1, 2, 3]  # --keep_every=1 kept every epoch
  assert int(ns["seed_1"].epoch) == 3
  np.testing.assert_allclose(ns["final"]["test_nll"], saved["metrics"]["test_nll_iwae"]["per_seed"],
                             rtol=1e-6)
  ns = run_block(decode, {"runs/vae": vae_run})
  assert ns["logits"].shape == (1, 28 * 28) and np.all(np.isfinite(ns["logits"]))
  stored = ocp.StandardCheckpointer().restore(os.path.join(vae_run, "checkpoints", "3", "default"))
  first = jax.tree.leaves(stored["params"])[0]
  np.testing.assert_array_equal(jax.tree.leaves(ns["params"])[0], first[1])  # seed 1's slice


def test_compare_results_lists_saved_values_the_replay_lacks():
  summary = {"per_seed": [1.0, 2.0], "mean": 1.5, "ci95_half_width": 0.5, "iqm": 1.5}
  saved = {"metrics": {"a": summary, "b": summary},
           "extra": {"chunks_done": 4, "k": 3, "gone": "x", "eval_seconds": 1.0}}
  replayed = {"metrics": {"a": summary}, "extra": {"chunks_done": 4, "k": 3, "eval_seconds": 2.0}}
  rows = {r[0]: r[1:] for r in replay.compare_results(saved, replayed, 4)}
  assert rows == {"a": (1.5, 1.5, True), "k": (3, 3, True), "b": (1.5, replay.MISSING, False),
                  "gone": ("x", replay.MISSING, False)}
  # Another step: nothing compared, nothing reported missing.
  rows = {r[0]: r[1:] for r in replay.compare_results(saved, replayed, 2)}
  assert rows == {"a": (None, 1.5, None), "k": ("-", 3, None)}
