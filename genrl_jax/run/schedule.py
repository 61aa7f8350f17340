"""Periodic work on one primitive: when a checkpoint is written, an evaluation runs, a checkpoint
is kept for replay, or a snapshot is taken.

big_vision's ``u.itstime(step, every, total)`` and CommonLoopUtils' ``PeriodicAction(every_steps,
on_steps)``, counted in chunks done: ``Every(every=2, on=(0, 5), last=True).due(done, total)``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Every:
  """Due after chunk ``done`` when ``done`` is a positive multiple of ``every`` (0: never by
  period), one of ``on``, or (with ``last``) the run's last chunk."""
  every: int = 0
  on: tuple[int, ...] = ()
  last: bool = False

  def due(self, done: int, total: int | None = None) -> bool:
    return ((self.every > 0 and done > 0 and done % self.every == 0) or done in self.on
            or (self.last and done == total))


NEVER = Every()
