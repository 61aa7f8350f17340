"""In-program sweeps: every (value, seed) cell in one program equals its separate run."""

import dataclasses
import json
import os

import numpy as np
import pytest

from genrl_jax import run as runner
from genrl_jax.data import images
from genrl_jax.generative import vae, vae_run
from genrl_jax.run import sweep as sweep_lib
from tests import test_vae


def _dataset(n_train=64, n_test=20, seed=0):
  rng = np.random.default_rng(seed)
  protos = rng.integers(0, 2, size=(2, 16)) * 255

  def make(n):
    x = protos[rng.integers(0, 2, size=n)] * 0.9 + rng.integers(0, 25, size=(n, 16))
    return np.clip(x, 0, 255).astype(np.uint8).reshape(n, 4, 4, 1)
  return images.ImageDataset(make(n_train), None, make(n_test), None, "synthetic 4x4")


CONFIG = dataclasses.replace(test_vae.TINY, epochs=2)


def _vae(config=CONFIG):
  return vae_run.make_experiment(config, _dataset(), images.DataConfig())


def test_parse_product_and_one_line_errors():
  sweepable = sweep_lib.Sweepable(CONFIG, None)
  grid = sweep_lib.parse("learning_rate=1e-3,3e-4 prior_std=0.5,1,2", sweepable)
  assert grid.names == ("learning_rate", "prior_std")
  assert grid.points == tuple((a, b) for a in (1e-3, 3e-4) for b in (0.5, 1.0, 2.0))
  hp = grid.hparams(num_seeds=2)
  np.testing.assert_array_equal(hp["prior_std"], np.float32([.5, .5, 1, 1, 2, 2] * 2))
  for spec, message in [("latent_dim=2,3", "not a sweepable hyperparameter"),
                        ("learning_rate=-1e-3", "must be a positive number"),
                        ("learning_rate=x", "must be numbers"),
                        ("learning_rate", "write NAME=V1,V2"),
                        ("learning_rate=1,1", "twice"), ("", "empty")]:
    with pytest.raises(runner.UserError, match=message):
      sweep_lib.parse(spec, sweepable)
  with pytest.raises(runner.UserError, match="no sweepable hyperparameters"):
    sweep_lib.parse("learning_rate=1", None)


@pytest.mark.parametrize("seed_loop", ["vmap", "map"])
def test_each_cell_equals_its_separate_run(tmp_path, seed_loop):
  values, seeds = (1e-2, 1e-3), 2
  spec = "learning_rate=" + ",".join(map(str, values))
  swept = runner.run(_vae(), seeds=seeds, seed=5, sweep=spec, workdir=str(tmp_path),
                     seed_loop=seed_loop, log=lambda _: None)
  # One compile of the chunk for all 4 cells (trace_once would have raised on a second trace).
  doc = json.load(open(tmp_path / "results.json"))
  assert doc["seeds"] == [5, 6]
  assert [c["seed"] for c in doc["extra"]["sweep"]["cells"]] == [5, 6] * 2
  assert (tmp_path / "sweep.png").stat().st_size > 0
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert len(rows) == 2 * 4 and {r["learning_rate"] for r in rows} == set(values)
  last = {r["cell"]: r for r in rows if r["chunk"] == 2}
  for v, lr in enumerate(values):
    one = runner.run(_vae(dataclasses.replace(CONFIG, learning_rate=lr)), seeds=seeds, seed=5,
                     seed_loop=seed_loop, log=lambda _: None)
    key = f"test_neg_elbo[learning_rate={lr:g}]"
    np.testing.assert_allclose(doc["metrics"][key]["per_seed"], one.final["test_neg_elbo"],
                               rtol=1e-5)
    for i in range(seeds):
      np.testing.assert_allclose(last[v * seeds + i]["loss"], one.history[-1]["loss"][i],
                                 rtol=1e-5)
      np.testing.assert_allclose(swept.history[-1]["loss"][v * seeds + i],
                                 one.history[-1]["loss"][i], rtol=1e-5)
  # Different learning rates really train differently.
  assert len({round(x, 6) for x in swept.history[-1]["loss"][::seeds]}) == 2


def test_sweep_resumes_after_a_stop(tmp_path):
  spec = "prior_std=0.5,2"
  want = runner.run(_vae(dataclasses.replace(CONFIG, epochs=3)), seeds=2, sweep=spec,
                    log=lambda _: None)
  runner.run(_vae(dataclasses.replace(CONFIG, epochs=2)), seeds=2, sweep=spec,
             workdir=str(tmp_path), config={"epochs": 2}, log=lambda _: None)
  lines = []
  got = runner.run(_vae(dataclasses.replace(CONFIG, epochs=3)), seeds=2, sweep=spec,
                   workdir=str(tmp_path), config={"epochs": 3}, log=lines.append)
  assert any("resuming" in line for line in lines)
  np.testing.assert_array_equal(got.final["test_neg_elbo"], want.final["test_neg_elbo"])
  assert [h["loss"].shape for h in got.history] == [(4,)] * 3
  np.testing.assert_array_equal(got.history[0]["loss"], want.history[0]["loss"])


def _reinforce(**change):
  from genrl_jax.rl import reinforce, reinforce_run  # noqa: PLC0415
  config = reinforce.ReinforceConfig(env_id="CartPole-v1", max_episode_steps=30, num_envs=4,
                                     total_env_steps=480, num_chunks=2, **change)
  return reinforce_run.make_experiment(config, None)


def test_reinforce_cells_equal_separate_runs():
  import jax  # noqa: PLC0415
  spec = "policy_lr=0.01,0.05 entropy_coef=0,0.1"
  swept = runner.run(_reinforce(), seeds=2, seed=3, sweep=spec, log=lambda _: None)
  grid = sweep_lib.grid_points(sweep_lib.parse(spec, _reinforce().sweepable))
  assert len(grid) == 4
  for v, point in enumerate(grid):
    one = runner.run(_reinforce(**point), seeds=2, seed=3, log=lambda _: None)
    for i in range(2):
      got = jax.tree.map(lambda x: np.asarray(x[v * 2 + i]), swept.state.policy_params)
      want = jax.tree.map(lambda x: np.asarray(x[i]), one.state.policy_params)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got, want)
      np.testing.assert_array_equal(swept.history[-1]["env_steps"][v * 2 + i],
                                    one.history[-1]["env_steps"][i])
    key = f"final_return_last100[policy_lr={point['policy_lr']:g},entropy_coef={point['entropy_coef']:g}]"
    np.testing.assert_allclose(swept.results["metrics"][key]["per_seed"],
                               one.results["metrics"]["final_return_last100"]["per_seed"],
                               rtol=1e-5)


def test_vae_entry_point_sweep_then_replay(tmp_path):
  """python -m experiments.vae --sweep=... end to end, then experiments.replay of its workdir."""
  import subprocess  # noqa: PLC0415
  import sys  # noqa: PLC0415
  from tests import test_vae_experiment as cli_test  # noqa: PLC0415
  from tests.test_data import write_mnist_like  # noqa: PLC0415
  write_mnist_like(str(tmp_path / "data"), sizes=(96, 40))
  run = str(tmp_path / "run")
  proc = cli_test._run(["--data_dir", str(tmp_path / "data"), "--workdir", run, *cli_test.TINY,
                        "--sweep=learning_rate=1e-2,1e-3"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "2 sweep points (learning_rate) x 2 seeds (0..1) = 4 cells" in json.load(
      open(os.path.join(run, "run_info.json")))["sessions"][-1]["placement"]
  assert "test -ELBO [learning_rate=0.01]" in proc.stdout, proc.stdout[-2000:]
  doc = json.load(open(os.path.join(run, "results.json")))
  assert os.path.exists(os.path.join(run, "sweep.png"))
  replayed = subprocess.run([sys.executable, "-m", "experiments.replay", f"--workdir={run}",
                             f"--out={tmp_path / 'replay'}"], cwd=cli_test.ROOT,
                            capture_output=True, text=True, timeout=300, env=cli_test._env())
  assert replayed.returncode == 0, replayed.stderr[-3000:]
  again = json.load(open(tmp_path / "replay" / "results.json"))
  for key in ("test_neg_elbo[learning_rate=0.01]", "test_nll_iwae[learning_rate=0.001]"):
    assert again["metrics"][key]["per_seed"] == doc["metrics"][key]["per_seed"]
  assert os.path.exists(tmp_path / "replay" / "sweep.png")
  bad = cli_test._run(["--data_dir", str(tmp_path / "data"), "--workdir", str(tmp_path / "b"),
                       *cli_test.TINY, "--sweep=hidden=8,16"])
  assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
      "error: --sweep: 'hidden' is not a sweepable hyperparameter of vae; sweepable: "
      "prior_std, learning_rate (others: python -m launch.sweep)"], bad.stderr
