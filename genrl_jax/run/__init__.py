"""The experiment runner shared by every experiment: seeds over devices, chunked jit,
checkpoints, evaluation, one results schema."""

from genrl_jax.run import devices, plots, stats
from genrl_jax.run.checkpoint import Checkpointer
from genrl_jax.run.cli import cli_main, flags_dict
from genrl_jax.run.errors import Interrupted, TrainingDiverged, UserError
from genrl_jax.run.placement import SeedPlacement, seed_keys
from genrl_jax.run.runner import (RESULTS_FILE, SEED_AXIS, ChunkEnd, Experiment, RetraceError,
                                  RunResult, Train, run, stack_history, summary, trace_once,
                                  unstack_seed, write_json)

__all__ = [
    "RESULTS_FILE", "SEED_AXIS", "Checkpointer", "ChunkEnd", "Experiment", "Interrupted",
    "RetraceError", "RunResult", "SeedPlacement", "Train", "TrainingDiverged", "UserError",
    "cli_main", "devices", "flags_dict", "plots", "run", "seed_keys", "stack_history", "stats",
    "summary", "trace_once", "unstack_seed", "write_json",
]
