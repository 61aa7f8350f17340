"""The algorithm cores import only what they use, and importing the runner package loads nothing.

The static closure is read from the source with ``ast`` (every import statement, at module level
or inside a function), so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORES = ("genrl_jax.rl.dqn", "genrl_jax.rl.reinforce", "genrl_jax.generative.vae",
         "genrl_jax.generative.gan")


def _path(module: str) -> str | None:
  base = os.path.join(ROOT, *module.split("."))
  for path in (base + ".py", os.path.join(base, "__init__.py")):
    if os.path.exists(path):
      return path
  return None


def _imports(module: str) -> set[str]:
  """The package modules named by ``module``'s import statements (``from a import b`` names
  ``a.b`` where that is a module, else ``a``)."""
  tree = ast.parse(open(_path(module)).read())
  package = module if _path(module).endswith("__init__.py") else module.rsplit(".", 1)[0]
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                        + ([base] if base else []))
      for a in node.names:
        out.add(f"{base}.{a.name}" if _path(f"{base}.{a.name}") else base)
  return {m for m in out if m.split(".")[0] == "genrl_jax"}


def closure(module: str) -> set[str]:
  """Every package module ``module`` imports, directly or through others (parents included:
  importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``)."""
  seen, todo = set(), [module]
  while todo:
    m = todo.pop()
    if m in seen or _path(m) is None:
      continue
    seen.add(m)
    parts = m.split(".")
    todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    todo.extend(_imports(m))
  return seen


def test_the_closure_reader_sees_imports_inside_functions_and_through_packages():
  # An independent check of the reader on modules whose imports are known: the runner's loop
  # imports the checkpoint module; replay imports the runner inside its package.
  assert "genrl_jax.run.checkpoint" in closure("genrl_jax.run.runner")
  assert "genrl_jax.run.runner" in closure("genrl_jax.run.replay")
  assert "genrl_jax.rl.rollout" in closure("genrl_jax.rl.dqn")


@pytest.mark.parametrize("module", CORES)
def test_an_algorithm_core_imports_nothing_of_the_runner(module):
  inside_run = sorted(m for m in closure(module) if m == "genrl_jax.run"
                      or m.startswith("genrl_jax.run."))
  assert not inside_run, f"{module} imports {inside_run}"


def test_importing_the_runner_package_loads_nothing_and_connects_to_nothing():
  # Under a multi-task SLURM step a connection attempt at import would hang or fail; the child
  # would also list jax.distributed among its modules.
  env = dict(os.environ, SLURM_NTASKS="2", SLURM_PROCID="1", SLURM_STEP_NODELIST="node[1-2]",
             SLURM_JOB_ID="1")
  code = textwrap.dedent("""
      import sys, time
      t = time.perf_counter()
      import genrl_jax.run
      seconds = time.perf_counter() - t
      loaded = [m for m in ("jax", "orbax.checkpoint", "tensorboardX", "matplotlib", "absl")
                if m in sys.modules]
      print(repr((loaded, seconds)))
  """)
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120, check=True)
  loaded, seconds = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 (our own repr)
  assert loaded == [], loaded
  assert seconds < 1.0
  # The names still resolve, from their modules, on first use.
  code = "import genrl_jax.run as r; print(r.Experiment.__module__, r.UserError.__module__)"
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=True)
  assert out.stdout.split() == ["genrl_jax.run.experiment", "genrl_jax.errors"]
