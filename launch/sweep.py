"""Writes one command per line for a grid of flag values: the input of a SLURM array job.

  python -m launch.sweep --experiment=vae --grid="learning_rate=1e-3,3e-4 latent_dim=2,20" \
      --fixed="--seeds=8 --epochs=50" --root=runs/sweep1 > runs/sweep1.txt
  sbatch --array=1-$(wc -l < runs/sweep1.txt) launch/slurm_array.sh runs/sweep1.txt

Each command gets its own --workdir under --root named after its flag values, so reruns of the
same array resume every unfinished cell instead of starting over.
"""

from __future__ import annotations

import itertools
import re
import shlex
import sys

from absl import app, flags

_EXPERIMENT = flags.DEFINE_string("experiment", None, "Experiment module under experiments/, "
                                  "e.g. vae, reinforce.", required=True)
_GRID = flags.DEFINE_string("grid", "", "Space-separated NAME=V1,V2,... entries; the sweep is "
                            "their Cartesian product.")
_FIXED = flags.DEFINE_string("fixed", "", "Flags passed unchanged to every command.")
_ROOT = flags.DEFINE_string("root", "runs/sweep", "Parent of the per-cell --workdir folders.")
_PYTHON = flags.DEFINE_string("python", "python", "Interpreter used in the commands.")


def parse_grid(grid: str) -> list[tuple[str, list[str]]]:
  """'a=1,2 b=x' -> [('a', ['1', '2']), ('b', ['x'])], with one clear error on bad syntax."""
  axes = []
  for entry in grid.split():
    name, sep, values = entry.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or not values:
      raise ValueError(f"bad --grid entry {entry!r}: write NAME=V1,V2,... (e.g. latent_dim=2,20)")
    axes.append((name, [v for v in values.split(",") if v != ""]))
  names = [n for n, _ in axes]
  if len(set(names)) != len(names):
    raise ValueError(f"--grid names a flag twice: {names}")
  return axes


def commands(experiment: str, grid: str, fixed: str, root: str, python: str = "python") -> list[str]:
  """One command per cell of the grid, each with its own --workdir."""
  axes = parse_grid(grid)
  out = []
  for values in itertools.product(*[v for _, v in axes]) if axes else [()]:
    cell = [(name, value) for (name, _), value in zip(axes, values)]
    tag = "_".join(f"{n}-{re.sub(r'[^A-Za-z0-9.+-]', '', v)}" for n, v in cell) or "base"
    args = [f"--{n}={v}" for n, v in cell]
    cmd = [python, "-m", f"experiments.{experiment}", *shlex.split(fixed), *args,
           f"--workdir={root}/{tag}"]
    out.append(" ".join(shlex.quote(c) for c in cmd))
  return out


def main(argv):
  del argv
  try:
    lines = commands(_EXPERIMENT.value, _GRID.value, _FIXED.value, _ROOT.value, _PYTHON.value)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
