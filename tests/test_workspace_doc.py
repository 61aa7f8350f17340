"""WORKSPACE.md's Python blocks marked ``<!-- tested: ... -->`` run as written on real runs.

The blocks name example workdirs (``runs/vae``, ...); a test substitutes real ones and checks what
the block computed against the files read independently (plain json)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def marked_blocks(tested_by: str) -> list[str]:
  """The ```python blocks of WORKSPACE.md whose marker line names ``tested_by``, in order."""
  with open(os.path.join(ROOT, "WORKSPACE.md")) as f:
    text = f.read()
  pattern = r"<!-- tested: " + re.escape(tested_by) + r"[^>]*-->\s*```python\n(.*?)```"
  return [re.sub(r"^ {3}", "", block, flags=re.M) for block in re.findall(pattern, text, re.S)]


def run_block(code: str, workdirs: dict[str, str]) -> dict:
  """Executes ``code`` with each example workdir replaced by a real one; returns its names."""
  for example, real in workdirs.items():  # longest first, so "runs/vae_x" is not cut
    assert f'"{example}"' in code, (example, code)
    code = code.replace(f'"{example}"', repr(real))
  namespace = {}
  exec(compile(code, "WORKSPACE.md", "exec"), namespace)  # noqa: S102 -- the documented snippet
  return namespace


def _toy(workdir, *flags):
  proc = subprocess.run([sys.executable, "-m", "tests.toy_experiment", f"--workdir={workdir}",
                         "--chunks=2", "--steps_per_chunk=5", *flags], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("toy")
  a, b = str(base / "a"), str(base / "b")
  _toy(a, "--seeds=3")
  _toy(b, "--seeds=2", "--seed=10", "--learning_rate=0.01")
  return a, b


def _json(path):
  with open(path) as f:
    return json.load(f)


def test_the_five_line_loader_reads_results_and_metrics(toy_runs):
  (code,) = marked_blocks("tests/test_workspace_doc.py runs this block on a real run")
  assert len([line for line in code.splitlines() if line.strip()]) == 5, code
  run = toy_runs[0]
  ns = run_block(code, {"runs/vae": run})
  results = _json(os.path.join(run, "results.json"))
  summary, curves = ns["summary"], ns["curves"]
  assert list(summary.index) == list(results["metrics"]) == ["distance"]
  for stat in ("mean", "ci95_half_width", "iqm"):
    assert summary.loc["distance", stat] == results["metrics"]["distance"][stat]
  assert list(summary.loc["distance", "per_seed"]) == results["metrics"]["distance"]["per_seed"]
  with open(os.path.join(run, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert len(curves) == len(rows) == 2 * 3
  assert set(curves.columns) == {"chunk", "seed", "seconds", "loss"}
  np.testing.assert_array_equal(curves["loss"].to_numpy(), [r["loss"] for r in rows])
  np.testing.assert_array_equal(curves["seed"].to_numpy(), [r["seed"] for r in rows])
  # The uses the text suggests work on the loaded frames.
  per_chunk = curves.groupby("chunk")["loss"].mean()
  np.testing.assert_allclose(per_chunk.loc[2], np.mean([r["loss"] for r in rows if r["chunk"] == 2]))
  assert curves.pivot(index="chunk", columns="seed", values="loss").shape == (2, 3)


def test_the_comparison_of_two_runs(toy_runs, capsys):
  (code,) = marked_blocks("tests/test_workspace_doc.py runs this block on two real runs")
  a, b = toy_runs
  ns = run_block(code, {"runs/vae_lr3e-4": b, "runs/vae": a})
  table = ns["table"]
  for run in (a, b):
    saved = _json(os.path.join(run, "results.json"))["metrics"]["distance"]
    for stat in ("mean", "ci95_half_width", "iqm"):
      assert table.loc[(run, "distance"), stat] == saved[stat]
  printed = capsys.readouterr().out
  assert a in printed and b in printed and "distance" in printed
