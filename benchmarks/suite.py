r"""Every headline benchmark in one run, one table: VAE, REINFORCE, DQN and DCGAN training rates
at several seed counts, beside the device's f32 matmul peak measured in the same run.

  python -m benchmarks.suite                   # the full suite (sized for one H200 GPU)
  python -m benchmarks.suite --quick           # a few minutes of a 2-core CPU
  python -m benchmarks.suite --only=vae,dqn    # a subset; writes runs/bench/suite.{md,json}

What is measured, per workload and seed count. Each workload is its experiment's own per-seed
functions (``make_train`` of ``genrl_jax.generative.vae``, ``genrl_jax.rl.reinforce``,
``genrl_jax.rl.dqn``, ``genrl_jax.generative.gan``; default configurations), placed by the
runner's ``SeedPlacement(num_seeds, 0, seed_loop)`` and jitted with the state donated, as the
runner runs them. The initial state is computed first (its own program, in neither time). The
chunk is lowered and compiled on its own: the "compile" column. Then a fixed number of chunks
run, the metrics brought to the host after each (``jax.device_get``: the runner's one host
transfer per chunk); their time is the steady-state time ("steady s") the rate comes from:

* VAE (``vae.train_epoch``, one epoch per chunk, as ``benchmarks.vae_throughput`` times it):
  training examples/s over all seeds. Share of peak: examples/s x
  ``vae_throughput.train_flops_per_example`` (3.28 MFLOP for 784-400-20, counted from the layer
  sizes) / the matmul peak.
* REINFORCE and DQN (``rl_throughput.measure_jax`` and ``dqn_throughput.measure_jax``,
  imported): real env steps/s over all seeds, for the whole budget of every seed. No FLOP count
  exists: share "-". REINFORCE's rate rises as the episodes lengthen, and DQN's falls once its
  updates start (after 10k env steps per seed), so either is comparable between runs of the
  same budget only.
* DCGAN (``gan.train_chunk``): iterations x seeds per second. Share of peak: that x the FLOPs of
  ``gan_throughput.iteration_matmuls`` (every forward and backward product of one iteration,
  11.5 GFLOP per seed-iteration at the defaults) / the matmul peak.

The matmul peak is ``vae_throughput.matmul_peak_gflops`` (the faster of a 2048^3 and a 4096^3
jnp f32 matmul, best of repeats, on the default device: nothing CPU-specific in it), read at the
start and at the end; shares use the higher reading. The machine's load average is read after
every row. Seed loop: ``vmap`` on an accelerator; on a CPU each experiment's own default (VAE
and DCGAN "auto", i.e. ``map``; REINFORCE and DQN ``vmap``), and as there the CPU is split into
one XLA device per core for the VAE and the DCGAN (experiments/vae.py and gan.py do) while
REINFORCE's and DQN's seeds stay on one device (their experiments do not split it). The
"seed loop" and "devices" columns say what each row used. The VAE and the DCGAN train on the
real MNIST IDX files of ``--data_dir`` (their train split, or the fixed 90 % of a lone test
split: 9000 images, at most 9000 used, 70 batches of 128 per VAE epoch) when they exist, else
on random uint8 images of that shape; the header says which. A row that fails (out of device
memory, say) records its error and the suite goes on.

Sizes (per seed; ``SIZES``), and why:

* Full (one H200, under 8 minutes in all). Compiles are ~5-30 s each on a GPU, 12 rows: about
  3-4 minutes. Every row's steady state is sized to a few seconds, and a VAE or DCGAN row whose
  chunks run past ``max_seconds`` (8 s) stops after the chunk that passes it (its "work" column
  says how many ran), so a slower device than planned still fits. VAE 1/8/64/512 seeds x
  200/150/40/8 epochs: at 1-8 seeds an epoch's 70 steps are latency-bound (~0.1-0.2 ms a step,
  10-20 ms an epoch), at 64 and 512 seeds FLOP-bound (27 and 215 GFLOP a step: ~70 ms and
  ~0.4 s an epoch at tens of TFLOP/s). REINFORCE 8/64/1024 seeds x 200k env steps (~100-200
  updates of 16 CartPole episodes, each a sequential rollout of up to 500 steps: 1-3 s at any
  seed count). DQN 8/64/256 seeds x 100k env steps (10k sequential iterations of 10 env steps
  and, after the first 1000, one gradient step: ~0.1-0.5 ms each, 1-5 s). DCGAN 4/32 seeds x
  30/6 chunks of 50 iterations (1500 latency-bound iterations of ~1-2 ms; 300 of 32 x 11.5
  GFLOP, ~20 ms each).
* ``--quick`` (a 2-core CPU, under 5 minutes; 102 s measured at load 2.1-2.6): the smallest seed
  counts, VAE 1 and 8 seeds x 3 and 2 epochs (~20k ex/s), REINFORCE 8 and 64 seeds x 50k env
  steps (~0.3-0.4M env steps/s), DQN 8 seeds x 20k env steps (half of it the warm-up before
  its updates start; 64 seeds would take over a minute at ~16-30k env steps/s), DCGAN 4 seeds x
  3 chunks of 5 iterations (~8 seed-it/s; 32 seeds would take a minute).
* ``--tiny`` (for the tests, ~45 s): one seed count each and budgets of under a second; the VAE
  on 1280 examples, the DCGAN with two discriminator layers and no generator 3x3 convolution
  (faster to compile), a 1024^3 matmul as the peak.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import time

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import gan_throughput, vae_throughput  # noqa: E402
from genrl_jax import run as runner  # noqa: E402
from genrl_jax.data import images  # noqa: E402
from genrl_jax.generative import gan, vae  # noqa: E402


def _forget_flags(module) -> None:
  """Removes the absl flags ``module`` defined for its own command line: this one does not take
  them, and two benchmarks define the same names (--seeds, --out), which absl refuses."""
  for flag in flags.FLAGS.get_flags_for_module(module.__name__):
    if flag.name in flags.FLAGS:
      delattr(flags.FLAGS, flag.name)


def import_rl_benchmarks() -> None:
  """Imports ``benchmarks.rl_throughput`` and ``benchmarks.dqn_throughput`` (for their
  ``measure_jax``), each without its flags. Called by the entry point after the CPU is split into
  devices: importing gymnax starts a jax backend, after which the split cannot be made."""
  for name in ("rl_throughput", "dqn_throughput"):
    _forget_flags(importlib.import_module(f"benchmarks.{name}"))


WORKLOADS = ("vae", "reinforce", "dqn", "gan")
TITLES = {"vae": "VAE", "reinforce": "REINFORCE", "dqn": "DQN", "gan": "DCGAN"}
UNITS = {"vae": "examples/s", "reinforce": "env steps/s", "dqn": "env steps/s",
         "gan": "seed-iterations/s"}
# The seed loop each experiment's entry point uses by default (experiments/<name>.py).
DEFAULT_SEED_LOOPS = {"vae": "auto", "reinforce": "vmap", "dqn": "vmap", "gan": "auto"}

MAX_IMAGES = 9000  # the VAE's epoch: 70 batches of 128, whatever the data directory holds
PEAK = "the faster of a 2048^3 and a 4096^3 jnp f32 matmul, best of repeats"
PEAK_TINY = "a 1024^3 jnp f32 matmul, best of 3"
# Per workload: the seed counts, and the work per seed count (see the module docstring).
SIZES = {
    "full": {
        "vae": {"seeds": (1, 8, 64, 512), "epochs": (200, 150, 40, 8)},
        "reinforce": {"seeds": (8, 64, 1024), "total_env_steps": 200_000},
        "dqn": {"seeds": (8, 64, 256), "total_env_steps": 100_000},
        "gan": {"seeds": (4, 32), "iterations_per_chunk": 50, "chunks": (30, 6)},
        "max_seconds": 8.0, "peak": PEAK,
    },
    "quick": {
        "vae": {"seeds": (1, 8), "epochs": (3, 2)},
        "reinforce": {"seeds": (8, 64), "total_env_steps": 50_000},
        "dqn": {"seeds": (8,), "total_env_steps": 20_000},
        "gan": {"seeds": (4,), "iterations_per_chunk": 5, "chunks": (3,)},
        "max_seconds": 30.0, "peak": PEAK,
    },
    "tiny": {
        "vae": {"seeds": (1,), "epochs": (3,), "examples": 1280},
        "reinforce": {"seeds": (8,), "total_env_steps": 8_000},
        "dqn": {"seeds": (8,), "total_env_steps": 2_000},
        "gan": {"seeds": (2,), "iterations_per_chunk": 2, "chunks": (2,),
                "config": {"discriminator_layers": 2, "generator_convs": 0}},
        "max_seconds": 30.0, "peak": PEAK_TINY,
    },
}


def define_flags() -> None:
  """This command's flags (defined by its entry point only, so importing the module for its
  functions adds no flags to another program's)."""
  flags.DEFINE_bool("quick", False, "Small budgets and the smallest seed counts: a few minutes "
                    "of a 2-core CPU.")
  flags.DEFINE_bool("tiny", False, "Tiny budgets, for tests.")
  flags.DEFINE_list("only", list(WORKLOADS), f"Workloads to run, of {', '.join(WORKLOADS)}.")
  flags.DEFINE_string("data_dir", os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist"),
                      "MNIST IDX files for the VAE and the DCGAN (random images of the same "
                      "shape when the directory does not exist).")
  flags.DEFINE_string("out", "runs/bench", "Directory for suite.md and suite.json.")


def share_of_peak(rate: float, flops_per_unit: float | None, peak_gflops: float) -> float | None:
  """The fraction of the matmul peak a rate of ``rate`` units/s is, at ``flops_per_unit`` FLOPs
  per unit; None where no FLOP count exists."""
  if flops_per_unit is None or not peak_gflops > 0:
    return None
  return rate * flops_per_unit / (peak_gflops * 1e9)


def vae_flops_per_example(config: vae.VAEConfig) -> int:
  return vae_throughput.train_flops_per_example(config.num_pixels, config.hidden,
                                                config.latent_dim)


def gan_flops_per_iteration(config: gan.GANConfig) -> int:
  """The matmul FLOPs of one iteration of one seed (``gan_throughput.iteration_matmuls``)."""
  shapes = gan_throughput.iteration_matmuls(config.batch_size, config.width, config.latent_dim,
                                            config.discriminator_layers, config.generator_convs,
                                            config.image_shape[0])
  return sum(2 * m * k * n for m, k, n in shapes)


def matmul_peak(kind: str) -> float:
  """GFLOP/s of ``PEAK`` (``vae_throughput.matmul_peak_gflops``) or ``PEAK_TINY``."""
  if kind == PEAK_TINY:
    return vae_throughput.matmul_gflops(1024, repeats=3)
  return vae_throughput.matmul_peak_gflops()


def seed_loop_for(workload: str) -> str:
  """``vmap`` on an accelerator; on a CPU the experiment's own default."""
  return "vmap" if jax.default_backend() != "cpu" else DEFAULT_SEED_LOOPS[workload]


def load_images(data_dir: str) -> tuple[np.ndarray, str]:
  """[N <= MAX_IMAGES, 784] uint8: the IDX files' train split (a lone test split's fixed 90 %),
  or random images."""
  if data_dir and os.path.isdir(data_dir) and images.has_idx_files(data_dir):
    dataset = images.load_idx_dir(data_dir, test_fraction=0.1)
    train_u8, source = dataset.train_images.reshape(len(dataset.train_images), -1), dataset.source
  else:
    train_u8 = np.random.default_rng(0).integers(0, 256, (MAX_IMAGES, 784), dtype=np.uint8)
    source = f"random uint8 images, {MAX_IMAGES} x 784 ({data_dir} holds no IDX files)"
  if len(train_u8) > MAX_IMAGES:
    train_u8 = train_u8[:MAX_IMAGES]
    source += f"; the first {MAX_IMAGES} train images used"
  return train_u8, source


def _run_chunks(compiled, state, data, chunks: int, max_seconds: float) -> tuple[int, float]:
  """Runs up to ``chunks`` chunks, the metrics to the host after each; stops after the chunk
  that passes ``max_seconds``. Returns (chunks run, seconds)."""
  t0 = time.perf_counter()
  done = 0
  while done < chunks:
    state, metrics = compiled(state, data)
    jax.device_get(metrics)  # the runner's one host transfer per chunk
    done += 1
    if time.perf_counter() - t0 > max_seconds:
      break
  return done, time.perf_counter() - t0


def _where(placement) -> dict:
  return {"seed_loop": placement.resolved_loop, "devices": placement.num_devices,
          "placement": placement.describe()}


def _compile(placement, fn, state, data, compiler_options):
  chunk = placement.jit(fn, donate=True, compiler_options=compiler_options)
  t0 = time.perf_counter()
  compiled = chunk.lower(state, data).compile()
  return compiled, time.perf_counter() - t0


def measure_vae(num_seeds: int, epochs: int, train_u8: np.ndarray, max_seconds: float) -> dict:
  """One epoch (``vae.train_epoch``) per chunk, as ``vae_throughput.Ours`` times it."""
  config = vae.VAEConfig()
  train = vae.make_train(config)
  model, optimizer = train.static
  options = vae.compiler_options()
  placement = runner.SeedPlacement(num_seeds, 0, seed_loop_for("vae"))
  data = placement.place_data({"train": jnp.asarray(train_u8)})
  state = placement.jit(train.init, compiler_options=options)(placement.keys(), data)
  compiled, compile_s = _compile(
      placement, lambda s, d: vae.train_epoch(s, d["train"], model, optimizer, config), state,
      data, options)
  per_epoch = vae.num_batches(train_u8.shape[0], config.batch_size) * config.batch_size
  done, seconds = _run_chunks(compiled, state, data, epochs, max_seconds)
  return {**_where(placement),
          "compile_seconds": compile_s, "seconds": seconds,
          "rate": num_seeds * per_epoch * done / seconds,
          "flops_per_unit": vae_flops_per_example(config),
          "work": f"{done} epochs x {per_epoch:,} examples per seed"}


def measure_gan(num_seeds: int, chunks: int, iterations_per_chunk: int, train_u8: np.ndarray,
                max_seconds: float, overrides: dict | None = None) -> dict:
  """``gan.train_chunk`` of ``iterations_per_chunk`` iterations per chunk (the default
  configuration otherwise, as ``gan_throughput``)."""
  config = gan.GANConfig(iterations_per_chunk=iterations_per_chunk, **(overrides or {}))
  train = gan.make_train(config)
  placement = runner.SeedPlacement(num_seeds, 0, seed_loop_for("gan"))
  data = placement.place_data({"train": jnp.asarray(train_u8)})
  state = placement.jit(train.init)(placement.keys(), data)
  compiled, compile_s = _compile(placement, train.chunk, state, data, gan.compiler_options())
  done, seconds = _run_chunks(compiled, state, data, chunks, max_seconds)
  return {**_where(placement),
          "compile_seconds": compile_s, "seconds": seconds,
          "rate": num_seeds * iterations_per_chunk * done / seconds,
          "flops_per_unit": gan_flops_per_iteration(config),
          "work": f"{done} chunks x {iterations_per_chunk} iterations per seed"}


def rl_devices() -> tuple | None:
  """The devices REINFORCE's and DQN's seeds are split over: on a CPU the first only, as their
  experiments run (they do not split the CPU into devices; DQN's chunk with 4 or more seeds
  over two CPU devices hangs); elsewhere all (None)."""
  return (jax.devices()[0],) if jax.default_backend() == "cpu" else None


def measure_reinforce(num_seeds: int, total_env_steps: int) -> dict:
  from benchmarks import rl_throughput  # noqa: PLC0415 -- see import_rl_benchmarks
  devices = rl_devices()
  r = rl_throughput.measure_jax(num_seeds, total_env_steps, devices)  # vmap, as the experiment
  return {**_where(runner.SeedPlacement(num_seeds, 0, "vmap", devices)),
          "compile_seconds": r["compile_seconds"], "seconds": r["seconds"],
          "rate": r["env_steps_per_s"], "flops_per_unit": None,
          "work": f"{total_env_steps:,} env steps per seed",
          "simulated_steps_per_s": r["simulated_steps_per_s"],
          "return_last100_mean": r["return_last100_mean"]}


def measure_dqn(num_seeds: int, total_env_steps: int) -> dict:
  from benchmarks import dqn_throughput  # noqa: PLC0415 -- see import_rl_benchmarks
  loop, devices = seed_loop_for("dqn"), rl_devices()
  r = dqn_throughput.measure_jax(num_seeds, total_env_steps, loop, devices)
  return {**_where(runner.SeedPlacement(num_seeds, 0, loop, devices)),
          "compile_seconds": r["compile_seconds"],
          "seconds": r["seconds"], "rate": r["env_steps_per_s"], "flops_per_unit": None,
          "work": f"{total_env_steps:,} env steps per seed",
          "gradient_steps_per_seed": r["gradient_steps_per_seed"],
          "return_last100_mean": r["return_last100_mean"]}


def plan(size: dict, workload: str) -> list[tuple[int, object]]:
  """[(seeds, () -> measurement dict)] of one workload at ``size``."""
  s = size[workload]
  cap = size["max_seconds"]
  if workload == "vae":
    return [(n, lambda n=n, e=e: measure_vae(n, e, size["images"][:s.get("examples")], cap))
            for n, e in zip(s["seeds"], s["epochs"])]
  if workload == "gan":
    return [(n, lambda n=n, c=c: measure_gan(n, c, s["iterations_per_chunk"], size["images"], cap,
                                             s.get("config")))
            for n, c in zip(s["seeds"], s["chunks"])]
  measure = measure_reinforce if workload == "reinforce" else measure_dqn
  return [(n, lambda n=n: measure(n, s["total_env_steps"])) for n in s["seeds"]]


def _one_line(e: BaseException) -> str:
  text = (str(e).strip().splitlines() or [""])[0]
  return f"{type(e).__name__}: {text[:200]}"


def _rate(x: float | None) -> str:
  if x is None:
    return "-"
  return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def markdown(result: dict) -> str:
  d = result["device"]
  peak = d["matmul_peak_gflops"]
  lines = [
      f"# Benchmark suite ({result['size']})", "",
      f"- device: {', '.join(d['devices'])} (platform {d['platform']}, {d['cpu_count']} CPU cores)",
      f"- f32 matmul peak: {peak['start']:,.1f} GFLOP/s at the start, {peak['end']:,.1f} at the "
      f"end ({peak['method']}); shares of peak use {peak['used']:,.1f}",
      f"- data (VAE, DCGAN): {result['data']}",
      f"- load average (1, 5, 15 min) at the start: "
      f"{', '.join(f'{x:.2f}' for x in result['load_average_start'])}; at the end: "
      f"{', '.join(f'{x:.2f}' for x in result['load_average_end'])}",
      f"- wall time: {result['wall_seconds']:.0f} s", "",
      "| workload | seeds | seed loop | devices | rate | unit | share of peak | compile s | "
      "steady s | work | load (1 min) | note |",
      "|---|---:|---|---:|---:|---|---:|---:|---:|---|---:|---|"]
  for r in result["rows"]:
    share = "-" if r.get("share_of_peak") is None else f"{r['share_of_peak']:.1%}"
    num = (lambda k, r=r: "-" if r.get(k) is None else f"{r[k]:.2f}")
    lines.append(f"| {TITLES[r['workload']]} | {r['seeds']} | {r.get('seed_loop', '-')} | "
                 f"{r.get('devices', '-')} | {_rate(r.get('rate'))} | {r['unit']} | {share} | "
                 f"{num('compile_seconds')} | {num('seconds')} | {r.get('work', '-')} | "
                 f"{r['load_average'][0]:.2f} | "
                 f"{'error: ' + r['error'] if r.get('error') else ''} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  F = flags.FLAGS
  if F.quick and F.tiny:
    raise runner.UserError("--quick and --tiny are two sizes; pass one of them")
  only = list(dict.fromkeys(w.strip() for w in F.only if w.strip()))
  unknown = [w for w in only if w not in WORKLOADS]
  if unknown or not only:
    raise runner.UserError(f"--only={','.join(F.only)}: "
                           + (f"unknown workload {unknown[0]!r}" if unknown else "no workload")
                           + f"; choose from {','.join(WORKLOADS)}")
  if os.path.exists(F.out) and not os.path.isdir(F.out):
    raise runner.UserError(f"--out={F.out} is a file; pass a directory")
  size_name = "tiny" if F.tiny else "quick" if F.quick else "full"
  size = dict(SIZES[size_name])
  wall0 = time.perf_counter()
  load_start = list(os.getloadavg())
  if {"vae", "gan"} & set(only):
    size["images"], data_source = load_images(F.data_dir)
  else:
    data_source = "-"
  devices = [str(d) for d in jax.devices()]
  print(f"suite ({size_name}): {', '.join(only)} on {', '.join(devices)}; data: {data_source}",
        flush=True)
  peak_start = matmul_peak(size["peak"])
  print(f"f32 matmul peak: {peak_start:,.1f} GFLOP/s ({size['peak']})", flush=True)

  rows = []
  for workload in only:
    for seeds, measure in plan(size, workload):
      print(f"{TITLES[workload]}, {seeds} seed{'s' if seeds != 1 else ''}: compiling and "
            "running ...", flush=True)
      row = {"workload": workload, "seeds": seeds, "unit": UNITS[workload]}
      try:
        row.update(measure())
      except Exception as e:  # noqa: BLE001 -- recorded in the row; the suite goes on
        row["error"] = _one_line(e)
        gc.collect()
      row["load_average"] = list(os.getloadavg())
      rows.append(row)
      if row.get("error"):
        print(f"  failed: {row['error']}", flush=True)
      else:
        print(f"  {_rate(row['rate'])} {row['unit']} ({row['seed_loop']}; compile "
              f"{row['compile_seconds']:.1f} s, {row['work']} in {row['seconds']:.2f} s; "
              f"load {row['load_average'][0]:.2f})", flush=True)

  peak_end = matmul_peak(size["peak"])
  peak = max(peak_start, peak_end)
  print(f"f32 matmul peak at the end: {peak_end:,.1f} GFLOP/s", flush=True)
  for row in rows:
    if not row.get("error"):
      row["share_of_peak"] = share_of_peak(row["rate"], row["flops_per_unit"], peak)
  result = {
      "size": size_name, "workloads": only,
      "device": {"devices": devices, "platform": jax.default_backend(),
                 "cpu_count": os.cpu_count(),
                 "matmul_peak_gflops": {"start": peak_start, "end": peak_end, "used": peak,
                                        "method": size["peak"]}},
      "data": data_source, "load_average_start": load_start,
      "load_average_end": list(os.getloadavg()),
      "wall_seconds": time.perf_counter() - wall0, "rows": rows,
  }
  table = markdown(result)
  os.makedirs(F.out, exist_ok=True)
  with open(os.path.join(F.out, "suite.json"), "w") as f:
    json.dump(result, f, indent=2)
  with open(os.path.join(F.out, "suite.md"), "w") as f:
    f.write(table)
  print(table, flush=True)
  print(f"wrote {os.path.join(F.out, 'suite.md')} and suite.json", flush=True)


if __name__ == "__main__":
  runner.devices.host_device_per_core()  # before jax starts (as experiments/vae.py, gan.py)
  import_rl_benchmarks()
  define_flags()
  runner.cli_main(main)
