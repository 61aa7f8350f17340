"""Every experiment that trains through the runner, by name: what replay needs to rebuild it.

One entry per experiment: its name (as in run_info.json; a comparison's variants
``reinforce[total]`` use their base name) and the library module whose
``from_saved_flags(flags, name) -> runner.Experiment`` builds the run from the flags saved in
run_info.json, through the same code its entry point uses. A new experiment gets replay by adding
its line here.
"""

from __future__ import annotations

import importlib

from genrl_jax.errors import UserError

BUILDERS = {
    "vae": "genrl_jax.generative.vae_run",
    "reinforce": "genrl_jax.rl.reinforce_run",
    "dqn": "genrl_jax.rl.dqn_run",
    "cvae": "genrl_jax.generative.cvae_run",
    "gan": "genrl_jax.generative.gan_run",
}
ENTRY_POINTS = {  # the command that trains (and resumes) each experiment
    "vae": "experiments.vae",
    "reinforce": "experiments.reinforce",
    "dqn": "experiments.dqn",
    "cvae": "experiments.cvae",
    "gan": "experiments.gan",
}


def base_name(name: str) -> str:
  """``reinforce[total]`` -> ``reinforce``."""
  return name.split("[", 1)[0]


def build(name: str, saved_flags: dict):
  """The ``runner.Experiment`` of a run named ``name`` with these saved flags."""
  base = base_name(name)
  if base not in BUILDERS:
    raise UserError(f"no replay for experiment {name!r}: known are {', '.join(sorted(BUILDERS))}")
  return importlib.import_module(BUILDERS[base]).from_saved_flags(saved_flags, name)
