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

from genrl_jax import config as cfg
from genrl_jax import losses
from genrl_jax.contract import SEED_AXIS, Train
from genrl_jax.errors import UserError
from genrl_jax.models import policies, qnetworks
from genrl_jax.rl import budget, rollout

Array = chex.Array
EVAL_KEY = 0x5EED  # folded into a seed's key for its evaluation episodes (training untouched)


@dataclasses.dataclass(frozen=True)
class DQNConfig:
  """Hyperparameters of one DQN run (one seed; the runner vmaps seeds); each field's help text
  is its flag's (``genrl_jax.config``).

  Defaults: CleanRL's dqn.py / PureJaxRL's DQN settings for CartPole-v1 (Adam 2.5e-4, batch 128,
  10k buffer, learning from 10k steps, one gradient step per 10 env steps, hard target copy every
  500 steps), with N = 10 envs, Double DQN, gradient clipping at norm 10, and what made every
  seed solve CartPole-v1 here: epsilon 1 -> 0.01 over the first 20 % of the budget (CleanRL:
  -> 0.05 over 50 %) and the step size decayed linearly to 0 (PureJaxRL's LR_LINEAR_DECAY).
  """
  env_id: str = cfg.field(
      "CartPole-v1", "gymnax environment id with a discrete action space (CartPole-v1, "
      "Acrobot-v1, MountainCar-v0, Breakout-MinAtar, ...).", flag="env")
  max_episode_steps: int = cfg.field(
      0, "Episode-length limit (a truncation: bootstrapped from the true last observation); 0 "
      "keeps the environment's own limit.", check=cfg.non_negative)
  num_envs: int = cfg.field(
      10, "Auto-resetting environments per seed, stepped together (N).",
      check=cfg.at_least_one)
  gamma: float = cfg.field(0.99, "Discount factor.", check=cfg.unit_interval)
  learning_rate: float = cfg.field(2.5e-4, "Adam step size.", check=cfg.positive)
  lr_decay: bool = cfg.field(
      True, "Decay the Adam step size linearly to 0 over the run's gradient steps (PureJaxRL's "
      "LR_LINEAR_DECAY).")
  adam_eps: float = cfg.field(1e-8, "Adam's epsilon.", check=cfg.positive)
  max_grad_norm: float = cfg.field(
      10.0, "Clip the gradient to this global norm before Adam (0 = off).",
      check=cfg.non_negative)
  hidden_sizes: tuple[int, ...] = cfg.field(
      (120, 84), "Hidden layer widths of the Q-network MLP, comma-separated.",
      check=cfg.positive_sizes)
  activation: str = cfg.field(
      "relu", "Hidden-layer nonlinearity of the Q-network.", choices=tuple(policies.ACTIVATIONS))
  buffer_size: int = cfg.field(
      10_000, "Replay buffer capacity in transitions (uniform sampling from the filled slots; the "
      "oldest are overwritten).", check=cfg.at_least_one)
  batch_size: int = cfg.field(
      128, "Transitions per gradient step.", check=cfg.at_least_one)
  learning_starts: int = cfg.field(
      10_000, "Env steps per seed before the first gradient step (the buffer fills under the "
      "epsilon schedule).", check=cfg.non_negative)
  train_frequency: int = cfg.field(
      10, "Env steps (over all --num_envs) between gradient phases; a multiple of --num_envs.",
      check=cfg.at_least_one)
  gradient_steps: int = cfg.field(
      1, "Gradient steps per phase.", check=cfg.at_least_one)
  target_update_period: int = cfg.field(
      500, "Env steps between target-network updates.", check=cfg.at_least_one)
  tau: float = cfg.field(
      1.0, "Target update: target <- tau * online + (1 - tau) * target every "
      "--target_update_period env steps; 1 = hard copy (Mnih et al. 2015), < 1 = Polyak "
      "averaging.", check=(lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"))
  double_dqn: bool = cfg.field(
      True, "Double DQN (van Hasselt et al. 2016): the online network picks the bootstrap action, "
      "the target network values it.")
  loss: str = cfg.field(
      "mse", "TD loss: 'huber' (delta 1), 'mse' (the error squared, torch's mse_loss) or "
      "'squared' (half of it).", choices=losses.TD_LOSSES)
  eps_start: float = cfg.field(
      1.0, "Exploration epsilon at step 0.", check=cfg.unit_interval)
  eps_end: float = cfg.field(
      0.01, "Exploration epsilon after the linear decay.", check=cfg.unit_interval)
  eps_fraction: float = cfg.field(
      0.2, "Fraction of --total_env_steps over which epsilon decays linearly from --eps_start to "
      "--eps_end.", check=(lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"))
  total_env_steps: int = cfg.field(
      500_000, "Budget per seed in env steps.",
      check=(lambda v: 1 <= v < 2**30, "must be in [1, 2**30) (the int32 counter)"))
  num_chunks: int = cfg.field(
      10, "The budget runs in this many equal chunks; after each: a progress line, metrics.jsonl "
      "lines, a checkpoint every --checkpoint_every chunks.", check=cfg.at_least_one)
  points_per_chunk: int = cfg.field(
      20, "Learning-curve points recorded inside each chunk (return.png, steps to the target).",
      check=cfg.at_least_one)
  eval_episodes: int = cfg.field(
      10, "Fresh episodes per seed played by the greedy policy (epsilon 0) in each evaluation, "
      "apart from training.", check=cfg.at_least_one)
  eval_every: int = cfg.field(
      0, "Also evaluate the greedy policy after every this many chunks (eval_* metrics); 0 = only "
      "at the end.", check=cfg.non_negative)

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

  def check(self) -> None:
    """Cross-field rules (``config.validate`` runs the per-field checks first)."""
    if self.train_frequency % self.num_envs:
      raise UserError(f"--train_frequency ({self.train_frequency}) must be a multiple of "
                      f"--num_envs ({self.num_envs}): each iteration steps all envs alike")
    if self.batch_size > self.buffer_size:
      raise UserError(f"--batch_size ({self.batch_size}) must be <= --buffer_size "
                      f"({self.buffer_size})")
    if self.buffer_size < self.train_frequency:
      raise UserError(f"--buffer_size ({self.buffer_size}) must hold one iteration's "
                      f"{self.train_frequency} transitions (--train_frequency)")
    most = self.total_env_steps // self.train_frequency
    if self.num_chunks > most:
      raise UserError(f"--num_chunks must be in [1, {most}] (a chunk holds at least one "
                      f"iteration of --train_frequency env steps), got {self.num_chunks}")

  def validate(self) -> None:
    """Raises UserError naming the first bad field and its valid range."""
    cfg.validate(self)


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


def total_gradient_steps(config: DQNConfig) -> int:
  """Gradient steps of a whole run: one phase per iteration from ``learning_starts`` on."""
  iterations = -(-config.total_env_steps // config.train_frequency)
  first = -(-config.learning_starts // config.train_frequency)     # first iteration that learns
  return max(0, iterations - max(first, 1) + 1) * config.gradient_steps


def make_setup(config: DQNConfig, seed_axis: str | None = None) -> Setup:
  """Builds the environment, network, optimizer and buffer for ``config`` (validated first)."""
  config.validate()
  env, env_params, num_actions, obs_shape, limit = rollout.make_env(
      config.env_id, config.max_episode_steps)
  q_network = qnetworks.QNetwork(tuple(config.hidden_sizes), num_actions, config.activation,
                                 len(obs_shape))
  lr = config.learning_rate
  if config.lr_decay:
    lr = optax.linear_schedule(config.learning_rate, 0.0, max(1, total_gradient_steps(config)))
  tx = optax.adam(lr, eps=config.adam_eps)
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


def gradient_phase(setup: Setup, params, opt_state, target_params, buffer, key: chex.PRNGKey):
  """``gradient_steps`` Adam steps, each on a fresh uniform batch from the buffer.

  Returns:
    (params, opt_state, {"loss", "q_mean", "grad_norm"}: mean, mean and max over the steps).
  """
  cfg = setup.config

  def one(carry, k):
    params, opt_state = carry
    batch = setup.buffer.sample(buffer, k).experience
    (loss, q_mean), grads = jax.value_and_grad(td_loss_batch, has_aux=True)(
        params, target_params, setup.q_network, batch, cfg.gamma, cfg.double_dqn, cfg.loss)
    updates, opt_state = setup.tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), (loss, q_mean,
                                                               optax.global_norm(grads))

  (params, opt_state), (loss, q_mean, grad_norm) = jax.lax.scan(
      one, (params, opt_state), jax.random.split(key, cfg.gradient_steps))
  return params, opt_state, {"loss": jnp.mean(loss), "q_mean": jnp.mean(q_mean),
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

  # Every seed's counter moves by train_frequency per iteration (the loop is lockstep), so
  # whether to learn and whether to update the target are the same for every seed. Made
  # unbatched over the seeds' vmap (``rollout.any_over_axis``), both conds below stay
  # conditionals; under a batched predicate vmap would turn each into a select of both
  # branches: the gradient phase computed in the warm-up too, and every parameter (and Adam
  # moment) copied through a select at every iteration.
  learning = rollout.any_over_axis(env_steps >= cfg.learning_starts, setup.seed_axis)
  zeros = {"loss": jnp.zeros(()), "q_mean": jnp.zeros(()), "grad_norm": jnp.zeros(())}
  # Only the networks and the optimizer go through the cond, never the buffer.
  params, opt_state, train_metrics = jax.lax.cond(
      learning,
      lambda p, o: gradient_phase(setup, p, o, state.target_params, buffer, key_train),
      lambda p, o: (p, o, zeros), state.params, state.opt_state)
  state = state.replace(params=params, opt_state=opt_state,
                        grad_steps=state.grad_steps + cfg.gradient_steps * learning.astype(
                            jnp.int32))
  period = cfg.target_update_period
  crossed = (env_steps // period) > (state.env_steps - cfg.train_frequency) // period
  do_target = rollout.any_over_axis(learning & crossed, setup.seed_axis)
  state = state.replace(
      target_params=jax.lax.cond(do_target, lambda t, p: target_update(t, p, cfg.tau),
                                 lambda t, p: t, state.target_params, state.params),
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

  The learning curve: at each mark, the return of the latest finished episode (NaN before the
  first) and the 100-episode average (NaN until 100 episodes have ended: a negative-return task
  such as Acrobot would otherwise look solved at the start, when the window is empty).
  ``return_last100`` at the chunk's end is NaN while no episode has ended.
  """
  cfg = setup.config
  start, end = budget.chunk_bounds(cfg.budget, cfg.num_chunks, state.chunk)

  def curve_fn(new_s, m):
    del m
    count = new_s.recent_count
    return {"curve_return": jnp.where(count > 0, new_s.recent_returns[-1], jnp.nan),
            "curve_return_last100": jnp.where(count >= budget.RECENT_EPISODES,
                                              return_last100(new_s), jnp.nan),
            "curve_env_steps": new_s.env_steps}

  state, acc = budget.run_until(
      functools.partial(iteration, setup), state, start=start, end=end,
      counter=lambda s: s.env_steps, points=cfg.points_per_chunk, sum_keys=SUM_KEYS,
      max_keys={"grad_norm_max": "grad_norm"}, curve_fn=curve_fn, seed_axis=setup.seed_axis,
      lockstep=True)   # every iteration is train_frequency env steps for every seed
  state = state.replace(chunk=state.chunk + 1)
  episodes = jnp.maximum(acc["episodes"], 1.0)
  phases = jnp.maximum(acc["grad_phases"], 1.0)
  metrics = {
      "episode_return": acc["return_sum"] / episodes,
      "episode_length": acc["length_sum"] / episodes,
      "episodes": acc["episodes"],
      "return_last100": jnp.where(state.recent_count > 0, return_last100(state), jnp.nan),
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
    {"return": mean episodic return, "return_min": the worst episode's, "length": mean length}
    (the runner reports them as ``eval_<name>``).
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
  return {"return": jnp.mean(returns), "return_min": jnp.min(returns),
          "length": jnp.mean(lengths)}


def make_train(config: DQNConfig, seed_axis: str | None = SEED_AXIS) -> Train:
  """The runner's per-seed functions: init(key, data), chunk(state, data), evaluate(state, data)
  (``data`` unused: pass None); ``static`` is the Setup (networks, env, buffer)."""
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

  return Train(init=init, chunk=chunk, evaluate=evaluate_fn, static=setup)
