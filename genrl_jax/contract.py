"""What an algorithm hands the runner: the pure per-seed functions of one seed.

PureJaxRL's ``make_train(config) -> train(key)``, split so that a run can stop between chunks:

    init(key, data) -> state
    chunk(state, data) -> (state, metrics)      # one epoch, or K updates, as a lax.scan

The runner (``genrl_jax.run``) maps them over the seeds. Under the seeds' ``vmap`` the seed axis
is named ``SEED_AXIS``, so a chunk may use a collective over it where that saves work without
coupling the seeds' results (e.g. ``rl.rollout.any_over_axis``: one decision for all seeds of a
lockstep loop). This module imports nothing but the standard library: an algorithm that returns a
``Train`` does not import the runner.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

SEED_AXIS = "seeds"  # the name of the vmapped seed axis inside init and chunk


@dataclasses.dataclass(frozen=True)
class Train:
  """What every ``make_train(config)`` returns: the runner's pure per-seed functions.

  Attributes:
    init: (key, data) -> state.
    chunk: (state, data) -> (state, metrics).
    evaluate: (state, data) -> {name: scalar}, or None: the experiment's evaluation.
    static: what figures and reports need besides the state (model, setup, sampler, ...).
  """
  init: Callable[[Any, Any], Any]
  chunk: Callable[[Any, Any], tuple[Any, dict[str, Any]]]
  evaluate: Callable[[Any, Any], dict[str, Any]] | None = None
  static: Any = None
