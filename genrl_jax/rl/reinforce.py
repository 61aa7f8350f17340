"""REINFORCE (Williams 1992) with reward-to-go and baselines, fully jitted.

One update: N environments each play one whole episode (``rollout.episode_rollout``: a loop
over at most the episode-length limit, the steps after an episode's end masked), the returns are
computed with ``estimator`` (the whole-episode return G_0, or the reward-to-go G_t), a baseline
b(s_t) is subtracted (none, the batch mean, or a learned state value v_w(s_t)), and one Adam step
is taken on the surrogate ``genrl_jax.losses.reinforce_surrogate``; the value network takes one
Adam step on ``genrl_jax.losses.value_baseline_loss`` (Sutton & Barto 2018, §13.4, "REINFORCE
with baseline").

Both losses are averaged over the batch's real (unmasked) steps, so the policy gradient is

    g = (1 / M) sum_{n, t} m_{t,n} (G_{t,n} - b_{t,n}) grad log pi(a_{t,n} | s_{t,n}),

M = sum m: the REINFORCE estimate up to a positive scale (the mean episode length).

Truncation: when a time limit cuts an episode and a value network exists (``--baseline=value``),
the return is bootstrapped with v(s_T) of the true last state (gymnax's
``info["final_observation"]``); without one it is cut there (Monte Carlo). A terminated episode
is never bootstrapped.

Env steps: ``env_steps`` counts real environment steps (the sum of episode lengths); padding
steps after an episode ended are simulated but never counted, neither in the budget
``total_env_steps`` nor in the throughput. The rollout loop stops once every episode of the batch
(of every seed, when the seeds' vmap axis is named) has ended, and the gradient is accumulated
over 64-step row blocks only as far as that, so padding costs little (``blockwise``).

Chunks: the budget is cut into ``num_chunks`` equal intervals of env steps (or of updates, with
``total_updates``); a chunk runs updates (a ``lax.while_loop``) until the seed's counter reaches
the chunk's end, so every seed's chunk k ends at the same x on an env-steps axis (overshooting by
less than one update) and the run ends at the budget: the shared loop ``budget.run_until``.

``make_train`` assembles ``init(key, data) -> State`` and ``chunk(State, data) -> (State,
metrics)`` for ``genrl_jax.run``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from genrl_jax import config as cfg
from genrl_jax import losses
from genrl_jax.contract import SEED_AXIS
from genrl_jax.contract import Train
from genrl_jax.errors import UserError
from genrl_jax.models import policies
from genrl_jax.rl import blockwise, budget, diagnostics, rollout

Array = chex.Array
ESTIMATORS = ("total", "reward_to_go")
BASELINES = ("none", "mean", "value")
RECENT_EPISODES = budget.RECENT_EPISODES  # the "last 100 episodes" window
BLOCK_STEPS = 64       # time steps per slice of the blockwise loss/gradient loop


@dataclasses.dataclass(frozen=True)
class ReinforceConfig:
  """Hyperparameters of one REINFORCE run (one seed; the runner runs the seeds side by side).

  Each field is declared once, with its flag's help text and check (``genrl_jax.config``);
  ``experiments.reinforce``'s flags are generated from it (``env_id`` is ``--env``).
  """
  env_id: str = cfg.field("CartPole-v1", "gymnax environment id with a discrete action space "
                          "(CartPole-v1, Acrobot-v1, MountainCar-v0, Catch-bsuite, "
                          "BernoulliBandit-misc, ...).", flag="env")
  max_episode_steps: int = cfg.field(0, "Episode-length limit (a truncation, bootstrapped by the "
                                     "value network when there is one); 0 keeps the "
                                     "environment's own limit.", check=cfg.at_least(0))
  num_envs: int = cfg.field(16, "Episodes per update, played in parallel (N).",
                            check=cfg.at_least_one)
  gamma: float = cfg.field(0.99, "Discount factor of the returns.", check=cfg.unit_interval)
  estimator: str = cfg.field("reward_to_go", "Weight of grad log pi(a_t|s_t): 'total' = the "
                             "episode's whole return G_0 (Williams 1992), 'reward_to_go' = G_t, "
                             "the return from step t on.", choices=ESTIMATORS)
  baseline: str = cfg.field("value", "Subtracted from the return: 'none'; 'mean' = the batch "
                            "mean of the returns; 'value' = a learned state value v(s_t), "
                            "regressed on the returns.", choices=BASELINES)
  normalize_advantages: bool = cfg.field(False, "Standardize G - b over the batch's real steps "
                                         "(zero mean, unit std).")
  policy_lr: float = cfg.field(1e-2, "Adam learning rate of the policy.", check=cfg.positive,
                               sweepable=True)
  value_lr: float = cfg.field(1e-1, "Adam learning rate of the value network (used with "
                              "--baseline=value).", check=cfg.positive, sweepable=True)
  hidden_sizes: tuple[int, ...] = cfg.field((32,), "Hidden layer widths of the policy MLP, "
                                            "comma-separated ('' = linear).",
                                            check=cfg.positive_sizes)
  value_hidden_sizes: tuple[int, ...] = cfg.field((32,), "Hidden layer widths of the value MLP, "
                                                  "comma-separated.", check=cfg.positive_sizes)
  activation: str = cfg.field("tanh", "Hidden-layer nonlinearity of both networks.",
                              choices=tuple(policies.ACTIVATIONS))
  entropy_coef: float = cfg.field(0.0, "Weight of the policy-entropy bonus in the policy loss "
                                  "(0 = plain REINFORCE).", check=cfg.non_negative,
                                  sweepable=True)
  max_grad_norm: float = cfg.field(0.0, "Clip each network's gradient to this global norm "
                                   "before Adam (0 = off).", check=cfg.non_negative)
  total_env_steps: int = cfg.field(1_000_000, "Budget per seed in real env steps (padding after "
                                   "an episode ended is not counted). Training stops at the "
                                   "first update that reaches it.", check=cfg.at_least_one)
  total_updates: int = cfg.field(0, "If > 0, the budget is this many updates instead of "
                                 "--total_env_steps.", check=cfg.at_least(0))
  num_chunks: int = cfg.field(10, "The budget is run in this many equal chunks; after each: a "
                              "progress line, metrics.jsonl lines, and a checkpoint every "
                              "--checkpoint_every chunks. Seeds wait for the slowest at each "
                              "chunk end, so fewer chunks waste less.")
  points_per_chunk: int = cfg.field(10, "Learning-curve points recorded inside each chunk "
                                    "(return of the update that reaches each mark), for "
                                    "return.png and the area under the curve.",
                                    check=cfg.at_least_one)

  @property
  def budget(self) -> int:
    return self.total_updates if self.total_updates > 0 else self.total_env_steps

  def chunk_end(self, chunk: int) -> int:
    """The counter value (env steps or updates) at which chunk ``chunk`` (1-based) ends."""
    return budget.chunk_end(self.budget, self.num_chunks, chunk)

  def curve_marks(self) -> list[int]:
    """The counter values (env steps or updates) of the recorded learning-curve points."""
    return budget.curve_marks(self.budget, self.num_chunks, self.points_per_chunk)

  def validate(self) -> None:
    """Raises UserError naming the first bad field and its valid range."""
    cfg.validate(self)

  def check(self) -> None:
    """The rules between fields (``cfg.validate`` calls it after the per-field checks)."""
    if self.budget >= 2**30:
      raise UserError(f"the budget {self.budget} does not fit the int32 step counter; "
                      "use fewer than 2**30 per seed")
    if not 1 <= self.num_chunks <= self.budget:
      raise UserError(f"--num_chunks must be in [1, {self.budget}] (the budget), "
                      f"got {self.num_chunks}")


@struct.dataclass
class ReinforceState:
  """Everything one seed needs to resume bit-exactly.

  Attributes:
    policy_params, value_params: network parameters (the value network is trained only with
      ``baseline="value"``).
    policy_opt_state, value_opt_state: Adam states.
    env: the N environments (state, observation, episode statistics).
    key: this seed's PRNG key (typed).
    update: number of updates applied.
    env_steps: real env steps used so far.
    chunk: number of chunks completed.
    recent_returns: [100] returns of the last episodes (oldest first), for the windowed average.
    recent_count: how many of ``recent_returns`` are filled.
  """
  policy_params: Any
  value_params: Any
  policy_opt_state: Any
  value_opt_state: Any
  env: rollout.EnvCarry
  key: chex.PRNGKey
  update: Array
  env_steps: Array
  chunk: Array
  recent_returns: Array
  recent_count: Array


@dataclasses.dataclass(frozen=True, eq=False)
class Setup:
  """The static pieces an update needs (hashable by identity, closed over by jit)."""
  config: ReinforceConfig
  env: Any
  env_params: Any
  episode_limit: int
  policy: policies.CategoricalPolicy
  value: policies.ValueNetwork
  policy_tx: optax.GradientTransformation
  value_tx: optax.GradientTransformation
  block_steps: int
  buffer_steps: int
  seed_axis: str | None


def make_setup(config: ReinforceConfig, seed_axis: str | None = None) -> Setup:
  """Builds the environment, networks and optimizers for ``config`` (validated first)."""
  config.validate()
  env, env_params, num_actions, obs_shape, limit = rollout.make_env(
      config.env_id, config.max_episode_steps)
  obs_ndim = len(obs_shape)
  policy = policies.CategoricalPolicy(tuple(config.hidden_sizes), num_actions,
                                      config.activation, obs_ndim)
  value = policies.ValueNetwork(tuple(config.value_hidden_sizes), config.activation, obs_ndim)

  adam = lambda lr: _adam(config, lr)
  per_chunk = config.budget // config.num_chunks
  if config.total_updates == 0 and per_chunk < config.num_envs * limit:
    raise UserError(
        f"--num_chunks={config.num_chunks} is too many for --total_env_steps="
        f"{config.total_env_steps}: a chunk ({per_chunk} steps) must hold at least one whole "
        f"update (num_envs * episode limit = {config.num_envs * limit} steps); use at most "
        f"{max(1, config.total_env_steps // (config.num_envs * limit))} chunks")
  block = min(BLOCK_STEPS, limit)
  return Setup(config=config, env=env, env_params=env_params, episode_limit=limit,
               policy=policy, value=value, policy_tx=adam(config.policy_lr),
               value_tx=adam(config.value_lr), block_steps=block,
               buffer_steps=-(-limit // block) * block, seed_axis=seed_axis)


def _adam(config: ReinforceConfig, lr) -> optax.GradientTransformation:
  """Adam with step size ``lr`` (a float, or a traced scalar in a sweep), after clipping."""
  tx = optax.adam(lr)
  if config.max_grad_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), tx)
  return tx


def with_hyperparameters(setup: Setup, hparams) -> Setup:
  """``setup`` with sweepable config fields (policy_lr, value_lr, entropy_coef) replaced by
  ``hparams`` values, e.g. traced scalars of an in-program sweep; nothing else is rebuilt."""
  config = dataclasses.replace(setup.config, **hparams)
  return dataclasses.replace(setup, config=config, policy_tx=_adam(config, config.policy_lr),
                             value_tx=_adam(config, config.value_lr))


def init_state(setup: Setup, key: chex.PRNGKey) -> ReinforceState:
  """Fresh parameters, optimizer states and N reset environments for one seed."""
  key_policy, key_value, key_env, key = jax.random.split(key, 4)
  env_carry = rollout.reset(setup.env, setup.env_params, key_env, setup.config.num_envs)
  policy_params = setup.policy.init(key_policy, env_carry.obs[:1])
  value_params = setup.value.init(key_value, env_carry.obs[:1])
  return ReinforceState(
      policy_params=policy_params, value_params=value_params,
      policy_opt_state=setup.policy_tx.init(policy_params),
      value_opt_state=setup.value_tx.init(value_params),
      env=env_carry, key=key, update=jnp.zeros((), jnp.int32),
      env_steps=jnp.zeros((), jnp.int32), chunk=jnp.zeros((), jnp.int32),
      recent_returns=jnp.zeros((RECENT_EPISODES,), jnp.float32),
      recent_count=jnp.zeros((), jnp.int32))


def compute_returns(traj: rollout.Transition, gamma: float, estimator: str,
                    final_value: Array | None = None) -> Array:
  """[T, N] returns of a whole-episode rollout (one episode per column, padding after it).

  Args:
    traj: Transition of [T, N] arrays from ``episode_rollout``.
    gamma: discount.
    estimator: "total" (G_0 of the episode, repeated) or "reward_to_go" (G_t).
    final_value: [N] v(s_T) of the state each episode ended in, used where the episode was
      truncated; None cuts truncated episodes (no bootstrap).
  Returns:
    [T, N] returns (0 on padding steps).
  """
  v_next = None
  if final_value is not None:
    v_next = jnp.where(traj.truncated, final_value[None, :], 0.0)
  if estimator == "reward_to_go":
    fn = functools.partial(losses.discounted_returns, gamma=gamma)
  else:
    fn = functools.partial(losses.episode_start_returns, gamma=gamma)
  per_env = jax.vmap(lambda r, te, tr, v: fn(r, te, tr, v_next_t=v), in_axes=1, out_axes=1)
  return per_env(traj.reward, traj.terminated, traj.truncated, v_next)


def _masked_mean(x: Array, mask: Array) -> Array:
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def compute_advantages(returns: Array, mask: Array, baseline: str, values: Array | None,
                       normalize: bool) -> Array:
  """A = G - b on [T, N], optionally standardized over the real steps (0 on padding)."""
  mask = mask.astype(returns.dtype)
  if baseline == "value":
    adv = returns - values
  elif baseline == "mean":
    adv = returns - _masked_mean(returns, mask)
  else:
    adv = returns
  if normalize:
    mean = _masked_mean(adv, mask)
    std = jnp.sqrt(_masked_mean(jnp.square(adv - mean), mask))
    adv = (adv - mean) / (std + 1e-8)
  return jax.lax.stop_gradient(adv * mask)


def policy_loss(policy_params, policy: policies.CategoricalPolicy, obs: Array, action: Array,
                advantages: Array, mask: Array, entropy_coef: float
                ) -> tuple[Array, tuple[Array, Array]]:
  """Summed REINFORCE surrogate minus the entropy bonus over the real steps of [T, N] rows.

  Returns:
    (sum_{t,n} [surrogate - entropy_coef * m H(pi(s))], (surrogate sum, entropy sum)).
  """
  logits = policy.apply(policy_params, obs)                           # [T, N, A]
  mask = mask.astype(jnp.float32)
  surrogate = jnp.sum(jax.vmap(losses.reinforce_surrogate, in_axes=1)(
      logits, action, advantages, jnp.zeros_like(advantages), mask))
  ent = jnp.sum(mask * jax.vmap(jax.vmap(losses.entropy))(logits))
  return surrogate - entropy_coef * ent, (surrogate, ent)


def value_loss(value_params, value: policies.ValueNetwork, obs: Array, returns: Array,
               mask: Array) -> Array:
  """Summed squared-error regression of v(s_t) on the returns over the real steps of [T, N]."""
  v = value.apply(value_params, obs)
  return jnp.sum(jax.vmap(losses.value_baseline_loss, in_axes=1)(v, returns, mask))


def collect_and_grad(setup: "Setup", state: ReinforceState):
  """Rolls out one episode per environment and computes both gradients.

  Returns:
    (key, env carry, trajectory [T, N], returns [T, N], advantages [T, N], policy grads,
    value grads, loss terms).
  """
  cfg = setup.config
  key, key_rollout = jax.random.split(state.key)

  def policy_fn(k, obs):
    return policies.sample_actions(k, setup.policy.apply(state.policy_params, obs))

  env_carry, traj, final_obs, steps_run = rollout.episode_rollout(
      setup.env, setup.env_params, policy_fn, key_rollout, state.env, setup.episode_limit,
      buffer_steps=setup.buffer_steps, axis_name=setup.seed_axis)
  num_blocks = blockwise.num_blocks(steps_run, setup.block_steps, setup.seed_axis)
  mask = traj.mask.astype(jnp.float32)
  use_value = cfg.baseline == "value"
  final_value = setup.value.apply(state.value_params, final_obs) if use_value else None  # [N]
  returns = compute_returns(traj, cfg.gamma, cfg.estimator, final_value)
  if use_value and not cfg.normalize_advantages:
    adv = None    # A = G - v(s), computed block by block with the value gradient
  else:
    values = None
    if use_value:
      values = blockwise.blockwise_values(state.value_params, setup.value, traj.obs, num_blocks,
                                setup.block_steps)                            # [T, N]
    adv = compute_advantages(returns, mask, cfg.baseline, values, cfg.normalize_advantages)
  g_pi, g_v, adv, terms = blockwise.batch_gradients(
      setup, state.policy_params, state.value_params, traj, adv, returns, num_blocks, policy_loss)
  # Environment steps simulated, padding included (the loop ran steps_run steps for N envs).
  terms["simulated_steps"] = steps_run.astype(jnp.float32) * traj.mask.shape[1]
  return key, env_carry, traj, returns, adv, g_pi, g_v, terms


def update_step(setup: "Setup", state: ReinforceState
                ) -> tuple[ReinforceState, dict[str, Array]]:
  """One REINFORCE update: roll out N episodes, estimate returns, step policy (and value)."""
  cfg = setup.config
  key, env_carry, traj, _, _, g_pi, g_v, terms = collect_and_grad(setup, state)
  updates, policy_opt_state = setup.policy_tx.update(g_pi, state.policy_opt_state,
                                                     state.policy_params)
  policy_params = optax.apply_updates(state.policy_params, updates)
  if cfg.baseline == "value":
    v_updates, value_opt_state = setup.value_tx.update(g_v, state.value_opt_state,
                                                       state.value_params)
    value_params = optax.apply_updates(state.value_params, v_updates)
  else:
    value_params, value_opt_state = state.value_params, state.value_opt_state

  # Episode statistics: every column ended exactly one episode in this rollout.
  ended = jnp.any(jnp.logical_or(traj.terminated, traj.truncated), axis=0)  # [N]
  ep_return = jnp.sum(traj.reward, axis=0)                                  # 0 on padding
  ep_length = jnp.sum(traj.mask.astype(jnp.float32), axis=0)
  num_ended = jnp.maximum(jnp.sum(ended.astype(jnp.float32)), 1.0)
  recent, recent_count = budget.push_recent(state.recent_returns, state.recent_count, ep_return,
                                      ended)
  steps = jnp.sum(traj.mask.astype(jnp.int32))

  new_state = ReinforceState(
      policy_params=policy_params, value_params=value_params,
      policy_opt_state=policy_opt_state, value_opt_state=value_opt_state, env=env_carry,
      key=key, update=state.update + 1, env_steps=state.env_steps + steps, chunk=state.chunk,
      recent_returns=recent, recent_count=recent_count)
  metrics = {
      "episodes": jnp.sum(ended.astype(jnp.float32)),
      "return_sum": jnp.sum(ep_return * ended),
      "length_sum": jnp.sum(ep_length * ended),
      "grad_norm": optax.global_norm(g_pi),
      **terms,
  }
  return new_state, metrics


def return_last100(state: ReinforceState) -> Array:
  """Mean return of the last (up to) 100 episodes that ended; 0 before the first one."""
  return budget.recent_mean(state.recent_returns, state.recent_count)


# Per-update metrics summed over a chunk (``budget.run_until``).
SUM_KEYS = ("episodes", "return_sum", "length_sum", "policy_loss", "entropy", "value_loss",
            "grad_norm", "simulated_steps")


def run_chunk(setup: Setup, state: ReinforceState) -> tuple[ReinforceState, dict[str, Array]]:
  """Updates until the seed's counter reaches the chunk's end (``budget.run_until``); metrics.

  The learning curve inside the chunk: the first update of the chunk that ends at or past each
  of its marks records its episodes' mean return and the last-100 average.
  """
  cfg = setup.config
  start, end = budget.chunk_bounds(cfg.budget, cfg.num_chunks, state.chunk)
  counter = (lambda s: s.update) if cfg.total_updates > 0 else (lambda s: s.env_steps)

  def curve_fn(new_s, m):
    return {"curve_return": m["return_sum"] / jnp.maximum(m["episodes"], 1.0),
            "curve_return_last100": return_last100(new_s),
            "curve_env_steps": new_s.env_steps}

  state, acc = budget.run_until(
      functools.partial(update_step, setup), state, start=start, end=end, counter=counter,
      points=cfg.points_per_chunk, sum_keys=SUM_KEYS, max_keys={"grad_norm_max": "grad_norm"},
      curve_fn=curve_fn, seed_axis=setup.seed_axis)
  state = state.replace(chunk=state.chunk + 1)
  num_updates = jnp.maximum(acc["updates"], 1.0)
  num_episodes = jnp.maximum(acc["episodes"], 1.0)
  metrics = {
      "episode_return": acc["return_sum"] / num_episodes,
      "episode_length": acc["length_sum"] / num_episodes,
      "episodes": acc["episodes"],
      "return_last100": return_last100(state),
      "env_steps": state.env_steps,
      "updates": state.update,
      "updates_in_chunk": acc["updates"],
      "simulated_steps_in_chunk": acc["simulated_steps"],
      "policy_loss": acc["policy_loss"] / num_updates,
      "entropy": acc["entropy"] / num_updates,
      "value_loss": acc["value_loss"] / num_updates,
      "grad_norm": acc["grad_norm"] / num_updates,
      "grad_norm_max": acc["grad_norm_max"],
      "curve_return": acc["curve_return"],
      "curve_return_last100": acc["curve_return_last100"],
      "curve_env_steps": acc["curve_env_steps"],
  }
  return state, metrics


def gradient_variance(config: ReinforceConfig, state: ReinforceState, key: chex.PRNGKey,
                      num_samples: int) -> tuple[Array, Array]:
  """Spread of the policy-gradient estimate of ``config`` at ``state``'s networks.

  Draws ``num_samples`` independent batches (fresh environment resets and rollouts, the same
  policy and value parameters) and returns ``diagnostics.gradient_variance`` of the policy
  gradient: tr Cov[g] = sum_i Var[g_i] and ||E[g]||^2 (Greensmith et al. 2004).

  Returns:
    (tr Cov[g], ||mean g||^2), scalars.
  """
  setup = make_setup(config, seed_axis="samples")

  def one(k):
    key_env, key_run = jax.random.split(k)
    env = rollout.reset(setup.env, setup.env_params, key_env, config.num_envs)
    return collect_and_grad(setup, state.replace(key=key_run, env=env))[5]

  return diagnostics.gradient_variance(one, key, num_samples, axis_name="samples")


def make_train(config: ReinforceConfig, seed_axis: str | None = SEED_AXIS) -> Train:
  """``runner.Train`` with init(key, data), chunk(state, data) and ``static`` = the Setup.

  ``data`` is unused (the environment lives in the closure); pass ``None``. ``seed_axis`` names
  the vmap axis over seeds, if the caller binds one (the runner does): the rollout, gradient and
  chunk loops then run as long as the slowest seed needs instead of selecting per seed (the
  results are the same; see ``rollout.any_over_axis``).
  """
  return train_from_setup(make_setup(config, seed_axis))


def train_from_setup(setup: Setup) -> Train:
  """``runner.Train`` of a built Setup (``make_train``; a sweep's cells via
  ``with_hyperparameters``)."""

  def init(key, data=None):
    del data
    return init_state(setup, key)

  def chunk(state, data=None):
    del data
    return run_chunk(setup, state)

  return Train(init=init, chunk=chunk, static=setup)
