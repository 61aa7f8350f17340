"""Where the seeds of a run live, decided once: their keys, shardings and seed loop.

Every program that runs a per-seed function over the seeds of a run (the runner's init and
chunk, an experiment's evaluation, the benchmarks, checkpoint replay) goes through one
``SeedPlacement``, so they all place state, data and keys the same way and compile the same
programs (big_vision builds its mesh and shardings once for the same reason).

Seed i of a run with first seed s uses the root key ``jax.random.key(s + i)``, so seed i of an
N-seed run is the same computation as a 1-seed run with ``--seed=s+i`` (up to the rounding of
batched vs unbatched ops).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax.run import devices as devices_lib


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
  """Typed root keys key(seed), key(seed + 1), ... — one per seed."""
  return jax.vmap(jax.random.key)(jnp.arange(seed, seed + num_seeds, dtype=jnp.uint32))


@dataclasses.dataclass(frozen=True, eq=False)
class SeedPlacement:
  """The seeds of one run: how many, which, over which devices, and with which seed loop.

  The seed axis is split over the largest number of local devices that divides the seed count
  (``devices.seed_shardings``); shared data is replicated. Within a device the seeds run batched
  (``seed_loop="vmap"``, the seed axis named ``devices.SEED_AXIS`` for collectives) or one after
  another (``"map"``), ``"auto"`` choosing per backend (``devices.over_seeds``).

  Attributes:
    num_seeds: N.
    first_seed: s; the seeds are s, s + 1, ..., s + N - 1.
    seed_loop: "auto", "vmap" or "map".
  """
  num_seeds: int
  first_seed: int = 0
  seed_loop: str = "vmap"
  devices: tuple | None = None

  def __post_init__(self):
    by_seed, replicated = devices_lib.seed_shardings(self.num_seeds, self.devices)
    devices_lib.resolve_seed_loop(self.seed_loop)  # validates the name
    object.__setattr__(self, "by_seed", by_seed)
    object.__setattr__(self, "replicated", replicated)

  @property
  def seeds(self) -> np.ndarray:
    """[N] the seed values s .. s + N - 1."""
    return np.arange(self.first_seed, self.first_seed + self.num_seeds)

  @property
  def resolved_loop(self) -> str:
    """"vmap" or "map": what "auto" means on this backend."""
    return devices_lib.resolve_seed_loop(self.seed_loop)

  @property
  def num_devices(self) -> int:
    return 1 if self.by_seed is None else self.by_seed.mesh.size

  def keys(self) -> jax.Array:
    """[N] typed root keys, placed like any per-seed array."""
    return self.place_state(seed_keys(self.first_seed, self.num_seeds))

  def place_state(self, tree):
    """A pytree with a leading seed axis, split over the seed devices."""
    return tree if self.by_seed is None else jax.device_put(tree, self.by_seed)

  def place_data(self, tree):
    """A pytree shared by every seed, replicated on the seed devices."""
    return tree if self.replicated is None else jax.device_put(tree, self.replicated)

  def jit(self, fn: Callable[[Any, Any], Any], *, donate: bool = False,
          compiler_options: dict | None = None) -> Callable[[Any, Any], Any]:
    """fn(x, shared) of ONE seed -> jitted fn(xs, shared) over the seeds' leading axis.

    ``x`` (state or keys) has a leading seed axis, ``shared`` (data) is broadcast; outputs keep
    the seed axis and its sharding. ``donate`` donates ``xs`` (the chunk's state).
    """
    kwargs: dict[str, Any] = {"compiler_options": compiler_options}
    if donate:
      kwargs["donate_argnums"] = 0
    if self.by_seed is not None:
      kwargs.update(in_shardings=(self.by_seed, self.replicated), out_shardings=self.by_seed)
    return jax.jit(devices_lib.over_seeds(fn, self.seed_loop, self.by_seed), **kwargs)

  def abstract(self, init: Callable[[Any, Any], Any], data) -> Any:
    """The shapes and dtypes of ``init``'s state over the seeds, without computing it."""
    return jax.eval_shape(devices_lib.over_seeds(init, self.seed_loop, None),
                          seed_keys(self.first_seed, self.num_seeds), data)

  def describe(self) -> str:
    """e.g. ``8 seeds (0..7) on 2 cpu devices, seed loop map``."""
    kind = jax.local_devices()[0].platform
    return (f"{self.num_seeds} seed{'s' if self.num_seeds != 1 else ''} "
            f"({self.first_seed}..{self.first_seed + self.num_seeds - 1}) on {self.num_devices} "
            f"{kind} device{'s' if self.num_devices != 1 else ''}, seed loop {self.resolved_loop}")
