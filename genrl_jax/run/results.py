"""results.json: one schema for every experiment, ``{experiment, config, seeds, metrics: {name:
{per_seed, mean, ci95_half_width, iqm}}, extra}``, written atomically."""

from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from genrl_jax.run import stats
from genrl_jax.run import sweep as sweep_lib
from genrl_jax.run.metrics_log import jsonable
from genrl_jax.run.workdir import RESULTS_FILE

if TYPE_CHECKING:
  from genrl_jax.run.experiment import Experiment, RunResult


SCHEMA_KEYS = ("experiment", "config", "seeds", "metrics", "extra")
SUMMARY_KEYS = ("per_seed", "mean", "ci95_half_width", "iqm")


def read(path: str) -> dict:
  """A results.json, any experiment's (the studies' too: their tables are its ``extra``), after
  checking the schema; damage or another layout is one ``UserError`` naming the file."""
  from genrl_jax.errors import UserError  # noqa: PLC0415
  from genrl_jax.run import files  # noqa: PLC0415
  try:
    doc = files.read_json(path, "the run's results")
  except files.DamagedFile as e:
    raise UserError(str(e)) from None
  if set(doc) != set(SCHEMA_KEYS):
    raise UserError(f"{path} has keys {sorted(doc)}, not the results schema's "
                    f"{list(SCHEMA_KEYS)}; was it written by another program?")
  for name, s in doc["metrics"].items():
    if not isinstance(s, dict) or set(s) != set(SUMMARY_KEYS) or len(s["per_seed"]) != len(
        doc["seeds"]):
      raise UserError(f"{path}: metric {name!r} is not a summary {{{', '.join(SUMMARY_KEYS)}}} "
                      f"over its {len(doc['seeds'])} seeds")
  return doc


def summary(values) -> dict:
  """{per_seed, mean, ci95_half_width, iqm} of a per-seed value: results.json's one schema."""
  x = np.asarray(values, dtype=np.float64).reshape(-1)
  finite = x[np.isfinite(x)]
  mean, half = stats.mean_ci(finite) if finite.size else (float("nan"), float("nan"))
  iqm = float(stats.iqm(finite)) if finite.size else float("nan")
  clean = lambda v: v if math.isfinite(v) else None
  return {"per_seed": [clean(float(v)) for v in x], "mean": clean(mean),
          "ci95_half_width": clean(half), "iqm": clean(iqm)}


def results_document(name: str, config: dict | None, seeds: np.ndarray,
                     metrics: dict[str, Any], extra: dict | None = None) -> dict:
  """results.json: ``{experiment, config, seeds, metrics: {name: summary}, extra}``."""
  return {"experiment": name, "config": config or {}, "seeds": [int(s) for s in seeds],
          "metrics": {k: summary(v) for k, v in metrics.items()},
          "extra": extra or {}}


def write_json(path: str, document: dict) -> str:
  """Writes ``document`` to ``path`` atomically (a temporary file, then a rename)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(document, f, indent=2, default=_json_default)
  os.replace(tmp, path)
  return path


def _json_default(x):
  if isinstance(x, (np.generic, np.ndarray)):
    return jsonable(x)
  return str(x)


def write_results(exp: Experiment, result: RunResult, out_dir: str | None) -> dict:
  """results.json (the one schema) from the experiment's ``summarize`` (default: ``final``)."""
  if exp.summarize is not None:
    metrics, extra = exp.summarize(result)
  else:
    metrics, extra = dict(result.final), {}
  extra = {**extra, "chunks_done": len(result.history),
           "eval_seconds": round(result.eval_seconds, 2),
           "chunk_seconds": [round(s, 3) for s in result.chunk_seconds]}
  placement = result.placement
  seeds = result.seeds
  if placement is not None and placement.sweep is not None:  # one entry per metric and point
    extra["sweep"] = sweep_lib.results_extra(placement.sweep, placement.seed_values)
    extra["sweep"]["per_cell"] = {k: summary(v)["per_seed"] for k, v in metrics.items()}
    metrics = sweep_lib.split_metrics(metrics, placement.sweep, placement.num_seeds)
    seeds = placement.seed_values
  document = results_document(exp.name, result.config, seeds, metrics, extra)
  if out_dir:
    write_json(os.path.join(out_dir, RESULTS_FILE), document)
  return document
