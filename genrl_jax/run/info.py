"""run_info.json: the flags, code version, package versions and devices of a run."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys

import jax

PACKAGES = ("genrl_jax", "jax", "jaxlib", "flax", "optax", "chex", "orbax-checkpoint", "gymnax",
            "tensorflow-datasets", "numpy", "absl-py")


def git_commit() -> dict:
  """HEAD of the checkout the package was imported from, and whether it had local changes."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                            timeout=10).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           capture_output=True, text=True, timeout=10).stdout.strip() != ""
  except (OSError, subprocess.SubprocessError):
    return {"commit": None, "dirty": None}
  return {"commit": commit or None, "dirty": dirty if commit else None}


def versions() -> dict:
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def entry_point() -> str | None:
  """The module the program was started as (``python -m experiments.vae`` -> experiments.vae)."""
  main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  return main_spec.name if main_spec is not None else None


def collect(name: str, config: dict | None, seed: int, seeds: int,
            spec: str | None = None) -> dict:
  return {
      "experiment": name,
      "spec": spec,
      "entry_point": entry_point(),
      "config": config or {},
      "seed": seed,
      "seeds": seeds,
      "argv": sys.argv,
      "git": git_commit(),
      "versions": versions(),
      "devices": [str(d) for d in jax.devices()],
      "backend": jax.default_backend(),
      "host": platform.node(),
  }


def write(path: str, name: str, config: dict | None, seed: int, seeds: int,
          resumed_from: int = 0, placement: str | None = None, spec: str | None = None) -> None:
  """Writes (or, on resume, extends) run_info.json; earlier sessions are kept under 'sessions'.
  ``spec``: the module whose SPEC rebuilds the run (replay imports it)."""
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  info = collect(name, config, seed, seeds, spec)
  sessions = []
  if os.path.exists(path):
    try:
      with open(path) as f:
        sessions = json.load(f).get("sessions", [])
    except (OSError, json.JSONDecodeError):
      sessions = []
  sessions.append({"started": now, "resumed_from": resumed_from, "git": info["git"],
                   "devices": info["devices"], "placement": placement})
  info["sessions"] = sessions
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(info, f, indent=2, default=str)
  os.replace(tmp, path)
