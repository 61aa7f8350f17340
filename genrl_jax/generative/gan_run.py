"""The DCGAN as a runner experiment: snapshots judged by the evaluator, loss curves, results.

After chunk 0 (before training) and every chunk that ends at a snapshot iteration
(``gan.snapshot_iterations``), each seed's generator draws from two fixed noise batches (the
same for every seed and snapshot): 64 images for the grids, ``eval_samples`` for the evaluator.
Written to the workdir:

  snapshots/<iteration>.npy    [n_seeds, 64, H, W] uint8 grid images (for snapshots.png)
  snapshot_<iteration>.png     seed 0's grid
  snapshots.jsonl              one row per (iteration, seed): classifier_score, frechet_distance
  snapshots.png                one column per snapshot (seed 0, 8 images each)
  losses.png                   D and G losses per iteration, mean over seeds with 95 % CI bands

A resumed run recomputes snapshots only for chunks it recomputes (rows are keyed by iteration
and seed; the last one of a key wins).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from genrl_jax import run as runner
from genrl_jax.data import images
from genrl_jax.generative import evaluator as evaluator_lib
from genrl_jax.generative import gan
from genrl_jax.generative import judges as judges_lib
from genrl_jax.generative.settings import JudgeConfig
from genrl_jax.run import files
from genrl_jax.run import plots
from genrl_jax.run import spec
from genrl_jax.run.schedule import Every

SNAPSHOT_ROWS = "snapshots.jsonl"
GRID_SIZE = 64
NOISE_SEED = 20151119  # the fixed noise batches: one for every seed and snapshot
RESUME_MAY_CHANGE = ("iterations", "evaluator_dir")


def check(config: gan.GANConfig) -> None:
  """Snapshot iterations and the run length must fall on chunk boundaries."""
  k = config.iterations_per_chunk
  bad = [i for i in gan.snapshot_iterations(config) if i % k]
  if bad:
    raise runner.UserError(f"snapshot iterations {bad} are not multiples of "
                           f"--iterations_per_chunk={k}; choose one that divides 250 and "
                           "--snapshot_every (e.g. 250, 125, 50)")


def fixed_noise(config: gan.GANConfig) -> dict[str, jax.Array]:
  grid_key, eval_key = jax.random.split(jax.random.key(NOISE_SEED))
  return {"grid": jax.random.normal(grid_key, (GRID_SIZE, config.latent_dim)),
          "eval": jax.random.normal(eval_key, (config.eval_samples, config.latent_dim))}


def read_rows(workdir: str) -> dict[tuple[int, int], dict]:
  """{(iteration, seed): row} of snapshots.jsonl; a last line cut by a kill is left out. A
  damaged line gives one warning and ends the reading (the rows before it are used); a row
  without an integer iteration and seed is left out with one warning."""
  path = os.path.join(workdir, SNAPSHOT_ROWS)
  try:
    lines = files.read_jsonl(path, "the DCGAN's snapshot scores")
  except files.DamagedFile as e:
    lines = e.partial or []
    print(f"warning: {e}; only the {len(lines)} rows before it are used", flush=True)
  rows, bad = {}, 0
  for r in lines:
    try:
      rows[(int(r["iteration"]), int(r["seed"]))] = r
    except (KeyError, TypeError, ValueError):
      bad += 1
  if bad:
    print(f"warning: {path}: {bad} rows without an integer iteration and seed are left out",
          flush=True)
  return rows


def read_grids(workdir: str, iterations, image_shape) -> list[tuple[int, np.ndarray]]:
  """[(iteration, [n_seeds, 64, H, W] uint8)] of the snapshot grids in ``workdir``/snapshots/
  (those that exist); a damaged one gives one warning and is left out (the file is kept)."""
  grids = []
  for it in iterations:
    path = os.path.join(workdir, "snapshots", f"{it}.npy")
    if not os.path.exists(path):
      continue
    try:
      grid = files.load_npy(path, f"the iteration-{it} snapshot grid",
                            shape=(None, GRID_SIZE, *image_shape[:2]))
    except files.DamagedFile as e:
      print(f"warning: {e}; snapshots.png leaves iteration {it} out", flush=True)
      continue
    if grid.shape[0]:
      grids.append((it, grid))
  return grids


SECOND = f"_{judges_lib.SECOND}"  # the second judge's numbers carry its name as a suffix
SNAPSHOT_NUMBERS = ("classifier_score", "frechet_distance", "label_entropy", "conditional_entropy",
                    "classifier_score" + SECOND, "frechet_distance" + SECOND)


def snapshot_table(rows: dict, seeds, iterations) -> dict[str, dict[str, np.ndarray]]:
  """{number: {iteration: [n_seeds]}} for each of ``SNAPSHOT_NUMBERS`` and the snapshots that
  every seed has (a number absent from a row, as in runs written before it existed, is left
  out of that snapshot)."""
  table = {key: {} for key in SNAPSHOT_NUMBERS}
  for it in iterations:
    if all((it, int(s)) in rows for s in seeds):
      for key in table:
        if all(key in rows[(it, int(s))] for s in seeds):
          table[key][it] = np.asarray([rows[(it, int(s))][key] for s in seeds], np.float64)
  return table


def make_experiment(config: gan.GANConfig, dataset: images.ImageDataset,
                    data_config: images.DataConfig, evaluator_dir: str) -> runner.Experiment:
  check(config)
  data = images.device_arrays(dataset, "none")
  train = gan.make_train(config)
  judges = judges_lib.load_judges(dataset, data_config.dataset, evaluator_dir)
  judge, second = judges
  noise = fixed_noise(config)
  iterations = gan.snapshot_iterations(config)
  snapshots = Every(on=tuple(i // config.iterations_per_chunk for i in iterations))
  # Real held-out reference: eval_samples training images (fixed draw) against the test fit.
  pick = np.random.default_rng(NOISE_SEED).choice(len(dataset.train_images),
                                                   min(config.eval_samples,
                                                       len(dataset.train_images)), replace=False)
  real = judge.judge(dataset.train_images[pick].astype(np.float32) / 255.0)
  real_test_score = evaluator_lib.classifier_score(judge.real_probs)
  real_second = second.judge(dataset.train_images[pick].astype(np.float32) / 255.0)
  print(f"evaluator on real images: classifier score {real['classifier_score']:.3f} "
        f"({len(pick)} training images), {real_test_score:.3f} (test images); Fréchet distance "
        f"training vs test images {real['frechet_distance']:.3f}", flush=True)
  samplers = {}

  def after_chunk(end: runner.ChunkEnd):
    if not snapshots.due(end.done) or end.workdir is None:
      return
    iteration = end.done * config.iterations_per_chunk
    if "fn" not in samplers:
      samplers["fn"] = end.placement.jit(train.static.sample)
    grid = np.asarray(samplers["fn"](end.state, noise["grid"]))  # [S, 64, H, W, C]
    evals = np.asarray(samplers["fn"](end.state, noise["eval"]))
    os.makedirs(os.path.join(end.workdir, "snapshots"), exist_ok=True)
    grid_u8 = np.clip(np.round(grid[..., 0] * 255), 0, 255).astype(np.uint8)
    np.save(os.path.join(end.workdir, "snapshots", f"{iteration}.npy"), grid_u8)
    plots.image_grid(os.path.join(end.workdir, f"snapshot_{iteration}.png"), grid[0, ..., 0],
                     title=f"iteration {iteration} (seed {int(end.placement.seeds[0])})")
    with open(os.path.join(end.workdir, SNAPSHOT_ROWS), "a") as f:
      for i, seed in enumerate(end.placement.seeds):
        scores = judge.judge(evals[i])
        scores.update({k + SECOND: v for k, v in second.judge(evals[i]).items()
                       if k in ("classifier_score", "frechet_distance")})
        f.write(json.dumps({"iteration": iteration, "seed": int(seed), **scores}) + "\n")

  def summarize(result: runner.RunResult):
    table = snapshot_table(read_rows(result.workdir) if result.workdir else {}, result.seeds,
                           iterations)
    metrics = {}
    if result.history:
      metrics["final_d_loss"] = np.asarray(result.history[-1]["mean_d_loss"])
      metrics["final_g_loss"] = np.asarray(result.history[-1]["mean_g_loss"])
    last = max(table["classifier_score"], default=None)
    if last is not None:
      metrics["classifier_score"] = table["classifier_score"][last]
      metrics["frechet_distance"] = table["frechet_distance"][last]
      # The headline, comparable across judges: the score over real held-out images' score.
      metrics["classifier_score_ratio"] = metrics["classifier_score"] / real_test_score
      if last in table["classifier_score" + SECOND]:
        metrics["classifier_score" + SECOND] = table["classifier_score" + SECOND][last]
        metrics["frechet_distance" + SECOND] = table["frechet_distance" + SECOND][last]
        metrics["classifier_score_ratio" + SECOND] = (metrics["classifier_score" + SECOND]
                                                      / second.real_classifier_score)
    per_snapshot = {
        str(it): {key: {"per_seed": [float(v) for v in table[key][it]],
                        "mean": runner.stats.mean_ci(table[key][it])[0],
                        "ci95_half_width": runner.stats.mean_ci(table[key][it])[1]}
                  for key in table if it in table[key]}
        for it in table["classifier_score"]}
    extra = {"dataset": data_config.dataset, "data_source": dataset.source,
             "iterations": config.iterations, "final_snapshot_iteration": last,
             "snapshots": per_snapshot,
             "real": {"classifier_score_train_images": real["classifier_score"],
                      "classifier_score_test_images": real_test_score,
                      "classifier_score_train_images" + SECOND: real_second["classifier_score"],
                      "classifier_score_test_images" + SECOND: second.real_classifier_score,
                      "frechet_distance_train_vs_test" + SECOND: real_second["frechet_distance"],
                      "frechet_distance_train_vs_test": real["frechet_distance"],
                      "num_images": int(len(pick))},
             "eval_samples": config.eval_samples,
             "evaluator_test_accuracy": judge.test_accuracy,
             "evaluator_test_accuracy" + SECOND: second.test_accuracy,
             "evaluator": f"convnet classifier trained on the {len(dataset.train_images)} "
                          f"training images only ({dataset.source})"}
    return metrics, extra

  def figures(result: runner.RunResult, out_dir: str):
    paths = []
    if result.history:
      d = np.concatenate([h["d_loss"] for h in result.history], axis=1)
      g = np.concatenate([h["g_loss"] for h in result.history], axis=1)
      x = np.arange(1, d.shape[1] + 1)
      paths.append(plots.curves(os.path.join(out_dir, "losses.png"), x,
                                {"discriminator": d, "generator": g}, xlabel="iteration",
                                ylabel="loss (nats)",
                                title=f"DCGAN, mean over {d.shape[0]} seed(s), 95% CI band"))
    grids = read_grids(result.workdir or out_dir, iterations, config.image_shape)
    if grids:
      per_column = 8
      columns = [g[0, :per_column].astype(np.float32) / 255.0 for _, g in grids]
      stacked = np.stack(columns, axis=1).reshape((-1,) + columns[0].shape[1:])
      paths.append(plots.image_grid(
          os.path.join(out_dir, "snapshots.png"), stacked, rows=per_column,
          title="it. " + ", ".join(str(it) for it, _ in grids)))
    return paths

  return runner.Experiment(
      init=train.init, chunk=train.chunk,
      num_chunks=config.iterations // config.iterations_per_chunk, data=data,
      summarize=summarize, after_chunk=after_chunk, figures=figures,
      progress=(("mean_d_loss", "D loss"), ("mean_g_loss", "G loss")), finite_key="mean_d_loss",
      units_per_chunk=config.iterations_per_chunk, units_label="it/s",
      resume_may_change=RESUME_MAY_CHANGE, compiler_options=gan.compiler_options())


def build(config: gan.GANConfig, data_config: images.DataConfig,
          judges: JudgeConfig) -> runner.Experiment:
  """Loads the data and builds the run."""
  dataset = data_config.load()
  if dataset.image_shape[0] % 4 or dataset.image_shape[1] % 4:
    raise runner.UserError(f"the DCGAN needs image sides divisible by 4, got "
                           f"{dataset.image_shape[:2]}")
  config = dataclasses.replace(config, image_shape=dataset.image_shape)
  if config.iterations % config.iterations_per_chunk:
    raise runner.UserError(f"--iterations={config.iterations} is not a multiple of "
                           f"--iterations_per_chunk={config.iterations_per_chunk}")
  print(f"data: {dataset.source}", flush=True)
  return make_experiment(config, dataset, data_config, judges.evaluator_dir)


def print_results(result: runner.RunResult) -> None:
  """The snapshot table: both judges' numbers per iteration, mean ± 95 % CI over seeds; then
  the final score over real held-out images' score, per judge."""
  second = judges_lib.SECOND
  print("iteration | classifier score | Fréchet distance | H(labels) | mean H(label | image) | "
        f"classifier score ({second}) | Fréchet distance ({second})   (mean ± 95% CI over seeds; "
        "score = exp(H(labels) - mean H(label | image)))")
  for it, row in result.results["extra"]["snapshots"].items():
    cells = [f"{row[key]['mean']:.3f} ± {row[key]['ci95_half_width']:.3f}" if key in row else "-"
             for key in SNAPSHOT_NUMBERS]
    print(f"{int(it):9d} | " + " | ".join(cells))
  real = result.results["extra"]["real"]
  print(f"     real | {real['classifier_score_train_images']:.3f} | "
        f"{real['frechet_distance_train_vs_test']:.3f} | - | - | "
        f"{real.get('classifier_score_train_images' + SECOND, float('nan')):.3f} | "
        f"{real.get('frechet_distance_train_vs_test' + SECOND, float('nan')):.3f}")
  metrics = result.results["metrics"]
  for suffix, name in (("", "convnet"), (SECOND, second)):
    if "classifier_score_ratio" + suffix in metrics:
      s = metrics["classifier_score_ratio" + suffix]
      print(f"classifier score / real test images' ({name}): {s['mean']:.3f} ± "
            f"{s['ci95_half_width']:.3f}")


SPEC = spec.Spec(name="gan", configs=(gan.GANConfig, images.DataConfig, JudgeConfig), build=build,
                 report=print_results, chunk_label="chunk", cpu_device_per_core=True)
