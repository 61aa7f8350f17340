"""A tiny deterministic gymnax environment for rollout and gradient tests."""

import gymnax
import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

CHAIN_ID = "Chain-test"
CHAIN1_ID = "Chain1-test"


@struct.dataclass
class ChainState(environment.EnvState):
  pos: jax.Array
  time: int


@struct.dataclass
class ChainParams(environment.EnvParams):
  goal: int = 3
  max_steps_in_episode: int = 4


class Chain(environment.Environment[ChainState, ChainParams]):
  """A walk on the integers from 0: action 1 steps right, action 0 stays.

  Reward r = 1 + pos_before for a step right, 0.5 for staying. The episode terminates when pos
  reaches ``goal`` and is truncated at ``max_steps_in_episode`` steps. Observation: [pos, time].
  Deterministic, so rollouts under a fixed action sequence are known in closed form.
  """

  def __init__(self, goal: int = 3, max_steps: int = 4):
    super().__init__()
    self._params = ChainParams(goal=goal, max_steps_in_episode=max_steps)

  @property
  def default_params(self) -> ChainParams:
    return self._params

  def step_env(self, key, state: ChainState, action, params: ChainParams):
    reward = jnp.where(action == 1, 1.0 + state.pos, 0.5).astype(jnp.float32)
    new = ChainState(pos=state.pos + action.astype(jnp.int32), time=state.time + 1)
    return self.get_obs(new), new, reward, self.is_terminated(new, params), {}

  def reset_env(self, key, params: ChainParams):
    state = ChainState(pos=jnp.zeros((), jnp.int32), time=jnp.zeros((), jnp.int32))
    return self.get_obs(state), state

  def get_obs(self, state: ChainState, params=None, key=None) -> jax.Array:
    return jnp.stack([state.pos, state.time]).astype(jnp.float32)

  def is_terminated(self, state: ChainState, params: ChainParams) -> jax.Array:
    return state.pos >= params.goal

  @property
  def name(self) -> str:
    return CHAIN_ID

  @property
  def num_actions(self) -> int:
    return 2

  def action_space(self, params=None) -> spaces.Discrete:
    return spaces.Discrete(2)

  def observation_space(self, params) -> spaces.Box:
    return spaces.Box(0.0, 100.0, (2,), jnp.float32)


def register_chain() -> str:
  """Registers Chain(goal=3, max_steps=5) with gymnax (once per process) as "Chain-test"."""
  if CHAIN_ID not in gymnax.registered_envs:
    gymnax.registration.register(CHAIN_ID, lambda **kw: Chain(goal=3, max_steps=5))
  return CHAIN_ID


def register_one_step_chain() -> str:
  """Registers Chain(goal=3, max_steps=1) as "Chain1-test": one-step episodes, a 2-arm bandit."""
  if CHAIN1_ID not in gymnax.registered_envs:
    gymnax.registration.register(CHAIN1_ID, lambda **kw: Chain(goal=3, max_steps=1))
  return CHAIN1_ID
