"""Errors that end an experiment with one clear line instead of a traceback."""


class UserError(Exception):
  """Bad input (flags, data, workdir): the message says what is wrong and how to fix it."""


class TrainingDiverged(UserError):
  """A non-finite training metric: names the seed and the chunk; the last good checkpoint is kept."""


class Interrupted(UserError):
  """The run stopped cleanly on SIGINT/SIGTERM after a checkpoint; the entry point exits 0."""


class Aborted(Exception):
  """A second ^C: the run stopped at once, without the chunk's checkpoint; the checkpoints on disk
  are all complete (a save in flight is finished first). The entry point exits 130."""
