"""VAE training throughput: 8 vmapped seeds (genrl_jax, one XLA program) vs 8 sequential runs of
the PyTorch reference (benchmarks/peers/torch_vae.py), in the same process, plus our training
FLOP/s as a fraction of a large f32 matmul's.

  python -m benchmarks.vae_throughput --data_dir=../shared/data/fashion_mnist

FLOPs are counted exactly from the layer sizes: per example and dense layer (in -> out) the
forward pass costs 2*in*out, the backward pass 2*in*out for the weight gradient plus 2*in*out for
the input gradient — except the first layer, whose input (the data) needs no gradient. Biases,
activations, the loss and Adam are not counted (they are O(params) or O(in + out)).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax import run as runner
from genrl_jax.data import images
from genrl_jax.generative import vae


def mlp_vae_layers(pixels: int, hidden: tuple[int, ...], latent: int) -> list[tuple[int, int]]:
  """(in, out) of every dense layer of the MLP VAE, encoder first; the two heads are separate."""
  enc = list(zip((pixels,) + hidden[:-1], hidden)) + [(hidden[-1], latent)] * 2
  rev = tuple(reversed(hidden))
  dec = list(zip((latent,) + rev[:-1], rev)) + [(rev[-1], pixels)]
  return enc + dec


def train_flops_per_example(pixels: int, hidden: tuple[int, ...], latent: int) -> int:
  layers = mlp_vae_layers(pixels, hidden, latent)
  total = sum(6 * i * o for i, o in layers)
  return total - 2 * layers[0][0] * layers[0][1]  # no input gradient for the data


def _best_time(fn, repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t0)
  return best


def matmul_gflops(n: int, repeats: int = 5) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()
  return 2 * n ** 3 / _best_time(lambda: f(a, b), repeats) / 1e9


def batched_matmul_gflops(seeds: int, batch: int, n_in: int, n_out: int, repeats: int = 20) -> float:
  x = jax.random.normal(jax.random.key(0), (seeds, batch, n_in), jnp.float32)
  w = jax.random.normal(jax.random.key(1), (seeds, n_in, n_out), jnp.float32)
  f = jax.jit(lambda x, w: jnp.einsum("sbi,sio->sbo", x, w))
  f(x, w).block_until_ready()
  return 2 * seeds * batch * n_in * n_out / _best_time(lambda: f(x, w), repeats) / 1e9


def ours(data: dict, seeds: int, epochs: int, config: vae.VAEConfig) -> dict:
  """Examples/s of ``seeds`` vmapped seeds over whole epochs (one compiled lax.scan each)."""
  train = vae.make_train(config)
  options = vae.compiler_options()
  # The runner's placement: the seed axis split over the local devices, data replicated.
  by_seed, replicated = runner.devices.seed_shardings(seeds)
  keys = runner.seed_keys(0, seeds)
  if by_seed is not None:
    keys, data = jax.device_put(keys, by_seed), jax.device_put(data, replicated)
  state = jax.jit(jax.vmap(train.init, in_axes=(0, None)), compiler_options=options)(keys, data)
  epoch = jax.jit(jax.vmap(lambda s, d: vae.train_epoch(s, d["train"], train.model,
                                                        train.optimizer, config),
                           in_axes=(0, None)), donate_argnums=0, compiler_options=options)
  t0 = time.perf_counter()
  state, metrics = epoch(state, data)
  jax.block_until_ready(metrics)
  first = time.perf_counter() - t0
  times = []
  for _ in range(epochs):
    t0 = time.perf_counter()
    state, metrics = epoch(state, data)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  examples = seeds * vae.num_batches(data["train"].shape[0], config.batch_size) * config.batch_size
  return {"examples_per_s": examples / float(np.median(times)), "epoch_seconds": times,
          "first_epoch_seconds_with_compile": first,
          "train_neg_elbo_last_epoch": float(np.mean(metrics["loss"]))}


def torch_probe(train_u8: np.ndarray, threads: int, examples: int = 6400) -> float:
  """Examples/s of one short torch epoch with ``threads`` intra-op threads."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.peers import torch_vae  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  x = torch_vae.to_tensor(train_u8[:examples])
  history = torch_vae.train(x, x[:128], seed=0, epochs=1)
  return history["examples_per_epoch"] / history["train_seconds"][0]


def torch_peer(train_u8: np.ndarray, seeds: int, epochs: int, threads: int) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.peers import torch_vae  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  train_x = torch_vae.to_tensor(train_u8)
  test_x = train_x[:1000]
  seconds, examples = 0.0, 0
  for seed in range(seeds):
    history = torch_vae.train(train_x, test_x, seed, epochs)
    seconds += sum(history["train_seconds"])
    examples += history["examples_per_epoch"] * epochs
  a = torch.randn(2048, 2048)
  a @ a
  t0 = time.perf_counter()
  for _ in range(5):
    a @ a
  peak = 2 * 2048 ** 3 * 5 / (time.perf_counter() - t0) / 1e9
  return {"examples_per_s": examples / seconds, "seconds": seconds, "threads": threads,
          "matmul_2048_gflops": peak}


def main():
  runner.devices.host_device_per_core()  # as experiments/vae.py does (before jax starts)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="../shared/data/fashion_mnist",
                      help="IDX/TFDS directory; if absent, random uint8 images of MNIST size")
  parser.add_argument("--dataset", default="fashion_mnist")
  parser.add_argument("--seeds", type=int, default=8)
  parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up)")
  parser.add_argument("--torch_seeds", type=int, default=8)
  parser.add_argument("--torch_epochs", type=int, default=1, help="epochs per torch seed")
  parser.add_argument("--threads", default="auto",
                      help="torch.set_num_threads for the peer; 'auto' probes 1 and all cores "
                      "on a short run and keeps the faster (on a loaded machine, 2-thread torch "
                      "can be 10x slower than 1-thread torch); XLA uses every core")
  parser.add_argument("--train_examples", type=int, default=None,
                      help="use only the first N training examples (quick checks)")
  parser.add_argument("--out", default=None, help="also write the numbers as JSON here")
  args = parser.parse_args()

  if args.data_dir and os.path.isdir(args.data_dir):
    ds = images.load(args.dataset, args.data_dir)
    train_u8, source = ds.train_images.reshape(ds.train_images.shape[0], -1), ds.source
  else:
    train_u8 = np.random.default_rng(0).integers(0, 256, (60000, 784), dtype=np.uint8)
    source = "random uint8 images (60000 x 784)"
  train_u8 = train_u8[:args.train_examples]
  config = vae.VAEConfig(binarize="none")  # the PyTorch example's grayscale targets
  data = {"train": jnp.asarray(train_u8), "test": jnp.asarray(train_u8[:1000])}
  flops = train_flops_per_example(config.num_pixels, config.hidden, config.latent_dim)
  load = os.getloadavg()
  print(f"XLA devices: {', '.join(str(d) for d in jax.local_devices())}")
  print(f"data: {source}; model {config.num_pixels}-{'-'.join(map(str, config.hidden))}-"
        f"{config.latent_dim}, batch {config.batch_size}, Adam; {flops / 1e6:.3f} MFLOP per "
        f"training example; {os.cpu_count()} CPU cores; load average {load[0]:.1f}", flush=True)

  peak = max(matmul_gflops(2048), matmul_gflops(4096, repeats=3))
  shapes = {f"{args.seeds}x[128x784]@[784x400] batched": batched_matmul_gflops(args.seeds, 128, 784, 400),
            "1x[128x784]@[784x400]": batched_matmul_gflops(1, 128, 784, 400),
            f"1x[{128 * args.seeds}x784]@[784x400]": batched_matmul_gflops(1, 128 * args.seeds, 784, 400)}
  print(f"jnp f32 matmul peak (max of 2048^3, 4096^3): {peak:.1f} GFLOP/s", flush=True)
  for name, g in shapes.items():
    print(f"  {name:34s} {g:7.1f} GFLOP/s ({g / peak:.0%} of peak)", flush=True)

  ours_result = ours(data, args.seeds, args.epochs, config)
  ours_gflops = ours_result["examples_per_s"] * flops / 1e9
  print(f"genrl_jax, {args.seeds} vmapped seeds: {ours_result['examples_per_s']:,.0f} ex/s "
        f"(epoch {np.median(ours_result['epoch_seconds']):.2f} s; first epoch with compile "
        f"{ours_result['first_epoch_seconds_with_compile']:.1f} s) = {ours_gflops:.1f} GFLOP/s",
        flush=True)
  if args.threads == "auto":
    probes = {t: torch_probe(train_u8, t) for t in sorted({os.cpu_count(), 1}, reverse=True)}
    threads = max(probes, key=probes.get)
    print("PyTorch thread probe: " + ", ".join(f"{t} thread(s) {v:,.0f} ex/s"
                                                for t, v in probes.items())
          + f" -> using {threads}", flush=True)
  else:
    probes, threads = {}, int(args.threads)
  torch_result = torch_peer(train_u8, args.torch_seeds, args.torch_epochs, threads)
  torch_result["thread_probe"] = probes
  torch_gflops = torch_result["examples_per_s"] * flops / 1e9
  import torch  # pylint: disable=g-import-not-at-top
  print(f"PyTorch {torch.__version__}, {args.torch_seeds} sequential runs x {args.torch_epochs} epoch(s), "
        f"{threads} thread(s): {torch_result['examples_per_s']:,.0f} ex/s "
        f"= {torch_gflops:.1f} GFLOP/s (torch 2048^3 matmul: "
        f"{torch_result['matmul_2048_gflops']:.1f} GFLOP/s)", flush=True)

  speedup = ours_result["examples_per_s"] / torch_result["examples_per_s"]
  fraction = ours_gflops / peak
  print(f"RATIO  throughput genrl_jax / PyTorch = {speedup:.2f}x   (target >= 3x)")
  print(f"RATIO  genrl_jax training FLOP/s / jnp matmul peak = {fraction:.1%}   (target >= 85%)")
  print(f"       PyTorch training FLOP/s / jnp matmul peak = {torch_gflops / peak:.1%}")
  print(f"load average after: {os.getloadavg()[0]:.1f} (the machine is shared; timings vary)")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"flops_per_example": flops, "matmul_peak_gflops": peak, "matmul_shapes": shapes,
                 "ours": ours_result, "torch": torch_result, "speedup": speedup,
                 "flops_fraction": fraction, "load_before": load,
                 "load_after": os.getloadavg()}, f, indent=2)


if __name__ == "__main__":
  main()
