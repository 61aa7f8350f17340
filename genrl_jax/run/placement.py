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


def _place(tree, sharding):
  """device_put, or, across processes, each process filling its own shards from the same host
  value (every process computes the whole tree: keys, a restored checkpoint, the data)."""
  if sharding is None:
    return tree
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def leaf(x):
    if _is_key(x):
      return jax.random.wrap_key_data(leaf(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)  # already global: a reshard
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
  return jax.tree.map(leaf, tree)


def _is_key(x) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


@dataclasses.dataclass(frozen=True, eq=False)
class SeedPlacement:
  """The seeds of one run: how many, which, over which devices, and with which seed loop.

  The leading axis of the state holds the run's *cells*: the seeds, or with a ``sweep`` every
  (grid point, seed) pair, point-major (cell c = point c // N, seed first_seed + c % N, root key
  ``key(first_seed + c % N)``). It is split over the largest number of local devices that
  divides the cell count (``devices.seed_shardings``; across processes each process holds an
  equal share on its own devices, ``devices.process_shardings``); shared data is replicated.
  Within a device the cells run batched (``seed_loop="vmap"``, the axis named
  ``devices.SEED_AXIS`` for collectives) or one after another (``"map"``), ``"auto"`` choosing
  per backend (``devices.over_seeds``).

  Attributes:
    num_seeds: N.
    first_seed: s; the seeds are s, s + 1, ..., s + N - 1.
    seed_loop: "auto", "vmap" or "map".
    devices: the devices to split over (default: the local ones; all processes' in a
      multi-process run).
    sweep: a ``sweep.Sweep`` (its grid points become a leading factor of the cell axis), or None.
  """
  num_seeds: int
  first_seed: int = 0
  seed_loop: str = "vmap"
  devices: tuple | None = None
  sweep: Any = None

  def __post_init__(self):
    by_seed, replicated = devices_lib.seed_shardings(self.num_cells, self.devices)
    devices_lib.resolve_seed_loop(self.seed_loop)  # validates the name
    object.__setattr__(self, "by_seed", by_seed)
    object.__setattr__(self, "replicated", replicated)
    hparams = None if self.sweep is None else _place(
        {k: jnp.asarray(v) for k, v in self.sweep.hparams(self.num_seeds).items()}, by_seed)
    object.__setattr__(self, "hparams", hparams)

  @property
  def num_cells(self) -> int:
    """The leading axis: N, or N x the sweep's grid points."""
    return self.num_seeds * (1 if self.sweep is None else self.sweep.num_points)

  @property
  def seeds(self) -> np.ndarray:
    """[cells] the seed of each cell: s .. s + N - 1 (repeated for each sweep point)."""
    seeds = np.arange(self.first_seed, self.first_seed + self.num_seeds)
    return seeds if self.sweep is None else np.tile(seeds, self.sweep.num_points)

  @property
  def seed_values(self) -> np.ndarray:
    """[N] the distinct seeds s .. s + N - 1."""
    return np.arange(self.first_seed, self.first_seed + self.num_seeds)

  def cell_labels(self) -> list[dict] | None:
    """Per cell, the fields its metrics.jsonl rows carry besides the seed (None: no sweep)."""
    return None if self.sweep is None else self.sweep.cell_labels(self.seed_values)

  @property
  def resolved_loop(self) -> str:
    """"vmap" or "map": what "auto" means on this backend."""
    return devices_lib.resolve_seed_loop(self.seed_loop)

  @property
  def num_devices(self) -> int:
    return 1 if self.by_seed is None else self.by_seed.mesh.size

  def keys(self) -> jax.Array:
    """[cells] typed root keys, placed like any per-seed array."""
    keys = seed_keys(self.first_seed, self.num_seeds)
    if self.sweep is not None:
      keys = jnp.tile(keys, self.sweep.num_points)
    return self.place_state(keys)

  def place_state(self, tree):
    """A pytree with a leading seed (cell) axis, split over the seed devices."""
    return _place(tree, self.by_seed)

  def place_data(self, tree):
    """A pytree shared by every seed, replicated on the seed devices."""
    return _place(tree, self.replicated)

  def to_host(self, tree):
    """The whole of a pytree of (seed-sharded or replicated) arrays as host numpy, on every
    process (a gather across processes in a multi-process run)."""
    if jax.process_count() == 1:
      return jax.device_get(tree)
    from jax.experimental import multihost_utils  # noqa: PLC0415

    def leaf(x):
      if _is_key(x):
        return jax.random.wrap_key_data(leaf(jax.random.key_data(x)), impl=jax.random.key_impl(x))
      if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
      return np.asarray(jax.device_get(x))
    return jax.tree.map(leaf, tree)

  def jit(self, fn: Callable[..., Any], *, donate: bool = False,
          compiler_options: dict | None = None) -> Callable[[Any, Any], Any]:
    """fn of ONE cell -> jitted fn(xs, shared) over the cells' leading axis.

    Without a sweep ``fn(x, shared)``; with one ``fn(x, shared, hparams)``, hparams = {name:
    float32 scalar} of the cell's grid point (placed once, passed as an argument, so one
    program serves every point). ``x`` (state or keys) has a leading cell axis, ``shared``
    (data) is broadcast; outputs keep the cell axis and its sharding. ``donate`` donates ``xs``
    (the chunk's state).
    """
    kwargs: dict[str, Any] = {"compiler_options": compiler_options}
    if donate:
      kwargs["donate_argnums"] = 0
    if self.sweep is None:
      if self.by_seed is not None:
        kwargs.update(in_shardings=(self.by_seed, self.replicated), out_shardings=self.by_seed)
      return jax.jit(devices_lib.over_seeds(fn, self.seed_loop, self.by_seed), **kwargs)
    per_cell = devices_lib.over_seeds(lambda xh, shared: fn(xh[0], shared, xh[1]),
                                      self.seed_loop, self.by_seed)
    if self.by_seed is not None:
      kwargs.update(in_shardings=(self.by_seed, self.by_seed, self.replicated),
                    out_shardings=self.by_seed)
    program = jax.jit(lambda xs, hparams, shared: per_cell((xs, hparams), shared), **kwargs)
    hparams = self.hparams

    def call(xs, shared):
      return program(xs, hparams, shared)
    call.program = program
    call.lower = lambda xs, shared: program.lower(xs, hparams, shared)
    return call

  def abstract(self, init: Callable[..., Any], data) -> Any:
    """The shapes and dtypes of ``init``'s state over the cells, without computing it."""
    keys = seed_keys(self.first_seed, self.num_seeds)
    if self.sweep is None:
      return jax.eval_shape(devices_lib.over_seeds(init, self.seed_loop, None), keys, data)
    keys = jnp.tile(keys, self.sweep.num_points)
    hparams = {k: jnp.asarray(v) for k, v in self.sweep.hparams(self.num_seeds).items()}
    per_cell = devices_lib.over_seeds(lambda xh, shared: init(xh[0], shared, xh[1]),
                                      self.seed_loop, None)
    return jax.eval_shape(per_cell, (keys, hparams), data)

  def describe(self) -> str:
    """e.g. ``8 seeds (0..7) on 2 cpu devices, seed loop map``; with a sweep
    ``3 sweep points x 4 seeds (0..3) = 12 cells on ...``; across processes ``... devices of 2
    processes``; a count that leaves devices idle says how many."""
    kind = jax.local_devices()[0].platform
    seeds = (f"{self.num_seeds} seed{'s' if self.num_seeds != 1 else ''} "
             f"({self.first_seed}..{self.first_seed + self.num_seeds - 1})")
    if self.sweep is not None:
      seeds = (f"{self.sweep.num_points} sweep points ({' x '.join(self.sweep.names)}) x {seeds} "
               f"= {self.num_cells} cells")
    available = len(self.devices) if self.devices is not None else len(jax.devices())
    where = f"{self.num_devices} {kind} device{'s' if self.num_devices != 1 else ''}"
    if jax.process_count() > 1:
      where += f" of {jax.process_count()} processes"
    if self.num_devices < min(available, self.num_cells):
      where += (f" ({available - self.num_devices} of {available} idle: {self.num_cells} does not "
                f"split evenly over more; a multiple of {available} uses them all)")
    return f"{seeds} on {where}, seed loop {self.resolved_loop}"
