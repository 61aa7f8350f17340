"""The error that ends an experiment with one clear line instead of a traceback."""


class UserError(Exception):
  """Bad input (flags, data, workdir): the message says what is wrong and how to fix it."""
