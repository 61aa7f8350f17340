"""The experiment runner: seeds vmapped, one jitted chunk compiled once, checkpoints, metrics.

An experiment is two pure functions of ONE seed (PureJaxRL's ``make_train`` shape, split so the
loop can stop between chunks; ``genrl_jax.contract``):

    init(key, data) -> state
    chunk(state, data) -> (state, metrics)      # one epoch, or K updates, as a lax.scan

The runner calls ``jit(vmap(init))`` and ``jit(vmap(chunk, in_axes=(0, None)))`` — N seeds, one
compile — and between chunks does what a jitted loop cannot: write metrics, print progress,
checkpoint, stop on NaN, resume. Seed i's root key is ``jax.random.key(seed + i)``, so seed i of
an N-seed run is the same computation as a 1-seed run with ``--seed=seed+i``.

The seeds' vmap axis is named ``SEED_AXIS``, so a chunk may use a collective over it where that
saves work without coupling the seeds' results (``Experiment.uses_seed_axis``). Without such
collectives, --seed_loop=auto runs each device's seeds one after another on a CPU (``lax.map``),
which is faster there (``devices.over_seeds``).

The pieces live beside this loop, one concern each: ``experiment`` (what is run and returned),
``workdir`` (its files and resume checks), ``metrics_log``, ``progress``, ``signals``,
``results`` (the one schema); their public names are importable from here too.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

import jax
import numpy as np

from genrl_jax.contract import SEED_AXIS, Train  # noqa: F401 (the runner's public names)
from genrl_jax.errors import UserError
from genrl_jax.run import distributed
from genrl_jax.run import info as run_info_lib
from genrl_jax.run import memory
from genrl_jax.run import sweep as sweep_lib
from genrl_jax.run import workdir_lock
from genrl_jax.run.checkpoint import Checkpointer, StateMismatch
from genrl_jax.run.errors import Interrupted, TrainingDiverged
from genrl_jax.run.experiment import (ChunkEnd, Experiment, RetraceError, RunResult,  # noqa: F401
                                      seed_loop_for, stack_history, trace_once, unstack_seed)
from genrl_jax.run.metrics_log import MetricsLog, history_from_rows, to_host
from genrl_jax.run.placement import SeedPlacement, seed_keys  # noqa: F401
from genrl_jax.run.progress import Heartbeat, format_duration, progress_line
from genrl_jax.run.results import (results_document, summary, write_json,  # noqa: F401
                                   write_results)
from genrl_jax.run.schedule import Every
from genrl_jax.run.signals import StopRequest, signals_ignored
from genrl_jax.run.tensorboard import TensorBoardLog
from genrl_jax.run.workdir import (CHECKPOINT_DIR, METRICS_FILE, RESULTS_FILE,  # noqa: F401
                                   RUN_FLAGS_MAY_CHANGE, RUN_INFO_FILE, check_resumable,
                                   check_workdir, mismatch_hint, read_run_info)


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
      raise UserError(e.describe(mismatch_hint(e, placement, config))) from None
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
                     placement=placement.describe(), spec=exp.spec)
  return state, start, checkpointer, metrics_log, history


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
  evaluations, saves = Every(exp.evaluate_every), Every(checkpoint_every, last=True)
  if exp.after_chunk is not None and start == 0:
    _after_chunk(exp, ChunkEnd(0, state, {}, workdir, placement, data))
  with StopRequest(log) as stop:
    for index in range(start, exp.num_chunks):
      t0 = time.perf_counter()
      state, metrics = compiled.chunk(state, data)
      metrics = to_host(placement.to_host(metrics))  # the one host transfer per chunk.
      seconds = time.perf_counter() - t0
      chunk_seconds.append(seconds)
      done = index + 1
      if compiled.evaluate is not None and evaluations.due(done, exp.num_chunks):
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
      if checkpointer is not None and (saves.due(done, exp.num_chunks) or stopping):
        with stop.saving():
          checkpointer.save(done, state)
        last_saved = done
      if exp.after_chunk is not None:
        with stop.saving():
          _after_chunk(exp, ChunkEnd(done, state, metrics, workdir, placement, data))
      if stopping and done < exp.num_chunks:
        if checkpointer is not None:
          with signals_ignored():  # the stop is done once this save is: never cut it
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
  with Heartbeat(f"{exp.name}: final evaluation", log, estimate) as beat:
    final = evaluate(compiled, state, data)
  seconds = time.perf_counter() - beat.t0
  for key, values in final.items():
    if not np.all(np.isfinite(values)):
      bad = [int(s) for s, v in zip(compiled.placement.seeds, values) if not math.isfinite(v)]
      raise TrainingDiverged(f"{exp.name}: final {key} is NaN/Inf for seed(s) {bad}; lower the "
                             "learning rate or check the data")
  log(f"{exp.name}: final evaluation done in {format_duration(seconds)}")
  return final, seconds


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
    seed_loop: "vmap" (None: the default), "map" or "auto" (see ``seed_loop_for``).
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
  placement = SeedPlacement(seeds, seed, seed_loop_for(exp, seed_loop), sweep=grid)
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
    with signals_ignored():  # the save in flight is finished, never cut (also after ^C^C)
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
