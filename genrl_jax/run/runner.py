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

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import threading
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax.contract import SEED_AXIS, Train  # noqa: F401 (the runner's public names)
from genrl_jax.run import devices as devices_lib
from genrl_jax.run import distributed
from genrl_jax.run import files
from genrl_jax.run import info as run_info_lib
from genrl_jax.run import memory
from genrl_jax.run import stats
from genrl_jax.run import sweep as sweep_lib
from genrl_jax.run import workdir_lock
from genrl_jax.run.checkpoint import Checkpointer, StateMismatch
from genrl_jax.run.errors import Aborted, Interrupted, TrainingDiverged, UserError
from genrl_jax.run.placement import SeedPlacement, seed_keys
from genrl_jax.run.tensorboard import TensorBoardLog

METRICS_FILE = "metrics.jsonl"
RUN_INFO_FILE = "run_info.json"
CHECKPOINT_DIR = "checkpoints"
RESULTS_FILE = "results.json"
# Run-level flags that may differ on resume (the seed loop may change rounding, see WORKSPACE.md).
RUN_FLAGS_MAY_CHANGE = ("checkpoint_every", "keep_checkpoints", "keep_every", "seed_loop",
                        "coordinator_address", "num_processes", "process_id")


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What the runner needs to know about an experiment.

  Attributes:
    name: short name, used in logs, run_info.json and results.json.
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
    chunk_label: what a chunk is called in the progress line ("epoch", "update").
    progress: (metric key, label) pairs shown as mean ± 95 % CI over seeds.
    finite_key: the metric whose NaN/Inf stops the run.
    units_per_chunk: work units per chunk per seed (examples, env steps) for the throughput.
    units_label: their label in the progress line, e.g. "ex/s".
    resume_may_change: config keys that may differ when resuming (e.g. the number of epochs).
    compiler_options: XLA options for the compilations (``jax.jit``'s ``compiler_options``),
      e.g. a lower LLVM optimization level on CPU for faster compiles.
    seed_loop: how each device runs its seeds: "vmap" (batched; SEED_AXIS bound for
      collectives), "map" (one after another) or "auto" (map on CPU, vmap on accelerators);
      see ``devices.over_seeds``. Only "vmap" allows collectives over SEED_AXIS.
    sweepable: a ``sweep.Sweepable`` (the config and its hparams -> Train) for in-program
      ``--sweep`` runs, or None.
  """
  name: str
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
  seed_loop: str = "vmap"
  sweepable: Any = None


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


def _format_duration(seconds: float) -> str:
  if seconds < 1:
    return "<1 s"
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
  are dropped on resume (they are recomputed bit for bit), never earlier ones. Each line also
  goes to workdir/tensorboard/seed_<s>/ (``genrl_jax.run.tensorboard``)."""

  def __init__(self, path: str, tensorboard: TensorBoardLog | None = None):
    self.path = path
    self.tensorboard = tensorboard  # the same lines as TensorBoard events, one run per seed

  def read(self) -> list[dict]:
    """The rows; a last line cut by a kill is dropped (its chunk is recomputed). Damage further
    up (an edited line, a row without its chunk and seed) is one warning, and the rows before
    it are used; ``damaged`` is then True."""
    self.damaged = False
    try:
      rows = files.read_jsonl(self.path, "the run's metrics")
    except files.DamagedFile as e:
      rows, self.damaged = e.partial or [], True
      print(f"warning: {e}; the {len(rows)} rows before it are used", flush=True)
    for i, r in enumerate(rows):
      if not all(isinstance(r.get(k), int) for k in ("chunk", "seed")):
        print(f"warning: {self.path} (the run's metrics) row {i + 1} has no integer chunk and "
              f"seed; the {i} rows before it are used", flush=True)
        rows, self.damaged = rows[:i], True
        break
    return rows

  def keep_until(self, chunk: int) -> list[dict]:
    """Rewrites the file with the rows of chunks <= ``chunk`` (atomically) and returns them. A
    damaged file is first kept beside it as ``metrics.jsonl.damaged``: nothing is lost."""
    rows = [r for r in self.read() if r["chunk"] <= chunk]
    if self.damaged:
      shutil.copy2(self.path, self.path + ".damaged")
      print(f"warning: the damaged file is kept as {self.path}.damaged", flush=True)
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")
    os.replace(tmp, self.path)
    return rows

  def append(self, chunk: int, seeds: np.ndarray, metrics: dict[str, np.ndarray],
             seconds: float, cells: list[dict] | None = None) -> None:
    """One row per seed; with a sweep (``cells``: one dict per cell) each row also carries its
    cell index and swept values."""
    with open(self.path, "a") as f:
      for i, seed in enumerate(seeds):
        row = {"chunk": chunk, "seed": int(seed), **(cells[i] if cells else {}),
               "seconds": round(seconds, 4)}
        row.update({k: _jsonable(v[i]) for k, v in metrics.items()})
        f.write(json.dumps(row) + "\n")
    if self.tensorboard is not None:
      names = None if not cells else _cell_names(cells, seeds)
      self.tensorboard.append(chunk, seeds, metrics, seconds, **({"names": names} if names else {}))

  def close(self) -> None:
    if self.tensorboard is not None:
      self.tensorboard.close()


def _cell_names(cells: list[dict], seeds) -> list[str]:
  """TensorBoard run names of sweep cells: ``learning_rate-0.001_seed_3``."""
  return ["_".join(f"{k}-{v:g}" for k, v in cell.items() if k != "cell") + f"_seed_{int(s)}"
          for cell, s in zip(cells, seeds)]


def history_from_rows(rows: list[dict], seeds: np.ndarray, upto: int,
                      cells: list[dict] | None = None) -> list[dict[str, np.ndarray]]:
  """Rebuilds per-chunk [n_seeds] arrays for chunks 1..upto from metrics.jsonl rows (with a
  sweep, [n_cells] arrays, the rows matched by their ``cell``)."""
  by_chunk: dict[int, dict[int, dict]] = {}
  for r in rows:
    by_chunk.setdefault(r["chunk"], {})[r["cell"] if cells else r["seed"]] = r
  ids = [c["cell"] for c in cells] if cells else [int(s) for s in seeds]
  labels = set(cells[0]) if cells else set()
  history = []
  for c in range(1, upto + 1):
    per_seed = by_chunk.get(c, {})
    keys = [k for k in (next(iter(per_seed.values())) if per_seed else {})
            if k not in ("chunk", "seed", "seconds") and k not in labels]
    entry = {}
    for k in keys:
      try:
        entry[k] = np.asarray([np.asarray(per_seed[i][k], dtype=np.float64) for i in ids])
      except (KeyError, ValueError, TypeError):
        continue
    history.append(entry)
  return history


def check_workdir(workdir: str) -> None:
  """A usable --workdir, checked before anything slow (data loading, compiling) starts."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir={workdir} is a file, not a directory; pass a directory path")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create --workdir {workdir}: {e.strerror}; pass a writable path")
  if not os.access(workdir, os.W_OK):
    raise UserError(f"--workdir={workdir} is not writable; pass a writable path")


def read_run_info(workdir: str) -> dict | None:
  """The run_info.json of ``workdir``, or None when there is none. A damaged one (not JSON, not
  an object, a field of the wrong type) is refused in one line: it is written atomically, so
  damage means an edit, and rewriting it on resume would lose what it held."""
  path = os.path.join(workdir, RUN_INFO_FILE)
  try:
    info = files.read_json(path, "the run's flags and facts", missing_ok=True)
  except files.DamagedFile as e:
    raise UserError(f"{e}; restore it, or move it away to resume without comparing the flags "
                    "(the checkpoints' shapes are still checked)") from None
  if info is None:
    return None
  for key, kinds in (("experiment", (str,)), ("config", (dict,)), ("seeds", (int,)),
                     ("seed", (int,)), ("sessions", (list,))):
    if key in info and not isinstance(info[key], kinds) or isinstance(info.get(key), bool):
      raise UserError(f"{path}: {key!r} is {json.dumps(info[key])[:40]}, not a "
                      f"{kinds[0].__name__}; restore the file the run wrote, or move it away")
  return info


def check_resumable(workdir: str, name: str, config: dict | None, seed: int, num_seeds: int,
                    may_change: Sequence[str] = ()) -> None:
  """A workdir holds one run: resuming another experiment, or with other flags, is refused."""
  saved = read_run_info(workdir)
  if saved is None:
    return
  if saved.get("experiment") not in (None, name):
    raise UserError(f"{workdir} holds a {saved['experiment']!r} run, not a {name!r} one; pass "
                    f"another --workdir (e.g. runs/{name})")
  saved_config = dict(saved.get("config") or {})
  saved_config.update(seeds=saved.get("seeds"), seed=saved.get("seed"))
  current = dict(config or {})
  current.update(seeds=num_seeds, seed=seed)
  ignore = set(may_change) | set(RUN_FLAGS_MAY_CHANGE) | {"workdir"}
  # A flag the saved run does not have was added to the program after it started: not compared.
  diffs = [f"--{k}={saved_config.get(k)!r} there, {current.get(k)!r} now"
           for k in sorted(set(saved_config) & set(current) | {"seeds", "seed"})
           if k not in ignore and not _same_flag_value(saved_config.get(k), current.get(k))]
  if diffs:
    raise UserError(
        f"{workdir} holds a run with other flags ({'; '.join(diffs[:4])}); rerun with the same "
        "flags to resume it, or pass a new --workdir")


def _same_flag_value(a, b) -> bool:
  """Equal as JSON; an unset string flag (None) and an empty one ('') are the same."""
  a, b = ("" if a is None else a), ("" if b is None else b)
  return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


class _StopRequest:
  """SIGINT or SIGTERM: finish the chunk in flight, checkpoint, stop. A second ^C aborts.

  SIGTERM is what SLURM and preemptible cloud VMs send before they stop a job, so it is treated
  as the first ^C: the run ends at a chunk boundary with its checkpoint saved. A second ^C raises
  ``Aborted`` as soon as Python runs again (a computation in flight on the device finishes
  first), except inside ``saving()``: a checkpoint being handed to orbax is never cut, the abort
  waits for the end of that block.
  """
  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self, log: Callable[[str], None]):
    self.requested = False
    self._log = log
    self._previous = {}
    self._saving = False
    self._abort_pending = False

  @contextlib.contextmanager
  def saving(self):
    """A block a second ^C does not cut; the abort comes at its end."""
    self._saving = True
    try:
      yield
    finally:
      self._saving = False
    if self._abort_pending:
      raise Aborted("aborted by a second ^C")

  def __enter__(self):
    def handler(signum, frame):
      if self.requested and signum == signal.SIGINT:
        if self._saving:
          self._abort_pending = True
          return
        raise Aborted("aborted by a second ^C")
      self.requested = True
      name = signal.Signals(signum).name
      self._log(f"{name}: stopping after this chunk"
                + (" (press ^C again to abort now)" if signum == signal.SIGINT else ""))
    for sig in self.SIGNALS:
      try:
        self._previous[sig] = signal.signal(sig, handler)
      except ValueError:  # not the main thread
        pass
    return self

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)


@contextlib.contextmanager
def _signals_ignored():
  """SIGINT/SIGTERM ignored for a short block (a checkpoint's last write), in the main thread."""
  previous = {}
  for sig in (signal.SIGINT, signal.SIGTERM):
    try:
      previous[sig] = signal.signal(sig, signal.SIG_IGN)
    except ValueError:  # not the main thread
      pass
  try:
    yield
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)


HEARTBEAT_SECONDS = 10.0  # a line at least this often while a long phase runs


class _Heartbeat:
  """Prints a line every ``every`` seconds while a long phase (an evaluation) runs."""

  def __init__(self, what: str, log: Callable[[str], None], estimate: float | None,
               every: float | None = None):
    self._what, self._log, self._estimate = what, log, estimate
    self._every = HEARTBEAT_SECONDS if every is None else every
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._beat, daemon=True)
    self.t0 = time.perf_counter()

  def _beat(self):
    while not self._done.wait(self._every):
      elapsed = time.perf_counter() - self.t0
      tail = f" of ~{_format_duration(self._estimate)} estimated" if self._estimate else ""
      self._log(f"{self._what}: {_format_duration(elapsed)} elapsed{tail}")

  def __enter__(self):
    tail = f"; estimate ~{_format_duration(self._estimate)}" if self._estimate else ""
    self._log(f"{self._what}: started{tail}")
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._done.set()
    self._thread.join()


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
    return _jsonable(x)
  return str(x)


class Compiled:
  """The run's jitted programs over the seeds: init, chunk (compiled once, donated), evaluate."""

  def __init__(self, exp: Experiment, placement: SeedPlacement):
    self.placement = placement
    opts = exp.compiler_options
    init, chunk, evaluate_fn = exp.init, exp.chunk, exp.evaluate
    if placement.sweep is not None:  # the swept values are an argument of each cell's function
      train = exp.sweepable.train
      init = lambda key, data, hp: train(hp).init(key, data)
      chunk = lambda state, data, hp: train(hp).chunk(state, data)
      evaluate_fn = (lambda state, data, hp: train(hp).evaluate(state, data)) \
          if exp.evaluate is not None else None
    self.init = placement.jit(init, compiler_options=opts)
    self.chunk = placement.jit(trace_once(chunk), donate=True, compiler_options=opts)
    self.evaluate = (placement.jit(evaluate_fn, compiler_options=opts)
                     if evaluate_fn is not None else None)


def evaluate(compiled: Compiled, state, data) -> dict[str, np.ndarray]:
  """The experiment's evaluation of every seed, on the host as float64 [n_seeds] arrays."""
  out = compiled.placement.to_host(compiled.evaluate(state, data))
  return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def _restore_or_init(exp: Experiment, compiled: Compiled, data, workdir: str | None,
                     config: dict | None, keep_checkpoints: int, keep_every: int | None,
                     log: Callable[[str], None]):
  """(state, chunks done, checkpointer, metrics log, history): a fresh run or a resumed one."""
  placement = compiled.placement
  state = compiled.init(placement.keys(), data)
  if not workdir:
    return state, 0, None, None, []
  check_workdir(workdir)
  check_resumable(workdir, exp.name, config, placement.first_seed, placement.num_seeds,
                  exp.resume_may_change)
  checkpointer = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), keep=keep_checkpoints,
                              **({"keep_every": keep_every} if keep_every else {}))
  start = 0
  if checkpointer.latest_step() is not None:
    try:
      state, start = checkpointer.restore(template=state)
    except StateMismatch as e:
      raise UserError(e.describe(_mismatch_hint(e, placement, config))) from None
    state = placement.place_state(state)
    log(f"resuming {exp.name} from {exp.chunk_label} {start}/{exp.num_chunks} in {workdir}")
  if not distributed.is_main():  # multi-process: process 0 writes the run's files
    rows = [r for r in MetricsLog(os.path.join(workdir, METRICS_FILE)).read()
            if r.get("chunk", 0) <= start]
    return state, start, checkpointer, None, history_from_rows(
        rows, placement.seeds, start, placement.cell_labels())
  metrics_log = MetricsLog(os.path.join(workdir, METRICS_FILE),
                           TensorBoardLog(workdir, resume_from=start))
  rows = metrics_log.keep_until(start)
  history = history_from_rows(rows, placement.seeds, start, placement.cell_labels())
  run_info_lib.write(os.path.join(workdir, RUN_INFO_FILE), exp.name, config,
                     placement.first_seed, placement.num_seeds, resumed_from=start,
                     placement=placement.describe())
  return state, start, checkpointer, metrics_log, history


def _mismatch_hint(error: StateMismatch, placement: SeedPlacement, config: dict | None) -> str:
  """Which flag most likely made the saved state's shapes differ: ``--seeds`` when only the
  leading (seed) axis differs, else the flags whose value is one of the new sizes."""
  pairs = [(saved[0], now[0]) for _, saved, now in error.differences if saved and now]
  if pairs and len(pairs) == len(error.differences) and all(
      len(a) == len(b) and a and a[1:] == b[1:] and a[0] != b[0] for a, b in pairs):
    what = "--seeds (or --sweep)" if placement.sweep is not None else "--seeds"
    return f" ({pairs[0][0][0]} seeds there, {placement.num_cells} now: {what} differs)"
  sizes = {b[i] for a, b in pairs if len(a) == len(b) for i in range(len(a)) if a[i] != b[i]}

  def values(v):
    items = v if isinstance(v, (list, tuple)) else [v]
    return {int(x) for x in items if isinstance(x, int) and not isinstance(x, bool)
            or isinstance(x, str) and x.isdigit()}
  named = [f"--{k}" for k, v in sorted((config or {}).items())
           if k not in ("seeds", "seed") and values(v) & sizes]
  if named:
    return f" (sizes {sorted(sizes)} now come from {' or '.join(named[:3])}, which differs)"
  return " (a flag that sets sizes or layers differs)"


def _who(placement: SeedPlacement, bad: np.ndarray) -> list[str]:
  """The seeds (with a sweep: the cells, e.g. ``learning_rate-0.1_seed_2``) where ``bad``."""
  if placement.sweep is None:
    return [str(s) for s in placement.seeds[bad]]
  names = placement.sweep.cell_names(placement.seed_values)
  return [n for n, b in zip(names, bad) if b]


def _check_finite(exp: Experiment, metrics: dict[str, np.ndarray], done: int,
                  placement: SeedPlacement, checkpointer: Checkpointer | None,
                  last_saved: int) -> None:
  """Stops on a NaN/Inf ``finite_key``, naming the seeds; the last good checkpoint is kept."""
  if exp.finite_key is None or exp.finite_key not in metrics:
    return
  values = np.asarray(metrics[exp.finite_key]).reshape(placement.num_cells, -1)
  bad = ~np.all(np.isfinite(values), axis=1)
  if not bad.any():
    return
  if checkpointer is None:
    where = " (no --workdir: nothing was saved)"
  elif last_saved:
    where = (f"; the last good checkpoint ({exp.chunk_label} {last_saved}) is kept in "
             f"{checkpointer.directory}")
  else:
    where = "; no checkpoint exists yet (it diverged before the first one)"
  raise TrainingDiverged(
      f"{exp.name}: {exp.finite_key} is NaN/Inf for seed(s) "
      f"{', '.join(_who(placement, bad))} at {exp.chunk_label} {done}"
      f"{where}; lower the learning rate or check the data")


def _chunk_loop(exp: Experiment, compiled: Compiled, state, data, start: int,
                checkpointer: Checkpointer | None, metrics_log: MetricsLog | None,
                history: list, checkpoint_every: int, workdir: str | None,
                log: Callable[[str], None]):
  """Runs chunks start+1 .. num_chunks; after each: metrics, NaN check, progress, checkpoint,
  periodic evaluation, the after-chunk hook. Returns (state, chunk seconds)."""
  placement = compiled.placement
  chunk_seconds: list[float] = []
  last_saved = start
  if exp.after_chunk is not None and start == 0:
    _after_chunk(exp, ChunkEnd(0, state, {}, workdir, placement, data))
  with _StopRequest(log) as stop:
    for index in range(start, exp.num_chunks):
      t0 = time.perf_counter()
      state, metrics = compiled.chunk(state, data)
      metrics = _to_host(placement.to_host(metrics))  # the one host transfer per chunk.
      seconds = time.perf_counter() - t0
      chunk_seconds.append(seconds)
      done = index + 1
      if compiled.evaluate is not None and exp.evaluate_every and done % exp.evaluate_every == 0:
        metrics.update({f"eval_{k}": v for k, v in evaluate(compiled, state, data).items()})
      if metrics_log is not None:
        with stop.saving():  # (a second ^C never cuts a file write: not this, nor below)
          metrics_log.append(done, placement.seeds, metrics, seconds, placement.cell_labels())
      # float64, as the rows of metrics.jsonl read back: a resumed or replayed run summarizes
      # exactly the numbers a run that never stopped does.
      history.append({k: np.asarray(v, np.float64) for k, v in metrics.items()})
      _check_finite(exp, metrics, done, placement, checkpointer, last_saved)

      steady = chunk_seconds[1:] or chunk_seconds
      eta = float(np.mean(steady)) * (exp.num_chunks - done) if done < exp.num_chunks else None
      line = progress_line(exp, done, metrics, seconds, eta)
      log(line + (" (includes compile)" if index == start else ""))

      # Across processes the stop is agreed (any process signalled), so all stop at this chunk.
      stopping = distributed.any_process(stop.requested)
      if checkpointer is not None and (done % checkpoint_every == 0 or done == exp.num_chunks
                                       or stopping):
        with stop.saving():
          checkpointer.save(done, state)
        last_saved = done
      if exp.after_chunk is not None:
        with stop.saving():
          _after_chunk(exp, ChunkEnd(done, state, metrics, workdir, placement, data))
      if stopping and done < exp.num_chunks:
        if checkpointer is not None:
          with _signals_ignored():  # the stop is done once this save is: never cut it
            checkpointer.wait()
          raise Interrupted(f"stopped after {exp.chunk_label} {done}/{exp.num_chunks}; "
                            f"checkpoint saved in {checkpointer.directory}")
        raise Interrupted(f"stopped after {exp.chunk_label} {done} (no --workdir: nothing saved)")
  return state, chunk_seconds


def _after_chunk(exp: Experiment, end: ChunkEnd) -> None:
  """The hook; in a multi-process run on process 0 only, with the state gathered to the host."""
  if jax.process_count() > 1:
    end.state = end.placement.to_host(end.state)  # a collective: every process takes part
    if not distributed.is_main():
      return
  exp.after_chunk(end)


def final_evaluation(exp: Experiment, compiled: Compiled, state, data, chunk_seconds,
                      log: Callable[[str], None]) -> tuple[dict[str, np.ndarray], float]:
  """The final evaluation with a start line, an estimate and a line every ~10 s."""
  if compiled.evaluate is None:
    return {}, 0.0
  estimate = None
  if exp.evaluate_cost is not None and chunk_seconds:
    steady = chunk_seconds[1:] or chunk_seconds
    estimate = exp.evaluate_cost * float(np.median(steady))
  with _Heartbeat(f"{exp.name}: final evaluation", log, estimate) as beat:
    final = evaluate(compiled, state, data)
  seconds = time.perf_counter() - beat.t0
  for key, values in final.items():
    if not np.all(np.isfinite(values)):
      bad = [int(s) for s, v in zip(compiled.placement.seeds, values) if not math.isfinite(v)]
      raise TrainingDiverged(f"{exp.name}: final {key} is NaN/Inf for seed(s) {bad}; lower the "
                             "learning rate or check the data")
  log(f"{exp.name}: final evaluation done in {_format_duration(seconds)}")
  return final, seconds


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


def run(exp: Experiment, *, seeds: int, seed: int = 0, workdir: str | None = None,
        checkpoint_every: int = 1, keep_checkpoints: int = 3, keep_every: int | None = None,
        config: dict | None = None, seed_loop: str | None = None, sweep: str | None = None,
        log: Callable[[str], None] = lambda s: print(s, flush=True)) -> RunResult:
  """Runs ``exp`` for ``seeds`` seeds in one program, resuming from ``workdir`` when it holds a
  checkpoint; then evaluates, writes results.json and the figures.

  Args:
    exp: the experiment.
    seeds: number of seeds run side by side in one program.
    seed: the first seed; seed i uses key(seed + i).
    workdir: where metrics, run info, checkpoints, results and figures go; None: memory only.
    checkpoint_every: checkpoint every this many chunks (the last chunk is always saved).
    keep_checkpoints: how many recent readable checkpoints to keep.
    keep_every: also keep every checkpoint whose chunk is a multiple of this (None: off).
    config: the flags, saved in run_info.json and compared on resume.
    seed_loop: overrides ``exp.seed_loop``.
    sweep: ``"name=v1,v2 ..."``: every (grid point, seed) cell in the same program
      (``genrl_jax.run.sweep``); figures are then ``sweep.png`` (final metrics vs the values).
    log: where progress lines go.
  Returns:
    RunResult with the final stacked state, the per-chunk history and the final evaluation.
  """
  if seeds < 1:
    raise UserError(f"--seeds must be >= 1, got {seeds}")
  if checkpoint_every < 1:
    raise UserError(f"--checkpoint_every must be >= 1, got {checkpoint_every}")
  if exp.num_chunks < 1:
    raise UserError(f"nothing to run: {exp.num_chunks} {exp.chunk_label}s; pass a positive count")
  if workdir:
    check_workdir(workdir)
  # One live process per workdir (the entry point took the lock already; a library call takes
  # it here, for the run's length).
  locking = bool(workdir) and distributed.is_main() and not workdir_lock.held(workdir)
  if locking:
    workdir_lock.acquire(workdir)
  try:
    return _run(exp, seeds=seeds, seed=seed, workdir=workdir, checkpoint_every=checkpoint_every,
                keep_checkpoints=keep_checkpoints, keep_every=keep_every, config=config,
                seed_loop=seed_loop, sweep=sweep, log=log)
  finally:
    if locking:
      workdir_lock.release(workdir)


def _run(exp: Experiment, *, seeds, seed, workdir, checkpoint_every, keep_checkpoints, keep_every,
         config, seed_loop, sweep, log) -> RunResult:
  """``run``'s body, with the workdir checked and locked."""
  if not distributed.is_main():
    log = lambda _: None  # noqa: E731 (process 0 prints the progress of a multi-process run)
  grid = sweep_lib.parse(sweep, exp.sweepable, exp.name) if sweep else None
  placement = SeedPlacement(seeds, seed, seed_loop or exp.seed_loop, sweep=grid)
  processes = jax.process_count()  # each process holds its share of the cells and devices
  memory.check_fits(exp.init, exp.data, num_cells=placement.num_cells // processes,
                    num_devices=max(placement.num_devices // processes, 1),
                    cells_per_seed=placement.num_cells // placement.num_seeds,
                    available=memory.available_env_override())
  compiled = Compiled(exp, placement)
  data = placement.place_data(exp.data)
  state, start, checkpointer, metrics_log, history = _restore_or_init(
      exp, compiled, data, workdir, config, keep_checkpoints, keep_every, log)
  try:
    state, chunk_seconds = _chunk_loop(exp, compiled, state, data, start, checkpointer,
                                       metrics_log, history, checkpoint_every, workdir, log)
  finally:
    with _signals_ignored():  # the save in flight is finished, never cut (also after ^C^C)
      if checkpointer is not None:
        checkpointer.close()
      if metrics_log is not None:
        metrics_log.close()
  if start >= exp.num_chunks:
    log(f"{exp.name}: all {exp.num_chunks} {exp.chunk_label}s already done in {workdir}")
  final, eval_seconds = final_evaluation(exp, compiled, state, data, chunk_seconds, log)
  if jax.process_count() > 1:  # every process gets the whole state (a gather)
    state = placement.to_host(state)
  result = RunResult(state=state, history=history, seeds=placement.seeds,
                     chunk_seconds=chunk_seconds, workdir=workdir, final=final,
                     eval_seconds=eval_seconds, placement=placement, config=config)
  main = distributed.is_main()
  result.results = write_results(exp, result, workdir if main else None)
  if grid is not None and workdir and main:
    sweep_lib.figures(result, exp.summarize, workdir)
  elif exp.figures is not None and workdir and main:
    exp.figures(result, workdir)
  return result


def stack_history(history: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
  """[n_chunks, n_seeds, ...] array of one metric over the run."""
  return np.stack([np.asarray(h[key]) for h in history if key in h])


def unstack_seed(tree, i: int):
  """Seed i's slice of a state stacked over seeds."""
  return jax.tree.map(lambda x: x[i], tree)
