"""Every training experiment's results.json reads with the same code: the runner's one schema.
Also: README's toy experiment is the tested file, verbatim."""

import json
import os

import numpy as np

from experiment_cli import run_experiment
from tests.test_data import write_mnist_like

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_results(path):
  """The one reader: {metric: per-seed float array} after checking the schema of every entry."""
  with open(path) as f:
    doc = json.load(f)
  assert set(doc) == {"experiment", "config", "seeds", "metrics", "extra"}
  out = {}
  for name, s in doc["metrics"].items():
    assert set(s) == {"per_seed", "mean", "ci95_half_width", "iqm"}, name
    per_seed = np.asarray(s["per_seed"], dtype=np.float64)
    assert per_seed.shape == (len(doc["seeds"]),)
    np.testing.assert_allclose(s["mean"], per_seed.mean(), rtol=1e-12)
    assert s["ci95_half_width"] >= 0
    out[name] = per_seed
  return doc["experiment"], out


def test_vae_and_reinforce_results_follow_one_schema(tmp_path):
  write_mnist_like(str(tmp_path / "data"), sizes=(64, 32))
  vae = run_experiment("experiments.vae", f"--data_dir={tmp_path / 'data'}", "--hidden=16",
                       "--latent_dim=2", "--batch_size=16", "--epochs=1", "--seeds=2",
                       "--eval_iw_samples=2", f"--workdir={tmp_path / 'vae'}")
  assert vae.returncode == 0, vae.stderr
  rl = run_experiment("experiments.reinforce", "--max_episode_steps=20", "--num_envs=4",
                      "--total_env_steps=480", "--num_chunks=2", "--seeds=2",
                      f"--workdir={tmp_path / 'rl'}")
  assert rl.returncode == 0, rl.stderr
  name, vae_metrics = read_results(tmp_path / "vae" / "results.json")
  assert name == "vae" and {"test_neg_elbo", "test_nll_iwae"} <= set(vae_metrics)
  name, rl_metrics = read_results(tmp_path / "rl" / "results.json")
  assert name == "reinforce" and {"final_return_last100", "auc_return"} <= set(rl_metrics)
  assert np.all(rl_metrics["env_steps"] >= 480)


def test_readme_shows_the_tested_toy_experiment():
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  with open(os.path.join(ROOT, "tests", "toy_experiment.py")) as f:
    toy = f.read()
  assert f"```python\n{toy}```" in readme


def test_the_one_reader_refuses_another_layout_and_damage_in_one_line(tmp_path):
  import pytest  # noqa: PLC0415
  from genrl_jax.errors import UserError  # noqa: PLC0415
  from genrl_jax.run import results  # noqa: PLC0415
  good = results.results_document("bandits", {"seed": 0}, [0], {}, {"arms": 10})
  results.write_json(str(tmp_path / "good.json"), good)
  assert results.read(str(tmp_path / "good.json")) == good
  # The studies' layout before they wrote the one schema; a summary over the wrong seeds; a cut file.
  (tmp_path / "old.json").write_text(json.dumps({"arms": 10, "epsilons": {}}))
  with pytest.raises(UserError, match="not the results schema"):
    results.read(str(tmp_path / "old.json"))
  bad = dict(good, metrics={"x": {"per_seed": [1.0, 2.0], "mean": 1.5, "ci95_half_width": 0.1,
                                  "iqm": 1.5}})
  (tmp_path / "bad.json").write_text(json.dumps(bad))
  with pytest.raises(UserError, match="over its 1 seeds"):
    results.read(str(tmp_path / "bad.json"))
  (tmp_path / "cut.json").write_text(json.dumps(good)[:20])
  with pytest.raises(UserError, match="cut.json"):
    results.read(str(tmp_path / "cut.json"))
