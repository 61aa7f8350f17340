"""The experiment runner shared by every experiment: seeds over devices, chunked jit,
checkpoints, evaluation, one results schema.

Importing this package loads nothing: each name below is imported from its module on first use
(PEP 562), so ``import genrl_jax.run`` starts no JAX backend, connects to no cluster and loads
none of orbax, tensorboardX or matplotlib until a run needs them.
"""

import importlib

_WHERE = {  # public name -> the module that defines it
    "devices": None, "plots": None, "stats": None,
    "Checkpointer": "checkpoint",
    "cli_main": "cli", "flags_dict": "cli",
    "Aborted": "errors", "Interrupted": "errors", "TrainingDiverged": "errors",
    "UserError": "errors",
    "SeedPlacement": "placement", "seed_keys": "placement",
    "SEED_AXIS": "runner", "Train": "runner", "run": "runner",
    "ChunkEnd": "experiment", "Experiment": "experiment", "RetraceError": "experiment",
    "RunResult": "experiment", "stack_history": "experiment", "trace_once": "experiment",
    "unstack_seed": "experiment",
    "RESULTS_FILE": "workdir",
    "summary": "results", "write_json": "results",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
  if name not in _WHERE:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  module = importlib.import_module(f"{__name__}.{_WHERE[name] or name}")
  value = module if _WHERE[name] is None else getattr(module, name)
  globals()[name] = value
  return value


def __dir__():
  return __all__
