"""benchmarks.same_results' comparisons on handmade files: what counts as equal, which keys are
timings, that a one-ULP change in a metrics value, a results value, a checkpoint leaf or a side
array is found, and how a replay's outcome is read. (The worktree runs themselves are the
script's own job: ``python -m benchmarks.same_results --before=HEAD``.)"""

import json
import os

import numpy as np
import orbax.checkpoint as ocp

from benchmarks import same_results as sr
from genrl_jax.data import idx


def _ulp_up(x: float) -> float:
  return float(np.nextafter(np.float32(x), np.float32(np.inf)))


def test_timing_keys():
  for key in ("seconds", "eval_seconds", "chunk_seconds", "wall_time", "env_steps_per_second"):
    assert sr.is_timing(key), key
  for key in ("loss", "chunks_done", "env_steps", "episode_length", "test_neg_elbo", "iteration"):
    assert not sr.is_timing(key), key


def test_same_is_exact_and_typed():
  assert sr.same(0.1, 0.1) and sr.same(float("nan"), float("nan"))
  assert not sr.same(0.0, -0.0) and not sr.same(1, 1.0) and not sr.same(True, 1)
  assert not sr.same(1.0, _ulp_up(1.0))
  assert sr.same({"a": [1, 2.5, None, "x"]}, {"a": [1, 2.5, None, "x"]})
  assert not sr.same({"a": [1, 2.5]}, {"a": [1, 2.5, 3]})
  assert not sr.same({"a": 1}, {"b": 1})


def _rows():
  return [{"chunk": c, "seed": s, "seconds": 1.0 + c, "loss": 0.5 / c + s, "curve": [c, s * 0.1]}
          for c in (1, 2) for s in (0, 1)]


def test_metrics_rows_ignore_timings_and_find_one_ulp():
  before, after = _rows(), _rows()
  for row in after:
    row["seconds"] *= 3  # another machine's wall clock
  c = sr.compare_rows(before, after)
  assert c.equal and c.cell == "yes (4 rows)" and not c.info
  after[3]["loss"] = _ulp_up(after[3]["loss"])
  c = sr.compare_rows(before, after)
  assert c.equal is False and c.cell == "NO (3/4 rows equal)"
  assert c.differences[0].startswith("chunk 2, seed 1: loss")
  c = sr.compare_rows(before, _rows()[:3])
  assert c.equal is False and "4 rows before, 3 after" in c.differences[0]


def test_metrics_key_on_one_side_is_info_unless_strict():
  after = [{**row, "new_metric": 1.0, "new_seconds": 2.0} for row in _rows()]
  c = sr.compare_rows(_rows(), after)
  assert c.equal and c.info == ["only after writes new_metric"]  # a timing key is not named
  c = sr.compare_rows(_rows(), after, strict=True)
  assert c.equal is False and c.differences == ["only after writes new_metric"]


def _results(workdir, value=503.25):
  return {"experiment": "vae", "seeds": [0, 1],
          "config": {"workdir": workdir, "epochs": 3, "hidden": ["16"]},
          "metrics": {"test_neg_elbo": {"per_seed": [value, 500.0], "mean": 501.625,
                                        "ci95_half_width": 1.625, "iqm": 501.625}},
          "extra": {"chunks_done": 3, "eval_seconds": 2.3, "chunk_seconds": [4.8, 0.02],
                    "dataset": "mnist"}}


def test_results_compare_values_not_timings_or_workdir():
  c = sr.compare_results(_results("/a/vae"), _results("/b/vae"))
  assert c.equal and c.cell == "yes (7 values)" and not c.info
  after = _results("/b/vae")
  after["extra"]["new_extra"] = 1
  del after["config"]["hidden"]
  c = sr.compare_results(_results("/a/vae"), after)
  assert c.equal and c.info == ["only before has config.hidden", "only after has extra.new_extra"]
  c = sr.compare_results(_results("/a/vae"), _results("/b/vae", _ulp_up(503.25)))
  assert c.equal is False and c.cell == "NO (6/7 values: metrics.test_neg_elbo)"
  assert c.differences[0].startswith("metrics.test_neg_elbo:")


def _state(scale=1.0):
  return {"params": {"dense": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3) * scale,
                               "bias": np.zeros((2, 3), np.float32)}},
          "opt_state": [{"count": np.array([3, 3], np.int32)}],
          "key": np.array([[0, 1], [0, 2]], np.uint32),
          "buffer": {"is_full": np.array([True, False])}}


def _save(workdir, step, state):
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(workdir, "checkpoints", str(step), "default"), state)
  checkpointer.wait_until_finished()


def test_checkpoints_read_with_orbax_alone_leaf_by_leaf(tmp_path):
  before, after = str(tmp_path / "before"), str(tmp_path / "after")
  for workdir in (before, after):
    _save(workdir, 1, _state(0.5))
    _save(workdir, 2, _state())
  leaves = sr.read_checkpoint(os.path.join(before, "checkpoints", "2"))
  assert sorted(leaves) == ["buffer/is_full", "key", "opt_state/0/count", "params/dense/bias",
                            "params/dense/kernel"]
  assert leaves["key"].dtype == np.uint32
  c = sr.compare_checkpoints(before, after)
  assert c.equal and c.cell == "5/5 (step 2)"

  changed = _state()
  changed["key"] = np.array([[0, 1], [0, 3]], np.uint32)  # the PRNG key data of seed 1
  changed["params"]["dense"]["kernel"][1, 2] = np.nextafter(np.float32(5), np.float32(6))
  _save(str(tmp_path / "changed"), 2, changed)
  c = sr.compare_checkpoints(before, str(tmp_path / "changed"))
  assert c.equal is False and c.cell == "3/5 (step 2) NO"
  assert c.differences == [
      "step 2 key: 1 of 4 elements differ",
      "step 2 params/dense/kernel: 1 of 6 elements differ, max |diff| 4.77e-07"]
  assert c.info == ["kept steps: before [1, 2], after [2]"]

  fewer = _state()
  del fewer["buffer"]
  _save(str(tmp_path / "fewer"), 2, fewer)
  c = sr.compare_checkpoints(before, str(tmp_path / "fewer"))
  assert c.equal is False and c.differences[0] == "only before: 1 leaves, e.g. buffer/is_full"

  _save(str(tmp_path / "later"), 3, _state())
  c = sr.compare_checkpoints(before, str(tmp_path / "later"))
  assert c.equal is False and c.cell == "NO (step 2 vs 3)"


def test_side_files_jsonl_and_arrays(tmp_path):
  def write(workdir, grid, score):
    os.makedirs(os.path.join(workdir, "snapshots"))
    os.makedirs(os.path.join(workdir, "checkpoints", "1"))
    np.save(os.path.join(workdir, "snapshots", "40.npy"), grid)
    np.save(os.path.join(workdir, "checkpoints", "1", "ignored.npy"), grid)
    with open(os.path.join(workdir, "snapshots.jsonl"), "w") as f:
      f.write(json.dumps({"iteration": 40, "seed": 0, "score": score}) + "\n")
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      f.write("{}\n")
  grid = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
  write(str(tmp_path / "a"), grid, 1.5)
  write(str(tmp_path / "b"), grid.copy(), 1.5)
  assert sr.side_files(str(tmp_path / "a")) == ["snapshots.jsonl", "snapshots/40.npy"]
  c = sr.compare_side_files(str(tmp_path / "a"), str(tmp_path / "b"))
  assert c.equal and c.cell == "2/2 files"
  other = grid.copy()
  other[0, 0] = np.float32(-0.0)  # 0.0 vs -0.0: equal as numbers, not as bits
  write(str(tmp_path / "c"), other, _ulp_up(1.5))
  c = sr.compare_side_files(str(tmp_path / "a"), str(tmp_path / "c"))
  assert c.equal is False and c.cell == "0/2 files NO"
  assert c.differences[1] == "snapshots/40.npy: array: 1 of 12 elements differ, max |diff| 0"
  empty = tmp_path / "empty"
  empty.mkdir()
  assert sr.compare_side_files(str(empty), str(empty)).equal is None


def test_replay_outcomes():
  ok = sr.classify_replay(0, "| metric | ... |\nreplay of step 3: 9 saved values reproduced "
                             "exactly; results and figures in /x\n", "")
  assert ok.equal and ok.cell == "yes (9 values reproduced)"
  refused = sr.classify_replay(2, "data: ...\n", "error: /r/run_info.json: cannot rebuild\n")
  assert refused.equal and refused.cell == "error line (acceptable)"
  assert refused.info == ["replay: error: /r/run_info.json: cannot rebuild"]
  crash = sr.classify_replay(1, "", "Traceback (most recent call last):\n  ...\nKeyError: 'x'\n")
  assert crash.equal is False and crash.cell.startswith("FAILED: traceback")
  differs = sr.classify_replay(1, "replay of step 3: test_neg_elbo differ from the saved "
                                  "results; replayed results in /x\n", "")
  assert differs.equal is False and differs.cell == "NO (exit 1)"
  assert sr.classify_replay(2, "", "error: a\nerror: b\n").equal is False


def test_table_has_one_row_per_experiment_and_the_notes():
  rows = [("vae", sr.Comparison(True, "yes (6 rows)"), sr.Comparison(True, "35/35 (step 3)"),
           sr.Comparison(True, "yes (35 values)", [], ["only after has extra.x"]),
           sr.Comparison(None, "-"), sr.Comparison(True, "yes (9 values reproduced)"))]
  table = sr.format_table(rows).splitlines()
  assert table[0].startswith("| experiment | metrics rows equal | checkpoint leaves equal (n/n)")
  assert table[2] == ("| vae | yes (6 rows) | 35/35 (step 3) | yes (35 values) | - | "
                      "yes (9 values reproduced) |")
  assert table[-1] == "  vae, results equal (info): only after has extra.x"


def test_written_data_reads_back_as_idx(tmp_path):
  sr.write_data(str(tmp_path), 30, 10)
  x = idx.read_idx(str(tmp_path / "train-images-idx3-ubyte.gz"))
  y = idx.read_idx(str(tmp_path / "t10k-labels-idx1-ubyte.gz"))
  assert x.shape == (30, 28, 28) and x.dtype == np.uint8 and y.shape == (10,)
  assert set(y) <= set(range(10))
  bright_rows = x[0, :, 4:24].mean(axis=1) > 100  # label k lights rows 2k+4 .. 2k+7
  label = idx.read_idx(str(tmp_path / "train-labels-idx1-ubyte.gz"))[0]
  assert np.flatnonzero(bright_rows).tolist() == list(range(2 * label + 4, 2 * label + 8))
  first = open(tmp_path / "train-images-idx3-ubyte.gz", "rb").read()
  sr.write_data(str(tmp_path), 30, 10)
  assert open(tmp_path / "train-images-idx3-ubyte.gz", "rb").read() == first  # byte-stable
