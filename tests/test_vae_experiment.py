"""python -m experiments.vae end to end (IDX files, t10k-only holdout, tfds mock) and its
one-line errors, each in a real subprocess."""

import json
import os
import subprocess
import sys

import pytest

from tests.test_data import write_mnist_like

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--hidden=16", "--latent_dim=2", "--batch_size=16", "--epochs=2", "--seeds=2",
        "--eval_iw_samples=4"]
# No test may reach the network, even on a machine that has one.
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": "", "no_proxy": ""}


def _env(**extra):
  return {**os.environ, **OFFLINE, "JAX_PLATFORMS": "cpu", **extra}


def _run(args, env=None, timeout=300):
  return subprocess.run([sys.executable, "-m", "experiments.vae", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout, env=env or _env())


def _check_outputs(workdir, seeds=2, epochs=2, manifold=True):
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["experiment"] == "vae" and results["seeds"] == list(range(seeds))
  metrics = results["metrics"]
  assert len(metrics["test_neg_elbo"]["per_seed"]) == seeds
  assert results["extra"]["iwae_k"] == 4
  # The IWAE bound is tighter than the ELBO for every seed.
  for nll, neg_elbo in zip(metrics["test_nll_iwae"]["per_seed"],
                           metrics["test_neg_elbo"]["per_seed"]):
    assert nll < neg_elbo
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert sorted((r["chunk"], r["seed"]) for r in rows) == [(c, s) for c in range(1, epochs + 1)
                                                           for s in range(seeds)]
  pngs = {"learning_curves.png", "prior_samples.png", "reconstructions.png"}
  if manifold:
    pngs.add("latent_manifold.png")
  assert pngs <= set(os.listdir(workdir))
  return results


def test_idx_directory_end_to_end(tmp_path):
  write_mnist_like(str(tmp_path / "data"), sizes=(96, 40))
  proc = _run(["--data_dir", str(tmp_path / "data"), "--workdir", str(tmp_path / "run"), *TINY])
  assert proc.returncode == 0, proc.stderr
  assert "96 train, 40 test" in proc.stdout
  assert "epoch 2/2 | -elbo" in proc.stdout and "test -elbo" in proc.stdout
  assert "test NLL (IWAE, k=4)" in proc.stdout
  _check_outputs(str(tmp_path / "run"))


def test_t10k_only_directory_is_split_and_reported(tmp_path):
  write_mnist_like(str(tmp_path / "data"), splits=("t10k",), sizes=(100,), gz=False)
  proc = _run(["--data_dir", str(tmp_path / "data"), "--workdir", str(tmp_path / "run"),
               "--test_fraction=0.25", "--binarize=none", *TINY])
  assert proc.returncode == 0, proc.stderr
  assert "only the t10k split (100 images)" in proc.stdout and "75 train / 25 test" in proc.stdout
  _check_outputs(str(tmp_path / "run"))


def test_tfds_path_end_to_end_with_mock_data(tmp_path):
  script = ("import sys, tensorflow_datasets as tfds\n"
            "from genrl_jax.run import cli\n"
            "with tfds.testing.mock_data(num_examples=48):\n"
            "  cli.main('genrl_jax.generative.vae_run')\n")
  args = ["--workdir", str(tmp_path / "run"), "--binarize=static", *TINY]
  proc = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env=_env())
  assert proc.returncode == 0, proc.stderr
  assert "tensorflow-datasets 'mnist'" in proc.stdout
  _check_outputs(str(tmp_path / "run"))


def _corrupt_dir(tmp_path):
  os.makedirs(tmp_path / "corrupt", exist_ok=True)
  with open(tmp_path / "corrupt" / "t10k-images-idx3-ubyte", "wb") as f:
    f.write(b"not an idx file")
  return str(tmp_path / "corrupt")


@pytest.mark.parametrize("case", ["seeds", "dataset", "latent_dim", "missing_dir", "corrupt_idx",
                                  "empty_dir_offline", "no_data_dir_offline", "nan", "enum",
                                  "not_a_number", "unknown_flag"])
def test_bad_input_ends_with_one_line(tmp_path, case):
  empty = tmp_path / "empty"
  empty.mkdir()
  env = _env()
  workdir = ["--workdir", str(tmp_path / "run")]
  args, expected = {
      "seeds": (["--seeds=0"], "--seeds must be >= 1"),
      "dataset": (["--dataset=cifar10"], "--dataset=cifar10: value should be one of <mnist|"),
      "latent_dim": (["--latent_dim=0"], "--latent_dim must be >= 1"),
      "missing_dir": (["--data_dir=/nonexistent/mnist"], "is not a directory"),
      "corrupt_idx": ([f"--data_dir={_corrupt_dir(tmp_path)}"], "is not an IDX file"),
      "empty_dir_offline": ([f"--data_dir={empty}"], "cannot load 'mnist': no prepared"),
      "no_data_dir_offline": ([], "cannot load 'mnist': no prepared"),
      "nan": (["--learning_rate=1e9", *TINY], "loss is NaN/Inf for seed(s) 0, 1 at epoch 1"),
      "enum": (["--seed_loop=pmap"], "--seed_loop=pmap: value should be one of <auto|vmap|map>"),
      "not_a_number": (["--epochs=ten"], "--epochs=ten"),
      "unknown_flag": (["--epoch=3"], "Unknown command line flag 'epoch'"),
  }[case]
  if case == "no_data_dir_offline":
    env["TFDS_DATA_DIR"] = str(empty)  # the default directory, empty, and no network
    env["HOME"] = str(empty)
  if case == "nan":
    write_mnist_like(str(tmp_path / "data"), sizes=(64, 16))
    args.append(f"--data_dir={tmp_path / 'data'}")
  proc = _run(args + workdir, env=env)
  assert proc.returncode == 2, (proc.stdout, proc.stderr)
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
  assert "Traceback" not in proc.stderr + proc.stdout
  if "offline" in case:  # the line names both offline options
    assert "prepared tensorflow-datasets directory" in lines[0]
    assert "raw IDX files" in lines[0] and "downloading its IDX files failed" in lines[0]
