"""Entry-point wrapper: absl flags, and a UserError becomes one line on stderr (exit 2)."""

from __future__ import annotations

import sys
from typing import Callable

from absl import app, flags, logging

from genrl_jax.run import devices
from genrl_jax.run.errors import UserError


def cli_main(main: Callable[[list[str]], object], host_device_per_core: bool = False) -> None:
  """``app.run(main)``, with bad input reported as ``error: <what is wrong and how to fix it>``.

  Positional arguments are refused here, for every experiment: all options are absl flags.
  absl's own flag errors (unknown flag, value not of the flag's type or enum) are one line too.

  host_device_per_core: expose one XLA CPU device per core before jax starts, so the runner
  spreads the seeds over the cores (see genrl_jax.run.devices).
  """
  if host_device_per_core:
    devices.host_device_per_core()

  def wrapped(argv):
    # Library INFO logs (orbax writes a dozen lines per checkpoint) would bury the progress
    # lines; they are shown again with an explicit --verbosity=0 (or -v 0).
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      if len(argv) > 1:
        raise UserError(f"unexpected arguments {' '.join(argv[1:])!r}; options are given as "
                        "--name=value (see --helpfull)")
      return main(argv)
    except UserError as e:
      _exit_with_error(str(e))

  app.run(wrapped, flags_parser=_parse_flags)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with its errors (unknown flag, bad enum or number) as one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _exit_with_error(f"{e}; see --helpfull")


def _exit_with_error(message: str) -> None:
  """The one line bad input gets: ``error: <message>`` on stderr, exit status 2."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


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
