"""Settings shared by the generative experiments' runs (not by their models)."""

from __future__ import annotations

import dataclasses

from genrl_jax import config as cfg


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
  """Where the evaluator classifiers that judge generated images are cached."""
  evaluator_dir: str = cfg.field("runs/evaluators", "Cache of the evaluator classifiers, one "
                                 "directory per data set; reused when trained on the same "
                                 "training split.")
