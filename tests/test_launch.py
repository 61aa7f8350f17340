"""launch/sweep.py: the grid's cells, each once, with a distinct --workdir."""

import shlex

import pytest

from launch import sweep


def test_sweep_covers_the_grid_once_each_with_distinct_workdirs():
  lines = sweep.commands("vae", "learning_rate=1e-3,3e-4 latent_dim=2,20,50", "--seeds=8", "runs/s")
  assert len(lines) == 2 * 3
  cells = set()
  workdirs = set()
  for line in lines:
    argv = shlex.split(line)
    assert argv[:3] == ["python", "-m", "experiments.vae"] and "--seeds=8" in argv
    flags = dict(a[2:].split("=", 1) for a in argv[3:])
    cells.add((flags["learning_rate"], flags["latent_dim"]))
    workdirs.add(flags["workdir"])
  assert cells == {(lr, d) for lr in ("1e-3", "3e-4") for d in ("2", "20", "50")}
  assert len(workdirs) == 6


@pytest.mark.parametrize("grid", ["learning_rate", "=1,2", "a=1 a=2", "bad-name=1"])
def test_bad_grid_is_one_clear_error(grid):
  with pytest.raises(ValueError, match="--grid"):
    sweep.commands("vae", grid, "", "runs/s")
