r"""Where the DQN loop's time goes: the floor (benchmarks/dqn_floor.py), each piece the project adds
on top of it alone, all of them, and the project's own chunk, interleaved in rounds in one process.

Every row trains CartPole-v1 for ``--seeds`` vmapped seeds x ``--total_env_steps`` with the
experiment's hyperparameters (10 envs, buffer 10k, batch 128, one gradient step per 10 env
steps from 10k on, target copy every 500); compile time is excluded everywhere and printed
apart. The project's rows run ``genrl_jax.rl.dqn.make_train``'s chunk through the runner's
``SeedPlacement`` (what ``experiments.dqn`` compiles), metrics to the host after every chunk;
one row runs the project's chunk with the floor's algorithm (``--double_dqn=false
--max_grad_norm=0 --lr_decay=false``: what is left is the project's machinery); the last row is
the whole ``python -m experiments.dqn`` process (checkpoints, metrics.jsonl,
TensorBoard), its rate from the chunk times in its results.json (the first chunk, which
includes the compile, counted at the median of the others).

  python -m benchmarks.dqn_overhead                       # 2 rounds, 8 seeds x 200k
  python -m benchmarks.dqn_overhead --rounds=1 --total_env_steps=50000

Writes runs/bench/dqn_overhead.{md,json}.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import dqn_floor  # noqa: E402
from benchmarks.vae_throughput import matmul_peak_gflops  # noqa: E402
from genrl_jax import run as runner  # noqa: E402
from genrl_jax.rl import dqn  # noqa: E402

flags.DEFINE_integer("seeds", 8, "Seeds, vmapped.")
flags.DEFINE_integer("total_env_steps", 200_000, "Budget per seed (env steps).")
flags.DEFINE_integer("rounds", 2, "Interleaved rounds of every row.")
flags.DEFINE_list("only", [], "Run only these rows (by name); default: all.")
flags.DEFINE_string("out", "runs/bench", "Directory for dqn_overhead.md and .json.")
FLAGS = flags.FLAGS

ALL = dqn_floor.Pieces(double_dqn=True, max_grad_norm=10.0, lr_decay=True,
                       final_observation=True, metrics=True, chunks=10)
FLOOR_ROWS = {
    "floor": dqn_floor.Pieces(),
    "+ Double DQN (a third forward pass)": dqn_floor.Pieces(double_dqn=True),
    "+ gradient clipping at norm 10": dqn_floor.Pieces(max_grad_norm=10.0),
    "+ step-size schedule": dqn_floor.Pieces(lr_decay=True),
    "+ final_observation as s'": dqn_floor.Pieces(final_observation=True),
    "+ metrics and the last-100 window": dqn_floor.Pieces(metrics=True),
    "+ 10 chunks (budget while-loop, host fetch)": dqn_floor.Pieces(chunks=10),
    "all of the above": ALL,
}


PLAIN = {"double_dqn": False, "max_grad_norm": 0.0, "lr_decay": False}  # the floor's algorithm


def project_chunk(seeds: int, total_env_steps: int, seed_loop: str, **overrides) -> dict:
  """``experiments.dqn``'s compiled chunk over the seeds, every chunk's metrics fetched."""
  config = dqn.DQNConfig(total_env_steps=total_env_steps, **overrides)
  train = dqn.make_train(config)
  placement = runner.SeedPlacement(seeds, 0, seed_loop)
  state = placement.jit(train.init)(placement.keys(), None)
  chunk_fn = placement.jit(train.chunk, donate=True)
  t0 = time.perf_counter()
  compiled = chunk_fn.lower(state, None).compile()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(config.num_chunks):
    state, metrics = compiled(state, None)
    metrics = jax.device_get(metrics)
  seconds = time.perf_counter() - t0
  return {"seconds": seconds, "compile_seconds": compile_s,
          "env_steps_per_s": seeds * total_env_steps / seconds}


def project_process(seeds: int, total_env_steps: int) -> dict:
  """The whole ``python -m experiments.dqn`` (checkpoints and files included)."""
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.dqn", f"--seeds={seeds}",
         f"--total_env_steps={total_env_steps}", f"--workdir={workdir}/run"], cwd=ROOT,
        capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
      raise runner.UserError(f"experiments.dqn failed: {proc.stderr.strip()[-300:]}")
    with open(os.path.join(workdir, "run", "results.json")) as f:
      chunks = json.load(f)["extra"]["chunk_seconds"]
  steady = float(np.median(chunks[1:])) if len(chunks) > 1 else chunks[0]
  seconds = steady + sum(chunks[1:])
  return {"seconds": seconds, "compile_seconds": chunks[0] - steady, "process_seconds": wall,
          "env_steps_per_s": seeds * total_env_steps / seconds}


def rows(seeds: int, steps: int) -> dict:
  hp = dqn_floor.Hyper(total_env_steps=steps)
  out = {name: (lambda p=p: dqn_floor.timed_run(hp, p, seeds)) for name, p in FLOOR_ROWS.items()}
  out["genrl_jax.rl.dqn chunk (seed loop vmap)"] = lambda: project_chunk(seeds, steps, "vmap")
  out["genrl_jax.rl.dqn chunk (seed loop map)"] = lambda: project_chunk(seeds, steps, "map")
  out["genrl_jax.rl.dqn chunk (vmap) with the floor's algorithm"] = lambda: project_chunk(
      seeds, steps, "vmap", **PLAIN)
  out["python -m experiments.dqn (whole process)"] = lambda: project_process(seeds, steps)
  return out


def main(argv):
  del argv
  peak = matmul_peak_gflops()
  print(f"jnp f32 matmul peak: {peak:.1f} GFLOP/s; load average {os.getloadavg()[0]:.2f}",
        flush=True)
  todo = rows(FLAGS.seeds, FLAGS.total_env_steps)
  if FLAGS.only:
    todo = {k: v for k, v in todo.items() if k in FLAGS.only or k == "floor"}
  results = {"machine": {"cpus": os.cpu_count(), "devices": [str(d) for d in jax.devices()],
                         "matmul_gflops": round(peak, 1),
                         "load_average_at_start": list(os.getloadavg())},
             "seeds": FLAGS.seeds, "total_env_steps": FLAGS.total_env_steps,
             "pieces_all": dataclasses.asdict(ALL), "rounds": []}
  for r in range(FLAGS.rounds):
    measured = {}
    for name, fn in todo.items():
      measured[name] = m = {k: round(v, 3) for k, v in fn().items() if k != "episodes"}
      ratio = m["env_steps_per_s"] / measured["floor"]["env_steps_per_s"]
      print(f"round {r + 1}: {name:46s} {m['env_steps_per_s']:9,.0f} env steps/s  "
            f"{ratio:5.2f}x floor  (compile {m['compile_seconds']:.1f} s)", flush=True)
    results["rounds"].append(measured)
  results["machine"]["load_average_at_end"] = list(os.getloadavg())
  results["machine"]["matmul_gflops_after"] = round(matmul_peak_gflops(), 1)

  header = " | ".join(f"round {r + 1}" for r in range(FLAGS.rounds))
  lines = [f"| {FLAGS.seeds} seeds x {FLAGS.total_env_steps:,} env steps, CartPole-v1 | "
           f"{header} | vs floor (mean) | compile |",
           "|---|" + "---:|" * FLAGS.rounds + "---:|---:|"]
  for name in todo:
    rates = [rd[name]["env_steps_per_s"] for rd in results["rounds"]]
    ratios = [rd[name]["env_steps_per_s"] / rd["floor"]["env_steps_per_s"]
              for rd in results["rounds"]]
    lines.append(f"| {name} | " + " | ".join(f"{x:,.0f}" for x in rates)
                 + f" | {np.mean(ratios):.2f}x | "
                 f"{results['rounds'][-1][name]['compile_seconds']:.1f} s |")
  table = "\n".join(lines)
  print(table)
  print(f"matmul peak before / after: {peak:.1f} / {results['machine']['matmul_gflops_after']} "
        f"GFLOP/s; load average at start / end: "
        f"{results['machine']['load_average_at_start'][0]:.2f} / "
        f"{results['machine']['load_average_at_end'][0]:.2f}", flush=True)
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, "dqn_overhead.json"), "w") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(FLAGS.out, "dqn_overhead.md"), "w") as f:
    f.write(table + "\n")


if __name__ == "__main__":
  runner.cli_main(main)
