"""The experiment runner shared by every experiment: seeds vmapped, chunked jit, checkpoints."""

from genrl_jax.run import devices, plots, stats
from genrl_jax.run.checkpoint import Checkpointer
from genrl_jax.run.cli import cli_main, flags_dict
from genrl_jax.run.errors import TrainingDiverged, UserError
from genrl_jax.run.runner import (SEED_AXIS, Experiment, RetraceError, RunResult, run,
                                  seed_keys, stack_history, trace_once, unstack_seed)

__all__ = [
    "SEED_AXIS", "Checkpointer", "Experiment", "RetraceError", "RunResult", "TrainingDiverged",
    "UserError", "cli_main", "devices", "flags_dict", "plots", "run", "seed_keys", "stack_history",
    "stats", "trace_once", "unstack_seed",
]
