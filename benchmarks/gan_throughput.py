"""DCGAN training throughput: N seeds in one genrl_jax program vs N sequential PyTorch runs.

  python -m benchmarks.gan_throughput --data_dir=../shared/data/mnist --seeds=4 --rounds=3

Same architecture, batch and optimizer on both sides (benchmarks/peers/torch_dcgan.py). Rounds
interleave the two (ours: one chunk of --iterations for all seeds; the peer: --iterations for
each seed in turn), so both see the same machine load; the best round of each is compared.
Prints the machine's f32 matmul GFLOP/s beside the absolute numbers, and a bound on ours: the
same seeds running only the iteration's matrix products (``iteration_matmuls``: every forward
and backward product of the patch/scatter convolutions and dense layers, same shapes), through
the same seed placement. The gap between that and the training chunk is everything else
(patch extraction, tile overlap-add, batch norm, activations, Adam).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.vae_throughput import matmul_peak_gflops
from genrl_jax.data import images
from genrl_jax.generative import gan
from genrl_jax.run import devices
from genrl_jax.run.placement import SeedPlacement


def iteration_matmuls(batch: int, width: int, latent_dim: int, discriminator_layers: int = 4,
                      generator_convs: int = 0,
                      image_side: int = 28) -> list[tuple[int, int, int]]:
  """(m, k, n) of every matrix product of one DCGAN iteration for one seed
  (``genrl_jax.models.dcgan``, single-channel images): forward, kernel-gradient (dW) and
  input-gradient (dX) products. D runs on the real and the generated batch for its step (dW of
  every layer, dX of all but the first to reach the layers below), then once more on the
  generated batch for G's step (dX only, down to the image); G's pass is shared by both steps."""
  b, w, q, h = batch, width, (image_side // 4) ** 2, (image_side // 2) ** 2
  g = [(b, latent_dim, q * 4 * w), (latent_dim, b, q * 4 * w),                      # project
       *[(b * q, 9 * 4 * w, 4 * w), (9 * 4 * w, b * q, 4 * w),                     # 3x3 convs
         (b * q, 4 * w, 9 * 4 * w)] * generator_convs,
       (b * q, 4 * w, 16 * 2 * w), (4 * w, b * q, 16 * 2 * w), (b * q, 16 * 2 * w, 4 * w),
       (b * h, 2 * w, 16), (2 * w, b * h, 16), (b * h, 16, 2 * w)]                  # deconvs
  sides = [image_side]
  for _ in range(discriminator_layers):
    sides.append(-(-sides[-1] // 2))
  # Layer i: patches [b * out^2, 16 * c_in] @ kernel [16 * c_in, c_out].
  layers = [(b * sides[i + 1] ** 2, 16 * (2 ** (i - 1) * w if i else 1), 2 ** i * w)
            for i in range(discriminator_layers)]
  d_forward = layers + [(b, sides[-1] ** 2 * 2 ** (discriminator_layers - 1) * w, 1)]
  d_weight_grads = [(k, m, n) for m, k, n in layers]
  d_input_grads = [(m, n, k) for m, k, n in layers]
  d_step = 2 * d_forward + 2 * d_weight_grads + 2 * d_input_grads[1:]
  g_step = d_forward + d_input_grads
  return g + d_step + g_step


def matmul_chunk(shapes: list[tuple[int, int, int]], iterations: int):
  """A per-seed chunk that runs only ``shapes``' products ``iterations`` times (each product's
  result is reduced into the carry, so none is dead code)."""
  def chunk(carry, data):
    del data
    operands = [(jnp.full((m, k), 1e-2), jnp.full((k, n), 1e-2)) for m, k, n in shapes]
    def body(c, _):
      return c + 1e-9 * sum(jnp.sum((a + c) @ b_) for a, b_ in operands), None
    return jax.lax.scan(body, carry, None, length=iterations)
  return chunk


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="../shared/data/mnist")
  parser.add_argument("--seeds", type=int, default=4)
  defaults = gan.GANConfig()
  parser.add_argument("--width", type=int, default=defaults.width)
  parser.add_argument("--no_discriminator_batch_norm", action="store_true")
  parser.add_argument("--discriminator_layers", type=int, default=defaults.discriminator_layers)
  parser.add_argument("--generator_convs", type=int, default=defaults.generator_convs)
  parser.add_argument("--latent_dim", type=int, default=100)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--iterations", type=int, default=25, help="iterations per timed round")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--seed_loop", default="auto", choices=devices.SEED_LOOPS)
  parser.add_argument("--torch_threads", type=int, default=os.cpu_count() or 1)
  args = parser.parse_args()
  devices.host_device_per_core()  # as experiments/gan.py does (before jax starts)

  import torch  # noqa: PLC0415
  from benchmarks.peers import torch_dcgan  # noqa: PLC0415
  torch.set_num_threads(args.torch_threads)
  dataset = images.load("mnist", args.data_dir, 0.1)
  train_u8 = dataset.train_images.reshape(len(dataset.train_images), -1)
  batch_norm = not args.no_discriminator_batch_norm
  config = gan.GANConfig(width=args.width, latent_dim=args.latent_dim, batch_size=args.batch_size,
                         iterations_per_chunk=args.iterations, discriminator_batch_norm=batch_norm,
                         discriminator_layers=args.discriminator_layers,
                         generator_convs=args.generator_convs)
  train = gan.make_train(config)
  placement = SeedPlacement(args.seeds, 0, args.seed_loop)
  data = placement.place_data({"train": jax.numpy.asarray(train_u8)})
  init = placement.jit(train.init)
  chunk = placement.jit(train.chunk, donate=True, compiler_options=gan.compiler_options())
  state = init(placement.keys(), data)
  t0 = time.perf_counter()
  state, metrics = chunk(state, data)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  peers = [torch_dcgan.DCGAN(train_u8, args.width, args.latent_dim, args.batch_size, s, batch_norm,
                             args.discriminator_layers, args.generator_convs)
           for s in range(args.seeds)]
  peers[0].iterations(2)  # warm-up

  shapes = iteration_matmuls(args.batch_size, args.width, args.latent_dim,
                            args.discriminator_layers, args.generator_convs)
  gflop = sum(2 * m * k * n for m, k, n in shapes) / 1e9
  bound = placement.jit(matmul_chunk(shapes, args.iterations))
  zeros = jnp.zeros((args.seeds,))
  jax.block_until_ready(bound(zeros, data))
  bound_s = []
  for _ in range(args.rounds):
    t0 = time.perf_counter()
    jax.block_until_ready(bound(zeros, data))
    bound_s.append(time.perf_counter() - t0)
  bound_rate = args.seeds * args.iterations / min(bound_s)
  print(f"the iteration's matmuls alone ({gflop:.2f} GFLOP per seed-iteration): "
        f"{bound_rate:.1f} seed-it/s", flush=True)

  peak_before = matmul_peak_gflops()
  ours, theirs = [], []
  for r in range(args.rounds):
    t0 = time.perf_counter()
    state, metrics = chunk(state, data)
    jax.block_until_ready(metrics)
    ours.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for p in peers:
      p.iterations(args.iterations)
    theirs.append(time.perf_counter() - t0)
    print(f"round {r + 1}: genrl_jax {args.seeds * args.iterations / ours[-1]:.1f} "
          f"seed-it/s, torch {args.seeds * args.iterations / theirs[-1]:.1f} seed-it/s", flush=True)
  peak_after = matmul_peak_gflops()
  ours_rate = args.seeds * args.iterations / min(ours)
  torch_rate = args.seeds * args.iterations / min(theirs)
  result = {
      "seeds": args.seeds, "width": args.width, "batch_size": args.batch_size,
      "discriminator_batch_norm": batch_norm, "discriminator_layers": args.discriminator_layers,
      "generator_convs": args.generator_convs,
      "iterations_per_round": args.iterations, "rounds": args.rounds,
      "seed_loop": placement.describe(), "torch_threads": args.torch_threads,
      "genrl_jax_seed_iterations_per_s": round(ours_rate, 2),
      "torch_seed_iterations_per_s": round(torch_rate, 2),
      "ratio_genrl_jax_over_torch": round(ours_rate / torch_rate, 3),
      "matmuls_alone_seed_iterations_per_s": round(bound_rate, 2),
      "matmul_gflop_per_seed_iteration": round(gflop, 2),
      "ratio_bound_matmuls_alone_over_torch": round(bound_rate / torch_rate, 3),
      "compile_and_first_chunk_s": round(compile_s, 1),
      "matmul_f32_gflops_before_after": [round(peak_before, 1), round(peak_after, 1)],
      "load_average": os.getloadavg(),
  }
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
