"""The leanest DQN of the same algorithm: the floor the project's DQN loop is timed against.

PureJaxRL's shape, written for this comparison: ``jax.jit(jax.vmap(train))`` over seeds, one
``lax.scan`` over the whole budget's iterations, no runner, no chunks, no budget while-loop, no
metrics but the episode returns. One iteration (the project's ``genrl_jax.rl.dqn.iteration``):
N = 10 gymnax envs take K = train_frequency / N epsilon-greedy steps, the N x K transitions go
into flashbax's item buffer, then (from ``learning_starts`` on, a ``lax.cond``) one Adam step on
the mean squared TD error of a uniform batch, and a hard target copy when the env-step counter
crosses a multiple of ``target_update_period``.

Each piece the project adds can be switched on here alone (``Pieces``), so that its cost is
measured, not guessed: Double DQN's extra forward pass, gradient clipping, the step-size
schedule, ``final_observation`` as s' (the floor stores the observation after gymnax's
auto-reset, PureJaxRL's choice: wrong on the last step of an episode), and the chunked
while-loop (``chunks`` > 0: a ``lax.while_loop`` on the env-step counter per chunk, with the host
fetching the returns after each chunk, as the runner does; the loop's condition is made
unbatched over the seeds with ``lax.pmax``, as ``genrl_jax.rl.budget.run_until`` does), and the
per-iteration metrics (``metrics``: loss, Q and gradient-norm sums and the last-100-returns
window).
"""

from __future__ import annotations

import dataclasses

import flashbax
import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import optax

from genrl_jax.rl import budget

SEEDS = "seeds"  # the vmapped seed axis of the chunked form


@dataclasses.dataclass(frozen=True)
class Pieces:
  """What is added to the floor (all off: the floor itself)."""
  double_dqn: bool = False
  max_grad_norm: float = 0.0
  lr_decay: bool = False
  final_observation: bool = False
  metrics: bool = False     # the project's per-iteration metrics: loss, Q, gradient norm sums,
                            # the last-100-returns window (``budget.push_recent``)
  chunks: int = 0           # 0: one scan over the whole budget; K: K while-loop chunks


@dataclasses.dataclass(frozen=True)
class Hyper:
  """The experiment's defaults (``genrl_jax.rl.dqn.DQNConfig``) for CartPole-v1."""
  total_env_steps: int = 200_000
  num_envs: int = 10
  train_frequency: int = 10
  buffer_size: int = 10_000
  batch_size: int = 128
  learning_starts: int = 10_000
  target_update_period: int = 500
  learning_rate: float = 2.5e-4
  gamma: float = 0.99
  eps_start: float = 1.0
  eps_end: float = 0.01
  eps_fraction: float = 0.2
  hidden: tuple[int, ...] = (120, 84)


class QNet(nn.Module):
  hidden: tuple[int, ...]
  actions: int

  @nn.compact
  def __call__(self, x):
    for h in self.hidden:
      x = nn.relu(nn.Dense(h)(x))
    return nn.Dense(self.actions)(x)


def make_train(hp: Hyper, pieces: Pieces = Pieces(), env_id: str = "CartPole-v1"):
  """train(key) -> (state, returns): the run of one seed; with ``pieces.chunks`` a pair
  (init(key) -> state, chunk(state) -> (state, returns)) instead."""
  env, env_params = gymnax.make(env_id)
  actions = env.action_space(env_params).n
  net = QNet(hp.hidden, actions)
  iterations = hp.total_env_steps // hp.train_frequency
  k_steps = hp.train_frequency // hp.num_envs
  lr = hp.learning_rate
  if pieces.lr_decay:
    learn_iters = iterations - hp.learning_starts // hp.train_frequency + 1
    lr = optax.linear_schedule(hp.learning_rate, 0.0, learn_iters)
  tx = optax.adam(lr)
  if pieces.max_grad_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(pieces.max_grad_norm), tx)
  buffer = flashbax.make_item_buffer(max_length=hp.buffer_size, min_length=1,
                                     sample_batch_size=hp.batch_size, add_batches=True)
  v_reset = jax.vmap(env.reset, in_axes=(0, None))
  v_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

  def init(key):
    k_net, k_env, key = jax.random.split(key, 3)
    obs, env_state = v_reset(jax.random.split(k_env, hp.num_envs), env_params)
    params = net.init(k_net, obs[:1])
    item = {"obs": obs[0], "action": jnp.zeros((), jnp.int32), "reward": jnp.zeros(()),
            "next_obs": obs[0], "done": jnp.zeros((), bool)}
    return {"params": params, "target": params, "opt": tx.init(params),
            "buffer": buffer.init(item), "env_state": env_state, "obs": obs,
            "ep_return": jnp.zeros((hp.num_envs,)), "key": key, "t": jnp.zeros((), jnp.int32),
            **({"recent": jnp.zeros((100,)), "count": jnp.zeros((), jnp.int32),
                "sums": jnp.zeros((3,))} if pieces.metrics else {})}

  def loss_fn(params, target, batch):
    q = net.apply(params, batch["obs"])
    q_next = net.apply(target, batch["next_obs"])
    if pieces.double_dqn:
      a_next = jnp.argmax(net.apply(jax.lax.stop_gradient(params), batch["next_obs"]), -1)
      v_next = jnp.take_along_axis(q_next, a_next[:, None], 1)[:, 0]
    else:
      v_next = jnp.max(q_next, -1)
    y = batch["reward"] + hp.gamma * (1.0 - batch["done"]) * jax.lax.stop_gradient(v_next)
    q_a = jnp.take_along_axis(q, batch["action"][:, None], 1)[:, 0]
    return jnp.mean((q_a - y) ** 2), jnp.mean(q_a)

  def env_step(carry, key):
    s, eps = carry
    k_act, k_rand, k_step = jax.random.split(key, 3)
    greedy = jnp.argmax(net.apply(s["params"], s["obs"]), -1)
    random = jax.random.randint(k_rand, (hp.num_envs,), 0, actions)
    action = jnp.where(jax.random.uniform(k_act, (hp.num_envs,)) < eps, random, greedy)
    obs, env_state, reward, terminated, truncated, info = v_step(
        jax.random.split(k_step, hp.num_envs), s["env_state"], action, env_params)
    done = terminated | truncated
    # The floor: s' = the observation after the auto-reset, and no bootstrap on any episode end.
    next_obs = info["final_observation"] if pieces.final_observation else obs
    terminal = terminated if pieces.final_observation else done
    ep_return = s["ep_return"] + reward
    finished = (jnp.where(done, ep_return, 0.0), done)
    item = {"obs": s["obs"], "action": action.astype(jnp.int32), "reward": reward,
            "next_obs": next_obs, "done": terminal}
    s = {**s, "obs": obs, "env_state": env_state, "ep_return": jnp.where(done, 0.0, ep_return)}
    return (s, eps), (item, finished)

  def iteration(s, _):
    key, k_env, k_sample = jax.random.split(s["key"], 3)
    frac = jnp.minimum(s["t"] / (hp.eps_fraction * hp.total_env_steps), 1.0)
    eps = hp.eps_start + frac * (hp.eps_end - hp.eps_start)
    (s, _), (items, (ret_sum, n_done)) = jax.lax.scan(env_step, (s, eps),
                                                      jax.random.split(k_env, k_steps))
    items = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), items)
    buf = buffer.add(s["buffer"], items)
    t = s["t"] + hp.train_frequency

    def learn(params, opt):
      batch = buffer.sample(buf, k_sample).experience
      (loss, q), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, s["target"], batch)
      updates, opt = tx.update(grads, opt, params)
      return optax.apply_updates(params, updates), opt, jnp.stack(
          [loss, q, optax.global_norm(grads)])

    params, opt, sums = jax.lax.cond(t >= hp.learning_starts, learn,
                                     lambda p, o: (p, o, jnp.zeros((3,))), s["params"], s["opt"])
    copy = (t >= hp.learning_starts) & (t % hp.target_update_period == 0)
    target = jax.tree.map(lambda a, b: jnp.where(copy, a, b), params, s["target"])
    s = {**s, "params": params, "opt": opt, "target": target, "buffer": buf, "key": key, "t": t}
    if pieces.metrics:
      recent, count = budget.push_recent(s["recent"], s["count"], ret_sum.reshape(-1),
                                         n_done.reshape(-1))
      s = {**s, "recent": recent, "count": count, "sums": s["sums"] + sums}
    return s, (jnp.sum(ret_sum), jnp.sum(n_done.astype(jnp.float32)))

  if not pieces.chunks:
    def train(key):
      state, (ret_sum, n_done) = jax.lax.scan(iteration, init(key), None, length=iterations)
      return state, (ret_sum, n_done)
    return train

  per_chunk = hp.total_env_steps // pieces.chunks

  def chunk(state):  # under jax.vmap(..., axis_name=SEEDS)
    end = (state["t"] // per_chunk + 1) * per_chunk

    def body(carry):
      s, acc = carry
      s, (r, n) = iteration(s, None)
      return s, (acc[0] + r, acc[1] + n)

    def cond(carry):  # unbatched over the seeds: no per-seed select of the carry
      return jax.lax.pmax((carry[0]["t"] < end).astype(jnp.int32), SEEDS) > 0
    state, acc = jax.lax.while_loop(cond, body, (state, (jnp.zeros(()), jnp.zeros(()))))
    return state, acc

  return init, chunk


def timed_run(hp: Hyper, pieces: Pieces, seeds: int) -> dict:
  """Compiles, then times the whole budget of ``seeds`` vmapped seeds (compile apart)."""
  import time  # noqa: PLC0415
  keys = jax.random.split(jax.random.key(0), seeds)
  if not pieces.chunks:
    fn = jax.jit(jax.vmap(make_train(hp, pieces)))
    t0 = time.perf_counter()
    compiled = fn.lower(keys).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, (ret, n) = jax.block_until_ready(compiled(keys))
    seconds = time.perf_counter() - t0
    episodes = float(jnp.sum(n))
  else:
    init, chunk = make_train(hp, pieces)
    state = jax.jit(jax.vmap(init))(keys)
    fn = jax.jit(jax.vmap(chunk, axis_name=SEEDS), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = fn.lower(state).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    episodes = 0.0
    for _ in range(pieces.chunks):
      state, (ret, n) = compiled(state)
      episodes += float(jnp.sum(jax.device_get(n)))   # one host transfer per chunk
    seconds = time.perf_counter() - t0
  return {"seconds": seconds, "compile_seconds": compile_s,
          "env_steps_per_s": seeds * hp.total_env_steps / seconds, "episodes": episodes}

