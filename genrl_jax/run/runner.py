"""The experiment runner: seeds vmapped, one jitted chunk compiled once, checkpoints, metrics.

An experiment is two pure functions of ONE seed (PureJaxRL's ``make_train`` shape, split so the
loop can stop between chunks):

    init(key, data) -> state
    chunk(state, data) -> (state, metrics)      # one epoch, or K updates, as a lax.scan

The runner calls ``jit(vmap(init))`` and ``jit(vmap(chunk, in_axes=(0, None)))`` — N seeds, one
compile — and between chunks does what a jitted loop cannot: write metrics, print progress,
checkpoint, stop on NaN, resume. Seed i's root key is ``jax.random.key(seed + i)``, so seed i of
an N-seed run is the same computation as a 1-seed run with ``--seed=seed+i``.

The seeds' vmap axis is named ``SEED_AXIS``, so a chunk may use a collective over it where that
saves work without coupling the seeds' results: e.g. a ``while_loop`` that runs until the slowest
seed is done (``jax.lax.pmax`` of the condition) instead of per-seed selects of its whole carry.
An experiment without such collectives may set ``seed_loop="auto"``: on a CPU each device then
runs its seeds one after another (``lax.map``), which is faster there (``devices.over_seeds``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax.run import devices as devices_lib
from genrl_jax.run import stats
from genrl_jax.run.checkpoint import Checkpointer
from genrl_jax.run.errors import TrainingDiverged, UserError
from genrl_jax.run import info as run_info_lib

METRICS_FILE = "metrics.jsonl"
RUN_INFO_FILE = "run_info.json"
CHECKPOINT_DIR = "checkpoints"
SEED_AXIS = devices_lib.SEED_AXIS  # the name of the vmapped seed axis inside init and chunk


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What the runner needs to know about an experiment.

  Attributes:
    name: short name, used in logs.
    init: (key, data) -> state, for one seed.
    chunk: (state, data) -> (state, metrics), for one seed; metrics is a dict of scalars (or small
      arrays, e.g. one value per update in the chunk).
    num_chunks: how many chunks make the whole run.
    data: pytree of device arrays shared by every seed (passed as an argument, never closed
      over, so it is not baked into the compiled program as a constant).
    chunk_label: what a chunk is called in the progress line ("epoch", "update").
    progress: (metric key, label) pairs shown as mean ± 95 % CI over seeds.
    finite_key: the metric whose NaN/Inf stops the run.
    units_per_chunk: work units per chunk per seed (examples, env steps) for the throughput.
    units_label: their label in the progress line, e.g. "ex/s".
    resume_may_change: config keys that may differ when resuming (e.g. the number of epochs).
    compiler_options: XLA options for the init and chunk compilations (``jax.jit``'s
      ``compiler_options``), e.g. a lower LLVM optimization level on CPU for faster compiles.
    seed_loop: how each device runs its seeds: "vmap" (batched; SEED_AXIS bound for
      collectives), "map" (one after another) or "auto" (map on CPU, vmap on accelerators);
      see ``devices.over_seeds``. Only "vmap" allows collectives over SEED_AXIS.
  """
  name: str
  init: Callable[[jax.Array, Any], Any]
  chunk: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]
  num_chunks: int
  data: Any = None
  chunk_label: str = "epoch"
  progress: Sequence[tuple[str, str]] = ()
  finite_key: str | None = "loss"
  units_per_chunk: int | None = None
  units_label: str = "units/s"
  resume_may_change: Sequence[str] = ("checkpoint_every",)
  compiler_options: dict[str, Any] | None = None
  seed_loop: str = "vmap"


@dataclasses.dataclass
class RunResult:
  """state: final state stacked over seeds; history: one dict of [n_seeds] arrays per chunk."""
  state: Any
  history: list[dict[str, np.ndarray]]
  seeds: np.ndarray
  chunk_seconds: list[float]
  workdir: str | None


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
  """Typed root keys key(seed), key(seed + 1), ... — one per vmapped seed."""
  return jax.vmap(jax.random.key)(jnp.arange(seed, seed + num_seeds, dtype=jnp.uint32))


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


def _format_duration(seconds: float) -> str:
  if seconds < 90:
    return f"{seconds:.0f} s"
  if seconds < 5400:
    return f"{seconds / 60:.1f} min"
  return f"{seconds / 3600:.1f} h"


def _format_number(x: float) -> str:
  if not math.isfinite(x):
    return str(x)
  if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
    return f"{x:.3g}"
  return f"{x:.4g}" if abs(x) < 100 else f"{x:.1f}"


def _format_half_width(x: float) -> str:
  if not math.isfinite(x):
    return str(x)
  return f"{x:.2g}" if x < 10 else f"{x:.0f}"


def progress_line(exp: Experiment, chunk_index: int, metrics: dict[str, np.ndarray],
                  seconds: float, eta: float | None) -> str:
  """e.g. ``epoch 3/10 | -elbo 104.2 ± 0.3 | test -elbo 103.9 ± 0.4 | 2.1 s/epoch | ETA 15 s``."""
  parts = [f"{exp.chunk_label} {chunk_index}/{exp.num_chunks}"]
  for key, label in exp.progress:
    if key not in metrics:
      continue
    per_seed = np.asarray(metrics[key], dtype=np.float64).reshape(len(metrics[key]), -1)
    per_seed = np.nanmean(per_seed, axis=1) if per_seed.shape[1] else per_seed[:, 0]
    if np.all(np.isnan(per_seed)):
      parts.append(f"{label} n/a")
      continue
    per_seed = per_seed[~np.isnan(per_seed)]
    mean, half = stats.mean_ci(per_seed)
    parts.append(f"{label} {_format_number(mean)} ± {_format_half_width(half)}"
                 if len(per_seed) > 1 else f"{label} {_format_number(mean)}")
  if exp.units_per_chunk:
    n_seeds = len(next(iter(metrics.values()))) if metrics else 1
    parts.append(f"{_format_number(exp.units_per_chunk * n_seeds / seconds)} {exp.units_label}")
  parts.append(f"{seconds:.1f} s/{exp.chunk_label}")
  if eta is not None:
    parts.append(f"ETA {_format_duration(eta)}")
  return " | ".join(parts)


def _to_host(metrics) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}


def _jsonable(x):
  x = np.asarray(x)
  if x.ndim == 0:
    v = x.item()
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)
  return [_jsonable(v) for v in x]


class MetricsLog:
  """workdir/metrics.jsonl: one line per (chunk, seed). Lines of chunks past a resumed checkpoint
  are dropped on resume (they are recomputed bit for bit), never earlier ones."""

  def __init__(self, path: str):
    self.path = path

  def read(self) -> list[dict]:
    if not os.path.exists(self.path):
      return []
    rows = []
    with open(self.path) as f:
      for line in f:
        line = line.strip()
        if not line:
          continue
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          break  # a line cut by a kill: everything after it is recomputed.
    return rows

  def keep_until(self, chunk: int) -> list[dict]:
    """Rewrites the file with the rows of chunks <= ``chunk`` (atomically) and returns them."""
    rows = [r for r in self.read() if r.get("chunk", 0) <= chunk]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")
    os.replace(tmp, self.path)
    return rows

  def append(self, chunk: int, seeds: np.ndarray, metrics: dict[str, np.ndarray],
             seconds: float) -> None:
    with open(self.path, "a") as f:
      for i, seed in enumerate(seeds):
        row = {"chunk": chunk, "seed": int(seed), "seconds": round(seconds, 4)}
        row.update({k: _jsonable(v[i]) for k, v in metrics.items()})
        f.write(json.dumps(row) + "\n")


def history_from_rows(rows: list[dict], seeds: np.ndarray, upto: int) -> list[dict[str, np.ndarray]]:
  """Rebuilds per-chunk [n_seeds] arrays for chunks 1..upto from metrics.jsonl rows."""
  by_chunk: dict[int, dict[int, dict]] = {}
  for r in rows:
    by_chunk.setdefault(r["chunk"], {})[r["seed"]] = r
  history = []
  for c in range(1, upto + 1):
    per_seed = by_chunk.get(c, {})
    keys = [k for k in (next(iter(per_seed.values())) if per_seed else {})
            if k not in ("chunk", "seed", "seconds")]
    entry = {}
    for k in keys:
      try:
        entry[k] = np.asarray([np.asarray(per_seed[int(s)][k], dtype=np.float64) for s in seeds])
      except (KeyError, ValueError, TypeError):
        continue
    history.append(entry)
  return history


def _check_config(workdir: str, exp: Experiment, config: dict | None, seed: int,
                  num_seeds: int) -> None:
  """A workdir holds one run: resuming with other flags would silently mix two experiments."""
  path = os.path.join(workdir, RUN_INFO_FILE)
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, json.JSONDecodeError):
    return
  saved_config = dict(saved.get("config") or {})
  saved_config.update(seeds=saved.get("seeds"), seed=saved.get("seed"))
  current = dict(config or {})
  current.update(seeds=num_seeds, seed=seed)
  ignore = set(exp.resume_may_change) | {"workdir"}
  diffs = [f"--{k}={saved_config.get(k)!r} there, {current.get(k)!r} now"
           for k in sorted(set(saved_config) | set(current))
           if k not in ignore and _jsonable_eq(saved_config.get(k), current.get(k)) is False]
  if diffs:
    raise UserError(
        f"{workdir} holds a run with other flags ({'; '.join(diffs[:4])}); rerun with the same "
        "flags to resume it, or pass a new --workdir")


def _jsonable_eq(a, b) -> bool:
  return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


class _StopRequest:
  """SIGINT between chunks: finish the chunk in flight, checkpoint, stop. A second ^C is hard."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    def handler(signum, frame):
      if self.requested:
        raise KeyboardInterrupt
      self.requested = True
      print("\ninterrupt: stopping after this chunk (press ^C again to abort now)", flush=True)
    try:
      self._previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
      self._previous = None
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)


def run(exp: Experiment, *, seeds: int, seed: int = 0, workdir: str | None = None,
        checkpoint_every: int = 1, keep_checkpoints: int = 3, config: dict | None = None,
        log: Callable[[str], None] = lambda s: print(s, flush=True)) -> RunResult:
  """Runs ``exp`` for ``seeds`` vmapped seeds, resuming from ``workdir`` when it holds a checkpoint.

  Args:
    exp: the experiment.
    seeds: number of seeds vmapped in one program.
    seed: the first seed; seed i uses key(seed + i).
    workdir: where metrics, run info and checkpoints go; None runs in memory only.
    checkpoint_every: checkpoint every this many chunks (the last chunk is always saved).
    keep_checkpoints: how many recent checkpoints to keep.
    config: the flags, saved in run_info.json and compared on resume.
    log: where progress lines go.
  Returns:
    RunResult with the final stacked state and the per-chunk metrics history.
  """
  if seeds < 1:
    raise UserError(f"--seeds must be >= 1, got {seeds}")
  if checkpoint_every < 1:
    raise UserError(f"--checkpoint_every must be >= 1, got {checkpoint_every}")
  if exp.num_chunks < 1:
    raise UserError(f"nothing to run: {exp.num_chunks} {exp.chunk_label}s; pass a positive count")
  seed_values = np.arange(seed, seed + seeds)

  # The seed axis is split over the local devices (when more than one divides it); data is
  # replicated. One program per run either way.
  by_seed, replicated = devices_lib.seed_shardings(seeds)
  place = lambda tree, sharding: tree if sharding is None else jax.device_put(tree, sharding)
  data = place(exp.data, replicated)
  init = jax.jit(devices_lib.over_seeds(exp.init, exp.seed_loop, by_seed),
                 compiler_options=exp.compiler_options,
                 **({} if by_seed is None else {"out_shardings": by_seed}))
  state = init(place(seed_keys(seed, seeds), by_seed), data)

  start = 0
  checkpointer = metrics_log = None
  history: list[dict[str, np.ndarray]] = []
  if workdir:
    try:
      os.makedirs(workdir, exist_ok=True)
    except OSError as e:
      raise UserError(f"cannot create --workdir {workdir}: {e.strerror}; pass a writable path")
    _check_config(workdir, exp, config, seed, seeds)
    checkpointer = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), keep=keep_checkpoints)
    metrics_log = MetricsLog(os.path.join(workdir, METRICS_FILE))
    if checkpointer.latest_step() is not None:
      state, start = checkpointer.restore(template=state)
      state = place(state, by_seed)
      log(f"resuming {exp.name} from {exp.chunk_label} {start}/{exp.num_chunks} in {workdir}")
    rows = metrics_log.keep_until(start)
    history = history_from_rows(rows, seed_values, start)
    run_info_lib.write(os.path.join(workdir, RUN_INFO_FILE), exp.name, config, seed, seeds,
                       resumed_from=start)

  shardings = {} if by_seed is None else {"in_shardings": (by_seed, replicated),
                                           "out_shardings": by_seed}
  chunk_fn = jax.jit(devices_lib.over_seeds(trace_once(exp.chunk), exp.seed_loop, by_seed),
                     donate_argnums=0, compiler_options=exp.compiler_options, **shardings)

  chunk_seconds: list[float] = []
  last_saved = start
  try:
    with _StopRequest() as stop:
      for index in range(start, exp.num_chunks):
        t0 = time.perf_counter()
        state, metrics = chunk_fn(state, data)
        metrics = _to_host(metrics)  # the one host transfer per chunk; also a sync point.
        seconds = time.perf_counter() - t0
        chunk_seconds.append(seconds)
        done = index + 1
        if metrics_log is not None:
          metrics_log.append(done, seed_values, metrics, seconds)
        history.append(metrics)

        if exp.finite_key is not None and exp.finite_key in metrics:
          values = np.asarray(metrics[exp.finite_key]).reshape(seeds, -1)
          bad = ~np.all(np.isfinite(values), axis=1)
          if bad.any():
            where = (f"; the last good checkpoint ({exp.chunk_label} {last_saved}) is kept in "
                     f"{checkpointer.directory}" if checkpointer and last_saved else "")
            raise TrainingDiverged(
                f"{exp.name}: {exp.finite_key} is NaN/Inf for seed(s) "
                f"{', '.join(str(s) for s in seed_values[bad])} at {exp.chunk_label} {done}"
                f"{where}; lower the learning rate or check the data")

        steady = chunk_seconds[1:] or chunk_seconds
        eta = float(np.mean(steady)) * (exp.num_chunks - done) if done < exp.num_chunks else None
        line = progress_line(exp, done, metrics, seconds, eta)
        if index == start:
          line += " (includes compile)"
        log(line)

        if checkpointer is not None and (done % checkpoint_every == 0 or done == exp.num_chunks
                                         or stop.requested):
          checkpointer.save(done, state)
          last_saved = done
        if stop.requested and done < exp.num_chunks:
          if checkpointer is not None:
            checkpointer.wait()
            raise UserError(f"interrupted after {exp.chunk_label} {done}; checkpoint saved in "
                            f"{checkpointer.directory}: rerun the same command to resume")
          raise UserError(f"interrupted after {exp.chunk_label} {done} (no --workdir: nothing saved)")
    if start >= exp.num_chunks:
      log(f"{exp.name}: all {exp.num_chunks} {exp.chunk_label}s already done in {workdir}")
  finally:
    if checkpointer is not None:
      checkpointer.close()
  return RunResult(state=state, history=history, seeds=seed_values, chunk_seconds=chunk_seconds,
                   workdir=workdir)


def stack_history(history: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
  """[n_chunks, n_seeds, ...] array of one metric over the run."""
  return np.stack([np.asarray(h[key]) for h in history if key in h])


def unstack_seed(tree, i: int):
  """Seed i's slice of a state stacked over seeds."""
  return jax.tree.map(lambda x: x[i], tree)
