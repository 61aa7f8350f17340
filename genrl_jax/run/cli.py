"""Entry points: the run-level flags (declared once), absl, and bad input as one line.

An experiment's entry point is one call, ``cli.main("genrl_jax.generative.vae_run")`` (or
``cli.main(SPEC)``): it connects a multi-process run, imports the module (so nothing it imports
can start a JAX backend first), declares the run-level flags (``--seeds --seed --workdir
--checkpoint_every --keep_checkpoints --keep_every --seed_loop --sweep``, here once) and one flag
per field of the spec's configs, parses them, checks the run-level ones before anything slow
starts, builds the run through ``Spec.experiment`` and runs it. Other programs (studies that
drive several runs) use ``cli_main(main)`` with ``run_flags`` and ``run``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from typing import Callable

from absl import app, flags, logging

from genrl_jax.run import devices
from genrl_jax.run import distributed
from genrl_jax.run import workdir_lock
from genrl_jax.run.errors import Aborted, Interrupted, UserError

FLAGS = flags.FLAGS


def main(spec, *, argv: list[str] | None = None) -> None:
  """The whole entry point of an experiment: ``spec`` is a ``Spec`` or the name of the module
  that exposes one (imported only after a multi-process run has connected)."""
  connect(argv)
  from genrl_jax.run import spec as spec_lib  # noqa: PLC0415
  if isinstance(spec, str):
    try:
      spec = spec_lib.load(spec)
    except UserError as e:
      _exit_with_error(str(e))
  define_run_flags(workdir=f"runs/{spec.name}", seeds=spec.seeds, chunk_label=spec.chunk_label)
  from genrl_jax.run import config_flags  # noqa: PLC0415
  for cls in spec.configs:
    config_flags.define_flags(cls, module_name=spec.module)

  def run_spec(unused_argv):
    rf = run_flags(spec.name)
    configs = tuple(config_flags.from_flags(cls) for cls in spec.configs)
    saved = flags_dict(FLAGS, module_names=(__name__, spec.module))
    result = run(spec.experiment(*configs), rf, config=saved)
    if spec.report is not None:
      spec.report(result)
    from genrl_jax.run import runner  # noqa: PLC0415
    print(f"wrote {os.path.join(rf.workdir, runner.RESULTS_FILE)} and the figures", flush=True)

  cli_main(run_spec, host_device_per_core=spec.cpu_device_per_core)


_CONNECTION: dict = {}  # {"error": UserError | None} once the connection was attempted


def connect(argv: list[str] | None = None) -> None:
  """A multi-process run connects (once) before anything can start a JAX backend
  (genrl_jax.run.distributed): ``main`` and ``cli_main`` call it first; a program that imports
  gymnax at its top calls it before that import. A bad value is kept for ``cli_main`` to report
  in one line."""
  if "error" not in _CONNECTION:
    try:
      distributed.initialize_from_argv(sys.argv if argv is None else argv)
      _CONNECTION["error"] = None
    except UserError as e:
      _CONNECTION["error"] = e


def define_run_flags(*, workdir: str, seeds: int = 1, chunk_label: str = "chunk") -> None:
  """Declares the flags every experiment run takes (with this experiment's defaults)."""
  flags.DEFINE_integer("seeds", seeds, "Number of seeds trained side by side in one program "
                       "(see --seed_loop).")
  flags.DEFINE_integer("seed", 0, "First seed; seed i of the run uses jax.random.key(seed + i).")
  flags.DEFINE_string("workdir", workdir, "Where metrics, checkpoints, results and figures go; "
                      "rerunning with the same flags resumes from the latest checkpoint here.")
  flags.DEFINE_integer("checkpoint_every", 1, f"Checkpoint every this many {chunk_label}s (and "
                       "the last).")
  flags.DEFINE_integer("keep_checkpoints", 3, "How many of the newest readable checkpoints to "
                       "keep.")
  flags.DEFINE_integer("keep_every", 0, f"Also keep every checkpoint whose {chunk_label} is a "
                       "multiple of this, for later replay (0 = off).")
  flags.DEFINE_enum("seed_loop", "auto", list(devices.SEED_LOOPS),
                    "How each device runs its seeds: 'vmap' batches them into every op (what a "
                    "GPU or TPU needs), 'map' runs them one after another with unbatched ops "
                    "(suits a CPU: plain matmuls, each seed's parameters stay in cache), "
                    "'auto' = vmap for an experiment whose chunk uses collectives over the "
                    "seeds, else map on CPU and vmap otherwise. Same results up to float "
                    "rounding; may change on resume.")
  flags.DEFINE_string("coordinator_address", None, "Multi-process run: HOST:PORT of process 0 "
                      "(jax.distributed); with --num_processes and --process_id. Under SLURM "
                      "(srun) and on Cloud TPU VM pod slices they are detected instead.")
  flags.DEFINE_integer("num_processes", None, "Multi-process run: the number of processes P.")
  flags.DEFINE_integer("process_id", None, "Multi-process run: this process's id, 0..P-1.")
  flags.DEFINE_string("sweep", "", "In-program sweep of sweepable float hyperparameters, e.g. "
                      "'learning_rate=1e-3,3e-4,1e-4' (several fields: their product, space-"
                      "separated): every (value, seed) cell runs in the same compiled program; "
                      "cell (v, i) equals the separate run --name=v --seed=seed+i. Shape-changing "
                      "flags: separate jobs (python -m launch.sweep).")


@dataclasses.dataclass(frozen=True)
class RunFlags:
  """The run-level flags, checked."""
  seeds: int
  seed: int
  workdir: str
  checkpoint_every: int
  keep_checkpoints: int
  keep_every: int
  seed_loop: str
  sweep: str = ""


def run_flags(experiment: str, flag_values=FLAGS) -> RunFlags:
  """The run-level flags, checked — the workdir included — before any data is loaded."""
  from genrl_jax.run import runner  # noqa: PLC0415 (runner imports jax; cli stays light)
  f = RunFlags(**{k.name: flag_values[k.name].value for k in dataclasses.fields(RunFlags)})
  for name, low in (("seeds", 1), ("checkpoint_every", 1), ("keep_checkpoints", 1),
                    ("keep_every", 0)):
    if getattr(f, name) < low:
      raise UserError(f"--{name} must be >= {low}, got {getattr(f, name)}")
  if f.sweep:
    check_sweep_flags(f.sweep, flag_values)
  runner.check_workdir(f.workdir)
  if distributed.is_main():  # held until this process exits; process 0 writes the run's files
    workdir_lock.acquire(f.workdir)
  saved = runner.read_run_info(f.workdir)
  if saved is not None and saved.get("experiment") not in (None, experiment):
    raise UserError(f"{f.workdir} holds a {saved['experiment']!r} run, not a {experiment!r} "
                    f"one; pass another --workdir (e.g. runs/{experiment})")
  return f


def check_sweep_flags(spec: str, flag_values=FLAGS) -> None:
  """``--sweep``'s syntax, and that no swept field is also given as its own flag (which value
  would win is not obvious): one ``UserError`` before any data is loaded. Only float flags can be
  swept; any other name is left to ``sweep.parse``'s "not a sweepable hyperparameter"."""
  from genrl_jax.run import sweep  # noqa: PLC0415
  for name, _ in sweep.entries(spec):
    flag = flag_values[name] if name in flag_values else None
    if flag is not None and flag.present and isinstance(flag.parser, flags.FloatParser):
      raise UserError(f"--{name}={flag_values[name].value} and --sweep both set {name}; drop "
                      "one of the two (--sweep runs every value it lists)")


def run(experiment, rf: RunFlags, flag_values=FLAGS, config: dict | None = None, **kwargs):
  """``runner.run`` with the run-level flags; ``config`` (default: every flag of the program)
  is saved in run_info.json and compared on resume."""
  from genrl_jax.run import runner  # noqa: PLC0415
  return runner.run(experiment, seeds=rf.seeds, seed=rf.seed, workdir=rf.workdir,
                    checkpoint_every=rf.checkpoint_every, keep_checkpoints=rf.keep_checkpoints,
                    keep_every=rf.keep_every or None, seed_loop=rf.seed_loop,
                    sweep=rf.sweep or None,
                    config=flags_dict(flag_values) if config is None else config, **kwargs)


def resume_command() -> str:
  """The command line that resumes this run: the same program with the same flags."""
  return workdir_lock.command_line()


def cli_main(main: Callable[[list[str]], object], host_device_per_core: bool = False) -> None:
  """``app.run(main)``, with bad input reported as ``error: <what is wrong and how to fix it>``.

  Positional arguments are refused here, for every experiment: all options are absl flags.
  absl's own flag errors (unknown flag, value not of the flag's type or enum) are one line too.

  host_device_per_core: expose one XLA CPU device per core before jax starts, so the runner
  spreads the seeds over the cores (see genrl_jax.run.devices).
  """
  connect()
  if host_device_per_core:
    devices.host_device_per_core()
  # Progress lines reach a log file or pipe as they are printed, not when a buffer fills.
  for stream in (sys.stdout, sys.stderr):
    if hasattr(stream, "reconfigure"):
      stream.reconfigure(line_buffering=True)

  def wrapped(argv):
    # Library INFO logs (orbax writes a dozen lines per checkpoint) would bury the progress
    # lines; they are shown again with an explicit --verbosity=0 (or -v 0).
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      if len(argv) > 1:
        raise UserError(f"unexpected arguments {' '.join(argv[1:])!r}; options are given as "
                        "--name=value (see --helpfull)")
      if _CONNECTION["error"] is not None:
        raise _CONNECTION["error"]
      if "coordinator_address" in flags.FLAGS:  # connected already; checks the parsed values
        distributed.initialize(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                               flags.FLAGS.process_id)
      return main(argv)
    except Interrupted as e:
      _ignore_interrupts()  # the run has stopped cleanly: a further ^C must not cut the exit
      print(f"{e}; resume with: {resume_command()}", flush=True)
      sys.exit(0)
    except (Aborted, KeyboardInterrupt) as e:  # ^C^C, or ^C before the chunk loop
      _ignore_interrupts()
      what = "aborted by a second ^C" if isinstance(e, Aborted) else "interrupted by ^C"
      _exit_with_error(f"{what}; every checkpoint on disk is complete (the newest is where a "
                       f"rerun resumes); resume with: {resume_command()}", status=130)
    except UserError as e:
      _exit_with_error(str(e))

  app.run(wrapped, flags_parser=_parse_flags)


def _ignore_interrupts() -> None:
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, signal.SIG_IGN)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with its errors (unknown flag, bad enum or number) as one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _exit_with_error(f"{e}; see --helpfull")


def _exit_with_error(message: str, status: int = 2) -> None:
  """The one line bad input gets: ``error: <message>`` on stderr, exit status 2."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(status)


def flags_dict(flag_values, module_names: tuple[str, ...] | None = None) -> dict:
  """The values of the flags defined by the running program's own modules (not absl's/jax's)."""
  out = {}
  by_module = flag_values.flags_by_module_dict()
  # absl files the flags of the main module (``python -m experiments.x`` or a script) under
  # sys.argv[0], the script's path, not under "__main__".
  main_names = {"__main__", sys.argv[0]}
  for module, module_flags in by_module.items():
    if module_names is not None and module not in module_names:
      continue
    if module_names is None and not (module.startswith("experiments") or module in main_names
                                     or module.startswith("genrl_jax")):
      continue
    for f in module_flags:
      out[f.name] = f.value
  return dict(sorted(out.items()))
