"""TensorBoard event files read back by an independent reader: the TFRecord framing and its
CRC-32C checksums parsed here by hand, each record decoded with the Event proto, TensorBoard's
purge rule applied; the values must be metrics.jsonl's (as float32) for every seed and chunk."""

import glob
import json
import math
import os
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from genrl_jax.run import runner
from genrl_jax.run import tensorboard


def _crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
  return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
  """TFRecord's masked CRC: rotate right by 15 bits, add 0xa282ead8 (mod 2**32)."""
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _records(path):
  """TFRecord framing: uint64 length, masked crc(length), data, masked crc(data), little-endian."""
  with open(path, "rb") as f:
    raw = f.read()
  pos = 0
  while pos < len(raw):
    header = raw[pos:pos + 8]
    (length,), (header_crc,) = struct.unpack("<Q", header), struct.unpack("<I", raw[pos + 8:pos + 12])
    assert header_crc == _masked(_crc32c(header))
    data = raw[pos + 12:pos + 12 + length]
    (data_crc,) = struct.unpack("<I", raw[pos + 12 + length:pos + 16 + length])
    assert len(data) == length and data_crc == _masked(_crc32c(data))
    yield data
    pos += 16 + length


def read_scalars(directory):
  """{tag: {step: value}} as TensorBoard shows it: files in name order; a SessionLog START at
  step T hides the events of steps >= T read before it."""
  events = []
  for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
    for data in _records(path):
      event = event_pb2.Event.FromString(data)
      if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
        events = [e for e in events if e[1] < event.step]
      for value in event.summary.value:
        events.append((value.tag, event.step, value.simple_value))
  out = {}
  for tag, step, value in events:
    out.setdefault(tag, {})[step] = value
  return out


def _metrics(rng, n_seeds, chunk):
  return {"loss": rng.normal(size=n_seeds) * 10 + chunk,
          "returns": np.where(rng.random((n_seeds, 5)) < 0.3, np.nan,
                              rng.normal(size=(n_seeds, 5))),
          "never": np.full((n_seeds, 3), np.nan)}


def _f32(x):
  return float(np.float32(x))


def _expected_from_jsonl(path):
  """{seed: {tag: {chunk: value}}} computed from metrics.jsonl rows: scalars as they are, vectors
  as the mean of their non-NaN entries, all-NaN vectors absent; all as float32."""
  out = {}
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      per_tag = out.setdefault(row["seed"], {})
      for key, value in row.items():
        if key in ("chunk", "seed"):
          continue
        if isinstance(value, list):
          finite = [float(v) for v in value if not math.isnan(float(v))]
          if not finite:
            continue
          value = sum(finite) / len(finite)
        per_tag.setdefault(key, {})[row["chunk"]] = _f32(value)
  return out


def test_event_files_hold_the_metrics_jsonl_values_per_seed(tmp_path):
  rng = np.random.default_rng(0)
  seeds = np.array([3, 4, 5])
  log = runner.MetricsLog(str(tmp_path / "metrics.jsonl"))
  with tensorboard.TensorBoardLog(str(tmp_path)) as tb:
    for chunk in range(1, 5):
      metrics, seconds = _metrics(rng, len(seeds), chunk), 0.1 * chunk
      log.append(chunk, seeds, metrics, seconds)
      tb.append(chunk, seeds, metrics, seconds)
  expected = _expected_from_jsonl(tmp_path / "metrics.jsonl")
  assert sorted(os.listdir(tmp_path / "tensorboard")) == ["seed_3", "seed_4", "seed_5"]
  for seed in seeds:
    got = read_scalars(tmp_path / "tensorboard" / f"seed_{seed}")
    assert got == expected[int(seed)]
    assert sorted(got) == ["loss", "returns", "seconds"] and sorted(got["loss"]) == [1, 2, 3, 4]


def test_events_are_on_disk_after_each_chunk_before_close(tmp_path):
  tb = tensorboard.TensorBoardLog(str(tmp_path))
  tb.append(1, [0], {"loss": np.array([2.5])}, 1.0)
  assert read_scalars(tensorboard.seed_dir(str(tmp_path), 0))["loss"] == {1: 2.5}
  tb.close()


def test_resume_purges_the_chunks_past_the_checkpoint(tmp_path):
  seeds = [0, 1]
  first = tensorboard.TensorBoardLog(str(tmp_path))
  for chunk in range(1, 7):  # the killed run got to chunk 6; its checkpoint is chunk 2
    first.append(chunk, seeds, {"loss": np.array([chunk, -chunk], float)}, 1.0)
  first.close()
  with tensorboard.TensorBoardLog(str(tmp_path), resume_from=2) as second:
    for chunk in range(3, 6):  # recomputed (different values here, to see which are shown);
      # this run stops at chunk 5, so chunk 6 of the killed run must not show either.
      second.append(chunk, seeds, {"loss": np.array([100 + chunk, -100 - chunk], float)}, 1.0)
  directory = tensorboard.seed_dir(str(tmp_path), 1)
  assert read_scalars(directory)["loss"] == {1: -1, 2: -2, 3: -103, 4: -104, 5: -105}
  assert len(glob.glob(os.path.join(directory, "events.out.tfevents.*"))) == 2  # nothing deleted


@pytest.mark.parametrize("value,expected", [(3.0, 3.0), ([1.0, np.nan, 3.0], 2.0),
                                            ([np.nan, np.nan], None), ([], None)])
def test_scalar_value_of_vectors_is_the_nan_ignoring_mean(value, expected):
  assert tensorboard.scalar_value(value) == expected


def test_runner_metrics_written_through_a_hook_match_metrics_jsonl(tmp_path):
  """The runner's own per-chunk metrics (a scalar and a per-step vector with gaps), written by an
  ``after_chunk`` hook: the event files hold what the runner's metrics.jsonl holds."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def init(key, data):
    return {"key": key, "step": jnp.zeros((), jnp.int32)}

  def chunk(state, data):
    noise = jax.random.normal(jax.random.fold_in(state["key"], state["step"]), (4,))
    per_step = jnp.where(jnp.arange(4) % 2 == 0, jnp.nan, noise)  # measured every other step
    return ({"key": state["key"], "step": state["step"] + 1},
            {"loss": jnp.sum(noise ** 2), "curve": per_step})

  tb = tensorboard.TensorBoardLog(str(tmp_path))

  def after_chunk(end):
    if end.done:
      tb.append(end.done, end.placement.seeds, end.metrics, 0.0)

  exp = runner.Experiment(name="toy", init=init, chunk=chunk, num_chunks=3, finite_key="loss",
                          after_chunk=after_chunk)
  runner.run(exp, seeds=2, seed=5, workdir=str(tmp_path), log=lambda _: None)
  tb.close()
  expected = _expected_from_jsonl(tmp_path / "metrics.jsonl")
  for seed in (5, 6):
    got = read_scalars(tensorboard.seed_dir(str(tmp_path), seed))
    del got["seconds"], expected[seed]["seconds"]
    assert got == expected[seed] and sorted(got["curve"]) == [1, 2, 3]
