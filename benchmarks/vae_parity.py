"""Quality parity: the flagship command vs the PyTorch reference of the same model and data.

  python -m benchmarks.vae_parity --data_dir=../shared/data/fashion_mnist

Runs (1) ``python -m experiments.vae --seeds=8 --dataset=fashion_mnist --data_dir=...
--binarize=none --epochs=10`` into --workdir (rerunning resumes, or only re-evaluates a finished
run) and (2) benchmarks/peers/torch_vae.py for --torch_seeds sequential seeds, same epochs, batch
128, Adam 1e-3, grayscale BCE targets; then prints both test -ELBOs (single-sample, nats per test
example, mean ± 95 % CI over seeds) and their relative difference (target: within 1 %).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from genrl_jax.data import images
from genrl_jax.run import stats


def run_ours(args) -> dict:
  command = [sys.executable, "-m", "experiments.vae", f"--seeds={args.seeds}",
             f"--dataset={args.dataset}", f"--data_dir={args.data_dir}", "--binarize=none",
             f"--epochs={args.epochs}", f"--workdir={args.workdir}"]
  print("$ " + " ".join(command[1:]), flush=True)
  t0 = time.perf_counter()
  subprocess.run(command, check=True)
  with open(os.path.join(args.workdir, "results.json")) as f:
    results = json.load(f)
  results["wall_seconds"] = time.perf_counter() - t0
  return results


def run_torch(args) -> list[dict]:
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.peers import torch_vae  # pylint: disable=g-import-not-at-top
  ds = images.load(args.dataset, args.data_dir)
  threads = args.threads
  if threads == "auto":  # speed only: thread count does not change what is computed
    from benchmarks.vae_throughput import torch_probe  # pylint: disable=g-import-not-at-top
    flat = ds.train_images.reshape(ds.train_images.shape[0], -1)
    probes = {t: torch_probe(flat, t) for t in sorted({os.cpu_count(), 1}, reverse=True)}
    threads = max(probes, key=probes.get)
    print(f"PyTorch threads: {threads} (probe ex/s: {probes})", flush=True)
  torch.set_num_threads(int(threads))
  train_x, test_x = torch_vae.to_tensor(ds.train_images), torch_vae.to_tensor(ds.test_images)
  runs = []
  for seed in range(args.torch_seeds):
    t0 = time.perf_counter()
    history = torch_vae.train(train_x, test_x, seed, args.epochs)
    history["wall_seconds"] = time.perf_counter() - t0
    print(f"torch seed {seed}: test -elbo {history['test_neg_elbo'][-1]:.2f} "
          f"({history['wall_seconds']:.0f} s)", flush=True)
    runs.append(history)
  return runs


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="../shared/data/fashion_mnist")
  parser.add_argument("--dataset", default="fashion_mnist")
  parser.add_argument("--seeds", type=int, default=8)
  parser.add_argument("--torch_seeds", type=int, default=8)
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--threads", default="auto",
                      help="torch threads; 'auto' probes 1 and all cores and keeps the faster")
  parser.add_argument("--workdir", default="runs/vae_parity_fashion_mnist")
  parser.add_argument("--skip_ours", action="store_true",
                      help="read --workdir/results.json instead of running the command")
  parser.add_argument("--torch_results", default=None,
                      help="reuse the PyTorch runs of an earlier parity.json instead of training")
  args = parser.parse_args()

  if args.skip_ours:
    with open(os.path.join(args.workdir, "results.json")) as f:
      ours = json.load(f)
  else:
    ours = run_ours(args)
  if args.torch_results:
    with open(args.torch_results) as f:
      torch_runs = json.load(f)["torch_runs"]
    print(f"PyTorch: {len(torch_runs)} runs read from {args.torch_results}")
  else:
    torch_runs = run_torch(args)

  ours_final = np.asarray(ours["test_neg_elbo"]["per_seed"])
  torch_final = np.asarray([r["test_neg_elbo"][-1] for r in torch_runs])
  (om, oh), (tm, th) = stats.mean_ci(ours_final), stats.mean_ci(torch_final)
  rel = (om - tm) / tm
  print(f"\ntest -ELBO after {args.epochs} epochs on {args.dataset} (nats per test example, "
        "mean ± 95% CI half-width):")
  print(f"  genrl_jax ({len(ours_final)} seeds, one program): {om:.2f} ± {oh:.2f}")
  print(f"  PyTorch   ({len(torch_final)} seeds, sequential): {tm:.2f} ± {th:.2f}")
  print(f"RATIO  relative difference (genrl_jax - PyTorch) / PyTorch = {rel:+.2%}   "
        f"({'within' if abs(rel) <= 0.01 else 'NOT within'} 1%)")
  metrics_path = os.path.join(args.workdir, "metrics.jsonl")
  if os.path.exists(metrics_path):
    with open(metrics_path) as f:
      rows = [json.loads(line) for line in f]
    print("  epoch   genrl_jax test -elbo   PyTorch test -elbo")
    for epoch in range(1, args.epochs + 1):
      ours_e = np.mean([r["test_neg_elbo"] for r in rows if r["chunk"] == epoch])
      torch_e = np.mean([r["test_neg_elbo"][epoch - 1] for r in torch_runs])
      print(f"  {epoch:5d}   {ours_e:20.2f}   {torch_e:18.2f}")
  with open(os.path.join(args.workdir, "parity.json"), "w") as f:
    json.dump({"ours_test_neg_elbo": ours_final.tolist(),
               "torch_test_neg_elbo": torch_final.tolist(), "relative_difference": rel,
               "ours_wall_seconds": ours.get("wall_seconds"),
               "torch_wall_seconds": [r["wall_seconds"] for r in torch_runs],
               "torch_runs": torch_runs}, f, indent=2)


if __name__ == "__main__":
  main()
