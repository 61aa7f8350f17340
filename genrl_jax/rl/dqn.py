"""DQN (Mnih et al. 2015) and Double DQN (van Hasselt et al. 2016), the whole loop jitted.

One iteration of the shared env-step budget loop (``budget.run_until``):

1. N auto-resetting environments (gymnax) take K = train_frequency / N epsilon-greedy steps
   (``rollout.rollout``), epsilon following the linear schedule

       eps(t) = max(eps_end, eps_start + (eps_end - eps_start) * t / (eps_fraction * T)),

   t the seed's env steps at the start of the iteration, T = total_env_steps (CleanRL's
   ``linear_schedule``);
2. the N * K transitions (s, a, r, s', terminated) go into a uniform replay buffer (flashbax's
   item buffer, part of the state: checkpointed, so resume is exact). s' is gymnax's
   ``info["final_observation"]``: the true next state also on the step that ended an episode,
   so a time-limit truncation bootstraps from it and a termination never does;
3. once the seed has ``learning_starts`` env steps, ``gradient_steps`` Adam steps on the mean
   ``genrl_jax.losses.td_loss`` of a uniformly drawn batch, with the target

       y = r + gamma (1 - terminated) Q_target(s', argmax_a Q_sel(s', a)),

   Q_sel = Q_target (DQN) or Q_online (Double DQN);
4. whenever the env-step counter crosses a multiple of ``target_update_period`` (learning
   started), the target network moves to tau * online + (1 - tau) * target (tau = 1: the hard
   copy of Mnih et al.; tau < 1: Polyak averaging, Lillicrap et al. 2016).

Episode returns are counted only for episodes that ended (gymnax's ``returned_episode``), in the
recent-returns window (last 100) and the per-chunk sums. ``evaluate`` plays
``eval_episodes`` fresh episodes per seed with the greedy policy (epsilon = 0), apart from
training.

``make_train`` assembles ``init(key, data) -> DQNState`` and ``chunk(DQNState, data) ->
(DQNState, metrics)`` for ``genrl_jax.run``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import chex
import flashbax
import jax
import jax.numpy as jnp
import optax
from flax import struct

from genrl_jax import losses
from genrl_jax.models import policies, qnetworks
from genrl_jax.rl import budget, rollout
from genrl_jax.run import SEED_AXIS, UserError

Array = chex.Array
EVAL_KEY = 0x5EED  # folded into a seed's key for its evaluation episodes (training untouched)


@dataclasses.dataclass(frozen=True)
class DQNConfig:
  """Hyperparameters of one DQN run (one seed; the runner vmaps seeds).

  Defaults: CleanRL's dqn.py / PureJaxRL's DQN settings for CartPole-v1, with N = 10 envs.

  Attributes:
    env_id: gymnax environment id with a discrete action space.
    max_episode_steps: episode-length limit (a truncation, bootstrapped); 0 keeps the env's.
    num_envs: environments per seed, stepped together (N).
    gamma: discount.
    learning_rate: Adam step size.
    adam_eps: Adam's epsilon.
    max_grad_norm: clip the gradient to this global norm (0 = off).
    hidden_sizes: Q-network MLP widths.
    activation: "relu", "tanh" or "elu".
    buffer_size: replay capacity in transitions.
    batch_size: transitions per gradient step.
    learning_starts: env steps of the seed before the first gradient step.
    train_frequency: env steps (over all N envs) between gradient phases; a multiple of N.
    gradient_steps: gradient steps per phase.
    target_update_period: env steps between target-network updates.
    tau: target update weight (1 = hard copy).
    double_dqn: select the bootstrap action with the online network.
    loss: "huber", "mse" or "squared" (``losses.td_loss``).
    eps_start, eps_end, eps_fraction: the linear epsilon schedule (fraction of the budget).
    total_env_steps: budget of env steps per seed.
    num_chunks: the budget runs in this many equal chunks.
    points_per_chunk: learning-curve points recorded in each chunk.
    eval_episodes: greedy-policy episodes per seed in each evaluation.
  """
  env_id: str = "CartPole-v1"
  max_episode_steps: int = 0
  num_envs: int = 10
  gamma: float = 0.99
  learning_rate: float = 2.5e-4
  adam_eps: float = 1e-8
  max_grad_norm: float = 10.0
  hidden_sizes: tuple[int, ...] = (120, 84)
  activation: str = "relu"
  buffer_size: int = 10_000
  batch_size: int = 128
  learning_starts: int = 10_000
  train_frequency: int = 10
  gradient_steps: int = 1
  target_update_period: int = 500
  tau: float = 1.0
  double_dqn: bool = True
  loss: str = "mse"
  eps_start: float = 1.0
  eps_end: float = 0.05
  eps_fraction: float = 0.5
  total_env_steps: int = 500_000
  num_chunks: int = 10
  points_per_chunk: int = 20
  eval_episodes: int = 10

  total_updates = 0  # the budget is in env steps (``report.plot_returns`` reads this)

  @property
  def budget(self) -> int:
    return self.total_env_steps

  @property
  def steps_per_iteration(self) -> int:
    """Vector steps K of the N environments per iteration."""
    return self.train_frequency // self.num_envs

  def chunk_end(self, chunk: int) -> int:
    return budget.chunk_end(self.budget, self.num_chunks, chunk)

  def curve_marks(self) -> list[int]:
    return budget.curve_marks(self.budget, self.num_chunks, self.points_per_chunk)

  def validate(self) -> None:
    """Raises UserError naming the first bad field and its valid range."""
    positive = ("num_envs", "buffer_size", "batch_size", "train_frequency", "gradient_steps",
                "target_update_period", "total_env_steps", "points_per_chunk", "eval_episodes")
    for name in positive:
      if getattr(self, name) < 1:
        raise UserError(f"--{name} must be >= 1, got {getattr(self, name)}")
    if self.activation not in policies.ACTIVATIONS:
      raise UserError(f"--activation must be one of {tuple(policies.ACTIVATIONS)}, "
                      f"got {self.activation!r}")
    if self.loss not in losses.TD_LOSSES:
      raise UserError(f"--loss must be one of {losses.TD_LOSSES}, got {self.loss!r}")
    if not 0.0 <= self.gamma <= 1.0:
      raise UserError(f"--gamma must be in [0, 1], got {self.gamma}")
    if self.learning_rate <= 0 or self.adam_eps <= 0:
      raise UserError(f"--learning_rate and --adam_eps must be > 0, got {self.learning_rate} "
                      f"and {self.adam_eps}")
    if self.max_grad_norm < 0 or self.learning_starts < 0:
      raise UserError(f"--max_grad_norm and --learning_starts must be >= 0, got "
                      f"{self.max_grad_norm} and {self.learning_starts}")
    if not 0.0 < self.tau <= 1.0:
      raise UserError(f"--tau must be in (0, 1], got {self.tau}")
    for name in ("eps_start", "eps_end"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise UserError(f"--{name} must be in [0, 1], got {getattr(self, name)}")
    if not 0.0 < self.eps_fraction <= 1.0:
      raise UserError(f"--eps_fraction must be in (0, 1], got {self.eps_fraction}")
    if any(h < 1 for h in self.hidden_sizes):
      raise UserError(f"--hidden_sizes must be positive integers, got {self.hidden_sizes}")
    if self.train_frequency % self.num_envs:
      raise UserError(f"--train_frequency ({self.train_frequency}) must be a multiple of "
                      f"--num_envs ({self.num_envs}): each iteration steps all envs alike")
    if self.batch_size > self.buffer_size:
      raise UserError(f"--batch_size ({self.batch_size}) must be <= --buffer_size "
                      f"({self.buffer_size})")
    if self.buffer_size < self.train_frequency:
      raise UserError(f"--buffer_size ({self.buffer_size}) must hold one iteration's "
                      f"{self.train_frequency} transitions")
    if self.total_env_steps >= 2**30:
      raise UserError(f"--total_env_steps={self.total_env_steps} does not fit the int32 "
                      "counter; use fewer than 2**30 per seed")
    if not 1 <= self.num_chunks <= self.total_env_steps // self.train_frequency:
      raise UserError(f"--num_chunks must be in [1, {self.total_env_steps // self.train_frequency}]"
                      f" (a chunk holds at least one iteration of --train_frequency env steps), "
                      f"got {self.num_chunks}")


@struct.dataclass
class Transition:
  """One stored transition (the buffer's item)."""
  obs: Array
  action: Array
  reward: Array
  next_obs: Array
  terminated: Array


@struct.dataclass
class DQNState:
  """Everything one seed needs to resume bit-exactly.

  Attributes:
    params, target_params: online and target Q-network parameters.
    opt_state: Adam state of the online network.
    buffer: flashbax item-buffer state (transitions, write index, full flag).
    env: the N environments (state, observation, episode statistics).
    key: this seed's PRNG key (typed).
    env_steps: env steps so far (over the N envs).
    iteration: iterations of the budget loop so far.
    grad_steps: gradient steps so far.
    target_updates: target-network updates so far.
    chunk: chunks completed.
    recent_returns, recent_count: the last-100 window (``budget.push_recent``).
  """
  params: Any
  target_params: Any
  opt_state: Any
  buffer: Any
  env: rollout.EnvCarry
  key: chex.PRNGKey
  env_steps: Array
  iteration: Array
  grad_steps: Array
  target_updates: Array
  chunk: Array
  recent_returns: Array
  recent_count: Array


@dataclasses.dataclass(frozen=True, eq=False)
class Setup:
  """The static pieces an iteration needs (hashable by identity, closed over by jit)."""
  config: DQNConfig
  env: Any
  env_params: Any
  episode_limit: int
  num_actions: int
  q_network: qnetworks.QNetwork
  tx: optax.GradientTransformation
  buffer: Any
  seed_axis: str | None


def make_buffer(capacity: int, batch_size: int):
  """flashbax's uniform item buffer: add [B] transitions, sample ``batch_size`` of the filled."""
  return flashbax.make_item_buffer(max_length=capacity, min_length=1,
                                   sample_batch_size=batch_size, add_batches=True)


def make_setup(config: DQNConfig, seed_axis: str | None = None) -> Setup:
  """Builds the environment, network, optimizer and buffer for ``config`` (validated first)."""
  config.validate()
  env, env_params, num_actions, obs_shape, limit = rollout.make_env(
      config.env_id, config.max_episode_steps)
  q_network = qnetworks.QNetwork(tuple(config.hidden_sizes), num_actions, config.activation,
                                 len(obs_shape))
  tx = optax.adam(config.learning_rate, eps=config.adam_eps)
  if config.max_grad_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), tx)
  return Setup(config=config, env=env, env_params=env_params, episode_limit=limit,
               num_actions=num_actions, q_network=q_network, tx=tx,
               buffer=make_buffer(config.buffer_size, config.batch_size), seed_axis=seed_axis)


def init_state(setup: Setup, key: chex.PRNGKey) -> DQNState:
  """Fresh parameters (target = online), Adam state, empty buffer, N reset environments."""
  key_params, key_env, key = jax.random.split(key, 3)
  env = rollout.reset(setup.env, setup.env_params, key_env, setup.config.num_envs)
  params = setup.q_network.init(key_params, env.obs[:1])
  item = Transition(obs=env.obs[0], action=jnp.zeros((), jnp.int32),
                    reward=jnp.zeros((), jnp.float32), next_obs=env.obs[0],
                    terminated=jnp.zeros((), bool))
  recent, count = budget.empty_recent()
  zero = jnp.zeros((), jnp.int32)
  return DQNState(params=params, target_params=jax.tree.map(jnp.copy, params),
                  opt_state=setup.tx.init(params), buffer=setup.buffer.init(item), env=env,
                  key=key, env_steps=zero, iteration=zero, grad_steps=zero, target_updates=zero,
                  chunk=zero, recent_returns=recent, recent_count=count)


def epsilon(config: DQNConfig, env_steps: Array) -> Array:
  """The linear schedule: eps_start at 0, eps_end from eps_fraction * total_env_steps on."""
  duration = config.eps_fraction * config.total_env_steps
  slope = (config.eps_end - config.eps_start) / duration
  return jnp.maximum(slope * env_steps.astype(jnp.float32) + config.eps_start,
                     jnp.float32(min(config.eps_start, config.eps_end)))


def td_loss_batch(params, target_params, q_network, batch: Transition, gamma: float,
                  double_dqn: bool, loss: str) -> tuple[Array, Array]:
  """Mean ``losses.td_loss`` over a batch of transitions, and the mean Q(s, a) taken.

  Returns:
    (scalar loss, scalar mean of Q(s_{t-1}, a_{t-1})).
  """
  q_tm1 = q_network.apply(params, batch.obs)                     # [B, A]
  q_t_target = q_network.apply(target_params, batch.next_obs)     # [B, A]
  q_t_online = (jax.lax.stop_gradient(q_network.apply(params, batch.next_obs))
                if double_dqn else None)
  per_example = jax.vmap(functools.partial(losses.td_loss, gamma=gamma, loss=loss))(
      q_tm1, batch.action, batch.reward, batch.terminated, q_t_target=q_t_target,
      q_t_online=q_t_online)
  q_taken = jnp.take_along_axis(q_tm1, batch.action[:, None], axis=1)[:, 0]
  return jnp.mean(per_example), jnp.mean(q_taken)


def target_update(target_params, params, tau: float):
  """tau * online + (1 - tau) * target, leaf by leaf (tau = 1: a copy of the online network)."""
  if tau == 1.0:
    return jax.tree.map(jnp.copy, params)
  return jax.tree.map(lambda t, p: tau * p + (1.0 - tau) * t, target_params, params)


def gradient_phase(setup: Setup, state: DQNState, key: chex.PRNGKey
                   ) -> tuple[DQNState, dict[str, Array]]:
  """``gradient_steps`` Adam steps, each on a fresh uniform batch from the buffer."""
  cfg = setup.config

  def one(carry, k):
    params, opt_state = carry
    batch = setup.buffer.sample(state.buffer, k).experience
    (loss, q_mean), grads = jax.value_and_grad(td_loss_batch, has_aux=True)(
        params, state.target_params, setup.q_network, batch, cfg.gamma, cfg.double_dqn,
        cfg.loss)
    updates, opt_state = setup.tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), (loss, q_mean,
                                                               optax.global_norm(grads))

  (params, opt_state), (loss, q_mean, grad_norm) = jax.lax.scan(
      one, (state.params, state.opt_state), jax.random.split(key, cfg.gradient_steps))
  state = state.replace(params=params, opt_state=opt_state,
                        grad_steps=state.grad_steps + cfg.gradient_steps)
  return state, {"loss": jnp.mean(loss), "q_mean": jnp.mean(q_mean),
                 "grad_norm": jnp.max(grad_norm)}


def iteration(setup: Setup, state: DQNState) -> tuple[DQNState, dict[str, Array]]:
  """One iteration: K epsilon-greedy steps of the N envs, store, train, maybe update the target."""
  cfg = setup.config
  key, key_act, key_train = jax.random.split(state.key, 3)
  eps = epsilon(cfg, state.env_steps)

  def policy_fn(k, obs):
    return qnetworks.epsilon_greedy(k, setup.q_network.apply(state.params, obs), eps)

  env, traj = rollout.rollout(setup.env, setup.env_params, policy_fn, key_act, state.env,
                              cfg.steps_per_iteration)
  flat = lambda x: jnp.reshape(x, (-1,) + x.shape[2:])             # [K, N] -> [K * N], time-major
  items = Transition(obs=flat(traj.obs), action=flat(traj.action).astype(jnp.int32),
                     reward=flat(traj.reward), next_obs=flat(traj.next_obs),
                     terminated=flat(traj.terminated))
  buffer = setup.buffer.add(state.buffer, items)
  env_steps = state.env_steps + cfg.train_frequency
  state = state.replace(env=env, buffer=buffer, key=key, env_steps=env_steps,
                        iteration=state.iteration + 1)

  learning = env_steps >= cfg.learning_starts
  zeros = {"loss": jnp.zeros(()), "q_mean": jnp.zeros(()), "grad_norm": jnp.zeros(())}
  state, train_metrics = jax.lax.cond(
      learning, lambda s: gradient_phase(setup, s, key_train), lambda s: (s, zeros), state)
  period = cfg.target_update_period
  crossed = (env_steps // period) > (state.env_steps - cfg.train_frequency) // period
  do_target = learning & crossed
  state = state.replace(
      target_params=jax.tree.map(lambda new, old: jnp.where(do_target, new, old),
                                 target_update(state.target_params, state.params, cfg.tau),
                                 state.target_params),
      target_updates=state.target_updates + do_target.astype(jnp.int32))

  returned = flat(traj.returned)
  ep_return, ep_length = flat(traj.returned_return), flat(traj.returned_length)
  recent, count = budget.push_recent(state.recent_returns, state.recent_count, ep_return,
                                     returned)
  state = state.replace(recent_returns=recent, recent_count=count)
  metrics = {
      "episodes": jnp.sum(returned.astype(jnp.float32)),
      "return_sum": jnp.sum(jnp.where(returned, ep_return, 0.0)),
      "length_sum": jnp.sum(jnp.where(returned, ep_length, 0).astype(jnp.float32)),
      "grad_phases": learning.astype(jnp.float32),
      "epsilon": eps,
      **train_metrics,
  }
  return state, metrics


def return_last100(state: DQNState) -> Array:
  """Mean return of the last (up to) 100 episodes that ended; 0 before the first one."""
  return budget.recent_mean(state.recent_returns, state.recent_count)


SUM_KEYS = ("episodes", "return_sum", "length_sum", "grad_phases", "loss", "q_mean")


def run_chunk(setup: Setup, state: DQNState) -> tuple[DQNState, dict[str, Array]]:
  """Iterations until the seed's env steps reach the chunk's end (``budget.run_until``).

  The learning curve: at each mark, the return of the latest finished episode and the last-100
  average.
  """
  cfg = setup.config
  start, end = budget.chunk_bounds(cfg.budget, cfg.num_chunks, state.chunk)

  def curve_fn(new_s, m):
    del m
    return {"curve_return": new_s.recent_returns[-1],
            "curve_return_last100": return_last100(new_s),
            "curve_env_steps": new_s.env_steps}

  state, acc = budget.run_until(
      functools.partial(iteration, setup), state, start=start, end=end,
      counter=lambda s: s.env_steps, points=cfg.points_per_chunk, sum_keys=SUM_KEYS,
      max_keys={"grad_norm_max": "grad_norm"}, curve_fn=curve_fn, seed_axis=setup.seed_axis)
  state = state.replace(chunk=state.chunk + 1)
  episodes = jnp.maximum(acc["episodes"], 1.0)
  phases = jnp.maximum(acc["grad_phases"], 1.0)
  metrics = {
      "episode_return": acc["return_sum"] / episodes,
      "episode_length": acc["length_sum"] / episodes,
      "episodes": acc["episodes"],
      "return_last100": return_last100(state),
      "env_steps": state.env_steps,
      "updates": state.grad_steps,
      "target_updates": state.target_updates,
      "epsilon": epsilon(cfg, state.env_steps),
      "loss": acc["loss"] / phases,
      "q_mean": acc["q_mean"] / phases,
      "grad_norm_max": acc["grad_norm_max"],
      "curve_return": acc["curve_return"],
      "curve_return_last100": acc["curve_return_last100"],
      "curve_env_steps": acc["curve_env_steps"],
  }
  return state, metrics


def evaluate(setup: Setup, state: DQNState) -> dict[str, Array]:
  """Greedy policy (epsilon = 0) on ``eval_episodes`` fresh episodes of one seed.

  The episodes use a key folded from the seed's key, and nothing of the training state changes.

  Returns:
    {"eval_return": mean episodic return, "eval_return_min": the worst episode's,
     "eval_length": mean length}.
  """
  cfg = setup.config
  key_reset, key_run = jax.random.split(jax.random.fold_in(state.key, EVAL_KEY))
  env = rollout.reset(setup.env, setup.env_params, key_reset, cfg.eval_episodes)

  def greedy(k, obs):
    del k
    return jnp.argmax(setup.q_network.apply(state.params, obs), axis=-1).astype(jnp.int32)

  _, traj, _, _ = rollout.episode_rollout(setup.env, setup.env_params, greedy, key_run, env,
                                          setup.episode_limit)
  returns = jnp.sum(traj.reward, axis=0)                                   # [E]
  lengths = jnp.sum(traj.mask.astype(jnp.float32), axis=0)
  return {"eval_return": jnp.mean(returns), "eval_return_min": jnp.min(returns),
          "eval_length": jnp.mean(lengths)}


def make_train(config: DQNConfig, seed_axis: str | None = SEED_AXIS):
  """Returns ``(init, chunk, evaluate, setup)``: init(key, data), chunk(state, data),
  evaluate(state, data), each for one seed (``data`` unused: pass None)."""
  setup = make_setup(config, seed_axis)

  def init(key, data=None):
    del data
    return init_state(setup, key)

  def chunk(state, data=None):
    del data
    return run_chunk(setup, state)

  def evaluate_fn(state, data=None):
    del data
    return evaluate(setup, state)

  return init, chunk, evaluate_fn, setup
