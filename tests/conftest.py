"""Test-session settings: a persistent XLA compilation cache in a temporary directory.

Many tests compile the same small programs (each runner.run builds fresh jit objects); the disk
cache turns every compile after the first into a load. Subprocess tests inherit it through the
JAX_* environment variables set here. Results do not depend on it.
"""

import os

import jax
import pytest


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("jax_compilation_cache"))
  settings = {"jax_compilation_cache_dir": directory,
              "jax_persistent_cache_min_compile_time_secs": 0.0,
              "jax_persistent_cache_min_entry_size_bytes": 0}
  previous_env = {k.upper(): os.environ.get(k.upper()) for k in settings}
  for name, value in settings.items():
    jax.config.update(name, value)
    os.environ[name.upper()] = str(value)
  yield directory
  for name, value in previous_env.items():
    if value is None:
      os.environ.pop(name, None)
    else:
      os.environ[name] = value
