"""DQN: stored transitions and TD targets (terminated / truncated / ongoing), Double DQN vs numpy,
the epsilon schedule, the target network's period and tau, seed independence, one trace."""

import functools
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from genrl_jax import losses
from genrl_jax import run as runner
from genrl_jax.rl import dqn
from tests import tiny_envs
from tests.experiment_cli import REPO, assert_one_line_error, run_experiment

GAMMA = 0.9


def _config(**kw):
  base = dict(env_id=tiny_envs.register_chain(), num_envs=2, hidden_sizes=(16,),
              buffer_size=64, batch_size=8, learning_starts=8, train_frequency=2,
              target_update_period=6, total_env_steps=200, num_chunks=2, points_per_chunk=2,
              eval_episodes=3, gamma=GAMMA, learning_rate=1e-2, eps_fraction=0.5)
  base.update(kw)
  return dqn.DQNConfig(**base)


@functools.lru_cache(maxsize=None)
def _setup(**kw):
  return dqn.make_setup(_config(**kw))


def _run_iterations(setup, n, key=0):
  step = jax.jit(functools.partial(dqn.iteration, setup))
  state = dqn.init_state(setup, jax.random.key(key))
  states = [state]
  for _ in range(n):
    state, _ = step(state)
    states.append(state)
  return states


def test_stored_transitions_bootstrap_through_truncation_not_termination():
  """Chain: obs [pos, time]; action 1 moves right (reward 1 + pos), 0 stays (0.5); terminated
  at pos 3, truncated at time 5. Every stored transition must carry the TRUE next observation
  (never the auto-reset [0, 0]) and terminated only where pos reached 3."""
  setup = _setup()
  state = _run_iterations(setup, 30)[-1]             # 60 transitions, eps near 1: both ends occur
  exp = jax.tree.map(lambda x: np.asarray(x)[0], state.buffer.experience)
  n = int(state.buffer.current_index) if not bool(state.buffer.is_full) else 64
  obs, act, rew, nxt, term = (exp.obs[:n], exp.action[:n], exp.reward[:n], exp.next_obs[:n],
                              exp.terminated[:n])
  np.testing.assert_array_equal(nxt[:, 0], obs[:, 0] + act)             # pos + a, not reset
  np.testing.assert_array_equal(nxt[:, 1], obs[:, 1] + 1)
  np.testing.assert_array_equal(rew, np.where(act == 1, 1.0 + obs[:, 0], 0.5))
  np.testing.assert_array_equal(term, nxt[:, 0] >= 3)
  truncated = (nxt[:, 1] >= 5) & (nxt[:, 0] < 3)
  assert truncated.any() and term.any() and (~term & ~truncated).any()

  # The TD targets of those rows, vs numpy: y = r + gamma (1 - term) max_a Q_target(s', a).
  batch = dqn.Transition(obs=jnp.asarray(obs), action=jnp.asarray(act),
                         reward=jnp.asarray(rew), next_obs=jnp.asarray(nxt),
                         terminated=jnp.asarray(term))
  q_next = np.asarray(setup.q_network.apply(state.target_params, batch.next_obs), np.float64)
  q_now = np.asarray(setup.q_network.apply(state.params, batch.obs), np.float64)
  y = rew + GAMMA * (1.0 - term) * q_next.max(axis=1)
  assert np.all(y[term] == rew[term]) and np.all(y[truncated] != rew[truncated])
  expected = np.mean((y - q_now[np.arange(n), act]) ** 2)
  loss, _ = dqn.td_loss_batch(state.params, state.target_params, setup.q_network, batch, GAMMA,
                              double_dqn=False, loss="mse")
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_double_dqn_loss_matches_numpy(loss):
  setup = _setup()
  key_a, key_b, key_o, key_n, key_r = jax.random.split(jax.random.key(5), 5)
  params = setup.q_network.init(key_a, jnp.zeros((1, 2)))
  target = setup.q_network.init(key_b, jnp.zeros((1, 2)))
  batch = dqn.Transition(obs=jax.random.normal(key_o, (32, 2)) * 3,
                         action=jnp.arange(32, dtype=jnp.int32) % 2,
                         reward=jax.random.normal(key_r, (32,)),
                         next_obs=jax.random.normal(key_n, (32, 2)) * 3,
                         terminated=jnp.arange(32) % 3 == 0)
  q = lambda p, x: np.asarray(setup.q_network.apply(p, x), np.float64)
  q_tm1, q_t_online, q_t_target = q(params, batch.obs), q(params, batch.next_obs), q(
      target, batch.next_obs)
  a_star = q_t_online.argmax(axis=1)
  assert np.any(a_star != q_t_target.argmax(axis=1))  # Double DQN differs from DQN here
  y = np.asarray(batch.reward) + GAMMA * (1.0 - np.asarray(batch.terminated)) * q_t_target[
      np.arange(32), a_star]
  err = y - q_tm1[np.arange(32), np.asarray(batch.action)]
  rho = err ** 2 if loss == "mse" else np.where(np.abs(err) <= 1, 0.5 * err ** 2,
                                                np.abs(err) - 0.5)
  value, _ = dqn.td_loss_batch(params, target, setup.q_network, batch, GAMMA, True, loss)
  np.testing.assert_allclose(float(value), rho.mean(), rtol=1e-5)
  # No gradient flows into the bootstrap (online selector included): d loss / d params equals
  # the gradient of rho(y_const - Q(s, a)).
  y_const = jnp.asarray(y, jnp.float32)
  def fixed(p):
    q_sa = jnp.take_along_axis(setup.q_network.apply(p, batch.obs), batch.action[:, None], 1)[:, 0]
    e = y_const - q_sa
    return jnp.mean(e ** 2 if loss == "mse" else losses.huber(e))
  g = jax.grad(lambda p: dqn.td_loss_batch(p, target, setup.q_network, batch, GAMMA, True,
                                           loss)[0])(params)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(jax.grad(fixed)(params))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_epsilon_schedule_endpoints():
  cfg = _config(eps_start=1.0, eps_end=0.05, eps_fraction=0.5, total_env_steps=1000)
  eps = lambda t: float(dqn.epsilon(cfg, jnp.asarray(t)))
  assert eps(0) == 1.0
  assert eps(500) == pytest.approx(0.05, abs=1e-6)
  assert eps(250) == pytest.approx(0.525, abs=1e-6)
  assert eps(999) == pytest.approx(0.05) and eps(10**6) == pytest.approx(0.05)
  assert all(eps(t) >= eps(t + 50) for t in range(0, 600, 50))


def test_epsilon_greedy_frequencies():
  q = jnp.asarray([[0.0, 2.0, 1.0]])
  keys = jax.random.split(jax.random.key(0), 20000)
  act = np.asarray(jax.vmap(lambda k: dqn.qnetworks.epsilon_greedy(k, q, 0.3))(keys))[:, 0]
  freq = np.bincount(act, minlength=3) / len(act)
  expected = np.asarray([0.1, 0.8, 0.1])          # greedy 1 - eps + eps / 3, others eps / 3
  np.testing.assert_allclose(freq, expected, atol=4 * np.sqrt(0.25 / len(act)))
  assert np.all(np.asarray(dqn.qnetworks.epsilon_greedy(keys[0], jnp.tile(q, (50, 1)), 0.0))
                == 1)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_target_changes_only_at_its_period_by_exactly_tau(tau):
  setup = _setup(tau=tau)
  states = _run_iterations(setup, 12)            # 2 env steps each: 24 steps, period 6, start 8
  for prev, cur in zip(states[:-1], states[1:]):
    steps = int(cur.env_steps)
    due = steps >= 8 and steps // 6 > (steps - 2) // 6
    changed = any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(prev.target_params),
                                                            jax.tree.leaves(cur.target_params)))
    assert changed == due, steps
    assert int(cur.target_updates) == int(prev.target_updates) + due
    if due:
      for t_old, p, t_new in zip(jax.tree.leaves(prev.target_params),
                                 jax.tree.leaves(cur.params), jax.tree.leaves(cur.target_params)):
        expected = np.float32(tau) * np.asarray(p) + np.float32(1 - tau) * np.asarray(t_old)
        np.testing.assert_array_equal(t_new, p if tau == 1.0 else expected)
  assert int(states[-1].target_updates) == 3      # at 12, 18, 24
  assert int(states[-1].grad_steps) == sum(int(s.env_steps) >= 8 for s in states[1:])


def test_seeds_are_independent_and_chunk_traces_once():
  cfg = _config(total_env_steps=120, num_chunks=3)
  train = dqn.make_train(cfg)
  init, chunk, evaluate = train.init, train.chunk, train.evaluate
  traces = [0]

  def counted(state):
    traces[0] += 1
    return chunk(state)

  many_fn = jax.jit(jax.vmap(counted, axis_name=runner.SEED_AXIS))
  many = jax.jit(jax.vmap(init))(runner.seed_keys(4, 3))
  for _ in range(3):
    many, metrics = many_fn(many)
  assert traces[0] == 1
  assert np.all(np.asarray(metrics["env_steps"]) == 120)
  evals = jax.jit(jax.vmap(evaluate))(many)
  # The same seeds in another order (same program): each seed's state is bit-identical.
  shuffled = jax.jit(jax.vmap(init))(jax.random.wrap_key_data(
      jax.random.key_data(runner.seed_keys(4, 3))[np.asarray([2, 0, 1])]))
  for _ in range(3):
    shuffled, _ = many_fn(shuffled)
  for a, b in zip(jax.tree.leaves(many), jax.tree.leaves(shuffled)):
    a, b = (jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
            for x in (a, b))
    np.testing.assert_array_equal(np.asarray(a)[np.asarray([2, 0, 1])], b)
  # Each seed alone (no vmap): the same run up to float rounding of batched vs single matmuls.
  train1 = dqn.make_train(cfg, seed_axis=None)
  chunk1, evaluate1 = train1.chunk, train1.evaluate
  one_fn = jax.jit(chunk1)
  for i in range(3):
    single = init(jax.random.key(4 + i))
    for _ in range(3):
      single, _ = one_fn(single)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6),
                 (many.params, many.target_params, many.buffer.experience.obs),
                 (single.params, single.target_params, single.buffer.experience.obs))
    np.testing.assert_array_equal(many.buffer.experience.action[i], single.buffer.experience.action)
    np.testing.assert_allclose(evals["return"][i], evaluate1(single)["return"])
  assert not np.array_equal(many.buffer.experience.obs[0], many.buffer.experience.obs[1])
  assert traces[0] == 1


def test_greedy_evaluation_counts_whole_episodes():
  """With Q favouring 'stay' everywhere the greedy policy collects 0.5 for 5 steps (truncated);
  favouring 'right', 1 + 2 + 3 = 6 in 3 steps (terminated)."""
  setup = _setup()
  state = dqn.init_state(setup, jax.random.key(0))
  for favoured, ret, length in ((0, 2.5, 5.0), (1, 6.0, 3.0)):
    bias = jnp.where(jnp.arange(2) == favoured, 100.0, -100.0)
    params = jax.tree.map(jnp.zeros_like, state.params)
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: bias if "bias" in jax.tree_util.keystr(p) and x.shape == (2,) else x, params)
    out = dqn.evaluate(setup, state.replace(params=params))
    assert float(out["return"]) == ret and float(out["length"]) == length


# --- the entry point, as a user runs it ---------------------------------------------------------

CHUNKS = 8
TINY = ["--num_envs=4", "--train_frequency=4", "--hidden_sizes=16", "--buffer_size=2000",
        "--batch_size=32", "--learning_starts=1000", "--target_update_period=200",
        "--total_env_steps=24000", f"--num_chunks={CHUNKS}", "--points_per_chunk=2",
        "--eval_episodes=2", "--seeds=2", "--seed=3"]


def _dqn_command(workdir):
  return [sys.executable, "-m", "experiments.dqn", f"--workdir={workdir}", *TINY]


def _flat_checkpoint(workdir):
  path = os.path.join(workdir, "checkpoints", str(CHUNKS), "default")
  return ocp.tree.to_flat_dict(ocp.StandardCheckpointer().restore(path))


def _metric_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  for r in rows:
    r.pop("seconds")
  return sorted(rows, key=lambda r: (r["chunk"], r["seed"]))


def test_sigkill_then_rerun_resumes_bit_identically_buffer_included(tmp_path):
  reference, killed = str(tmp_path / "uninterrupted"), str(tmp_path / "killed")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(_dqn_command(reference), cwd=REPO, capture_output=True, text=True,
                        timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr
  with open(os.path.join(reference, "results.json")) as f:
    results = json.load(f)
  assert results["experiment"] == "dqn" and results["seeds"] == [3, 4]
  for name in ("peak_return_last100", "final_return_last100", "eval_return"):
    assert set(results["metrics"][name]) == {"per_seed", "mean", "ci95_half_width", "iqm"}
  assert os.path.exists(os.path.join(reference, "return.png"))

  victim = subprocess.Popen(_dqn_command(killed), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
  checkpoints = os.path.join(killed, "checkpoints")
  deadline = time.time() + 240
  while time.time() < deadline and victim.poll() is None:
    if os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints)):
      break
    time.sleep(0.01)
  assert victim.poll() is None, "the run ended before it could be killed; make it longer"
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  saved = sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit())
  assert saved and saved[-1] < CHUNKS, saved

  resumed = subprocess.run(_dqn_command(killed), cwd=REPO, capture_output=True, text=True,
                           timeout=300, env=env)
  assert resumed.returncode == 0, resumed.stderr
  assert "resuming dqn from chunk" in resumed.stdout

  a, b = _flat_checkpoint(reference), _flat_checkpoint(killed)
  assert a.keys() == b.keys()
  assert any("buffer" in str(k) for k in a)          # the replay buffer is in the checkpoint
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))
  assert _metric_rows(reference) == _metric_rows(killed)


@pytest.mark.parametrize("flag, value", [("train_frequency", "7"), ("tau", "0"),
                                         ("loss", "l1")])
def test_bad_flags_are_one_error_line(flag, value):
  proc = run_experiment("experiments.dqn", f"--{flag}={value}", "--workdir=/nonexistent/never")
  assert_one_line_error(proc, f"--{flag}")


def test_curve_average_waits_for_a_full_window():
  """Before 100 episodes have ended the curve's 100-episode average is NaN (an empty window
  must not read as a return of 0, which would 'solve' a negative-return task), after that it is
  finite; the latest-episode curve is finite once one episode ended."""
  cfg = _config(total_env_steps=1000, num_chunks=2, points_per_chunk=10)
  train = dqn.make_train(cfg, seed_axis=None)
  state = train.init(jax.random.key(0))
  chunk = jax.jit(train.chunk)
  curves = []
  for _ in range(2):
    state, m = chunk(state)
    curves.append(np.asarray(m["curve_return_last100"]))
  last100 = np.concatenate(curves)
  assert np.isnan(last100[0]) and np.isfinite(last100[-1])   # chain episodes: 3-5 steps, 2 envs
  first_finite = int(np.argmax(np.isfinite(last100)))
  assert np.all(np.isnan(last100[:first_finite])) and np.all(np.isfinite(last100[first_finite:]))
  assert int(state.recent_count) == 100


def _sub_jaxprs(eqn):
  """The jaxprs nested in an equation's parameters (loop bodies, cond branches, calls)."""
  for value in eqn.params.values():
    for v in value if isinstance(value, tuple) else (value,):
      if hasattr(v, "eqns"):
        yield v
      elif hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
        yield v.jaxpr


def _conds(jaxpr) -> list:
  """Every ``cond`` equation in a jaxpr, nested ones included."""
  return [e for e in jaxpr.eqns if e.primitive.name == "cond"] + [
      c for e in jaxpr.eqns for sub in _sub_jaxprs(e) for c in _conds(sub)]


def _has_dot(jaxpr) -> bool:
  return any(e.primitive.name == "dot_general" or any(_has_dot(s) for s in _sub_jaxprs(e))
             for e in jaxpr.eqns)


def test_under_the_seeds_vmap_the_gradient_phase_and_target_copy_stay_conditionals():
  # The loop is lockstep, so "learning has started" and "a target update is due" are the same
  # for every seed; made unbatched over SEED_AXIS, vmap keeps them as conds (a batched
  # predicate would turn each into a select that computes both branches every iteration).
  train = dqn.make_train(_config(total_env_steps=120, num_chunks=3))
  many = jax.jit(jax.vmap(train.init))(runner.seed_keys(0, 3))
  jaxpr = jax.make_jaxpr(jax.vmap(train.chunk, axis_name=runner.SEED_AXIS))(many).jaxpr
  conds = _conds(jaxpr)
  assert len(conds) == 2, [c.params.keys() for c in conds]
  assert sum(_has_dot(b.jaxpr) for c in conds for b in c.params["branches"]) == 1  # gradients
