"""The runner splits the seed axis over local devices: same numbers as on one device.

Runs in a subprocess with 4 fake CPU devices (XLA_FLAGS must be set before jax starts)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrl_jax.run import devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import jax, numpy as np
from genrl_jax import run as runner
from tests import test_vae
assert len(jax.local_devices()) == 4, jax.local_devices()
sharded = runner.run(test_vae._experiment(), seeds=8, seed=0, log=lambda _: None)
leaf = sharded.state.params["decoder"]["logits"]["kernel"]
assert len(leaf.sharding.device_set) == 4, leaf.sharding
odd = runner.run(test_vae._experiment(), seeds=3, seed=0, log=lambda _: None)  # 3 seeds: 3 devices
assert len(odd.state.params["decoder"]["logits"]["kernel"].sharding.device_set) == 3
# seed_loop="map": each of the 4 devices loops over its 2 seeds (shard_map around lax.map).
looped = runner.run(test_vae._experiment(), seeds=8, seed=0, seed_loop="map",
                    log=lambda _: None)
looped_leaf = looped.state.params["decoder"]["logits"]["kernel"]
assert len(looped_leaf.sharding.device_set) == 4, looped_leaf.sharding
np.savez("OUT", sharded=np.asarray(leaf), odd=np.asarray(odd.state.params["decoder"]["logits"]["kernel"]),
         loss=np.asarray(sharded.history[-1]["loss"]), looped=np.asarray(looped_leaf),
         looped_loss=np.asarray(looped.history[-1]["loss"]))
"""


def test_seed_shardings_use_the_largest_dividing_device_count():
  cpus = [jax.devices()[0]] * 4  # only the count matters for the choice
  assert devices.seed_shardings(8, cpus)[0].mesh.size == 4
  assert devices.seed_shardings(6, cpus)[0].mesh.size == 3
  assert devices.seed_shardings(7, cpus) == (None, None)
  assert devices.seed_shardings(1, cpus) == (None, None)


def test_sharded_seeds_match_one_device(tmp_path):
  from genrl_jax import run as runner  # pylint: disable=g-import-not-at-top
  from tests import test_vae  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "sharded.npz")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", SCRIPT.replace("OUT", out[:-4])], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = np.load(out)
  one_device = runner.run(test_vae._experiment(), seeds=8, seed=0, log=lambda _: None)
  want = np.asarray(one_device.state.params["decoder"]["logits"]["kernel"])
  np.testing.assert_allclose(got["sharded"], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["odd"], want[:3], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["loss"], one_device.history[-1]["loss"], rtol=1e-5)
  np.testing.assert_allclose(got["looped"], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["looped_loss"], one_device.history[-1]["loss"], rtol=1e-5)


def test_over_seeds_map_and_vmap_equal_a_python_loop():
  def fn(x, shared):
    return {"y": jnp.tanh(x["w"] @ shared), "n": jnp.sum(x["w"])}
  xs = {"w": jax.random.normal(jax.random.key(0), (5, 3, 4))}
  shared = jax.random.normal(jax.random.key(1), (4, 2))
  want = [fn({"w": xs["w"][i]}, shared) for i in range(5)]
  for seed_loop in ("vmap", "map", "auto"):
    got = jax.jit(devices.over_seeds(fn, seed_loop))(xs, shared)
    for i in range(5):
      np.testing.assert_allclose(got["y"][i], want[i]["y"], rtol=1e-6, atol=1e-6)
      np.testing.assert_allclose(got["n"][i], want[i]["n"], rtol=1e-6)
  assert devices.resolve_seed_loop("auto") == ("map" if jax.default_backend() == "cpu" else "vmap")
  with pytest.raises(ValueError, match="seed_loop must be one of"):
    devices.over_seeds(fn, "pmap")


SCRIPT_8 = r"""
import jax, numpy as np
from genrl_jax import run as runner
from tests import test_sweep
assert len(jax.local_devices()) == 8, jax.local_devices()
out = {}
vae = runner.run(test_sweep._vae(), seeds=8, seed=0, log=lambda _: None)
assert len(vae.state.params["decoder"]["logits"]["kernel"].sharding.device_set) == 8
out["vae_loss"] = vae.history[-1]["loss"]; out["vae_test"] = vae.final["test_neg_elbo"]
rl = runner.run(test_sweep._reinforce(), seeds=8, seed=0, log=lambda _: None)
assert len(rl.state.env_steps.sharding.device_set) == 8
out["rl_return"] = np.asarray(rl.results["metrics"]["final_return_last100"]["per_seed"])
out["rl_steps"] = rl.history[-1]["env_steps"]
from tests import test_dqn
from genrl_jax.rl import dqn_run
dq = runner.run(dqn_run.make_experiment(test_dqn._config(), None), seeds=8, seed=0,
                log=lambda _: None)
out["dqn_return"] = np.asarray(dq.results["metrics"]["eval_return"]["per_seed"])
out["dqn_steps"] = dq.history[-1]["env_steps"]
# A sweep of 2 values x 4 seeds: 8 cells, one per device.
sw = runner.run(test_sweep._vae(), seeds=4, seed=0, sweep="learning_rate=0.01,0.001",
                log=lambda _: None)
assert len(sw.state.params["decoder"]["logits"]["kernel"].sharding.device_set) == 8
out["sweep_loss"] = sw.history[-1]["loss"]
# 12 seeds on 8 devices: 6 devices (the largest count that divides 12), and the line says so.
from genrl_jax.run import placement
line = placement.SeedPlacement(12).describe()
assert "on 6 cpu devices (2 of 8 idle" in line and "a multiple of 8" in line, line
assert "idle" not in placement.SeedPlacement(16).describe()
np.savez("OUT", **out)
"""


def test_eight_devices_match_one_device_for_vae_reinforce_and_dqn(tmp_path):
  from genrl_jax import run as runner  # pylint: disable=g-import-not-at-top
  from tests import test_sweep  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "eight.npz")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", SCRIPT_8.replace("OUT", out[:-4])], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = np.load(out)
  assert len(jax.local_devices()) == 1
  vae = runner.run(test_sweep._vae(), seeds=8, seed=0, log=lambda _: None)
  np.testing.assert_allclose(got["vae_loss"], vae.history[-1]["loss"], rtol=1e-5)
  np.testing.assert_allclose(got["vae_test"], vae.final["test_neg_elbo"], rtol=1e-5)
  rl = runner.run(test_sweep._reinforce(), seeds=8, seed=0, log=lambda _: None)
  np.testing.assert_allclose(got["rl_return"],
                             rl.results["metrics"]["final_return_last100"]["per_seed"], rtol=1e-5)
  np.testing.assert_array_equal(got["rl_steps"], rl.history[-1]["env_steps"])
  sw = runner.run(test_sweep._vae(), seeds=4, seed=0, sweep="learning_rate=0.01,0.001",
                  log=lambda _: None)
  np.testing.assert_allclose(got["sweep_loss"], sw.history[-1]["loss"], rtol=1e-5)
  from genrl_jax.rl import dqn_run  # pylint: disable=g-import-not-at-top
  from tests import test_dqn  # pylint: disable=g-import-not-at-top
  dq = runner.run(dqn_run.make_experiment(test_dqn._config(), None), seeds=8, seed=0,
                  log=lambda _: None)
  np.testing.assert_allclose(got["dqn_return"], dq.results["metrics"]["eval_return"]["per_seed"],
                             rtol=1e-5)
  np.testing.assert_array_equal(got["dqn_steps"], dq.history[-1]["env_steps"])


def test_process_grid_gives_each_process_an_equal_share_or_refuses():
  import collections  # pylint: disable=g-import-not-at-top
  from genrl_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  dev = collections.namedtuple("dev", "process_index id")
  # 2 processes x 4 devices, listed out of order: process 0 holds the first half of the seeds.
  cluster = [dev(p, 10 * p + i) for i in range(4) for p in (1, 0)]
  for seeds, want in [(8, [0, 1, 2, 3, 10, 11, 12, 13]), (4, [0, 1, 10, 11]),
                      (6, [0, 1, 2, 10, 11, 12]), (2, [0, 10]), (14, [0, 10])]:
    assert [d.id for d in devices.process_grid(seeds, cluster, 2)] == want, seeds
  with pytest.raises(UserError, match="do not split evenly over 2 processes; pass a multiple of 2"):
    devices.process_grid(7, cluster, 2)
