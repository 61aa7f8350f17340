"""What the runner runs: an ``Experiment`` (the per-seed functions with their schedule,
report and figures) and what it gives back (``RunResult``), plus the checks and helpers every
experiment shares: one trace per run, the seed loop, a seed's slice of a stacked state."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np

from genrl_jax.run.placement import SeedPlacement


@dataclasses.dataclass(frozen=True, kw_only=True)
class Experiment:
  """What the runner needs to know about an experiment.

  Attributes:
    name: short name, used in logs, run_info.json and results.json (set from the ``Spec``).
    init: (key, data) -> state, for one seed.
    chunk: (state, data) -> (state, metrics), for one seed; metrics is a dict of scalars (or small
      arrays, e.g. one value per update in the chunk).
    num_chunks: how many chunks make the whole run.
    data: pytree of device arrays shared by every seed (passed as an argument, never closed
      over, so it is not baked into the compiled program as a constant).
    evaluate: (state, data) -> {name: scalar} for one seed, jitted over the seeds like the chunk:
      run once at the end (``RunResult.final``) and, with ``evaluate_every=K``, after every K-th
      chunk (its values join that chunk's metrics as ``eval_<name>``).
    evaluate_every: see ``evaluate``; 0 = only at the end.
    evaluate_cost: the final evaluation's cost in chunks, for the estimate printed before it.
    summarize: (RunResult) -> (per-seed metrics {name: [n_seeds]}, extra {...}) for results.json;
      default: the final evaluation's values, no extra.
    after_chunk: (ChunkEnd) -> None, after every chunk's metrics and checkpoint (and once with
      ``done=0`` before the first chunk of a fresh run), e.g. sample grids at chosen chunks.
    figures: (RunResult, out_dir) -> [paths], after results.json (replay calls it too).
    chunk_label: what a chunk is called in the progress line ("epoch", "update"; set from the
      ``Spec``).
    progress: (metric key, label) pairs shown as mean ± 95 % CI over seeds.
    finite_key: the metric whose NaN/Inf stops the run.
    units_per_chunk: work units per chunk per seed (examples, env steps) for the throughput.
    units_label: their label in the progress line, e.g. "ex/s".
    resume_may_change: config keys that may differ when resuming (e.g. the number of epochs).
    compiler_options: XLA options for the compilations (``jax.jit``'s ``compiler_options``),
      e.g. a lower LLVM optimization level on CPU for faster compiles.
    uses_seed_axis: the chunk calls collectives over SEED_AXIS (e.g. one decision for all
      seeds of a lockstep loop), which only the "vmap" seed loop binds: --seed_loop=auto then
      means vmap on every backend (``seed_loop_for``).
    sweepable: a ``sweep.Sweepable`` (the config and its hparams -> Train) for in-program
      ``--sweep`` runs, or None.
    spec: the module whose ``SPEC`` rebuilds this run (``genrl_jax.run.spec``; set by it),
      recorded in run_info.json for replay.
  """
  name: str = "experiment"
  init: Callable[[jax.Array, Any], Any]
  chunk: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]
  num_chunks: int
  data: Any = None
  evaluate: Callable[[Any, Any], dict[str, jax.Array]] | None = None
  evaluate_every: int = 0
  evaluate_cost: float | None = None
  summarize: Callable[["RunResult"], tuple[dict[str, Any], dict]] | None = None
  after_chunk: Callable[["ChunkEnd"], None] | None = None
  figures: Callable[["RunResult", str], Sequence[str]] | None = None
  chunk_label: str = "epoch"
  progress: Sequence[tuple[str, str]] = ()
  finite_key: str | None = "loss"
  units_per_chunk: int | None = None
  units_label: str = "units/s"
  resume_may_change: Sequence[str] = ("checkpoint_every",)
  compiler_options: dict[str, Any] | None = None
  uses_seed_axis: bool = False
  sweepable: Any = None
  spec: str | None = None


@dataclasses.dataclass
class ChunkEnd:
  """What an ``after_chunk`` hook sees: chunk ``done`` (0 = before the first) has just ended."""
  done: int
  state: Any
  metrics: dict[str, np.ndarray]
  workdir: str | None
  placement: SeedPlacement
  data: Any


@dataclasses.dataclass
class RunResult:
  """The outcome of ``run``.

  Attributes:
    state: final state stacked over seeds.
    history: one dict of [n_seeds] arrays per chunk (restored chunks included).
    seeds: [n_seeds] seed values.
    chunk_seconds: wall time of each chunk run in this process.
    workdir: where the run lives, or None.
    final: the final evaluation, {name: [n_seeds]} (empty without ``evaluate``).
    eval_seconds: its wall time.
    results: what results.json holds.
    placement: the run's seeds and devices.
    config: the flags of the run.
  """
  state: Any
  history: list[dict[str, np.ndarray]]
  seeds: np.ndarray
  chunk_seconds: list[float]
  workdir: str | None
  final: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  eval_seconds: float = 0.0
  results: dict | None = None
  placement: SeedPlacement | None = None
  config: dict | None = None


def trace_once(fn: Callable) -> Callable:
  """Wraps ``fn`` so that a second trace raises: one compile per run, proven at run time.

  (chex.assert_max_traces counts per function object across the whole process, which would trip
  on a second run of the same experiment in one process; this counter is per run.)
  """
  count = [0]

  def wrapped(*args):
    count[0] += 1
    if count[0] > 1:
      raise RetraceError(
          f"{getattr(fn, '__name__', 'chunk')} was traced {count[0]} times: the state's shapes or "
          "dtypes changed between chunks (e.g. a Python scalar became an array, or int became "
          "float); make init return exactly what chunk returns")
    return fn(*args)

  wrapped.trace_count = count
  return wrapped


class RetraceError(RuntimeError):
  """The chunk function was traced more than once in one run."""


def seed_loop_for(exp: Experiment, seed_loop: str | None) -> str:
  """The seed loop a run of ``exp`` uses: the one asked for; "auto" is vmap for an experiment
  that ``uses_seed_axis`` and otherwise ``devices.resolve_seed_loop``'s choice (map on a CPU,
  vmap on accelerators); None (a library call that names none) is vmap."""
  if seed_loop is None:
    return "vmap"
  if seed_loop == "auto" and exp.uses_seed_axis:
    return "vmap"
  return seed_loop


def stack_history(history: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
  """[n_chunks, n_seeds, ...] array of one metric over the run."""
  return np.stack([np.asarray(h[key]) for h in history if key in h])


def unstack_seed(tree, i: int):
  """Seed i's slice of a state stacked over seeds."""
  return jax.tree.map(lambda x: x[i], tree)
