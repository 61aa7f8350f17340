"""Reproducibility studies from a run's workdir, for every experiment that trains on the runner.

  python -m experiments.replay --workdir=runs/vae                 # replay the newest checkpoint
  python -m experiments.replay --workdir=runs/vae --step=4 --out=/tmp/vae_at_4
  python -m experiments.replay --workdir=runs/vae --verify        # determinism audit
  python -m experiments.replay --workdir=runs/vae --seed_index=3 --out=runs/vae_seed3

Replay rebuilds the experiment from the run's run_info.json (the flags it ran with) through the
code its entry point uses, restores the checkpoint, reruns the final evaluation, writes
results.json and the figures into --out (default RUN/replay/<step>/) and prints
metric | saved | replayed | equal (exit 1 if a saved value is not reproduced). --verify restores
step N-1, runs one chunk and compares it with the saved step N bit for bit (exit 1 if any leaf
differs). --seed_index extracts one seed into a 1-seed workdir that the experiment's own command
continues.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from genrl_jax import run as runner
from genrl_jax.run import files
from genrl_jax.run import replay
from genrl_jax.run import runner as runner_lib

flags.DEFINE_string("workdir", None, "The run's workdir (it holds run_info.json, metrics.jsonl "
                    "and checkpoints/).", required=True)
flags.DEFINE_integer("step", None, "The checkpoint (chunks done) to replay, verify or extract; "
                     "default: the newest.")
flags.DEFINE_string("out", None, "Where replayed results and figures (or the extracted seed's "
                    "workdir) go; default RUN/replay/<step>/ (RUN/seed_<i>/ with --seed_index).")
flags.DEFINE_bool("verify", False, "Determinism audit: restore step N-1, run one chunk, compare "
                  "with the saved step N bit for bit; exit 0 only when identical.")
flags.DEFINE_integer("seed_index", None, "Extract seed i (0-based) of the run into a 1-seed "
                     "workdir that `python -m experiments.<name> --seeds=1 --seed=S+i` continues.")
FLAGS = flags.FLAGS


def main(argv):
  if FLAGS.out is not None:
    replay.check_out(FLAGS.out)  # before the run is rebuilt (data, evaluator: the slow part)
  run = replay.load(FLAGS.workdir)
  for line in replay.environment_warnings(run):
    print(line, flush=True)
  if FLAGS.verify:
    step, differing = replay.verify(run, FLAGS.step)
    if not differing:
      print(f"verify: one chunk from step {step - 1} reproduces the saved step {step} bit for "
            "bit (every leaf of every seed)", flush=True)
      return
    print(f"verify: step {step} is NOT reproduced; {len(differing)} leaves differ:", flush=True)
    for path, max_abs, ulps in differing:
      print(f"  {path}: max |diff| {max_abs:.3g}, {ulps} ULP", flush=True)
    sys.exit(1)
  if FLAGS.seed_index is not None:
    out = FLAGS.out or os.path.join(FLAGS.workdir, f"seed_{FLAGS.seed_index}")
    command = replay.extract_seed(run, FLAGS.seed_index, out, FLAGS.step)
    print(f"seed index {FLAGS.seed_index} extracted into {out}; continue it with: {command}",
          flush=True)
    return
  step = FLAGS.step if FLAGS.step is not None else (run.steps() or [None])[-1]
  out = FLAGS.out or os.path.join(FLAGS.workdir, "replay", str(step))
  rows = replay.replay(run, step, out)
  print(replay.format_table(rows), flush=True)
  unequal = [r[0] for r in rows if r[3] is False]
  compared = [r for r in rows if r[3] is not None]
  if unequal:
    print(f"replay of step {step}: {', '.join(unequal)} differ from the saved results; "
          f"replayed results in {out}", flush=True)
    sys.exit(1)
  elif not compared:
    print(f"replay of step {step}: nothing to compare (the saved {runner_lib.RESULTS_FILE} is "
          f"of another step, missing or damaged); results and figures in {out}", flush=True)
  else:
    print(f"replay of step {step}: {len(compared)} saved values reproduced exactly; results "
          f"and figures in {out}", flush=True)


def _recorded_cpu_devices(argv: list[str]) -> int | None:
  """How many CPU devices the run in --workdir had, read before jax starts (the same count
  gives the same placement and programs)."""
  for i, arg in enumerate(argv):
    path = arg.split("=", 1)[1] if arg.startswith("--workdir=") else (
        argv[i + 1] if arg == "--workdir" and i + 1 < len(argv) else None)
    if path:
      try:
        info = files.read_json(os.path.join(path, runner_lib.RUN_INFO_FILE), "the run's facts")
        sessions = info.get("sessions") or [{}]
        devices = list(sessions[-1].get("devices") or info.get("devices") or [])
      except (files.DamagedFile, AttributeError, TypeError, IndexError, KeyError):
        return None  # main() reports what is wrong with the file, in one line
      cpus = [d for d in devices if str(d).lower().startswith(("cpu", "tfrt_cpu"))]
      return len(cpus) if cpus and len(cpus) == len(devices) else None
  return None


if __name__ == "__main__":
  _cpus = _recorded_cpu_devices(sys.argv)
  if _cpus and _cpus > 1:
    runner.devices.host_device_per_core(_cpus)
  runner.cli_main(main)
