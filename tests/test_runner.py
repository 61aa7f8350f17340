"""The runner: seed independence, resume equality, NaN stop, config guard, corrupt checkpoints."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from genrl_jax import run as runner
from genrl_jax.run import plots
from genrl_jax.run import stats


# A tiny noisy SGD problem: state holds params, a typed PRNG key and a step counter.
def _toy_init(key, data):
  w_key, run_key = jax.random.split(key)
  return {"w": jax.random.normal(w_key, (3,)), "key": run_key, "step": jnp.zeros((), jnp.int32)}


def _toy_chunk(state, data, lr=0.1, steps=5):
  x, y = data

  def step(s, _):
    key = jax.random.fold_in(s["key"], s["step"])
    idx = jax.random.randint(key, (4,), 0, x.shape[0])
    loss_fn = lambda w: jnp.mean((x[idx] @ w - y[idx]) ** 2)
    loss, g = jax.value_and_grad(loss_fn)(s["w"])
    return {"w": s["w"] - lr * g, "key": s["key"], "step": s["step"] + 1}, loss

  state, losses = jax.lax.scan(step, state, None, length=steps)
  return state, {"loss": losses.mean(), "w0": state["w"][0]}


def _toy_data():
  x = jax.random.normal(jax.random.key(123), (32, 3))
  return x, x @ jnp.array([1.0, -2.0, 0.5])


def _experiment(num_chunks=6, chunk=_toy_chunk, **kw):
  return runner.Experiment(name="toy", init=_toy_init, chunk=chunk, num_chunks=num_chunks,
                           data=_toy_data(), progress=(("loss", "loss"),), **kw)


def _quiet(_):
  pass


def test_seed_i_of_vmapped_run_equals_single_seed_run():
  many = runner.run(_experiment(), seeds=4, seed=10, log=_quiet)
  for i in range(4):
    one = runner.run(_experiment(), seeds=1, seed=10 + i, log=_quiet)
    np.testing.assert_allclose(many.state["w"][i], one.state["w"][0], rtol=1e-6, atol=1e-6)
  # Different seeds are different computations.
  assert not np.allclose(many.state["w"][0], many.state["w"][1])


def test_same_seed_reproduces_exactly():
  a = runner.run(_experiment(), seeds=2, seed=3, log=_quiet)
  b = runner.run(_experiment(), seeds=2, seed=3, log=_quiet)
  np.testing.assert_array_equal(a.state["w"], b.state["w"])


class _Crash(Exception):
  pass


def test_resume_after_crash_is_bit_identical(tmp_path):
  full = runner.run(_experiment(), seeds=3, workdir=str(tmp_path / "full"), checkpoint_every=2,
                    log=_quiet)

  def crash_at_chunk_5(line):
    if line.startswith("epoch 5/"):
      raise _Crash  # after chunk 5's metrics are written, before its checkpoint.

  workdir = str(tmp_path / "crashed")
  with pytest.raises(_Crash):
    runner.run(_experiment(), seeds=3, workdir=workdir, checkpoint_every=2, log=crash_at_chunk_5)
  lines = []
  resumed = runner.run(_experiment(), seeds=3, workdir=workdir, checkpoint_every=2,
                       log=lines.append)
  assert lines[0].startswith("resuming toy from epoch 4/6")
  np.testing.assert_array_equal(resumed.state["w"], full.state["w"])
  np.testing.assert_array_equal(jax.random.key_data(resumed.state["key"]),
                                jax.random.key_data(full.state["key"]))
  # metrics.jsonl: each (chunk, seed) exactly once, equal to the uninterrupted run's.
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  full_rows = [json.loads(l) for l in open(tmp_path / "full" / "metrics.jsonl")]
  strip = lambda rs: sorted((r["chunk"], r["seed"], r["loss"], r["w0"]) for r in rs)
  assert strip(rows) == strip(full_rows)
  assert len(rows) == 6 * 3
  # The history of the resumed run covers all chunks, restored ones included.
  np.testing.assert_allclose(runner.stack_history(resumed.history, "loss"),
                             runner.stack_history(full.history, "loss"))


def test_rerun_of_finished_run_trains_nothing(tmp_path):
  first = runner.run(_experiment(num_chunks=2), seeds=2, workdir=str(tmp_path), log=_quiet)
  lines = []
  again = runner.run(_experiment(num_chunks=2), seeds=2, workdir=str(tmp_path), log=lines.append)
  assert any("already done" in l for l in lines)
  assert again.chunk_seconds == []
  np.testing.assert_array_equal(again.state["w"], first.state["w"])


def test_nan_stops_naming_seed_and_keeps_last_good_checkpoint(tmp_path):
  """Seed 1 diverges in its 4th chunk; seed 0 does not."""
  seed1_word = jax.random.key_data(runner.seed_keys(0, 2)[1])[-1]

  def init(key, data):
    return {**_toy_init(key, data), "tag": jax.random.key_data(key)[-1]}

  def chunk(state, data):
    tag = state.pop("tag")
    state, metrics = _toy_chunk(state, data)
    blown = (state["step"] > 15) & (tag == seed1_word)
    return {**state, "tag": tag}, {**metrics, "loss": jnp.where(blown, jnp.nan, metrics["loss"])}

  exp = runner.Experiment(name="toy", init=init, chunk=chunk, num_chunks=6, data=_toy_data())
  with pytest.raises(runner.TrainingDiverged, match=r"seed\(s\) 1 at epoch 4.*epoch 3"):
    runner.run(exp, seeds=2, workdir=str(tmp_path), checkpoint_every=1, log=_quiet)
  assert runner.Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 3


def test_resume_with_other_flags_is_refused(tmp_path):
  runner.run(_experiment(num_chunks=1), seeds=2, workdir=str(tmp_path), config={"lr": 0.1},
             log=_quiet)
  with pytest.raises(runner.UserError, match="--lr=0.1 there, 0.2 now"):
    runner.run(_experiment(num_chunks=1), seeds=2, workdir=str(tmp_path), config={"lr": 0.2},
               log=_quiet)
  with pytest.raises(runner.UserError, match="--seeds=2 there, 3 now"):
    runner.run(_experiment(num_chunks=1), seeds=3, workdir=str(tmp_path), config={"lr": 0.1},
               log=_quiet)


def test_corrupt_latest_checkpoint_falls_back_to_older_one(tmp_path):
  runner.run(_experiment(num_chunks=4), seeds=2, workdir=str(tmp_path / "a"), log=_quiet)
  ckpt_dir = tmp_path / "a" / "checkpoints"
  # Corrupt every file of the newest step, as a disk error would.
  for root, _, files in os.walk(ckpt_dir / "4"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\x00garbage")
  state, step = runner.Checkpointer(str(ckpt_dir)).restore(
      template=jax.vmap(_toy_init, in_axes=(0, None))(runner.seed_keys(0, 2), None))
  assert step == 3
  assert os.path.isdir(ckpt_dir / "4")  # never deleted: the data stays for inspection.
  # Nothing readable at all: one clear error.
  for step_dir in ("2", "3"):
    shutil.rmtree(ckpt_dir / step_dir)
  with pytest.raises(runner.UserError, match="no readable checkpoint"):
    runner.run(_experiment(num_chunks=4), seeds=2, workdir=str(tmp_path / "a"), log=_quiet)


def test_progress_line_shows_mean_ci_and_eta():
  lines = []
  runner.run(_experiment(num_chunks=3, units_per_chunk=5, units_label="steps/s"), seeds=4,
             log=lines.append)
  assert len(lines) == 3
  assert lines[0].startswith("epoch 1/3 | loss ") and " ± " in lines[0]
  assert "(includes compile)" in lines[0] and "ETA" in lines[0] and "steps/s" in lines[0]
  assert "ETA" not in lines[-1]


def test_bad_seed_count_is_a_user_error():
  with pytest.raises(runner.UserError, match="--seeds must be >= 1"):
    runner.run(_experiment(), seeds=0, log=_quiet)


def test_iqm_matches_definition():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 5))
  expected = np.sort(x, axis=0)[2:6].mean(axis=0)  # 8 seeds: drop 2 lowest and 2 highest.
  np.testing.assert_allclose(stats.iqm(x), expected)


def test_bootstrap_ci_of_mean_matches_normal_theory():
  rng = np.random.default_rng(1)
  x = rng.normal(size=400)
  mean, half = stats.mean_ci(x)
  expected_half = scipy.stats.norm.ppf(0.975) * x.std(ddof=1) / np.sqrt(len(x))
  assert mean == pytest.approx(x.mean())
  assert half == pytest.approx(expected_half, rel=0.1)


def test_flags_dict_finds_the_flags_of_a_script_run_as_main(tmp_path):
  # absl files a main module's flags under sys.argv[0] (the script's path), not "__main__".
  script = tmp_path / "script.py"
  script.write_text(
      "import json\n"
      "from absl import flags\n"
      "from genrl_jax import run as runner\n"
      "_WIDTH = flags.DEFINE_integer('width', 3, 'A width.')\n"
      "def main(argv):\n"
      "  print(json.dumps(runner.flags_dict(flags.FLAGS)))\n"
      "runner.cli_main(main)\n")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, str(script), "--width=7"], capture_output=True,
                        text=True, timeout=120, cwd=tmp_path,
                        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": repo})
  assert proc.returncode == 0, proc.stderr
  assert json.loads(proc.stdout.splitlines()[-1]) == {"width": 7}


def test_bootstrap_ci_of_a_long_curve_is_its_columns_one_by_one(monkeypatch):
  # Force many small blocks of resamples: each column must come out as if bootstrapped alone.
  monkeypatch.setattr(stats, "_MAX_RESAMPLED_ELEMENTS", 7 * 12)
  x = np.random.default_rng(2).exponential(size=(7, 12))
  point, low, high = stats.bootstrap_ci(x, stats.iqm, num_resamples=300)
  for t in range(x.shape[1]):
    expected = stats.bootstrap_ci(x[:, t], stats.iqm, num_resamples=300)
    np.testing.assert_allclose((point[t], low[t], high[t]), expected, rtol=1e-12)


def test_panels_draws_lines_seed_bands_and_reference_lines(monkeypatch):
  figures = []
  monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig) or path)
  rng = np.random.default_rng(3)
  x = np.arange(5)
  per_seed = rng.normal(loc=x, size=(400, 5))
  plain = np.cos(x)
  plots.panels("unused.png", x, [
      {"curves": {"seeds": per_seed, "plain": plain}, "xlabel": "a", "ylabel": "b",
       "hlines": {"ref": 2.5}},
      {"curves": {"other": plain}, "xlabel": "c", "ylabel": "d"}], title="t")
  (fig,) = figures
  left, right = fig.axes
  assert (left.get_xlabel(), right.get_ylabel()) == ("a", "d")
  lines = {line.get_label(): line for line in left.get_lines()}
  np.testing.assert_allclose(lines["seeds"].get_ydata(), per_seed.mean(axis=0))
  np.testing.assert_allclose(lines["plain"].get_ydata(), plain)
  assert set(lines["ref"].get_ydata()) == {2.5}
  # One band (for the per-seed curve) on the left, none on the right; its half-width is close to
  # the normal-theory 1.96 sd / sqrt(n) with 400 seeds.
  (band,) = left.collections
  assert not right.collections
  y = band.get_paths()[0].vertices[:, 1]
  low, high = y[1:6], y[7:12][::-1]  # fill_between: start, lower edge, end, upper edge reversed.
  normal_half = 1.96 * per_seed.std(axis=0, ddof=1) / np.sqrt(400)
  np.testing.assert_allclose((high - low) / 2, normal_half, rtol=0.15)
  plots.plt.close(fig)


def test_a_chunk_that_changes_the_state_signature_is_caught():
  def init(key, data):
    return {"x": jnp.zeros((), jnp.int32)}

  def chunk(state, data):
    return {"x": state["x"] + 0.5}, {"loss": jnp.zeros(())}  # int32 in, float32 out: retrace.

  exp = runner.Experiment(name="drift", init=init, chunk=chunk, num_chunks=3, data=None)
  with pytest.raises(runner.RetraceError, match="traced 2 times"):
    runner.run(exp, seeds=1, log=_quiet)


def test_positional_arguments_are_refused_by_every_entry_point_in_one_line():
  import experiment_cli
  for module in ("experiments.tabular", "experiments.vae"):
    proc = experiment_cli.run_experiment(module, "stray")
    experiment_cli.assert_one_line_error(proc, "unexpected arguments 'stray'")


def test_a_flag_added_after_the_run_started_does_not_block_its_resume(tmp_path):
  # The saved run predates --new_flag (absent from its config); an unset string flag saved as
  # None equals one given as ''. Any real difference is still refused.
  runner.run(_experiment(num_chunks=1), seeds=2, workdir=str(tmp_path),
             config={"lr": 0.1, "name": None}, log=_quiet)
  lines = []
  runner.run(_experiment(num_chunks=2), seeds=2, workdir=str(tmp_path),
             config={"lr": 0.1, "name": "", "new_flag": 3}, log=lines.append)
  assert lines[0].startswith("resuming toy from epoch 1/2")
  with pytest.raises(runner.UserError, match="--name='' there, 'x' now"):
    runner.run(_experiment(num_chunks=3), seeds=2, workdir=str(tmp_path),
               config={"lr": 0.1, "name": "x"}, log=_quiet)
