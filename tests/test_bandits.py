"""Tests for genrl_jax.rl.bandits: updates against Python loops, the testbed's textbook shape."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiment_cli
from genrl_jax.rl import bandits
from genrl_jax.run.results import read as read_results


def test_sample_average_equals_plain_mean_per_arm():
  trace, agent, _ = jax.jit(lambda k: bandits.testbed_run(
      k, 60, num_arms=5, epsilon=0.3, initial_value=0.7))(jax.random.key(0))
  actions, rewards = np.asarray(trace.action), np.asarray(trace.reward, np.float64)
  for arm in range(5):
    pulled = [r for a, r in zip(actions, rewards) if a == arm]
    expected = sum(pulled) / len(pulled) if pulled else 0.7  # never pulled: Q_1
    assert float(agent.q[arm]) == pytest.approx(expected, abs=1e-5)
    assert int(agent.n[arm]) == len(pulled)
  assert len(set(actions.tolist())) >= 3  # the check covered several arms


def test_constant_step_size_is_exponential_recency_weighted_average():
  """S&B eq. 2.6: Q_{n+1} = (1 - a)^n Q_1 + sum_i a (1 - a)^(n - i) R_i, per arm."""
  alpha, q1 = 0.2, 1.5
  trace, agent, _ = jax.jit(lambda k: bandits.testbed_run(
      k, 40, num_arms=3, epsilon=0.5, step_size=alpha, initial_value=q1))(jax.random.key(1))
  actions, rewards = np.asarray(trace.action), np.asarray(trace.reward, np.float64)
  for arm in range(3):
    r = rewards[actions == arm]
    n = len(r)
    expected = (1 - alpha)**n * q1 + sum(alpha * (1 - alpha)**(n - 1 - i) * r[i] for i in range(n))
    assert float(agent.q[arm]) == pytest.approx(expected, abs=1e-5)


def test_epsilon_greedy_frequencies_and_random_ties():
  keys = jax.random.split(jax.random.key(2), 40_000)
  draw = jax.jit(jax.vmap(bandits.epsilon_greedy, in_axes=(0, None, None)))
  counts = np.bincount(np.asarray(draw(keys, jnp.array([0.0, 1.0, 0.5, 0.2]), 0.3)), minlength=4)
  expected = np.array([0.075, 0.775, 0.075, 0.075]) * len(keys)  # 1 - eps + eps/k on the best
  assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
  ties = np.bincount(np.asarray(draw(keys, jnp.array([1.0, 0.0, 1.0]), 0.0)), minlength=3)
  assert ties[1] == 0 and abs(ties[0] - ties[2]) < 5 * np.sqrt(len(keys) / 2)


def test_testbed_has_the_textbook_shape():
  """S&B Figure 2.2 (2000 runs x 1000 steps): at step 1000, eps = 0.1 beats greedy in average
  reward (~1.4 vs ~1.0) and % optimal (~80% vs ~35%); greedy plateaus near 1/3 optimal."""
  run = jax.jit(jax.vmap(lambda eps: bandits.testbed(jax.random.key(3), 2000, 1000, epsilon=eps)))
  trace = run(jnp.array([0.0, 0.1]))
  reward, optimal = np.asarray(trace.reward), np.asarray(trace.optimal)
  greedy_r, eps_r = reward[0, :, -1].mean(), reward[1, :, -1].mean()
  greedy_opt, eps_opt = optimal[0, :, -1].mean(), optimal[1, :, -1].mean()
  se = reward[:, :, -1].std() / np.sqrt(2000) * np.sqrt(2)
  assert eps_r - greedy_r > 3 * se and eps_opt > greedy_opt + 0.3
  assert 0.25 < greedy_opt < 0.45 and 0.7 < eps_opt < 0.9
  assert 0.85 < greedy_r < 1.2 and 1.2 < eps_r < 1.5
  greedy_curve = optimal[0].mean(0)  # plateau: the last 500 steps barely move.
  assert abs(greedy_curve[-100:].mean() - greedy_curve[400:500].mean()) < 0.03
  # step 1: no estimate yet, the action is uniform, so ~1/k optimal and ~0 average reward.
  assert abs(optimal[:, :, 0].mean() - 0.1) < 0.03 and abs(reward[:, :, 0].mean()) < 0.1


def test_optimistic_initial_values_beat_realistic_eps_greedy():
  """S&B Figure 2.3: Q_1 = 5, eps = 0 vs Q_1 = 0, eps = 0.1, both alpha = 0.1 (one compile)."""
  run = jax.jit(jax.vmap(lambda q1, eps: bandits.testbed(
      jax.random.key(4), 1000, 600, epsilon=eps, step_size=0.1, initial_value=q1).optimal))
  optimistic, realistic = np.asarray(run(jnp.array([5.0, 0.0]), jnp.array([0.0, 0.1])))
  assert optimistic[:, -100:].mean() > realistic[:, -100:].mean() + 0.03
  assert realistic[:, :5].mean() > optimistic[:, :5].mean()  # early on it explores instead


@pytest.mark.parametrize("env_name", bandits.GYMNAX_BANDITS)
def test_gymnax_bandit_rewards_and_learning(env_name):
  steps = 200
  env, params = bandits.make_gymnax_bandit(env_name, steps)
  trace = jax.jit(jax.vmap(lambda k: bandits.gymnax_run(k, env, params, steps, epsilon=0.1)))(
      jax.random.split(jax.random.key(5), 200))
  optimal, reward = np.asarray(trace.optimal), np.asarray(trace.reward)
  assert optimal[:, -50:].mean() > 0.85
  if env_name == "BernoulliBandit-misc":
    # Arms pay 1 w.p. 0.1 and 0.9 (which is which is drawn per run): a coin flip at first.
    assert abs(optimal[:, 0].mean() - 0.5) < 0.1
    best = reward[optimal == 1.0]
    assert set(np.unique(best)) <= {0.0, 1.0} and abs(best.mean() - 0.9) < 0.01
  else:  # arm 0 pays exactly 0; arm 1 pays N(mu, 0.1^2), mu ~ N(-1, 1).
    assert np.all(reward[np.asarray(trace.action) == 0] == 0.0)
    assert np.all(reward[np.asarray(trace.action) == 1] != 0.0)


def test_experiment_end_to_end(tmp_path):
  proc = experiment_cli.run_experiment(
      "experiments.bandits", f"--workdir={tmp_path}", "--runs=64", "--steps=50",
      "--update=constant", "--initial_value=2", "--epsilons=0,0.1")
  assert proc.returncode == 0, proc.stderr
  results = read_results(str(tmp_path / "results.json"))["extra"]
  assert set(results["epsilons"]) == {"0.0", "0.1"}
  assert results["arms"] == 10
  config = json.loads((tmp_path / "run_info.json").read_text())["config"]
  assert config["update"] == "constant" and config["initial_value"] == 2.0 and config["runs"] == 64
  assert (tmp_path / "bandits_testbed.png").stat().st_size > 1000


def test_experiment_bad_flag_is_one_line():
  experiment_cli.assert_one_line_error(
      experiment_cli.run_experiment("experiments.bandits", "--epsilons=0.1,1.5"), "--epsilons")
