"""benchmarks.suite: its FLOP-share arithmetic by hand, and one real run at its smallest size."""

import json
import os

import pytest

from benchmarks import suite
from genrl_jax.generative import gan, vae
from tests.experiment_cli import assert_one_line_error, run_experiment


def test_vae_flops_and_share_by_hand():
  # 784-400-20: encoder 784x400, two 400x20 heads; decoder 20x400, 400x784. Each layer costs
  # 6 * in * out per example (forward, weight gradient, input gradient), less the data's input
  # gradient 2 * 784 * 400.
  macs = 784 * 400 + 2 * 400 * 20 + 20 * 400 + 400 * 784
  assert macs == 651_200
  assert suite.vae_flops_per_example(vae.VAEConfig()) == 6 * 651_200 - 2 * 784 * 400 == 3_280_000
  # 10k examples/s x 3.28 MFLOP = 32.8 GFLOP/s of a 100 GFLOP/s peak.
  assert suite.share_of_peak(10_000.0, 3_280_000, 100.0) == pytest.approx(0.328)
  assert suite.share_of_peak(10_000.0, None, 100.0) is None  # RL: no FLOP count
  assert suite.share_of_peak(10_000.0, 3_280_000, 0.0) is None


def test_gan_flops_by_hand():
  # Batch 1, width 1, latent 1, two D layers, no generator 3x3 conv, 28x28 images (q = 7^2,
  # h = 14^2). G: the projection [1, 1] @ [1, 49*4] (forward and dW, no dX: z needs none), the
  # deconvolutions [49, 4] @ [4, 16*2] and [196, 2] @ [2, 16] (forward, dW and dX each; both
  # 2*49*4*32 = 2*196*2*16 = 12544 FLOPs a product).
  g = 2 * (2 * 1 * 1 * 196) + 3 * 12544 + 3 * 12544
  # D: 28 -> 14 -> 7; layer 0 [196, 16] @ [16, 1], layer 1 [49, 16] @ [16, 2], logit
  # [1, 98] @ [98, 1]. D's step: two forward passes, dW of both layers twice, dX of layer 1
  # twice; G's step: one forward pass and dX of both layers.
  layer0, layer1, logit = 2 * 196 * 16 * 1, 2 * 49 * 16 * 2, 2 * 98
  forward = layer0 + layer1 + logit
  d_step = 2 * forward + 2 * (layer0 + layer1) + 2 * layer1
  g_step = forward + layer0 + layer1
  config = gan.GANConfig(batch_size=1, width=1, latent_dim=1, discriminator_layers=2,
                         generator_convs=0)
  assert suite.gan_flops_per_iteration(config) == g + d_step + g_step == 139_356
  # The default configuration: 11.50 GFLOP per seed-iteration (README, gan_throughput).
  assert suite.gan_flops_per_iteration(gan.GANConfig()) / 1e9 == pytest.approx(11.50, abs=0.005)
  # 10 seed-iterations/s of 11.5 GFLOP on a 200 GFLOP/s peak: 57.5 %.
  assert suite.share_of_peak(10.0, 11.5e9, 200.0) == pytest.approx(0.575)


def test_suite_tiny_run(tmp_path):
  out = tmp_path / "bench"
  proc = run_experiment("benchmarks.suite", "--tiny", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((out / "suite.json").read_text())
  assert result["workloads"] == list(suite.WORKLOADS)
  assert result["device"]["platform"] == "cpu" and result["device"]["devices"]
  peak = result["device"]["matmul_peak_gflops"]
  assert peak["start"] > 0 and peak["end"] > 0 and peak["used"] == max(peak["start"], peak["end"])
  expected = [(w, n) for w in suite.WORKLOADS for n in suite.SIZES["tiny"][w]["seeds"]]
  assert [(r["workload"], r["seeds"]) for r in result["rows"]] == expected
  for r in result["rows"]:
    assert "error" not in r, r
    assert r["rate"] > 0 and r["compile_seconds"] > 0 and r["seconds"] > 0, r
    assert r["seed_loop"] in ("vmap", "map") and len(r["load_average"]) == 3
    if r["workload"] in ("vae", "gan"):
      assert r["share_of_peak"] == pytest.approx(r["rate"] * r["flops_per_unit"]
                                                 / (peak["used"] * 1e9))
      assert 0 < r["share_of_peak"] < 1.5, r
    else:
      assert r["share_of_peak"] is None
  table = (out / "suite.md").read_text().splitlines()
  for workload, seeds in expected:
    title = suite.TITLES[workload]
    assert sum(line.startswith(f"| {title} | {seeds} |") for line in table) == 1, table
  rows = [line for line in table if line.startswith("| ") and not line.startswith("| workload")]
  assert len(rows) == len(expected)
  assert "f32 matmul peak" in proc.stdout and "VAE, 1 seed:" in proc.stdout


@pytest.mark.parametrize("flags, named", [(("--only=vae,foo",), "--only"),
                                          (("--quick", "--tiny"), "--quick")])
def test_bad_flags_one_line(flags, named, tmp_path):
  proc = run_experiment("benchmarks.suite", *flags, f"--out={tmp_path / 'bench'}")
  assert_one_line_error(proc, named)
  assert not os.path.exists(tmp_path / "bench")
