"""Per-chunk metrics as TensorBoard event files: one TensorBoard run per seed.

``WORKDIR/tensorboard/seed_<s>/events.out.tfevents.*`` holds, for seed ``s``, one scalar per
metric and chunk: tag = the metric's name (as in ``metrics.jsonl``), step = the chunk index
(1, 2, ...), plus ``seconds`` (the chunk's wall-clock time), so ``tensorboard --logdir runs/``
shows every seed of every run of a sweep side by side.

- Vector metrics (e.g. one value per update of the chunk) are written as their mean over the
  chunk, ignoring NaN entries: the number the progress line shows. An all-NaN vector (nothing
  measured in that chunk) writes nothing. The full vectors stay in ``metrics.jsonl``.
- Values are TensorBoard's float32 ``simple_value``; ``metrics.jsonl`` keeps the float64 ones.
- Resume: the runner drops the ``metrics.jsonl`` lines past the restored checkpoint. Event files
  are append-only, so instead each writer opened by a run that starts after chunk ``T`` begins
  with TensorBoard's purge marker at step ``T + 1`` (``purge_step``): TensorBoard then hides the
  earlier files' events of chunks ``> T`` and shows the recomputed ones. Nothing is deleted; the
  older events remain in their files.

The writer is tensorboardX (protobuf + numpy; clu's TensorBoard writer goes through TensorFlow's
``tf.summary``, which this project does not install), used through its synchronous
``EventsWriter`` and the ``Summary`` proto (built directly: tensorboardX's ``summary.scalar``
logs a warning for every NaN, which would break the one-line error of a diverged run) rather
than its ``SummaryWriter``: that one
queues events to a background thread per writer (one per seed) and its ``flush`` does not drain
the queue, so a killed run could lose its last chunks. Here every chunk's events are written and
flushed in ``append``, like ``metrics.jsonl``'s lines.
"""

from __future__ import annotations

import os
import time

import numpy as np
from tensorboardX import event_file_writer
from tensorboardX.proto import event_pb2, summary_pb2

TENSORBOARD_DIR = "tensorboard"


def seed_dir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, TENSORBOARD_DIR, f"seed_{int(seed)}")


def scalar_value(value) -> float | None:
  """The scalar written for one seed's metric value: the value itself, or a vector's mean over
  its non-NaN entries; None when it has no non-NaN entry."""
  x = np.asarray(value, dtype=np.float64)
  if x.ndim == 0:
    return float(x)
  x = x[~np.isnan(x)]
  return float(np.mean(x)) if x.size else None


class TensorBoardLog:
  """Writes per-chunk metrics of every seed as TensorBoard event files under ``workdir``.

  Mirrors ``runner.MetricsLog``: ``append(chunk, seeds, metrics, seconds)`` after each chunk, with
  the same arguments. ``resume_from`` is the chunk of the restored checkpoint (0 for a fresh run):
  events of later chunks that an earlier process wrote are purged in TensorBoard's view.
  """

  def __init__(self, workdir: str, resume_from: int = 0):
    self.workdir = workdir
    self.purge_step = int(resume_from) + 1
    self._writers: dict[int, object] = {}

  def _writer(self, seed: int | str):
    if seed not in self._writers:
      directory = (os.path.join(self.workdir, TENSORBOARD_DIR, seed) if isinstance(seed, str)
                   else seed_dir(self.workdir, seed))
      os.makedirs(directory, exist_ok=True)
      # A file name unique per writer: tensorboardX names files by the second, and a second
      # writer in the same second would otherwise truncate the first one's file. The suffix
      # (nanoseconds, fixed width) also keeps files in creation order when sorted by name.
      writer = event_file_writer.EventsWriter(os.path.join(directory, "events"),
                                              filename_suffix=f".{time.time_ns()}")
      writer.write_event(event_pb2.Event(wall_time=time.time(), step=self.purge_step,
                                         session_log=event_pb2.SessionLog(
                                             status=event_pb2.SessionLog.START)))
      self._writers[seed] = writer
    return self._writers[seed]

  def append(self, chunk: int, seeds, metrics: dict[str, np.ndarray], seconds: float,
             names: list[str] | None = None) -> None:
    """``names``: one TensorBoard run name per row instead of ``seed_<s>`` (sweep cells)."""
    wall_time = time.time()
    for i, seed in enumerate(np.asarray(seeds)):
      writer = self._writer(names[i] if names else int(seed))
      scalars = {name: scalar_value(np.asarray(values)[i]) for name, values in metrics.items()}
      scalars["seconds"] = float(seconds)
      for name, value in scalars.items():
        if value is not None:
          writer.write_event(event_pb2.Event(wall_time=wall_time, step=int(chunk),
                                             summary=summary_pb2.Summary(value=[
                                                 summary_pb2.Summary.Value(
                                                     tag=name, simple_value=value)])))
      writer.flush()

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()
    self._writers.clear()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
