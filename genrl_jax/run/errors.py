"""The run's errors that end an experiment with one clear line instead of a traceback (bad input
itself is ``genrl_jax.errors.UserError``, which the algorithms raise too)."""

from genrl_jax.errors import UserError


class TrainingDiverged(UserError):
  """A non-finite training metric: names the seed and the chunk; the last good checkpoint is kept."""


class Interrupted(UserError):
  """The run stopped cleanly on SIGINT/SIGTERM after a checkpoint; the entry point exits 0."""


class Aborted(Exception):
  """A second ^C: the run stopped at once, without the chunk's checkpoint; the checkpoints on disk
  are all complete (a save in flight is finished first). The entry point exits 130."""
