"""REINFORCE: the gradient against a hand computation, seeds, retracing, kill-and-resume."""

import json
import os
import signal
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_envs
from genrl_jax import run as runner
from genrl_jax.rl import reinforce

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GAMMA = 0.9


def _softmax(z):
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def _hand_gradients(obs, action, mask, w_pi, b_pi, w_v, b_v, estimator, baseline, normalize,
                    entropy_coef, goal):
  """REINFORCE gradients for a linear-softmax policy and a linear value, by explicit loops.

  Rewards, terminations, truncations and the last observation of each episode are recomputed
  from the Chain dynamics (r = 1 + pos for a step right, 0.5 for staying; the goal terminates,
  the 5-step limit truncates) rather than read from the trajectory.
  """
  T, N = mask.shape
  lengths = mask.sum(axis=0).astype(int)
  value = lambda s: s @ w_v[:, 0] + b_v[0]
  returns = np.zeros((T, N))
  for n in range(N):
    L = lengths[n]
    pos = obs[:L, n, 0]
    r = np.where(action[:L, n] == 1, 1.0 + pos, 0.5)
    last_pos = pos[L - 1] + action[L - 1, n]
    terminated = last_pos >= goal
    tail = 0.0
    if not terminated and baseline == "value":   # truncated: bootstrap with v(s_L)
      tail = value(np.array([last_pos, L], np.float64))
    g = [sum(GAMMA ** (k - t) * r[k] for k in range(t, L)) + GAMMA ** (L - t) * tail
         for t in range(L)]
    returns[:L, n] = g if estimator == "reward_to_go" else [g[0]] * L
  m = mask.astype(bool)
  if baseline == "value":
    b = value(obs)
  elif baseline == "mean":
    b = np.full((T, N), returns[m].mean())
  else:
    b = np.zeros((T, N))
  adv = returns - b
  if normalize:
    adv = (adv - adv[m].mean()) / (adv[m].std() + 1e-8)
  num = m.sum()
  g_w = np.zeros_like(w_pi)
  g_b = np.zeros_like(b_pi)
  g_wv = np.zeros_like(w_v)
  g_bv = np.zeros_like(b_v)
  for t in range(T):
    for n in range(N):
      if not m[t, n]:
        continue
      s = obs[t, n]
      pi = _softmax(s @ w_pi + b_pi)
      onehot = np.eye(len(pi))[action[t, n]]
      # d/dz of -A log pi(a|s) is -A (onehot(a) - pi).
      dz = -adv[t, n] * (onehot - pi)
      # d/dz of -c H(pi) with dH/dz_j = -pi_j (log pi_j + H).
      h = -np.sum(pi * np.log(pi))
      dz += -entropy_coef * (-pi * (np.log(pi) + h))
      g_w += np.outer(s, dz) / num
      g_b += dz / num
      err = returns[t, n] - value(s)
      g_wv += -err * s[:, None] / num
      g_bv += -err / num
  return g_w, g_b, g_wv, g_bv, returns


@pytest.mark.parametrize("estimator,baseline,normalize,entropy_coef", [
    ("total", "none", False, 0.0),
    ("reward_to_go", "mean", True, 0.1),
    ("reward_to_go", "value", False, 0.0),
    ("total", "value", True, 0.05),
])
def test_update_gradient_equals_hand_computed_reinforce_gradient(estimator, baseline, normalize,
                                                                 entropy_coef):
  env_id = tiny_envs.register_chain()   # goal 3, 5-step limit: terminations and truncations
  config = reinforce.ReinforceConfig(
      env_id=env_id, num_envs=12, gamma=GAMMA, estimator=estimator, baseline=baseline,
      normalize_advantages=normalize, entropy_coef=entropy_coef, hidden_sizes=(),
      value_hidden_sizes=(), total_env_steps=1000, num_chunks=1)
  setup = reinforce.make_setup(config)
  state = reinforce.init_state(setup, jax.random.key(3))
  # Non-trivial linear policy and value, so that actions and values vary with the state.
  w_pi = np.array([[0.5, 0.2], [-0.3, 0.1]], np.float32)
  b_pi = np.array([-0.3, 0.3], np.float32)
  w_v = np.array([[1.5], [-0.7]], np.float32)
  b_v = np.array([2.0], np.float32)
  state = state.replace(
      policy_params={"params": {"MLP_0": {"Dense_0": {"kernel": w_pi, "bias": b_pi}}}},
      value_params={"params": {"MLP_0": {"Dense_0": {"kernel": w_v, "bias": b_v}}}})
  out = jax.jit(reinforce.collect_and_grad, static_argnums=0)(setup, state)
  _, _, traj, returns, _, g_pi, g_v, _ = jax.device_get(out)
  mask = np.asarray(traj.mask)
  assert mask.sum(axis=0).min() >= 3    # whole episodes (the goal is 3 steps away)
  truncated = np.asarray(traj.truncated).any(axis=0)
  terminated = np.asarray(traj.terminated).any(axis=0)
  assert truncated.any() and terminated.any()   # both endings occur in the batch
  expected = _hand_gradients(np.asarray(traj.obs, np.float64), np.asarray(traj.action), mask,
                             w_pi, b_pi, w_v, b_v, estimator, baseline, normalize,
                             entropy_coef, goal=3)
  g_w, g_b, g_wv, g_bv, hand_returns = expected
  np.testing.assert_allclose(returns, hand_returns, rtol=1e-5, atol=1e-5)
  dense = g_pi["params"]["MLP_0"]["Dense_0"]
  np.testing.assert_allclose(dense["kernel"], g_w, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(dense["bias"], g_b, rtol=1e-4, atol=1e-6)
  if baseline == "value":
    dense_v = g_v["params"]["MLP_0"]["Dense_0"]
    np.testing.assert_allclose(dense_v["kernel"], g_wv, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dense_v["bias"], g_bv, rtol=1e-4, atol=1e-6)


def test_total_estimator_weights_every_step_by_the_episode_return():
  # Two episodes in one column: [r0, r1 | r2, r3, r4], the first terminated, the second
  # truncated and bootstrapped with v = 10.
  r = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
  term = jnp.array([0, 1, 0, 0, 0], bool)
  trunc = jnp.array([0, 0, 0, 0, 1], bool)
  v_next = jnp.array([0.0, 0.0, 0.0, 0.0, 10.0])
  traj = reinforce.rollout.Transition(
      obs=None, action=None, reward=r[:, None], terminated=term[:, None],
      truncated=trunc[:, None], mask=jnp.ones((5, 1), bool), returned=(term | trunc)[:, None],
      returned_return=None, returned_length=None)
  g = GAMMA
  first = 1.0 + g * 2.0
  second = 3.0 + g * 4.0 + g**2 * 5.0 + g**3 * 10.0
  got = reinforce.compute_returns(traj, g, "total", final_value=jnp.array([10.0]))
  np.testing.assert_allclose(got[:, 0], [first, first, second, second, second], rtol=1e-6)
  got = reinforce.compute_returns(traj, g, "total", final_value=None)  # no value: cut
  second_cut = 3.0 + g * 4.0 + g**2 * 5.0
  np.testing.assert_allclose(got[:, 0], [first, first] + [second_cut] * 3, rtol=1e-6)


def test_gradient_variance_matches_the_closed_form_on_a_bandit():
  # One-step episodes from s = [0, 0]: only the policy's bias b matters, pi = softmax(b), and
  # rewards are r(0) = 0.5, r(1) = 1. One env's estimate is -r(a) (e_a - pi); a batch of N
  # averages N of them, so tr Cov[g] = sum_j Var_a[-r(a) (e_a - pi)_j] / N.
  env_id = tiny_envs.register_one_step_chain()
  config = reinforce.ReinforceConfig(env_id=env_id, num_envs=8, baseline="none",
                                     hidden_sizes=(), total_env_steps=100, num_chunks=1)
  state = reinforce.init_state(reinforce.make_setup(config), jax.random.key(0))
  b = np.array([0.3, -0.4], np.float32)
  w = np.zeros((2, 2), np.float32)
  state = state.replace(policy_params={"params": {"MLP_0": {"Dense_0": {"kernel": w, "bias": b}}}})
  var, _ = reinforce.gradient_variance(config, state, jax.random.key(1), 4000)
  pi = _softmax(b.astype(np.float64))
  r = np.array([0.5, 1.0])
  v = np.stack([-r[a] * (np.eye(2)[a] - pi) for a in range(2)])          # [action, param]
  mean = pi @ v
  expected = np.sum(pi @ (v ** 2) - mean ** 2) / config.num_envs
  # 4000 samples: the relative standard error of a variance estimate is about sqrt(2/4000).
  np.testing.assert_allclose(float(var), expected, rtol=0.1)


# --- Seeds and retracing, on one small CartPole configuration compiled once per module. -------

_SMALL = reinforce.ReinforceConfig(env_id="CartPole-v1", max_episode_steps=30, num_envs=4,
                                   total_env_steps=480, num_chunks=4)


@pytest.fixture(scope="module")
def small_runs():
  train = reinforce.make_train(_SMALL)
  init, chunk = train.init, train.chunk
  traced = chex.assert_max_traces(chunk, n=1)
  many_fn = jax.jit(jax.vmap(traced, axis_name=runner.SEED_AXIS))
  keys = runner.seed_keys(5, 3)
  many = jax.jit(jax.vmap(init))(keys)
  history = []
  for _ in range(_SMALL.num_chunks):
    many, metrics = many_fn(many)
    history.append(jax.device_get(metrics))
  one_fn = jax.jit(chunk)   # unbatched: the seed axis is not bound, each loop runs on its own
  one_init = jax.jit(init)
  singles = []
  for i in range(3):
    s = one_init(keys[i])
    for _ in range(_SMALL.num_chunks):
      s, _ = one_fn(s)
    singles.append(s)
  return many, singles, many_fn, history


def test_runner_binds_the_seed_axis_the_loops_stop_on():
  # A chunk sees runner.SEED_AXIS: a collective over it works (rollout.any_over_axis relies on
  # this; without it the loops silently fall back to per-seed selects).
  def init(key, data):
    return {"x": jax.random.uniform(key)}

  def chunk(state, data):
    return state, {"n": jax.lax.psum(1, runner.SEED_AXIS),
                   "any": reinforce.rollout.any_over_axis(state["x"] > 2.0, runner.SEED_AXIS)}

  exp = runner.Experiment(name="axis", init=init, chunk=chunk, num_chunks=1, finite_key=None)
  result = runner.run(exp, seeds=3, log=lambda _: None)
  np.testing.assert_array_equal(result.history[0]["n"], [3, 3, 3])
  np.testing.assert_array_equal(result.history[0]["any"], [False] * 3)


def test_seed_i_of_vmapped_run_equals_a_single_run_with_its_key(small_runs):
  many, singles, _, _ = small_runs
  for i, single in enumerate(singles):
    np.testing.assert_array_equal(many.env_steps[i], single.env_steps)
    np.testing.assert_array_equal(many.update[i], single.update)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6),
                 (many.policy_params, many.value_params, many.env.obs),
                 (single.policy_params, single.value_params, single.env.obs))


def test_seeds_do_not_share_randomness(small_runs):
  many, _, _, history = small_runs
  # Different initial parameters, different environments, different experience.
  w = many.policy_params["params"]["MLP_0"]["Dense_0"]["kernel"]
  assert not np.allclose(w[0], w[1]) and not np.allclose(w[1], w[2])
  obs = np.asarray(many.env.obs)
  assert len({o.tobytes() for o in obs}) == 3
  assert len(set(np.asarray(many.recent_returns).sum(axis=1).tolist())) == 3
  keys = np.asarray(jax.random.key_data(many.key))
  assert len({k.tobytes() for k in keys}) == 3


def test_chunks_do_not_retrace(small_runs):
  many, _, many_fn, _ = small_runs
  # chex.assert_max_traces(n=1) wraps the chunk: a retrace on any call would raise here.
  for _ in range(2):
    many, metrics = many_fn(many)
  assert np.all(np.asarray(metrics["env_steps"]) >= _SMALL.total_env_steps)


def test_budget_is_met_and_respected(small_runs):
  many, _, _, history = small_runs
  steps = np.asarray(many.env_steps)
  # The run stops at the first update that reaches the budget: under one update's max steps over.
  assert np.all(steps >= _SMALL.total_env_steps)
  assert np.all(steps < _SMALL.total_env_steps + _SMALL.num_envs * 30)
  # The learning curve: each point is recorded by the first update (of its chunk) that ends at
  # or past its mark: within two updates (of at most num_envs * 30 steps) of it.
  marks = np.asarray(_SMALL.curve_marks())
  at = np.concatenate([h["curve_env_steps"] for h in history], axis=-1)      # [seeds, points]
  assert at.shape == (3, _SMALL.num_chunks * _SMALL.points_per_chunk)
  assert np.all(at >= marks) and np.all(at < marks + 2 * _SMALL.num_envs * 30)
  assert np.all(np.diff(at, axis=1) >= 0)
  ret = np.concatenate([h["curve_return"] for h in history], axis=-1)
  assert np.all((ret >= 1) & (ret <= 30))   # CartPole returns within the 30-step limit


@pytest.mark.parametrize("change,match", [
    (dict(estimator="gae"), "--estimator"),
    (dict(baseline="critic"), "--baseline"),
    (dict(num_envs=0), "--num_envs"),
    (dict(gamma=1.5), "--gamma"),
    (dict(policy_lr=0.0), "--policy_lr"),
    (dict(hidden_sizes=(0,)), "--hidden_sizes must be positive integers"),
    (dict(num_chunks=0), "--num_chunks"),
    (dict(num_chunks=1000), "too many"),
])
def test_bad_config_is_one_clear_user_error(change, match):
  config = reinforce.ReinforceConfig(**change)
  with pytest.raises(runner.UserError, match=match):
    reinforce.make_setup(config)


# --- Kill a real training process and resume it: bit-identical parameters. -------------------

_CLI = [sys.executable, "-m", "experiments.reinforce", "--env=CartPole-v1",
        "--max_episode_steps=20", "--num_envs=4", "--total_env_steps=2400", "--num_chunks=12",
        "--seeds=2", "--checkpoint_every=1"]


def _restore_latest(workdir):
  import orbax.checkpoint as ocp  # noqa: PLC0415
  ckpt = runner.Checkpointer(os.path.join(workdir, "checkpoints"))
  step = ckpt.latest_step()
  ckpt.close()
  path = os.path.join(workdir, "checkpoints", str(step), "default")
  return step, ocp.StandardCheckpointer().restore(path)


def test_kill_and_resume_is_bit_identical(tmp_path):
  env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
  ref_dir, kill_dir = str(tmp_path / "reference"), str(tmp_path / "killed")
  reference = subprocess.Popen(_CLI + [f"--workdir={ref_dir}"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  victim = subprocess.Popen(_CLI + [f"--workdir={kill_dir}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  seen = []
  for line in victim.stdout:
    seen.append(line)
    if line.startswith("chunk 6/12"):
      victim.send_signal(signal.SIGKILL)
      break
  victim.wait(timeout=120)
  assert victim.returncode == -signal.SIGKILL, "".join(seen)
  ref_out, _ = reference.communicate(timeout=300)
  assert reference.returncode == 0, ref_out
  resumed = subprocess.run(_CLI + [f"--workdir={kill_dir}"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert "resuming reinforce from chunk" in resumed.stdout
  step_ref, ref_state = _restore_latest(ref_dir)
  step_res, res_state = _restore_latest(kill_dir)
  assert step_ref == step_res == 12
  jax.tree.map(np.testing.assert_array_equal, ref_state, res_state)
  # The metrics log is the same too (the lines after the restored checkpoint were redone).
  read = lambda d: [{k: v for k, v in json.loads(l).items() if k != "seconds"}
                    for l in open(os.path.join(d, "metrics.jsonl"))]
  assert read(ref_dir) == read(kill_dir)
  for name in ("results.json", "return.png", "run_info.json"):
    assert os.path.exists(os.path.join(kill_dir, name))


def test_sample_actions_follows_the_softmax():
  from genrl_jax.models import policies  # noqa: PLC0415
  logits = jnp.array([[0.0, 1.0, -1.0, 2.0], [3.0, 0.0, 0.0, -2.0]])
  n = 200_000
  a = policies.sample_actions(jax.random.key(0), jnp.broadcast_to(logits, (n, 2, 4)))
  freq = np.stack([np.bincount(np.asarray(a[:, i]), minlength=4) / n for i in range(2)])
  pi = np.asarray(jax.nn.softmax(logits))
  # Binomial standard errors are below 1.2e-3 here; allow 5 of them.
  np.testing.assert_allclose(freq, pi, atol=6e-3)


# --- The entry points as a user runs them. --------------------------------------------------


def test_compare_experiment_end_to_end(tmp_path):
  from experiment_cli import run_experiment  # noqa: PLC0415
  proc = run_experiment("experiments.reinforce_compare", "--max_episode_steps=20", "--num_envs=4",
                        "--total_env_steps=480", "--num_chunks=2", "--points_per_chunk=3",
                        "--seeds=2", "--variance_samples=2", f"--workdir={tmp_path}")
  assert proc.returncode == 0, proc.stdout + proc.stderr
  rows = [l for l in (tmp_path / "compare.md").read_text().splitlines()
          if l.startswith("| ") and not l.startswith("| estimator")]
  assert [r.split(" | ")[0] for r in rows] == [
      "| total return G_0", "| reward-to-go G_t", "| reward-to-go G_t - v(s_t)"]
  for name in ("total", "reward_to_go", "reward_to_go_value"):
    summary = json.loads((tmp_path / name / "results.json").read_text())["metrics"]
    assert len(summary["auc_return"]["per_seed"]) == 2
    assert summary["env_steps"]["per_seed"][0] >= 480
    info = json.loads((tmp_path / name / "run_info.json").read_text())
    assert info["config"]["estimator"] == ("total" if name == "total" else "reward_to_go")
  variances = json.loads((tmp_path / "compare.json").read_text())["gradient_variance"]
  assert all(v > 0 for vs in variances.values() for v in vs)
  assert (tmp_path / "compare.png").stat().st_size > 0


def test_bad_flags_are_one_line_errors(tmp_path):
  from experiment_cli import assert_one_line_error, run_experiment  # noqa: PLC0415
  assert_one_line_error(run_experiment("experiments.reinforce", "--env=Pendulum-v1",
                                       f"--workdir={tmp_path}"), "--env")
  assert_one_line_error(run_experiment("experiments.reinforce_compare", "--baseline=mean",
                                       f"--workdir={tmp_path}"), "--baseline")
