r"""REINFORCE training throughput: genrl_jax (1, 8, 64 vmapped seeds) vs PyTorch + gymnasium.

Both train CartPole-v1 with the same algorithm and networks (reward-to-go, learned value
baseline, policy 4-32-2 and value 4-32-1 tanh MLPs, Adam, 16 episodes per update; see
benchmarks/peers/torch_reinforce.py), measured in the same run on the same machine:

* genrl_jax: ``experiments.reinforce``'s default configuration, the runner's computation (one
  jitted chunk of updates vmapped over seeds, metrics to the host after every chunk) for the
  whole 1M-env-step budget of every seed; compile time reported apart. Env steps are real steps
  (the sum of episode lengths); the padding steps a whole-episode batch simulates after its
  episodes ended are reported separately as "simulated".
* PyTorch: one gymnasium env in a Python loop, torch.set_num_threads(2), trained from scratch for
  ``--torch_seconds``; its throughput is steady from the first episode (per-step Python cost).

  python benchmarks/rl_throughput.py                    # writes runs/bench/rl_throughput.{md,json}
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from genrl_jax import run as runner  # noqa: E402
from genrl_jax.rl import reinforce  # noqa: E402

flags.DEFINE_list("seeds", ["1", "8", "64"], "Seed counts to measure.")
flags.DEFINE_integer("total_env_steps", 1_000_000, "Budget per seed (real env steps).")
flags.DEFINE_float("torch_seconds", 30.0, "How long the PyTorch reference trains.")
flags.DEFINE_bool("torch", True, "Run the PyTorch reference (needs torch and gymnasium).")
flags.DEFINE_string("out", "runs/bench", "Directory for rl_throughput.md and .json.")
FLAGS = flags.FLAGS


def measure_jax(num_seeds: int, total_env_steps: int, devices=None) -> dict:
  """``devices``: those the seeds are split over (``SeedPlacement``'s; default the local ones)."""
  default = reinforce.ReinforceConfig()
  max_chunks = max(1, total_env_steps // (default.num_envs * 500))   # CartPole's 500-step limit
  config = reinforce.ReinforceConfig(total_env_steps=total_env_steps,
                                     num_chunks=min(default.num_chunks, max_chunks))
  train = reinforce.make_train(config)
  placement = runner.SeedPlacement(num_seeds, 0, "vmap", devices)   # as the runner places the seeds
  state = placement.jit(train.init)(placement.keys(), None)
  chunk_fn = placement.jit(train.chunk, donate=True)
  t0 = time.perf_counter()
  compiled = chunk_fn.lower(state, None).compile()
  compile_s = time.perf_counter() - t0
  simulated = 0.0
  t0 = time.perf_counter()
  for _ in range(config.num_chunks):
    state, metrics = compiled(state, None)
    metrics = jax.device_get(metrics)      # the runner's one host transfer per chunk
    simulated += float(np.sum(metrics["simulated_steps_in_chunk"]))
  seconds = time.perf_counter() - t0
  steps = float(np.sum(metrics["env_steps"]))
  return {
      "seeds": num_seeds, "seconds": round(seconds, 3), "compile_seconds": round(compile_s, 2),
      "env_steps": int(steps), "env_steps_per_s": round(steps / seconds, 1),
      "simulated_steps_per_s": round(simulated / seconds, 1),
      "updates_per_seed": float(np.mean(metrics["updates"])),
      "return_last100_mean": round(float(np.mean(metrics["return_last100"])), 2),
  }


def measure_torch(seconds: float) -> dict:
  cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "peers", "torch_reinforce.py"),
         f"--seconds={seconds}", "--threads=2"]
  out = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if out.returncode != 0:
    raise runner.UserError(f"the PyTorch reference failed: {out.stderr.strip()[-300:]}; "
                           "install torch (pip install torch==2.13.0) or pass --notorch")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  seeds = [int(s) for s in FLAGS.seeds]
  results = {"machine": {"cpus": os.cpu_count(), "devices": [str(d) for d in jax.devices()],
                         "load_average_at_start": list(os.getloadavg())}}
  if FLAGS.torch:
    print(f"PyTorch reference: training for {FLAGS.torch_seconds:g} s ...", flush=True)
    results["torch"] = measure_torch(FLAGS.torch_seconds)
    print(json.dumps(results["torch"]), flush=True)
  results["jax"] = []
  for n in seeds:
    print(f"genrl_jax, {n} seeds x {FLAGS.total_env_steps} env steps ...", flush=True)
    r = measure_jax(n, FLAGS.total_env_steps)
    results["jax"].append(r)
    print(json.dumps(r), flush=True)
  results["load_average_at_end"] = list(os.getloadavg())

  ref = results.get("torch", {}).get("env_steps_per_s")
  lines = ["| implementation | seeds | env steps/s | vs PyTorch | simulated steps/s | "
           "train time | compile | env steps/s incl. compile | last-100 return |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  if ref:
    t = results["torch"]
    lines.append(f"| PyTorch + gymnasium (1 env, Python loop) | 1 | {ref:,.0f} | 1x | "
                 f"{ref:,.0f} | {t['seconds']:.0f} s ({t['env_steps']:,} steps) | - | "
                 f"{ref:,.0f} | {t['return_last100']:.0f} |")
  for r in results["jax"]:
    ratio = f"{r['env_steps_per_s'] / ref:,.0f}x" if ref else "-"
    with_compile = r["env_steps"] / (r["seconds"] + r["compile_seconds"])
    lines.append(f"| genrl_jax (jit + vmap) | {r['seeds']} | {r['env_steps_per_s']:,.0f} | "
                 f"{ratio} | {r['simulated_steps_per_s']:,.0f} | {r['seconds']:.1f} s | "
                 f"{r['compile_seconds']:.0f} s | {with_compile:,.0f} | "
                 f"{r['return_last100_mean']:.0f} |")
  table = "\n".join(lines)
  print(table, flush=True)
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, "rl_throughput.json"), "w") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(FLAGS.out, "rl_throughput.md"), "w") as f:
    f.write(table + "\n")


if __name__ == "__main__":
  runner.cli_main(main)
