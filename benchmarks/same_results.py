r"""Does a change of the code change what the experiments compute? Two trees, the same tiny runs,
compared bit for bit.

  python -m benchmarks.same_results --before=HEAD                 # HEAD vs the working tree
  python -m benchmarks.same_results --before=v1 --after=v2        # two revisions
  python -m benchmarks.same_results --before=HEAD --keep=/tmp/sr  # keep the runs and logs
  python -m benchmarks.same_results --before=HEAD --time          # throughput, interleaved

``--before`` (and ``--after`` when given; else the working tree this file is in) is checked out
into a temporary ``git worktree``. In each tree every training experiment runs from its command
line on a tiny configuration with 2 seeds and its checkpoints (``EXPERIMENTS``: the VAE, the
CVAE, the DCGAN, REINFORCE, DQN and a VAE ``--sweep``), on a small labelled IDX data set written
here (class k is a bright band at rows 2k+4..2k+7) and one evaluator cache shared by both trees
(the classifier trains once). Each tree runs with its own directory as the working directory and
as ``PYTHONPATH``, and the script first asserts that ``genrl_jax`` and ``experiments`` import from
that tree (the package is installed editable from one checkout, which must not leak in).

Then, per experiment:

* metrics rows: every row of ``metrics.jsonl``, every value of the keys both rows hold except the
  wall-clock ones (``is_timing``: ``seconds``, ``*_seconds``, ...), equal after the JSON parse:
  exact floats (NaN equals NaN, -0.0 differs from 0.0), the same types, the same row count. A
  key only one tree writes is listed as info (a failure with ``--strict``).
* checkpoint leaves: the newest step under ``checkpoints/``, read with orbax's own API and no
  target (none of the project's code), each leaf compared as bytes with its dtype and shape
  (the PRNG key data, optimizer counters, replay buffers included); the same set of leaves.
* results: ``results.json``'s ``experiment``, ``seeds``, every metric's whole summary, ``extra``
  and ``config`` (less the timings and ``workdir``) for the keys both hold; keys only one tree
  writes are info.
* side files: other ``*.jsonl`` files and ``.npy`` / ``.npz`` arrays in the workdir (the DCGAN's
  snapshot scores and grids), compared the same way when both trees write them.
* replay: ``python -m experiments.replay`` from the AFTER tree on the BEFORE tree's run (``--out``
  elsewhere, the run untouched): "yes" when it reproduces the saved results, "error line" when it
  stops with one ``error:`` line (a run of the old layout may be refused; acceptable), a failure
  when it finds other values or ends in a traceback. ``--replay_verify`` also runs ``--verify``
  there (the after tree's chunk against the before tree's checkpoints).

One table, exit status 1 on any difference. The default run is 12 short training processes and
6 replays: 3.5-3.7 minutes of CPU (7-8.5 minutes of wall time on a 2-core machine at load ~6).
The evaluator classifier trains once, in the before tree, and the after tree loads its cache: a
change of how it trains shows only where it changes the cache's identity (the after tree then
retrains, and the scores are compared).

``--time`` instead runs one mid-size configuration of each experiment (``TIME_EXPERIMENTS``) in
both trees, interleaved before, after, before, after (``--rounds``), on 9000 / 1000 images, and
prints each run's steady-state chunk time (its results.json ``chunk_seconds`` without the first
chunk, which compiles) and wall time, the after/before ratio of their sums, and the spread
between the rounds of each tree (the noise the ratio is to be read against).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
from absl import app
from absl import flags
from absl import logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS

# Tiny configurations: a few seconds of CPU each after the compile, 2 seeds, a checkpoint per
# chunk. {data} and {evaluators} are filled in; the workdir is added per tree.
SEEDS = ["--seeds=2"]
VAE_TINY = ["--data_dir={data}", "--hidden=16", "--latent_dim=2", "--batch_size=32",
            "--eval_iw_samples=4", *SEEDS]
EXPERIMENTS = {
    "vae": ("experiments.vae", [*VAE_TINY, "--epochs=3"]),
    "cvae": ("experiments.cvae", [*VAE_TINY, "--epochs=2", "--prior=learned",
                                  "--samples_per_label=4", "--evaluator_dir={evaluators}"]),
    "gan": ("experiments.gan", ["--data_dir={data}", "--evaluator_dir={evaluators}", "--width=2",
                                "--latent_dim=4", "--batch_size=8", "--iterations=40",
                                "--iterations_per_chunk=20", "--eval_samples=20",
                                "--discriminator_layers=2", *SEEDS]),
    "reinforce": ("experiments.reinforce", [
        "--max_episode_steps=20", "--num_envs=4", "--total_env_steps=1600", "--num_chunks=2",
        "--hidden_sizes=16", "--value_hidden_sizes=16", "--baseline=value", *SEEDS]),
    "dqn": ("experiments.dqn", [
        "--max_episode_steps=20", "--num_envs=4", "--train_frequency=4", "--hidden_sizes=16",
        "--buffer_size=1000", "--batch_size=16", "--learning_starts=400",
        "--target_update_period=200", "--total_env_steps=1600", "--num_chunks=2",
        "--points_per_chunk=2", "--eval_episodes=2", "--eval_every=1", *SEEDS]),
    "vae_sweep": ("experiments.vae", [*VAE_TINY, "--epochs=2",
                                      "--sweep=learning_rate=1e-3,3e-3"]),
}
TINY_DATA = (512, 128)  # train, test images

# --time: mid-size runs (seconds of steady state each on a 2-core CPU), on 9000 / 1000 images.
VAE_MID = ["--data_dir={data}", "--eval_iw_samples=10", *SEEDS]
TIME_EXPERIMENTS = {
    "vae": ("experiments.vae", [*VAE_MID, "--epochs=4"]),
    "cvae": ("experiments.cvae", [*VAE_MID, "--epochs=4", "--samples_per_label=10",
                                  "--evaluator_dir={evaluators}"]),
    "gan": ("experiments.gan", ["--data_dir={data}", "--evaluator_dir={evaluators}",
                                "--iterations=30", "--iterations_per_chunk=10",
                                "--eval_samples=100", *SEEDS]),
    "reinforce": ("experiments.reinforce", ["--total_env_steps=1000000", "--num_chunks=4",
                                            *SEEDS]),
    "dqn": ("experiments.dqn", ["--total_env_steps=60000", "--learning_starts=2000",
                                "--num_chunks=4", *SEEDS]),
    "vae_sweep": ("experiments.vae", [*VAE_MID, "--epochs=3",
                                      "--sweep=learning_rate=1e-3,3e-4,1e-4"]),
}
TIME_DATA = (9000, 1000)
# Trains the shared evaluator on the --time data before anything is timed.
EVALUATOR_WARMUP = ("experiments.cvae", ["--data_dir={data}", "--hidden=16", "--latent_dim=2",
                                         "--epochs=1", "--eval_iw_samples=2",
                                         "--samples_per_label=2", "--seeds=1",
                                         "--evaluator_dir={evaluators}"])

RESULTS_SKIPPED = {"config": {"workdir"}}  # a path that differs between the trees by design
_TIMING_NAMES = {"seconds", "secs", "time", "wall_time", "walltime", "timestamp", "elapsed"}
_TIMING_SUFFIXES = ("_seconds", "_secs", "_time", "_timestamp", "_per_second", "_per_sec",
                    "_throughput")


def is_timing(key: str) -> bool:
  """A wall-clock or throughput key (``seconds``, ``eval_seconds``, ``chunk_seconds``, ...):
  not part of what a run computes, so never compared."""
  return key in _TIMING_NAMES or key.endswith(_TIMING_SUFFIXES)


# --- comparing values -------------------------------------------------------------------------

def same(a: Any, b: Any) -> bool:
  """Equal as parsed JSON, bit for bit: the same types (1 is not 1.0, True is not 1), floats
  equal with their sign (-0.0 is not 0.0) or both NaN, lists and dicts element by element."""
  if type(a) is not type(b):
    return False
  if isinstance(a, float):
    if math.isnan(a) or math.isnan(b):
      return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
  if isinstance(a, (list, tuple)):
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
  if isinstance(a, dict):
    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
  return a == b


def _short(value: Any, width: int = 40) -> str:
  text = json.dumps(value) if not isinstance(value, str) else value
  return text if len(text) <= width else text[:width - 3] + "..."


class Comparison:
  """One column's outcome: ``equal`` (None: nothing to compare), the cell's text, the first
  differences and the info notes (keys one side lacks)."""

  def __init__(self, equal: bool | None, cell: str, differences: list[str] | None = None,
               info: list[str] | None = None):
    self.equal, self.cell = equal, cell
    self.differences, self.info = differences or [], info or []

  def __repr__(self):
    return f"Comparison({self.equal}, {self.cell!r}, {self.differences}, {self.info})"


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _row_label(row: dict, i: int) -> str:
  ids = [f"{k} {row[k]}" for k in ("chunk", "iteration", "seed", "cell") if k in row]
  return ", ".join(ids) or f"row {i + 1}"


def compare_rows(before: list[dict], after: list[dict], strict: bool = False,
                 what: str = "rows") -> Comparison:
  """Every row's non-timing values, in order; keys one side lacks are info (or, strict, a
  difference)."""
  differences, info = [], []
  if len(before) != len(after):
    differences.append(f"{len(before)} {what} before, {len(after)} after")
  keys_b = set().union(*[r.keys() for r in before]) if before else set()
  keys_a = set().union(*[r.keys() for r in after]) if after else set()
  for side, keys in (("before", keys_b - keys_a), ("after", keys_a - keys_b)):
    keys = sorted(k for k in keys if not is_timing(k))
    if keys:
      (differences if strict else info).append(f"only {side} writes {', '.join(keys)}")
  unequal = 0
  for i, (rb, ra) in enumerate(zip(before, after)):
    bad = [k for k in rb if k in ra and not is_timing(k) and not same(rb[k], ra[k])]
    if bad:
      unequal += 1
      if unequal <= 3:
        k = bad[0]
        differences.append(f"{_row_label(rb, i)}: {k} {_short(rb[k])} vs {_short(ra[k])}"
                           + (f" (and {len(bad) - 1} more keys)" if len(bad) > 1 else ""))
  n = min(len(before), len(after))
  if unequal > 3:
    differences.append(f"... {unequal} of {n} {what} differ")
  if differences:
    return Comparison(False, f"NO ({n - unequal}/{n} {what} equal)", differences, info)
  return Comparison(True, f"yes ({n} {what})", [], info)


def compare_results(before: dict, after: dict) -> Comparison:
  """results.json: ``experiment``, ``seeds``, each metric's summary, ``extra`` and ``config``
  values, less the timings and ``RESULTS_SKIPPED``; keys only one side holds are info."""
  def entries(results: dict) -> dict[str, Any]:
    out = {}
    for top, value in results.items():
      if isinstance(value, dict) and top in ("metrics", "extra", "config"):
        for k, v in value.items():
          if not is_timing(k) and k not in RESULTS_SKIPPED.get(top, ()):
            out[f"{top}.{k}"] = v
      elif not is_timing(top):
        out[top] = value
    return out
  eb, ea = entries(before), entries(after)
  info = [f"only {side} has {', '.join(sorted(keys))}" for side, keys in
          (("before", eb.keys() - ea.keys()), ("after", ea.keys() - eb.keys())) if keys]
  common = [k for k in eb if k in ea]
  bad = [k for k in common if not same(eb[k], ea[k])]
  differences = [f"{k}: {_short(eb[k])} vs {_short(ea[k])}" for k in bad[:4]]
  if len(bad) > 4:
    differences.append(f"... {len(bad)} of {len(common)} values differ")
  if bad:
    names = f": {', '.join(bad)}" if len(bad) <= 2 else ""
    return Comparison(False, f"NO ({len(common) - len(bad)}/{len(common)} values{names})",
                      differences, info)
  return Comparison(True, f"yes ({len(common)} values)", [], info)


# --- checkpoints, read with orbax alone -------------------------------------------------------

def checkpoint_steps(workdir: str) -> list[int]:
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(s) for s in os.listdir(directory)
                if s.isdigit() and os.path.isdir(os.path.join(directory, s)))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{"params/encoder/kernel": leaf, "opt_state/0/count": leaf, ...} of nested dicts, lists
  and tuples."""
  if isinstance(tree, dict):
    items = sorted(tree.items(), key=lambda kv: str(kv[0]))
  elif isinstance(tree, (list, tuple)):
    items = list(enumerate(tree))
  else:
    return {prefix or ".": tree}
  out = {}
  for k, v in items:
    out.update(flatten(v, f"{prefix}/{k}" if prefix else str(k)))
  return out


def read_checkpoint(step_dir: str) -> dict[str, Any]:
  """Every leaf of one orbax checkpoint step, by path: each item directory (a subdirectory with
  orbax's ``_METADATA``) restored without a target. One item: its leaves' paths as they are;
  several: prefixed with the item's name."""
  import orbax.checkpoint as ocp  # noqa: PLC0415 (jax starts only when checkpoints are read)
  items = sorted(d for d in os.listdir(step_dir)
                 if os.path.isfile(os.path.join(step_dir, d, "_METADATA")))
  if not items and os.path.isfile(os.path.join(step_dir, "_METADATA")):
    items = ["."]
  if not items:
    raise ValueError(f"{step_dir} holds no orbax item (no _METADATA)")
  leaves = {}
  for item in items:
    path = os.path.abspath(os.path.join(step_dir, item))
    try:
      tree = ocp.StandardCheckpointer().restore(path)
    except Exception:  # noqa: BLE001 (an older PyTree-handler item)
      tree = ocp.PyTreeCheckpointer().restore(path)
    leaves.update(flatten(tree, "" if len(items) == 1 else item))
  return leaves


def same_leaf(a: Any, b: Any) -> tuple[bool, str]:
  """(equal, why not): arrays by dtype, shape and bytes; anything else by ``same``."""
  if isinstance(a, (np.ndarray, np.generic)) or isinstance(b, (np.ndarray, np.generic)):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
      return False, f"{a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"
    if np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes():
      return True, ""
    av = np.ascontiguousarray(a).view(np.uint8).reshape(a.size, -1)
    bv = np.ascontiguousarray(b).view(np.uint8).reshape(b.size, -1)
    why = f"{int(np.count_nonzero((av != bv).any(axis=-1)))} of {a.size} elements differ"
    if a.dtype.kind in "fc":
      d = np.abs(a.astype(np.complex128 if a.dtype.kind == "c" else np.float64) - b).ravel()
      d = d[np.isfinite(d)]
      if d.size:
        why += f", max |diff| {d.max():.3g}"
    return False, why
  return (True, "") if same(a, b) else (False, f"{_short(a)} vs {_short(b)}")


def compare_checkpoints(before_dir: str, after_dir: str) -> Comparison:
  """The newest checkpoint step of each workdir, leaf by leaf."""
  steps_b, steps_a = checkpoint_steps(before_dir), checkpoint_steps(after_dir)
  if not steps_b or not steps_a:
    return Comparison(False, "NO (no checkpoint)", [
        f"checkpoint steps: before {steps_b}, after {steps_a}"])
  info = [] if steps_b == steps_a else [f"kept steps: before {steps_b}, after {steps_a}"]
  if steps_b[-1] != steps_a[-1]:
    return Comparison(False, f"NO (step {steps_b[-1]} vs {steps_a[-1]})", [
        f"newest step: before {steps_b[-1]}, after {steps_a[-1]}"], info)
  step = steps_b[-1]
  lb = read_checkpoint(os.path.join(before_dir, "checkpoints", str(step)))
  la = read_checkpoint(os.path.join(after_dir, "checkpoints", str(step)))
  differences = []
  for side, paths in (("before", lb.keys() - la.keys()), ("after", la.keys() - lb.keys())):
    if paths:
      differences.append(f"only {side}: {len(paths)} leaves, e.g. {sorted(paths)[0]}")
  equal = 0
  for path in sorted(lb.keys() & la.keys()):
    ok, why = same_leaf(lb[path], la[path])
    if ok:
      equal += 1
    elif len(differences) < 4:
      differences.append(f"step {step} {path}: {why}")
  total = len(lb.keys() | la.keys())
  if total - equal > 3:
    differences.append(f"... {total - equal} of {total} leaves differ or are missing")
  return Comparison(equal == total and not differences, f"{equal}/{total} (step {step})"
                    + ("" if equal == total else " NO"), differences, info)


# --- side files ------------------------------------------------------------------------------

_NOT_SIDE = ("checkpoints", "tensorboard", "replay")


def side_files(workdir: str) -> list[str]:
  """Relative paths of the workdir's other outputs worth comparing: ``*.jsonl`` (but
  metrics.jsonl) and ``.npy`` / ``.npz`` arrays, outside checkpoints/, tensorboard/, replay/."""
  out = []
  for root, dirs, names in os.walk(workdir):
    rel = os.path.relpath(root, workdir)
    if rel == ".":
      dirs[:] = [d for d in dirs if d not in _NOT_SIDE]
    for name in names:
      path = os.path.normpath(os.path.join(rel, name))
      if path != "metrics.jsonl" and name.endswith((".jsonl", ".npy", ".npz")):
        out.append(path)
  return sorted(out)


def _read_array_file(path: str) -> dict[str, np.ndarray]:
  if path.endswith(".npy"):
    return {"": np.load(path, allow_pickle=False)}
  with np.load(path, allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def compare_side_files(before_dir: str, after_dir: str) -> Comparison:
  fb, fa = set(side_files(before_dir)), set(side_files(after_dir))
  info = [f"only {side} writes {', '.join(sorted(paths))}" for side, paths in
          (("before", fb - fa), ("after", fa - fb)) if paths]
  common = sorted(fb & fa)
  if not common:
    return Comparison(None, "-", [], info)
  differences, equal = [], 0
  for rel in common:
    pb, pa = os.path.join(before_dir, rel), os.path.join(after_dir, rel)
    if rel.endswith(".jsonl"):
      c = compare_rows(read_jsonl(pb), read_jsonl(pa))
      ok, why = c.equal, "; ".join(c.differences)
      info += [f"{rel}: {i}" for i in c.info]
    else:
      ab, aa = _read_array_file(pb), _read_array_file(pa)
      ok, why = ab.keys() == aa.keys(), f"arrays {sorted(ab)} vs {sorted(aa)}"
      for k in sorted(ab.keys() & aa.keys()):
        leaf_ok, leaf_why = same_leaf(ab[k], aa[k])
        if not leaf_ok:
          ok, why = False, f"{k or 'array'}: {leaf_why}"
    equal += bool(ok)
    if not ok and len(differences) < 4:
      differences.append(f"{rel}: {why}")
  cell = f"{equal}/{len(common)} files" + ("" if equal == len(common) else " NO")
  return Comparison(equal == len(common), cell, differences, info)


# --- replay ----------------------------------------------------------------------------------

def classify_replay(returncode: int, stdout: str, stderr: str) -> Comparison:
  """experiments.replay's outcome: reproduced (exit 0), one ``error:`` line and exit 2 without a
  traceback (acceptable: a clear refusal), or a failure (values differ, a traceback, a crash)."""
  text = stdout + stderr
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error:")]
  last = next((line for line in reversed(lines) if line.startswith(("replay of", "verify:"))),
              lines[-1] if lines else "")
  if "Traceback (most recent call last)" in text:
    return Comparison(False, f"FAILED: traceback (exit {returncode})", [
        f"replay ended in a traceback: {lines[-1] if lines else ''}"])
  if returncode == 0:
    m = re.search(r"(\d+) saved values reproduced exactly", last)
    what = (f"{m.group(1)} values reproduced" if m else
            "bit for bit" if last.startswith("verify:") else _short(last, 60))
    return Comparison(True, f"yes ({what})")
  if returncode == 2 and len(errors) == 1:
    return Comparison(True, "error line (acceptable)", [], [f"replay: {errors[0]}"])
  return Comparison(False, f"NO (exit {returncode})", [f"replay: {_short(last, 200)}"])


# --- trees, data and processes ----------------------------------------------------------------

def git(*args: str, cwd: str = REPO) -> str:
  proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f"git {' '.join(args)}: {proc.stderr.strip()}")
  return proc.stdout.strip()


def resolve(flag: str, rev: str) -> str:
  try:
    return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
  except RuntimeError:
    raise app.UsageError(f"--{flag}={rev} is not a commit of {REPO}") from None


@contextlib.contextmanager
def worktree(commit: str, path: str):
  """``commit`` checked out (detached) at ``path`` for the duration; removed afterwards."""
  for attempt in range(5):
    try:
      git("worktree", "add", "--detach", "--quiet", path, commit)
      break
    except RuntimeError:
      if attempt == 4:
        raise
      time.sleep(1 + attempt)  # another git command holds a lock
  try:
    yield path
  finally:
    for attempt in range(5):
      try:
        git("worktree", "remove", "--force", path)
        break
      except RuntimeError:
        time.sleep(1 + attempt)
    shutil.rmtree(path, ignore_errors=True)


def write_idx_gz(path: str, array: np.ndarray) -> None:
  """An IDX file of uint8 ``array`` (LeCun's layout), gzipped."""
  header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
    f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def banded_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """[n, 28, 28] uint8 images and [n] labels: label k lights rows 2k+4..2k+7, plus noise."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, size=n)
  x = rng.integers(0, 40, size=(n, 28, 28)).astype(np.float64)
  for i, k in enumerate(labels):
    x[i, 2 * k + 4:2 * k + 8, 4:24] += rng.uniform(150, 215)
  return np.clip(x, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_data(directory: str, n_train: int, n_test: int) -> str:
  os.makedirs(directory, exist_ok=True)
  for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
    x, y = banded_images(n, seed)
    write_idx_gz(os.path.join(directory, f"{split}-images-idx3-ubyte.gz"), x)
    write_idx_gz(os.path.join(directory, f"{split}-labels-idx1-ubyte.gz"), y)
  return directory


def tree_env(tree: str, platform: str) -> dict[str, str]:
  """The environment of a process of ``tree``: that tree first on the import path."""
  env = {**os.environ, "PYTHONPATH": tree, "PYTHONDONTWRITEBYTECODE": "1"}
  if platform:
    env["JAX_PLATFORMS"] = platform
  return env


def check_imports(tree: str, platform: str) -> None:
  """Asserts that a process started as the runs are imports ``genrl_jax`` and ``experiments``
  from ``tree`` (not from the checkout the package is installed from)."""
  code = ("import json, genrl_jax, experiments; "
          "print(json.dumps([genrl_jax.__file__, experiments.__file__]))")
  proc = subprocess.run([sys.executable, "-c", code], cwd=tree,
                        env=tree_env(tree, platform), capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, f"cannot import genrl_jax in {tree}: {proc.stderr.strip()}"
  paths = json.loads(proc.stdout.strip().splitlines()[-1])
  root = os.path.realpath(tree) + os.sep
  for path in paths:
    assert os.path.realpath(path).startswith(root), (
        f"a run in {tree} would import {path}, not that tree's copy")


class Runner:
  """Runs the commands of the trees, with a log per process and a progress line per step."""

  def __init__(self, root: str, platform: str, timeout: float):
    self.root, self.platform, self.timeout, self.start = root, platform, timeout, time.time()
    self.logs = os.path.join(root, "logs")
    os.makedirs(self.logs, exist_ok=True)

  def say(self, text: str) -> None:
    print(f"[{time.time() - self.start:6.0f} s] {text}", file=sys.stderr, flush=True)

  def run(self, tree: str, label: str, module: str, args: list[str]) -> tuple[int, str, str,
                                                                                 float]:
    t0 = time.time()
    try:
      proc = subprocess.run([sys.executable, "-m", module, *args], cwd=tree,
                            env=tree_env(tree, self.platform), capture_output=True, text=True,
                            timeout=self.timeout)
      rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
      rc = -1
      out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
      err = (e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")) + (
          f"\n(killed after {self.timeout} s)")
    seconds = time.time() - t0
    log = os.path.join(self.logs, f"{label}.log")
    with open(log, "w") as f:
      f.write(f"$ cd {tree} && PYTHONPATH={tree} python -m {module} {' '.join(args)}\n"
              f"exit {rc}, {seconds:.1f} s\n--- stdout\n{out}\n--- stderr\n{err}")
    self.say(f"{label}: exit {rc}, {seconds:.0f} s")
    return rc, out, err, seconds


def _where(logs: str) -> str:
  return f"logs in {logs}" if FLAGS.keep else "runs and logs removed (--keep=DIR keeps them)"


def fill(args: list[str], **values: str) -> list[str]:
  return [a.format(**values) for a in args]


def _last_line(text: str) -> str:
  lines = [line for line in text.splitlines() if line.strip()]
  return _short(lines[-1], 160) if lines else "(no output)"


# --- the two modes ---------------------------------------------------------------------------

def compare_trees(trees: dict[str, str], root: str, names: list[str]) -> int:
  runner = Runner(root, FLAGS.platform, FLAGS.run_timeout)
  data = write_data(os.path.join(root, "data"), *TINY_DATA)
  evaluators = os.path.join(root, "evaluators")
  failed_runs = {}
  for name in names:
    module, args = EXPERIMENTS[name]
    for side, tree in trees.items():
      workdir = os.path.join(root, side, name)
      rc, out, err, _ = runner.run(tree, f"{side}_{name}", module, [
          *fill(args, data=data, evaluators=evaluators), f"--workdir={workdir}"])
      if rc != 0:
        failed_runs.setdefault(name, []).append(f"{side} run failed (exit {rc}): "
                                                f"{_last_line(err or out)}")
  rows = []
  for name in names:
    wb, wa = os.path.join(root, "before", name), os.path.join(root, "after", name)
    if name in failed_runs:
      fail = Comparison(False, "run failed")
      rows.append((name, Comparison(False, "run failed", failed_runs[name]), fail, fail,
                   Comparison(None, "-"), Comparison(None, "-")))
      continue
    metrics = compare_rows(read_jsonl(os.path.join(wb, "metrics.jsonl")),
                           read_jsonl(os.path.join(wa, "metrics.jsonl")), FLAGS.strict)
    checkpoint = compare_checkpoints(wb, wa)
    with open(os.path.join(wb, "results.json")) as f, open(
        os.path.join(wa, "results.json")) as g:
      results = compare_results(json.load(f), json.load(g))
    side = compare_side_files(wb, wa)
    rc, out, err, _ = runner.run(trees["after"], f"replay_{name}", "experiments.replay", [
        f"--workdir={wb}", f"--out={os.path.join(root, 'replay', name)}"])
    replay = classify_replay(rc, out, err)
    if FLAGS.replay_verify and replay.equal:
      rc, out, err, _ = runner.run(trees["after"], f"verify_{name}", "experiments.replay",
                                   [f"--workdir={wb}", "--verify"])
      verify = classify_replay(rc, out, err)
      replay = Comparison(replay.equal and verify.equal, f"{replay.cell}; verify {verify.cell}",
                          replay.differences + verify.differences, replay.info + verify.info)
    rows.append((name, metrics, checkpoint, results, side, replay))
  print(format_table(rows))
  failed = any(c.equal is False for row in rows for c in row[1:])
  print(f"\n{'DIFFERENT' if failed else 'SAME'}: {len(rows)} experiments, "
        f"{time.time() - runner.start:.0f} s; {_where(runner.logs)}", flush=True)
  return 1 if failed else 0


HEADER = ("experiment", "metrics rows equal", "checkpoint leaves equal (n/n)", "results equal",
          "side files equal", "replay of before-run by after")


def format_table(rows: list[tuple]) -> str:
  lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
  notes = []
  for name, *cells in rows:
    lines.append("| " + " | ".join([name] + [c.cell for c in cells]) + " |")
    for column, c in zip(HEADER[1:], cells):
      notes += [f"  {name}, {column}: {d}" for d in c.differences]
      notes += [f"  {name}, {column} (info): {i}" for i in c.info]
  return "\n".join(lines + (["", "notes:"] + notes if notes else []))


def steady_seconds(workdir: str) -> float | None:
  """The run's chunk times without the first chunk (which compiles): results.json's
  ``extra.chunk_seconds``, else metrics.jsonl's per-chunk ``seconds``."""
  try:
    with open(os.path.join(workdir, "results.json")) as f:
      chunks = json.load(f)["extra"]["chunk_seconds"]
  except (OSError, KeyError, TypeError, ValueError):
    try:
      per_chunk = {}
      for row in read_jsonl(os.path.join(workdir, "metrics.jsonl")):
        per_chunk[row["chunk"]] = row["seconds"]
      chunks = [per_chunk[k] for k in sorted(per_chunk)]
    except (OSError, KeyError, ValueError):
      return None
  return float(sum(chunks[1:])) if len(chunks) > 1 else None


def time_trees(trees: dict[str, str], root: str, names: list[str]) -> int:
  runner = Runner(root, FLAGS.platform, FLAGS.run_timeout)
  data = write_data(os.path.join(root, "data"), *TIME_DATA)
  evaluators = os.path.join(root, "evaluators")
  if {"cvae", "gan"} & set(names):
    module, args = EVALUATOR_WARMUP
    runner.run(trees["before"], "evaluator_warmup", module,
               [*fill(args, data=data, evaluators=evaluators),
                f"--workdir={os.path.join(root, 'warmup')}"])
  header = ["experiment"] + [f"{side} {r + 1}" for r in range(FLAGS.rounds)
                             for side in trees] + [
      "after/before steady", "after/before wall", "round spread before / after"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  failed = False
  for name in names:
    module, args = TIME_EXPERIMENTS[name]
    times = {side: [] for side in trees}
    cells = []
    for r in range(FLAGS.rounds):
      for side, tree in trees.items():
        workdir = os.path.join(root, "time", f"{side}_{name}_{r + 1}")
        rc, out, err, wall = runner.run(tree, f"time_{side}_{name}_{r + 1}", module, [
            *fill(args, data=data, evaluators=evaluators), f"--workdir={workdir}"])
        steady = steady_seconds(workdir) if rc == 0 else None
        failed |= rc != 0
        times[side].append((steady, wall))
        cells.append(f"{steady:.2f} s ({wall:.0f} s)" if steady is not None else
                     f"exit {rc}" if rc else f"- ({wall:.0f} s)")
        shutil.rmtree(workdir, ignore_errors=True)

    def ratio(i):
      b = [t[i] for t in times["before"]]
      a = [t[i] for t in times["after"]]
      if None in a + b or not sum(b):
        return "-"
      return f"{sum(a) / sum(b):.3f}"

    def spread(side):
      s = [t[0] for t in times[side]]
      return "-" if len(s) < 2 or None in s or min(s) <= 0 else f"{max(s) / min(s):.3f}"
    lines.append("| " + " | ".join([name, *cells, ratio(0), ratio(1),
                                    f"{spread('before')} / {spread('after')}"]) + " |")
  print("steady = the chunks after the first (compile) as the run records them; (wall) = the "
        "whole process")
  print("\n".join(lines))
  print(f"\n{time.time() - runner.start:.0f} s; {_where(runner.logs)}", flush=True)
  return 1 if failed else 0


def define_flags() -> None:
  """The command line (defined by the entry point only: importing this module defines no flags,
  so the tests and other benchmarks can import it)."""
  flags.DEFINE_string("before", None, "Git revision of the code before the change.",
                      required=True)
  flags.DEFINE_string("after", None, "Git revision of the code after the change; default: the "
                      "working tree this script is in (uncommitted edits included).")
  flags.DEFINE_string("keep", None, "Keep the runs, data and logs in this directory (new or "
                      "empty); default: a temporary directory, removed at the end.")
  flags.DEFINE_bool("time", False, "Time one mid-size run of each experiment in both trees, "
                    "interleaved, instead of comparing results.")
  flags.DEFINE_integer("rounds", 2, "--time: rounds of before, after.", lower_bound=1)
  flags.DEFINE_list("only", [], f"Experiments to run (default: all): {', '.join(EXPERIMENTS)}.")
  flags.DEFINE_bool("strict", False, "A metrics key written by only one tree is a difference.")
  flags.DEFINE_bool("replay_verify", False, "Also run experiments.replay --verify from the after "
                    "tree on each before run.")
  flags.DEFINE_string("platform", "cpu", "JAX_PLATFORMS of every run ('' = jax's default).")
  flags.DEFINE_integer("run_timeout", 900, "Seconds one process may take.", lower_bound=1)


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  names = FLAGS.only or list(EXPERIMENTS)
  unknown = [n for n in names if n not in EXPERIMENTS]
  if unknown:
    raise app.UsageError(f"--only: unknown {', '.join(unknown)}; known: "
                         f"{', '.join(EXPERIMENTS)}")
  before = resolve("before", FLAGS.before)
  after = resolve("after", FLAGS.after) if FLAGS.after else None
  if FLAGS.keep:
    root = os.path.abspath(FLAGS.keep)
    if os.path.exists(root) and os.listdir(root):
      raise app.UsageError(f"--keep={FLAGS.keep} is not empty; pass a new directory")
    os.makedirs(root, exist_ok=True)
  else:
    root = tempfile.mkdtemp(prefix="same_results_")
  try:
    with contextlib.ExitStack() as stack:
      trees = {"before": stack.enter_context(worktree(before, os.path.join(root, "tree_before")))}
      trees["after"] = (stack.enter_context(worktree(after, os.path.join(root, "tree_after")))
                        if after else REPO)
      print(f"before: {FLAGS.before} = {before[:12]} in {trees['before']}\n"
            f"after:  " + (f"{FLAGS.after} = {after[:12]} in {trees['after']}" if after else
                           f"the working tree {REPO} (HEAD {git('rev-parse', 'HEAD')[:12]}"
                           + (", uncommitted changes" if git("status", "--porcelain",
                                                             "--untracked-files=no") else "")
                           + ")"), flush=True)
      for tree in trees.values():
        check_imports(tree, FLAGS.platform)
      print("imports: each tree's runs import genrl_jax and experiments from that tree",
            flush=True)
      mode = time_trees if FLAGS.time else compare_trees
      status = mode(trees, root, names)
  finally:
    if not FLAGS.keep:
      shutil.rmtree(root, ignore_errors=True)
  sys.exit(status)


if __name__ == "__main__":
  define_flags()
  app.run(main)
