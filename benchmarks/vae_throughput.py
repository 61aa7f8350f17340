"""VAE training throughput: 8 seeds in one XLA program (genrl_jax) vs 8 sequential runs of
the PyTorch reference (benchmarks/peers/torch_vae.py), in the same process, plus our training
FLOP/s as a fraction of a large f32 matmul's.

  python -m benchmarks.vae_throughput --data_dir=../shared/data/fashion_mnist

The two are timed in interleaved rounds (one of our epochs over all seeds, then one PyTorch
run), so a drift in the shared machine's speed hits both; the ratio uses the totals, and the
per-round ratios show the spread.

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
import optax

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


def matmul_peak_gflops() -> float:
  """The f32 matmul peak: the faster of a 2048^3 and a 4096^3 jnp matmul (best of repeats)."""
  return max(matmul_gflops(2048, repeats=10), matmul_gflops(4096, repeats=5))


def batched_matmul_gflops(seeds: int, batch: int, n_in: int, n_out: int, repeats: int = 20) -> float:
  x = jax.random.normal(jax.random.key(0), (seeds, batch, n_in), jnp.float32)
  w = jax.random.normal(jax.random.key(1), (seeds, n_in, n_out), jnp.float32)
  f = jax.jit(lambda x, w: jnp.einsum("sbi,sio->sbo", x, w))
  f(x, w).block_until_ready()
  return 2 * seeds * batch * n_in * n_out / _best_time(lambda: f(x, w), repeats) / 1e9


def step_floor(config: vae.VAEConfig, train_u8: np.ndarray, steps: int = 200,
               repeats: int = 5) -> dict[str, float]:
  """Milliseconds per step of one seed's training step and of two of its parts, each alone in a
  lax.scan of ``steps`` steps (best of ``repeats``): the MLP's five 128-row matmuls with
  784-wide sides (forward x@W1 and h@W4, backward dlogits@W4^T, h^T@dlogits, x^T@dh) and Adam on
  the model's parameters. Their sum bounds the step from below whatever the fusion, so
  flops_per_step / (matmuls + adam) / peak caps the reachable fraction of the matmul peak."""
  train = vae.make_train(config)
  model, optimizer = train.static
  options = vae.compiler_options()
  state = train.init(jax.random.key(0), None)
  batch = config.batch_size
  data = jnp.asarray(train_u8[:steps * batch])
  w1 = state.params["encoder"]["hidden_0"]["kernel"]
  w4 = state.params["decoder"]["logits"]["kernel"]
  pixels, hidden = w1.shape

  def matmuls(c, i):
    w1, w4 = c
    x = vae.to_targets(jax.lax.dynamic_slice_in_dim(data, i * batch, batch))
    h = x @ w1
    logits = h @ w4
    dh = logits @ w4.T
    return (w1 - 1e-9 * (x.T @ dh), w4 - 1e-9 * (h.T @ logits)), None

  def adam(c, i):
    params, opt_state = c
    grads = jax.tree.map(lambda p: p * (1.0 + 1e-6 * i), params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  def full(c, i):
    params, opt_state = c
    params, opt_state, loss, _ = vae.train_step(
        params, opt_state, jax.random.key(i), jax.lax.dynamic_slice_in_dim(data, i * batch, batch),
        model, optimizer, config)
    return (params, opt_state), loss

  out = {}
  for name, body, carry in (("matmuls", matmuls, (w1, w4)),
                            ("adam", adam, (state.params, state.opt_state)),
                            ("step", full, (state.params, state.opt_state))):
    f = jax.jit(lambda c, body=body: jax.lax.scan(body, c, jnp.arange(steps)),
                compiler_options=options)
    jax.block_until_ready(f(carry))
    out[name] = _best_time(lambda: f(carry), repeats) / steps * 1e3
  out["matmul_flops_per_step"] = 5 * 2 * batch * pixels * hidden
  return out


class Ours:
  """``seeds`` seeds in one program, placed and looped by the runner's ``SeedPlacement`` (as
  experiments/vae.py runs them); compiled and warmed up on construction, then timed per epoch
  (one compiled lax.scan over the epoch's batches)."""

  def __init__(self, data: dict, seeds: int, config: vae.VAEConfig, seed_loop: str = "auto"):
    train = vae.make_train(config)
    model, optimizer = train.static
    options = vae.compiler_options()
    placement = runner.SeedPlacement(seeds, 0, seed_loop)
    data = placement.place_data(data)
    self.state = placement.jit(train.init, compiler_options=options)(placement.keys(), data)
    self.epoch = placement.jit(lambda s, d: vae.train_epoch(s, d["train"], model, optimizer,
                                                            config),
                               donate=True, compiler_options=options)
    self.data = data
    self.examples_per_epoch = seeds * vae.num_batches(data["train"].shape[0],
                                                      config.batch_size) * config.batch_size
    self.first_epoch_seconds = self.time_epoch()  # compile included

  def time_epoch(self) -> float:
    t0 = time.perf_counter()
    self.state, metrics = self.epoch(self.state, self.data)
    jax.block_until_ready(metrics)
    self.last_loss = float(np.mean(metrics["loss"]))
    return time.perf_counter() - t0


def torch_probe(train_u8: np.ndarray, threads: int, examples: int = 6400) -> float:
  """Examples/s of one short torch epoch with ``threads`` intra-op threads."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.peers import torch_vae  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  x = torch_vae.to_tensor(train_u8[:examples])
  history = torch_vae.train(x, x[:128], seed=0, epochs=1)
  return history["examples_per_epoch"] / history["train_seconds"][0]


def torch_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  import torch  # pylint: disable=g-import-not-at-top
  a = torch.randn(n, n)
  a @ a
  t0 = time.perf_counter()
  for _ in range(repeats):
    a @ a
  return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e9


def main():
  runner.devices.host_device_per_core()  # as experiments/vae.py does (before jax starts)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="../shared/data/fashion_mnist",
                      help="IDX/TFDS directory; if absent, random uint8 images of MNIST size")
  parser.add_argument("--dataset", default="fashion_mnist")
  parser.add_argument("--seeds", type=int, default=8)
  parser.add_argument("--seed_loop", default="auto", choices=runner.devices.SEED_LOOPS,
                      help="how our seeds run (experiments/vae.py --seed_loop)")
  parser.add_argument("--compare_seed_loops", action="store_true",
                      help="also time the other seed loop (vmap vs map)")
  parser.add_argument("--torch_seeds", type=int, default=8,
                      help="PyTorch runs, one per round; each round also times one of our epochs")
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

  peak = matmul_peak_gflops()
  shapes = {f"{args.seeds}x[128x784]@[784x400] batched": batched_matmul_gflops(args.seeds, 128, 784, 400),
            "1x[128x784]@[784x400]": batched_matmul_gflops(1, 128, 784, 400),
            f"1x[{128 * args.seeds}x784]@[784x400]": batched_matmul_gflops(1, 128 * args.seeds, 784, 400)}
  print(f"jnp f32 matmul peak (max of 2048^3, 4096^3): {peak:.1f} GFLOP/s", flush=True)
  for name, g in shapes.items():
    print(f"  {name:34s} {g:7.1f} GFLOP/s ({g / peak:.0%} of peak)", flush=True)

  floor = step_floor(config, train_u8)
  step_flops = flops * config.batch_size
  print(f"one seed's training step alone ({config.batch_size} examples, "
        f"{step_flops / 1e6:.0f} MFLOP): {floor['step']:.3f} ms = "
        f"{step_flops / floor['step'] / 1e6 / peak:.0%} of peak; its five big matmuls alone "
        f"{floor['matmuls']:.3f} ms ({floor['matmul_flops_per_step'] / floor['matmuls'] / 1e6 / peak:.0%}"
        f" of peak), Adam alone {floor['adam']:.3f} ms -> ceiling without any other cost "
        f"{step_flops / (floor['matmuls'] + floor['adam']) / 1e6 / peak:.0%} of peak", flush=True)
  rest = max(floor["step"] - floor["matmuls"], 0.0)
  big_at_peak = floor["matmul_flops_per_step"] / peak / 1e6  # ms, the five matmuls at the peak rate
  print(f"  the step minus its five big matmuls: {rest:.3f} ms; with those matmuls at the peak "
        f"rate ({big_at_peak:.3f} ms) the step would reach "
        f"{step_flops / peak / 1e6 / (big_at_peak + rest):.0%} of peak", flush=True)

  loop = runner.devices.resolve_seed_loop(args.seed_loop)
  alt_rate = None
  if args.compare_seed_loops:
    other = "vmap" if loop == "map" else "map"
    alt = Ours(data, args.seeds, config, other)
    alt_rate = alt.examples_per_epoch / float(np.median([alt.time_epoch() for _ in range(2)]))
    del alt
    print(f"genrl_jax, {args.seeds} seeds, seed_loop={other}: {alt_rate:,.0f} ex/s "
          f"= {alt_rate * flops / 1e9:.1f} GFLOP/s (for comparison; median of 2 epochs)",
          flush=True)
  ours = Ours(data, args.seeds, config, loop)
  print(f"genrl_jax, {args.seeds} seeds, seed_loop={loop}: first epoch with compile "
        f"{ours.first_epoch_seconds:.1f} s", flush=True)

  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.peers import torch_vae  # pylint: disable=g-import-not-at-top
  if args.threads == "auto":
    probes = {t: torch_probe(train_u8, t) for t in sorted({os.cpu_count(), 1}, reverse=True)}
    threads = max(probes, key=probes.get)
    print("PyTorch thread probe: " + ", ".join(f"{t} thread(s) {v:,.0f} ex/s"
                                                for t, v in probes.items())
          + f" -> using {threads}", flush=True)
  else:
    probes, threads = {}, int(args.threads)
  torch.set_num_threads(threads)
  train_x = torch_vae.to_tensor(train_u8)

  # Interleaved rounds: one of our epochs (all seeds), then one whole PyTorch run (one seed), so
  # both see the same machine conditions; the shared machine's speed drifts by +-20 % over minutes.
  ours_seconds, torch_seconds, torch_examples = [], [], []
  for r in range(args.torch_seeds):
    ours_seconds.append(ours.time_epoch())
    history = torch_vae.train(train_x, train_x[:1000], seed=r, epochs=args.torch_epochs)
    torch_seconds.append(sum(history["train_seconds"]))
    torch_examples.append(history["examples_per_epoch"] * args.torch_epochs)
    print(f"  round {r + 1}/{args.torch_seeds}: genrl_jax {ours.examples_per_epoch / ours_seconds[-1]:,.0f}"
          f" ex/s, PyTorch seed {r} {torch_examples[-1] / torch_seconds[-1]:,.0f} ex/s", flush=True)
  peak = max(peak, matmul_peak_gflops())  # the faster of the readings before and after

  ours_rate = ours.examples_per_epoch * len(ours_seconds) / sum(ours_seconds)
  torch_rate = sum(torch_examples) / sum(torch_seconds)
  pair_ratios = [(ours.examples_per_epoch / o) / (e / t)
                 for o, e, t in zip(ours_seconds, torch_examples, torch_seconds)]
  ours_gflops, torch_gflops = ours_rate * flops / 1e9, torch_rate * flops / 1e9
  print(f"genrl_jax, {args.seeds} seeds in one program, seed_loop={loop}: {ours_rate:,.0f} ex/s "
        f"({len(ours_seconds)} epochs, median {np.median(ours_seconds):.2f} s) = "
        f"{ours_gflops:.1f} GFLOP/s", flush=True)
  print(f"PyTorch {torch.__version__}, {args.torch_seeds} sequential runs x {args.torch_epochs} "
        f"epoch(s), {threads} thread(s): {torch_rate:,.0f} ex/s = {torch_gflops:.1f} GFLOP/s "
        f"(torch 2048^3 matmul: {torch_peak_gflops():.1f} GFLOP/s)", flush=True)
  speedup = ours_rate / torch_rate
  fraction = ours_gflops / peak
  print(f"jnp f32 matmul peak, the higher of the readings before and after: {peak:.1f} GFLOP/s")
  print(f"RATIO  throughput genrl_jax / PyTorch = {speedup:.2f}x   (target >= 3x; per round "
        f"median {np.median(pair_ratios):.2f}x, range {min(pair_ratios):.2f}-{max(pair_ratios):.2f}x)")
  print(f"RATIO  genrl_jax training FLOP/s / jnp matmul peak = {fraction:.1%}   (target >= 85%)")
  print(f"       PyTorch training FLOP/s / jnp matmul peak = {torch_gflops / peak:.1%}")
  print(f"load average after: {os.getloadavg()[0]:.1f} (the machine is shared; timings vary)")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"flops_per_example": flops, "matmul_peak_gflops": peak, "matmul_shapes": shapes,
                 "step_floor_ms": floor,
                 "seed_loop": loop, "other_seed_loop_examples_per_s": alt_rate,
                 "ours": {"examples_per_s": ours_rate, "epoch_seconds": ours_seconds,
                          "first_epoch_seconds_with_compile": ours.first_epoch_seconds,
                          "train_neg_elbo_last_epoch": ours.last_loss},
                 "torch": {"examples_per_s": torch_rate, "run_seconds": torch_seconds,
                           "threads": threads, "thread_probe": probes},
                 "speedup": speedup, "speedup_per_round": pair_ratios,
                 "flops_fraction": fraction, "load_before": load,
                 "load_after": os.getloadavg()}, f, indent=2)


if __name__ == "__main__":
  main()
