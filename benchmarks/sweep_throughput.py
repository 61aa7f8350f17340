"""VAE sweep throughput: a grid of learning rates x seeds as ONE program (``--sweep``) vs the same
cells run one after another (one 1-seed program per cell), in the same process and data.

  python -m benchmarks.sweep_throughput --data_dir=../shared/data/fashion_mnist \
      --sweep="learning_rate=1e-3,3e-4,1e-4" --seeds=4 --epochs=3 --workdir=runs/sweep_bench

Both go through the runner (``runner.run``), so both pay what a user pays. Throughput is
training examples per second over all cells: steady epochs only (the first epoch of every
program includes its compile), and separately the wall time including compiles (the sweep
compiles once, the peers once per cell). The per-cell results of the sweep are compared with
their separate runs (max relative difference), and the chunk's traces are counted (one trace:
one compile for every cell). The sweep's results.json and sweep.png go to --workdir.

Also printed: the machine's f32 matmul GFLOP/s and load average beside the absolute numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np

from genrl_jax import run as runner
from genrl_jax.data import images
from genrl_jax.generative import vae, vae_run
from genrl_jax.run import sweep as sweep_lib


def _steady_rate(result: runner.RunResult, examples_per_cell: int, cells: int) -> tuple[float, float]:
  """(examples/s over steady epochs, seconds of those epochs)."""
  steady = result.chunk_seconds[1:]
  return examples_per_cell * cells * len(steady) / sum(steady), sum(steady)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="../shared/data/fashion_mnist")
  parser.add_argument("--dataset", default="fashion_mnist")
  parser.add_argument("--sweep", default="learning_rate=1e-3,3e-4,1e-4")
  parser.add_argument("--seeds", type=int, default=4)
  parser.add_argument("--epochs", type=int, default=3, help=">= 2: the first includes compile")
  parser.add_argument("--seed_loop", default="auto", choices=runner.devices.SEED_LOOPS)
  parser.add_argument("--train_examples", type=int, default=10000)
  parser.add_argument("--test_examples", type=int, default=2000)
  parser.add_argument("--eval_iw_samples", type=int, default=10)
  parser.add_argument("--host_device_per_core", action="store_true",
                      help="one XLA CPU device per core (as experiments.vae does)")
  parser.add_argument("--workdir", default="runs/sweep_bench")
  parser.add_argument("--out", default=None, help="also write the numbers as JSON here")
  args = parser.parse_args()
  if args.host_device_per_core:
    runner.devices.host_device_per_core()
  import jax  # noqa: PLC0415 (after the XLA flag)
  from benchmarks.vae_throughput import matmul_peak_gflops  # noqa: PLC0415

  data_config = images.DataConfig(dataset=args.dataset, data_dir=args.data_dir)
  ds = data_config.load()
  ds = dataclasses.replace(ds, train_images=ds.train_images[:args.train_examples],
                           test_images=ds.test_images[:args.test_examples],
                           train_labels=None, test_labels=None)
  config = vae_run.fit_to_data(vae.VAEConfig(epochs=args.epochs,
                                             eval_iw_samples=args.eval_iw_samples), ds)
  per_cell = vae.num_batches(ds.train_images.shape[0], config.batch_size) * config.batch_size
  load = os.getloadavg()
  peak = matmul_peak_gflops()
  print(f"devices: {', '.join(str(d) for d in jax.local_devices())}; {os.cpu_count()} CPU cores; "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; f32 matmul {peak:.1f} GFLOP/s")
  print(f"data: {ds.source}, {ds.train_images.shape[0]} train / {ds.test_images.shape[0]} test; "
        f"{per_cell} training examples per cell and epoch", flush=True)

  exp = vae_run.make_experiment(config, ds, data_config)
  traces = [0]
  base_train = exp.sweepable.train

  def counted(hparams):
    train = base_train(hparams)
    def chunk(state, data):
      traces[0] += 1
      return train.chunk(state, data)
    return dataclasses.replace(train, chunk=chunk)
  exp = dataclasses.replace(exp, sweepable=sweep_lib.Sweepable(config, counted))
  grid = sweep_lib.parse(args.sweep, exp.sweepable, "vae")
  cells = grid.num_points * args.seeds

  t0 = time.perf_counter()
  swept = runner.run(exp, seeds=args.seeds, sweep=args.sweep, seed_loop=args.seed_loop,
                     workdir=args.workdir, log=lambda s: None)
  sweep_wall = time.perf_counter() - t0
  sweep_rate, _ = _steady_rate(swept, per_cell, cells)
  print(f"sweep: {grid.num_points} points x {args.seeds} seeds = {cells} cells in one program "
        f"({swept.placement.describe()}); chunk traced {traces[0]} time(s); steady "
        f"{sweep_rate:,.0f} ex/s over all cells; wall {sweep_wall:.1f} s incl. compile and "
        "final evaluation", flush=True)

  # The same program shape without a swept argument: as many seeds of one value, one program.
  plain = runner.run(vae_run.make_experiment(config, ds, data_config),
                     seeds=cells, seed_loop=args.seed_loop, log=lambda s: None)
  plain_rate, _ = _steady_rate(plain, per_cell, cells)
  print(f"peer: {cells} seeds of one learning rate in one program (no sweep argument): steady "
        f"{plain_rate:,.0f} ex/s over all seeds", flush=True)

  seq_seconds, seq_wall, max_rel = 0.0, 0.0, 0.0
  for v, point in enumerate(sweep_lib.grid_points(grid)):
    for i in range(args.seeds):
      one_exp = vae_run.make_experiment(dataclasses.replace(config, **point), ds, data_config)
      t0 = time.perf_counter()
      one = runner.run(one_exp, seeds=1, seed=i, seed_loop=args.seed_loop, log=lambda s: None)
      seq_wall += time.perf_counter() - t0
      seq_seconds += sum(one.chunk_seconds[1:])
      cell = v * args.seeds + i
      for key in ("test_neg_elbo", "test_nll"):
        a, b = swept.final[key][cell], one.final[key][0]
        max_rel = max(max_rel, abs(a - b) / abs(b))
      a, b = swept.history[-1]["loss"][cell], one.history[-1]["loss"][0]
      max_rel = max(max_rel, abs(a - b) / abs(b))
  seq_rate = per_cell * cells * (args.epochs - 1) / seq_seconds
  print(f"one after another: {cells} 1-seed programs; steady {seq_rate:,.0f} ex/s over all cells; "
        f"wall {seq_wall:.1f} s incl. {cells} compiles and final evaluations")
  print(f"ratio sweep / one after another: steady {sweep_rate / seq_rate:.2f}x, wall "
        f"{seq_wall / sweep_wall:.2f}x; sweep / {cells} seeds without a sweep: steady "
        f"{sweep_rate / plain_rate:.2f}x")
  print(f"per-cell results (final test -ELBO, IWAE NLL, last train -ELBO) vs the separate runs: "
        f"max relative difference {max_rel:.2e}")
  print(f"results: {os.path.join(args.workdir, runner.RESULTS_FILE)}, plot "
        f"{os.path.join(args.workdir, sweep_lib.SWEEP_FILE)}; load average now "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
  if args.out:
    runner.write_json(args.out, {
        "cells": cells, "sweep_steady_ex_per_s": sweep_rate, "sequential_steady_ex_per_s": seq_rate,
        "same_shape_no_sweep_steady_ex_per_s": plain_rate,
        "sweep_wall_s": sweep_wall, "sequential_wall_s": seq_wall, "chunk_traces": traces[0],
        "max_relative_difference": max_rel, "matmul_gflops": peak, "load_average": load})


if __name__ == "__main__":
  main()
