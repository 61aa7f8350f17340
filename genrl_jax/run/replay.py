"""Reproducibility studies from a run's workdir: replay, determinism audit, seed extraction.

Everything here stands on the runner's pieces: the experiment is rebuilt from run_info.json by
the ``SPEC`` of the module it recorded (``genrl_jax.run.spec``), placed by the same ``SeedPlacement``, restored by
the same ``Checkpointer``, evaluated by the same jitted evaluation and summarized into the same
results schema. Nothing here places seeds or evaluates on its own.

- ``replay``: restore step N (default: the newest), rerun the final evaluation, write
  results.json and the figures into another directory, compare with the saved results.
- ``verify``: restore step N-1, run one chunk, compare with the saved step N bit for bit.
- ``extract_seed``: seed i of an N-seed run as a 1-seed workdir that its entry point continues.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex

import jax
import numpy as np

from genrl_jax.errors import UserError
from genrl_jax.run import checkpoint as checkpoint_lib
from genrl_jax.run.compare import (MISSING, TIMING_KEYS, compare_results,  # noqa: F401
                                   compare_states, format_table, read_saved_results,
                                   ulp_distance)
from genrl_jax.run import files
from genrl_jax.run import info as run_info_lib
from genrl_jax.run import runner
from genrl_jax.run import spec as spec_lib
from genrl_jax.run import sweep as sweep_lib
from genrl_jax.run import workdir_lock
from genrl_jax.run.placement import SeedPlacement


@dataclasses.dataclass
class LoadedRun:
  """A workdir's run, rebuilt: its run_info, experiment, placement, programs and data."""
  workdir: str
  info: dict
  experiment: runner.Experiment
  placement: SeedPlacement
  compiled: runner.Compiled
  data: object

  @property
  def checkpointer(self) -> checkpoint_lib.Checkpointer:
    return checkpoint_lib.Checkpointer(os.path.join(self.workdir, runner.CHECKPOINT_DIR),
                                       keep=10**9)  # replay never deletes anything

  def close(self) -> None:
    """Lets go of the workdir's shared lock (``load`` takes it; the process's exit also ends
    it), so that the run may train again."""
    workdir_lock.release(self.workdir)

  def fresh_state(self):
    return self.compiled.init(self.placement.keys(), self.data)

  def restore(self, step: int):
    """The state of all seeds after ``step`` chunks (0: the initial state)."""
    template = self.fresh_state()
    if step == 0:
      return template
    ckpt = self.checkpointer
    try:
      return self.placement.place_state(ckpt.restore_step(template, step))
    finally:
      ckpt.close()

  def steps(self) -> list[int]:
    ckpt = self.checkpointer
    try:
      return ckpt.all_steps()
    finally:
      ckpt.close()

  def history(self, upto: int) -> list[dict[str, np.ndarray]]:
    rows = runner.MetricsLog(os.path.join(self.workdir, runner.METRICS_FILE)).read()
    return runner.history_from_rows(rows, self.placement.seeds, upto,
                                    self.placement.cell_labels())


def load(workdir: str) -> LoadedRun:
  """Rebuilds the run in ``workdir`` from its run_info.json (one clear line if it cannot)."""
  if not os.path.isdir(workdir):
    raise UserError(f"--workdir={workdir} is not a directory; pass a run's workdir")
  # Shared: replays may read together, never while the run trains (nor may it start meanwhile).
  workdir_lock.acquire(workdir, exclusive=False, purpose="replay")
  path = os.path.join(workdir, runner.RUN_INFO_FILE)
  try:
    info = files.read_json(path, "the run's flags and facts")
  except files.DamagedFile as e:
    raise UserError(f"{workdir} has no readable {runner.RUN_INFO_FILE} ({e.damage}); pass the "
                    "workdir of a run made by one of the experiments") from None
  check_run_info(info, path)
  config = info.get("config") or {}
  try:
    experiment = spec_lib.for_run(info).from_flag_values(config, name=info["experiment"])
    grid = (sweep_lib.parse(config["sweep"], experiment.sweepable, info["experiment"])
            if config.get("sweep") else None)  # a --sweep run: its cells, as it ran them
    placement = SeedPlacement(info["seeds"], info["seed"],
                              runner.seed_loop_for(experiment, config.get("seed_loop")),
                              sweep=grid)
    run = LoadedRun(workdir=workdir, info=info, experiment=experiment, placement=placement,
                    compiled=runner.Compiled(experiment, placement),
                    data=placement.place_data(experiment.data))
    # A value of the wrong type can pass the builder and fail only when traced (a float count
    # as a shape): lower the initial state's program now, without compiling it.
    run.compiled.init.lower(placement.keys(), run.data)
    return run
  except UserError as e:
    raise UserError(f"{path}: {e}") from None
  except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
    raise UserError(f"{path}: its config cannot rebuild the {info['experiment']!r} run "
                    f"({type(e).__name__}: {_first_line(e)}); was it edited? Restore the file "
                    "the run wrote") from None


def _first_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return lines[0][:160] if lines else "no message"


# Fields of run_info.json that replay reads only if present: (key, type, item type, in words).
_OPTIONAL_FIELDS = (("argv", list, str, "a list of strings"),
                    ("sessions", list, dict, "a list of objects"), ("devices", list, None, "a list"),
                    ("versions", dict, None, "an object"), ("git", dict, None, "an object"))


def check_run_info(info: dict, path: str) -> None:
  """The fields replay reads from a run_info.json, with their types: one ``UserError`` naming
  the file and the field that is missing or wrong."""
  def refuse(what):
    raise UserError(f"{path}: {what}; was it edited? Restore the file the run wrote")
  name = info.get("experiment")
  if not isinstance(name, str) or not name:
    refuse("'experiment' is missing" if name is None else f"'experiment' must be a name, got "
           f"{name!r}")
  for key in ("spec", "entry_point"):
    if info.get(key) is not None and not isinstance(info[key], str):
      refuse(f"{key!r} must be a module name, got {info[key]!r}")
  if not info.get("spec"):
    known = spec_lib.library_specs()
    if spec_lib.base_name(name) not in known:
      refuse(f"no replay for experiment {name!r}: known are {', '.join(sorted(known))}")
  elif spec_lib.load(info["spec"]).name != spec_lib.base_name(name):
    refuse(f"no replay for experiment {name!r}: the module it recorded ({info['spec']}) builds "
           f"{spec_lib.load(info['spec']).name!r}")
  for key, low, words in (("seeds", 1, "an integer >= 1"), ("seed", None, "an integer")):
    if key not in info:
      refuse(f"{key!r} is missing")
    value = info[key]
    if not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low):
      refuse(f"{key!r} must be {words}, got {value!r}")
  config = info.get("config")
  if config is not None and not isinstance(config, dict):
    refuse(f"'config' must be an object of flag values, got {type(config).__name__}")
  for key in ("sweep", "seed_loop"):
    if config and config.get(key) is not None and not isinstance(config[key], str):
      refuse(f"'config.{key}' must be a string, got {config[key]!r}")
  for key, kind, item, words in _OPTIONAL_FIELDS:
    value = info.get(key)
    if value is not None and not (isinstance(value, kind) and (
        item is None or all(isinstance(v, item) for v in value))):
      refuse(f"{key!r} must be {words}, got {str(value)[:60]!r}")


def environment_warnings(run: LoadedRun) -> list[str]:
  """One line for each recorded fact of the run that differs here: versions, devices, loop, code."""
  out = []
  saved_versions = run.info.get("versions") or {}
  for name, version in run_info_lib.versions().items():
    if name in saved_versions and saved_versions[name] != version:
      out.append(f"warning: {name} {saved_versions[name]} recorded, {version} installed")
  sessions = run.info.get("sessions") or [{}]
  saved_devices = sessions[-1].get("devices") or run.info.get("devices")
  devices = [str(d) for d in jax.devices()]
  if saved_devices and [d.split(":")[0] for d in saved_devices] != [d.split(":")[0]
                                                                     for d in devices]:
    out.append(f"warning: devices {saved_devices} recorded, {devices} here")
  placement = sessions[-1].get("placement")
  if placement and f"seed loop {run.placement.resolved_loop}" not in placement:
    out.append(f"warning: the run's placement was '{placement}', replay's is "
               f"'{run.placement.describe()}'")
  saved_git, git = run.info.get("git") or {}, run_info_lib.git_commit()
  if saved_git.get("commit") and saved_git.get("commit") != git.get("commit"):
    out.append(f"warning: git commit {str(saved_git['commit'])[:12]} recorded, "
               f"{str(git.get('commit'))[:12]} checked out")
  elif saved_git.get("dirty") or git.get("dirty"):
    out.append("warning: the checkout had uncommitted changes when the run was made or has now")
  return out


def check_out(out_dir: str) -> None:
  """``--out`` must be a directory or a path where one can be made: one ``UserError`` if it or a
  folder above it is a file (checked before any slow work; the file is left as it is)."""
  probe = os.path.abspath(out_dir)
  while not os.path.exists(probe) and os.path.dirname(probe) != probe:
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    where = "is a file" if probe == os.path.abspath(out_dir) else f"is under {probe}, a file"
    raise UserError(f"--out={out_dir} {where}, not a directory; pass a directory (it is made if "
                    "missing)")


def replay(run: LoadedRun, step: int | None, out_dir: str, log=print) -> list[tuple]:
  """Restores ``step``, reruns the final evaluation, writes results.json and the figures into
  ``out_dir``. Returns rows (metric, saved, replayed, equal) against the saved results.json
  (compared where it was written at the same step)."""
  check_out(out_dir)
  steps = run.steps()
  if not steps:
    raise UserError(f"{run.workdir} has no checkpoint to replay")
  step = steps[-1] if step is None else step
  state = run.restore(step)
  history = run.history(step)
  final, eval_seconds = runner.final_evaluation(run.experiment, run.compiled, state, run.data, [],
                                                log)
  # workdir: the run's own, as in training: a summarize hook reads the files the run wrote there
  # (e.g. the DCGAN's snapshot scores); results and figures go to out_dir.
  result = runner.RunResult(state=state, history=history, seeds=run.placement.seeds,
                            chunk_seconds=[], workdir=run.workdir, final=final,
                            eval_seconds=eval_seconds, placement=run.placement,
                            config=run.info.get("config"))
  os.makedirs(out_dir, exist_ok=True)
  replayed = runner.write_results(run.experiment, result, out_dir)
  if run.placement.sweep is not None:
    sweep_lib.figures(result, run.experiment.summarize, out_dir)
  elif run.experiment.figures is not None:
    run.experiment.figures(result, out_dir)
  return compare_results(read_saved_results(run.workdir, log), replayed, step)


def verify(run: LoadedRun, step: int | None) -> tuple[int, list[tuple[str, float, int]]]:
  """Restores step N-1, runs one chunk, compares with the saved step N: (N, differing leaves)."""
  steps = run.steps()
  if not steps:
    raise UserError(f"{run.workdir} has no checkpoint to verify")
  step = steps[-1] if step is None else step
  if step - 1 != 0 and step - 1 not in steps:
    raise UserError(f"--verify at step {step} needs the checkpoint of step {step - 1}; "
                    f"{run.workdir} holds steps {', '.join(map(str, steps))}: pass "
                    "--step=<a step whose predecessor is kept> (train with --keep_every to keep "
                    "more)")
  saved = run.restore(step)
  before = run.restore(step - 1)
  after, _ = run.compiled.chunk(before, run.data)
  return step, compare_states(saved, after)


def extract_seed(run: LoadedRun, index: int, out_dir: str, step: int | None = None) -> str:
  """Seed ``index`` of the run as a 1-seed workdir in ``out_dir`` (its checkpoint at ``step``,
  its metrics.jsonl rows up to there, its run_info.json); returns the command that continues it.
  """
  n = run.placement.num_seeds
  if not 0 <= index < n:
    raise UserError(f"--seed_index={index} is not a seed of this {n}-seed run; pass 0..{n - 1}")
  check_out(out_dir)
  if os.path.exists(os.path.join(out_dir, runner.RUN_INFO_FILE)):
    raise UserError(f"{out_dir} already holds a run; pass another --out")
  steps = run.steps()
  if not steps:
    raise UserError(f"{run.workdir} has no checkpoint to extract from")
  step = steps[-1] if step is None else step
  state = jax.tree.map(lambda x: x[index:index + 1], run.restore(step))
  seed = run.placement.first_seed + index
  os.makedirs(out_dir, exist_ok=True)
  workdir_lock.acquire(out_dir, purpose="extract a seed into")
  ckpt = checkpoint_lib.Checkpointer(os.path.join(out_dir, runner.CHECKPOINT_DIR))
  ckpt.save(step, state)
  ckpt.close()
  rows = [r for r in runner.MetricsLog(os.path.join(run.workdir, runner.METRICS_FILE)).read()
          if r.get("seed") == seed and r.get("chunk", 0) <= step]
  with open(os.path.join(out_dir, runner.METRICS_FILE), "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  config = dict(run.info.get("config") or {}, seeds=1, seed=seed, workdir=out_dir)
  info = dict(run.info, config=config, seeds=1, seed=seed,
              extracted_from={"workdir": os.path.abspath(run.workdir), "seed_index": index,
                              "step": step})
  runner.write_json(os.path.join(out_dir, runner.RUN_INFO_FILE), info)
  workdir_lock.release(out_dir)
  return continue_command(run, seed, out_dir)


def continue_command(run: LoadedRun, seed: int, out_dir: str) -> str:
  """The entry point's command with the run's flags, for one seed, in ``out_dir``."""
  module = run.info.get("entry_point") or _module_of_script((run.info.get("argv") or ["?"])[0])
  dropped = ("--seeds", "--seed", "--workdir")
  args = [a for a in (run.info.get("argv") or [])[1:]
          if not any(a == d or a.startswith(d + "=") for d in dropped)]
  return shlex.join(["python", "-m", module, *args, "--seeds=1", f"--seed={seed}",
                     f"--workdir={out_dir}"])


def _module_of_script(path: str) -> str:
  """``.../experiments/vae.py`` -> ``experiments.vae`` (a run_info.json written before the entry
  point's module was recorded keeps only the script's path)."""
  parent, base = os.path.split(os.path.splitext(path)[0])
  return f"{os.path.basename(parent)}.{base}" if parent else base
