r"""DQN training throughput: genrl_jax (8 vmapped seeds x 500k env steps) vs PyTorch + gymnasium.

Both train CartPole-v1 with the same algorithm and hyperparameters (``DQNConfig``'s defaults:
10 envs, Double DQN, 4-120-84-2 ReLU Q-network, Adam 2.5e-4, batch 128, one gradient step per
10 env steps after 10k, 10k-transition buffer, target copy every 500 steps; see
benchmarks/peers/torch_dqn.py), measured in the same run on the same machine:

* genrl_jax: ``experiments.dqn``'s computation (the chunk jitted over the seeds by the runner's
  ``SeedPlacement``, metrics to the host after every chunk) for the whole budget of every seed;
  compile time reported apart. Updates included.
* PyTorch: one process, the 10 envs stepped in a Python loop, torch.set_num_threads(1) (on this
  loaded 2-core machine 2 threads made its small updates ~10x slower), for
  ``--torch_seconds``. Its warm-up phase (acting only, before learning starts) and its training
  phase (acting + one update per 10 steps) are timed apart, and its time for the same total
  work (8 seeds x the budget, seeds one after another) is extrapolated linearly:
  8 * (warm-up time + (budget - learning_starts) / training-phase rate).

  python benchmarks/dqn_throughput.py                   # writes runs/bench/dqn_throughput.{md,json}
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.vae_throughput import matmul_peak_gflops  # noqa: E402
from genrl_jax import run as runner  # noqa: E402
from genrl_jax.rl import dqn  # noqa: E402

flags.DEFINE_integer("seeds", 8, "Seeds trained side by side by genrl_jax.")
flags.DEFINE_integer("total_env_steps", 500_000, "Budget per seed (env steps).")
flags.DEFINE_enum("seed_loop", "vmap", ["vmap", "map", "auto"], "The runner's seed loop.")
flags.DEFINE_float("torch_seconds", 90.0, "How long the PyTorch reference trains.")
flags.DEFINE_bool("torch", True, "Run the PyTorch reference (needs torch and gymnasium).")
flags.DEFINE_string("out", "runs/bench", "Directory for dqn_throughput.md and .json.")
FLAGS = flags.FLAGS


def measure_jax(num_seeds: int, total_env_steps: int, seed_loop: str, devices=None) -> dict:
  """``devices``: those the seeds are split over (``SeedPlacement``'s; default the local ones)."""
  config = dqn.DQNConfig(total_env_steps=total_env_steps)
  train = dqn.make_train(config)
  placement = runner.SeedPlacement(num_seeds, 0, seed_loop, devices)
  state = placement.jit(train.init)(placement.keys(), None)
  chunk_fn = placement.jit(train.chunk, donate=True)
  t0 = time.perf_counter()
  compiled = chunk_fn.lower(state, None).compile()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(config.num_chunks):
    state, metrics = compiled(state, None)
    metrics = jax.device_get(metrics)      # the runner's one host transfer per chunk
  seconds = time.perf_counter() - t0
  steps = float(np.sum(metrics["env_steps"]))
  return {"seeds": num_seeds, "seed_loop": placement.resolved_loop, "seconds": round(seconds, 2),
          "compile_seconds": round(compile_s, 2), "env_steps": int(steps),
          "env_steps_per_s": round(steps / seconds, 1),
          "gradient_steps_per_seed": float(np.mean(metrics["updates"])),
          "return_last100_mean": round(float(np.mean(metrics["return_last100"])), 2)}


def measure_torch(seconds: float, total_env_steps: int) -> dict:
  cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "peers", "torch_dqn.py"),
         f"--seconds={seconds}", f"--total_env_steps={total_env_steps}", "--threads=1"]
  out = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if out.returncode != 0:
    raise runner.UserError(f"the PyTorch reference failed: {out.stderr.strip()[-300:]}; "
                           "install torch and gymnasium or pass --notorch")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  results = {"machine": {"cpus": os.cpu_count(), "devices": [str(d) for d in jax.devices()],
                         "load_average_at_start": list(os.getloadavg())}}
  peak = matmul_peak_gflops()
  results["machine"]["matmul_gflops_before"] = round(peak, 1)
  print(f"jnp f32 matmul peak: {peak:.1f} GFLOP/s", flush=True)
  print(f"genrl_jax, {FLAGS.seeds} seeds x {FLAGS.total_env_steps} env steps ...", flush=True)
  ours = measure_jax(FLAGS.seeds, FLAGS.total_env_steps, FLAGS.seed_loop)
  results["jax"] = ours
  print(json.dumps(ours), flush=True)
  learning_starts = dqn.DQNConfig().learning_starts
  if FLAGS.torch:
    print(f"PyTorch reference: training for {FLAGS.torch_seconds:g} s ...", flush=True)
    t = measure_torch(FLAGS.torch_seconds, FLAGS.total_env_steps)
    if t["train_env_steps"] <= 0:
      raise runner.UserError("the PyTorch reference did not reach its training phase; raise "
                             "--torch_seconds")
    warm_rate = t["warmup_env_steps"] / max(t["warmup_seconds"], 1e-9)
    per_seed = (learning_starts / warm_rate
                + (FLAGS.total_env_steps - learning_starts) / t["train_env_steps_per_s"])
    t["extrapolated_seconds_per_seed"] = round(per_seed, 1)
    t["extrapolated_seconds_all_seeds"] = round(per_seed * FLAGS.seeds, 1)
    t["extrapolated_env_steps_per_s"] = round(FLAGS.total_env_steps / per_seed, 1)
    results["torch"] = t
    print(json.dumps(t), flush=True)
  peak_after = matmul_peak_gflops()
  results["machine"]["matmul_gflops_after"] = round(peak_after, 1)
  results["machine"]["load_average_at_end"] = list(os.getloadavg())

  lines = ["| implementation | seeds x env steps | wall-clock | env steps/s (updates incl.) | "
           "vs PyTorch | compile |", "|---|---:|---:|---:|---:|---:|"]
  ref = results.get("torch")
  if ref:
    lines.append(f"| PyTorch + gymnasium (10 envs, Python loop), extrapolated from "
                 f"{ref['env_steps']:,} steps in {ref['seconds']:.0f} s | {FLAGS.seeds} x "
                 f"{FLAGS.total_env_steps:,} | {ref['extrapolated_seconds_all_seeds']:,.0f} s | "
                 f"{ref['extrapolated_env_steps_per_s']:,.0f} | 1x | - |")
  ratio = (f"{ref['extrapolated_seconds_all_seeds'] / ours['seconds']:,.0f}x" if ref else "-")
  lines.append(f"| genrl_jax (one jitted chunk, seed loop {ours['seed_loop']}) | {FLAGS.seeds} x "
               f"{FLAGS.total_env_steps:,} | {ours['seconds']:.0f} s | "
               f"{ours['env_steps_per_s']:,.0f} | {ratio} | {ours['compile_seconds']:.0f} s |")
  table = "\n".join(lines)
  print(table)
  print(f"jnp f32 matmul peak before / after: {peak:.1f} / {peak_after:.1f} GFLOP/s; load "
        f"average at start / end: {results['machine']['load_average_at_start'][0]:.2f} / "
        f"{results['machine']['load_average_at_end'][0]:.2f}", flush=True)
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, "dqn_throughput.json"), "w") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(FLAGS.out, "dqn_throughput.md"), "w") as f:
    f.write(table + "\n")


if __name__ == "__main__":
  runner.cli_main(main)
