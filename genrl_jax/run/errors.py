"""Errors that end an experiment with one clear line instead of a traceback."""


class UserError(Exception):
  """Bad input (flags, data, workdir): the message says what is wrong and how to fix it."""


class TrainingDiverged(UserError):
  """A non-finite training metric: names the seed and the chunk; the last good checkpoint is kept."""


class Interrupted(UserError):
  """The run stopped cleanly on SIGINT/SIGTERM after a checkpoint; the entry point exits 0."""
