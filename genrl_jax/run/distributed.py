"""Multi-process runs on JAX's own distributed runtime (``jax.distributed``).

One program runs as P processes (one per host, or one per GPU under SLURM); each holds an equal
share of the seed (cell) axis on its local devices, over one global mesh of every process's
devices (``devices.process_shardings``). The runner then gathers each chunk's metrics to every
process (``SeedPlacement.to_host``), process 0 alone writes metrics.jsonl, run_info.json,
results.json and the figures, and every process takes part in each orbax checkpoint (orbax
writes each process's shards into the one checkpoint of the step).

``initialize`` connects the processes, before anything touches a JAX backend. Some libraries
start one as they are imported (gymnax builds jnp arrays at import), so ``genrl_jax.run.cli``
calls ``initialize_from_argv`` when it is imported, which an entry point does before its other
imports; ``cli_main`` checks the parsed flags again:

- explicit: ``--coordinator_address=host:port --num_processes=P --process_id=p`` (each process
  its own id; the coordinator is process 0's host);
- SLURM (``srun`` with more than one task) and Cloud TPU VM pod slices: ``jax.distributed``
  detects the coordinator, process count and id itself (``launch/slurm_multinode.sh``,
  ``launch/tpu_vm_pod.sh``);
- otherwise a single process, as before.

On CPU the processes exchange data through gloo (``jax_cpu_collectives_implementation``).
"""

from __future__ import annotations

import os

from genrl_jax.errors import UserError


def detected_cluster() -> str | None:
  """'slurm' inside a multi-task SLURM step, 'tpu' on a multi-host Cloud TPU VM, else None."""
  tasks = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS")
  if os.environ.get("SLURM_JOB_ID") and tasks and int(tasks) > 1 and "SLURM_PROCID" in os.environ:
    return "slurm"
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if len([h for h in hosts.split(",") if h]) > 1:
    return "tpu"
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_seconds: int = 300) -> bool:
  """Connects this process to the others (``jax.distributed.initialize``); returns whether the
  run is multi-process. Explicit arguments win over detection; none and no cluster: nothing
  happens (one process). Bad or partial arguments: one ``UserError``."""
  given = [coordinator_address, num_processes, process_id]
  if any(v not in (None, "") for v in given):
    if not coordinator_address or num_processes is None or process_id is None:
      raise UserError("multi-process runs need all of --coordinator_address=HOST:PORT, "
                      "--num_processes=P and --process_id=p (0..P-1)")
    host, sep, port = coordinator_address.rpartition(":")
    if not sep or not host or not port.isdigit():
      raise UserError(f"--coordinator_address={coordinator_address!r}: write HOST:PORT, e.g. "
                      "10.0.0.1:8476 (process 0's host)")
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise UserError(f"--process_id={process_id} must be in 0..{num_processes - 1} "
                      f"(--num_processes={num_processes})")
    if num_processes == 1:
      return False
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  elif detected_cluster() is not None:
    kwargs = {}
  else:
    return False
  import jax  # noqa: PLC0415 (the backend must not exist yet; importing jax is fine)
  if jax.distributed.is_initialized():
    return jax.process_count() > 1
  if _backends_started():
    raise UserError("a multi-process run must connect before JAX starts, and a module imported "
                    "earlier (gymnax starts it) already did: start the program with "
                    "genrl_jax.run.cli.main('<module>'), or call cli.connect() before that import")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(initialization_timeout=timeout_seconds, **kwargs)
  return jax.process_count() > 1


_FLAGS = ("coordinator_address", "num_processes", "process_id")


def argv_values(argv) -> dict:
  """The three flags' values as written in ``argv`` (``--name=value`` or ``--name value``)."""
  out = {}
  for i, arg in enumerate(argv):
    for name in _FLAGS:
      if arg.startswith(f"--{name}="):
        out[name] = arg.split("=", 1)[1]
      elif arg == f"--{name}" and i + 1 < len(argv):
        out[name] = argv[i + 1]
  return out


def _int(name: str, value):
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise UserError(f"--{name} must be an integer, got {value!r}") from None


def initialize_from_argv(argv) -> bool:
  """``initialize`` from the flags written in ``argv`` (or cluster detection) — for use before
  absl has parsed them, while no JAX backend exists yet."""
  values = argv_values(argv)
  return initialize(values.get("coordinator_address"),
                    _int("num_processes", values.get("num_processes")),
                    _int("process_id", values.get("process_id")))


def _backends_started() -> bool:
  from jax._src import xla_bridge  # noqa: PLC0415
  return bool(getattr(xla_bridge, "_backends", None))


def is_main() -> bool:
  """Whether this process writes the run's files (process 0; always true in one process)."""
  import jax  # noqa: PLC0415
  return jax.process_index() == 0


def any_process(flag: bool) -> bool:
  """Whether ``flag`` is true in any process (a tiny all-gather; just ``flag`` in one process).
  The runner's stop request goes through it: a SIGTERM that reaches the processes at different
  chunks still stops all of them after the same chunk, so none waits for a peer that has left."""
  import jax  # noqa: PLC0415
  if jax.process_count() == 1:
    return bool(flag)
  import numpy as np  # noqa: PLC0415
  from jax.experimental import multihost_utils  # noqa: PLC0415
  return bool(np.any(multihost_utils.process_allgather(np.asarray(bool(flag)))))
