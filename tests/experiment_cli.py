"""Runs an experiment entry point in a subprocess, as a user would; checks its bad-input path."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_experiment(module: str, *flags: str) -> subprocess.CompletedProcess:
  """``python -m <module> <flags>`` from the repository root, on the CPU, output captured."""
  return subprocess.run([sys.executable, "-m", module, *flags], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def assert_one_line_error(proc: subprocess.CompletedProcess, flag: str) -> None:
  """Bad input ends with exit status 2 and one ``error: ...`` line naming ``flag``, no traceback."""
  assert proc.returncode == 2, (proc.returncode, proc.stderr)
  lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and flag in lines[0], proc.stderr
  assert "Traceback" not in proc.stderr
