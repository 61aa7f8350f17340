"""In-program hyperparameter sweeps: every (value, seed) pair of a sweep in one compiled program.

    python -m experiments.vae --seeds=4 --sweep="learning_rate=1e-3,3e-4,1e-4"

runs 3 x 4 = 12 *cells* side by side. A sweepable hyperparameter (a float config field marked
``sweepable=True``) becomes an argument of the per-seed function: the experiment's
``Sweepable.train(hparams)`` rebuilds its ``runner.Train`` with the swept fields as traced
scalars, and the seed placement vmaps (or maps) that function over the cells exactly as it does
over seeds. Cell c holds value ``c // N`` of the grid and seed ``first_seed + c % N``, with the
root key ``key(first_seed + c % N)``: cell (v, i) is the same computation as a separate run with
``--<name>=v --seed=first_seed+i`` (up to float rounding of a traced vs a constant scalar).

Several fields sweep their Cartesian product (``"learning_rate=1e-3,1e-4 prior_std=0.5,1"``).
Flags that change shapes (hidden sizes, batch size, latent dimension) cannot share a program:
they stay separate jobs (``launch/sweep.py``).

Outputs gain the swept axis: metrics.jsonl rows carry ``cell`` and the cell's values;
results.json keeps its one schema with one entry per metric and value
(``test_neg_elbo[learning_rate=0.001]``, its ``per_seed`` over that value's seeds) and the grid
in ``extra.sweep``; ``sweep.png`` plots each final metric against the swept value, mean and
95 % CI over seeds with every seed as a dot.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from genrl_jax import config as cfg
from genrl_jax.errors import UserError

SWEEP_FILE = "sweep.png"


@dataclasses.dataclass(frozen=True)
class Sweepable:
  """What an experiment offers a sweep.

  Attributes:
    config: the run's config dataclass (its ``sweepable`` fields may be swept; their checks
      validate the values).
    train: hparams -> ``runner.Train``: the per-seed functions with ``config``'s fields named in
      ``hparams`` replaced by the given (traced, float32 scalar) values. Called while tracing the
      cell functions, so it must only assemble closures (no data loading, no validation of the
      traced values).
  """
  config: Any
  train: Callable[[Mapping[str, Any]], Any]


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A grid of hyperparameter values: ``names`` and one row of values per grid point."""
  names: tuple[str, ...]
  points: tuple[tuple[float, ...], ...]

  @property
  def num_points(self) -> int:
    return len(self.points)

  def point_label(self, v: int) -> str:
    """e.g. ``learning_rate=0.001`` (``,`` between several fields)."""
    return ",".join(f"{n}={x:g}" for n, x in zip(self.names, self.points[v]))

  def cell_point(self, cell: int, num_seeds: int) -> int:
    return cell // num_seeds

  def hparams(self, num_seeds: int) -> dict[str, np.ndarray]:
    """{name: [points * num_seeds] float32}: cell c's value of each swept field."""
    return {n: np.repeat(np.asarray([p[j] for p in self.points], np.float32), num_seeds)
            for j, n in enumerate(self.names)}

  def cell_labels(self, seeds: np.ndarray) -> list[dict]:
    """One dict per cell for metrics.jsonl rows: {"cell", <name>: value, ...}."""
    n = len(seeds)
    return [{"cell": c, **{name: float(x) for name, x in zip(self.names, self.points[c // n])}}
            for c in range(n * self.num_points)]

  def cell_names(self, seeds: np.ndarray) -> list[str]:
    """Short names of the cells (TensorBoard run names): ``learning_rate-0.001_seed_3``."""
    n = len(seeds)
    return ["_".join(f"{name}-{x:g}" for name, x in zip(self.names, self.points[c // n]))
            + f"_seed_{int(seeds[c % n])}" for c in range(n * self.num_points)]

  def describe(self) -> dict:
    return {"names": list(self.names), "points": [list(p) for p in self.points]}


def entries(spec: str) -> list[tuple[str, list[str]]]:
  """[(name, [value texts])] of a ``--sweep`` value: its syntax only, checked before anything is
  loaded or compiled. One ``UserError`` for an entry without ``=``, without a name or values, or
  with an empty value (a leading, trailing or doubled comma), saying how to write it."""
  out = []
  tokens = [t for t in re.split(r"[\s;]+", spec.strip()) if t]
  for i, entry in enumerate(tokens):
    name, sep, values = entry.partition("=")
    if not sep:
      raise UserError(f"--sweep entry {entry!r} has no '=': write NAME=V1,V2,... (e.g. "
                      "learning_rate=1e-3,3e-4)")
    if not name:
      raise UserError(f"--sweep entry {entry!r} has no name before '=': write NAME=V1,V2,... "
                      f"(e.g. learning_rate{entry})")
    items = values.split(",")
    empty = [i for i, v in enumerate(items, 1) if not v.strip()]
    if empty:
      kept = ",".join(v.strip() for v in items if v.strip()) or "V1,V2,..."
      what = ("has no values after '='" if not values else
              f"has an empty value (item {empty[0]} of {len(items)}: a leading, trailing or "
              "doubled comma)")
      if values and empty == [len(items)] and i + 1 < len(tokens) and "=" not in tokens[i + 1]:
        kept, what = f"{kept},{tokens[i + 1]}", "is cut by a space after its comma"
      raise UserError(f"--sweep entry {entry!r} {what}; write {name}={kept} (values separated "
                      "by single commas, entries by spaces)")
    out.append((name, [v.strip() for v in items]))
  return out


def parse(spec: str, sweepable: Sweepable | None, experiment: str = "this experiment") -> Sweep:
  """``"name=v1,v2 other=w1,w2"`` -> the Sweep of their Cartesian product, with one clear
  ``UserError`` for bad syntax, a field that is not sweepable, or a value its check refuses."""
  if sweepable is None:
    raise UserError(f"--sweep: {experiment} has no sweepable hyperparameters; sweep it with "
                    "separate jobs (python -m launch.sweep)")
  config = sweepable.config
  allowed = cfg.sweepable_fields(type(config))
  names, axes = [], []
  for name, items in entries(spec):
    values = ",".join(items)
    if name not in allowed:
      raise UserError(f"--sweep: {name!r} is not a sweepable hyperparameter of {experiment}; "
                      f"sweepable: {', '.join(allowed) or 'none'} (others: python -m launch.sweep)")
    if name in names:
      raise UserError(f"--sweep names {name} twice")
    try:
      xs = [float(v) for v in items]
    except ValueError:
      raise UserError(f"--sweep: {name} values must be numbers, got {values!r}") from None
    if not xs:
      raise UserError(f"--sweep: no values for {name}")
    if len(set(xs)) != len(xs):
      raise UserError(f"--sweep: {name} lists a value twice ({values})")
    for x in xs:
      if not math.isfinite(x):
        raise UserError(f"--sweep: {name}={x} is not a finite number")
      cfg.validate(dataclasses.replace(config, **{name: x}))
    names.append(name)
    axes.append(xs)
  if not names:
    raise UserError("--sweep is empty; write NAME=V1,V2,...")
  return Sweep(tuple(names), tuple(tuple(p) for p in itertools.product(*axes)))


def split_metrics(metrics: Mapping[str, Any], sweep: Sweep, num_seeds: int) -> dict[str, np.ndarray]:
  """{name: [cells]} -> {``name[point]``: [num_seeds]}: results.json's entries per grid point."""
  out = {}
  for key, values in metrics.items():
    values = np.asarray(values, np.float64).reshape(sweep.num_points, num_seeds, -1)
    for v in range(sweep.num_points):
      out[f"{key}[{sweep.point_label(v)}]"] = values[v].reshape(num_seeds, -1).mean(axis=1) \
          if values.shape[2] > 1 else values[v, :, 0]
  return out


def results_extra(sweep: Sweep, seeds: np.ndarray) -> dict:
  """What results.json's ``extra.sweep`` holds: the grid and which (point, seed) each cell is."""
  n = len(seeds)
  return {**sweep.describe(), "seeds": [int(s) for s in seeds],
          "cells": [{"cell": c, "point": c // n, "seed": int(seeds[c % n]),
                     **dict(zip(sweep.names, sweep.points[c // n]))}
                    for c in range(n * sweep.num_points)]}


def plot(path: str, sweep: Sweep, metrics: Mapping[str, Any], num_seeds: int,
         title: str | None = None) -> str:
  """Each metric's final value against the first swept field (one panel per metric): mean over
  seeds with its 95 % CI (``stats.mean_ci``, a percentile bootstrap) as a band, each seed a
  dot; with several swept fields, one line per combination of the others. Log x when the values span
  more than a factor of 10 and are positive."""
  from genrl_jax.run import plots, stats  # noqa: PLC0415 (matplotlib only when plotting)
  plt = plots.plt
  names = list(metrics)
  fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
  xs_all = np.asarray([p[0] for p in sweep.points])
  groups: dict[tuple, list[int]] = {}
  for v, p in enumerate(sweep.points):
    groups.setdefault(tuple(p[1:]), []).append(v)
  for ax, name in zip(axes[0], names):
    values = np.asarray(metrics[name], np.float64).reshape(sweep.num_points, num_seeds, -1)
    values = values.mean(axis=2)
    for rest, idx in groups.items():
      idx = sorted(idx, key=lambda v: sweep.points[v][0])
      x = xs_all[idx]
      mean_half = [stats.mean_ci(values[v][np.isfinite(values[v])]) if np.isfinite(values[v]).any()
                   else (np.nan, np.nan) for v in idx]
      mean = np.asarray([m for m, _ in mean_half])
      half = np.asarray([h if num_seeds > 1 else 0.0 for _, h in mean_half])
      label = ",".join(f"{n}={r:g}" for n, r in zip(sweep.names[1:], rest)) or None
      line = plots._line_and_band(ax, x, mean, mean - half, mean + half, marker="o", lw=1.2,  # noqa: SLF001
                                  label=label)
      for xi, v in zip(x, idx):
        ax.scatter(np.full(num_seeds, xi), values[v], s=9, color=line.get_color(), alpha=0.6)
    positive = np.all(xs_all > 0)
    if positive and xs_all.max() / xs_all.min() >= 9.99:
      ax.set_xscale("log")
    ax.set_xlabel(sweep.names[0])
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
    if len(groups) > 1:
      ax.legend(fontsize=8)
  fig.suptitle(title or f"final value vs {sweep.names[0]}: mean, 95 % CI over {num_seeds} "
               f"seed{'s' if num_seeds != 1 else ''}, dots = seeds", fontsize=10)
  return plots.save(fig, path)


def grid_points(sweep: Sweep) -> Sequence[dict]:
  """The grid as [{name: value}] (one dict per point), e.g. for separate reference runs."""
  return [dict(zip(sweep.names, p)) for p in sweep.points]


def figures(result, summarize, out_dir: str) -> list[str]:
  """``sweep.png`` of a sweep run: its results metrics (``summarize``'s, else the final
  evaluation) against the swept values."""
  import os  # noqa: PLC0415
  metrics = summarize(result)[0] if summarize is not None else dict(result.final)
  metrics = {k: v for k, v in metrics.items()
             if np.asarray(v).shape[:1] == (result.placement.num_cells,)}
  if not metrics:
    return []
  return [plot(os.path.join(out_dir, SWEEP_FILE), result.placement.sweep, metrics,
               result.placement.num_seeds)]


def result_keys(results: dict, metric: str) -> list[tuple[str, str]]:
  """[(results.json key, label suffix)] of ``metric``: itself, or one per sweep point
  (``test_neg_elbo[learning_rate=0.001]``, `` [learning_rate=0.001]``)."""
  grid = results.get("extra", {}).get("sweep")
  if not grid:
    return [(metric, "")]
  sweep = Sweep(tuple(grid["names"]), tuple(tuple(p) for p in grid["points"]))
  return [(f"{metric}[{sweep.point_label(v)}]", f" [{sweep.point_label(v)}]")
          for v in range(sweep.num_points)]
