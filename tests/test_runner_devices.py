"""The runner splits the seed axis over local devices: same numbers as on one device.

Runs in a subprocess with 4 fake CPU devices (XLA_FLAGS must be set before jax starts)."""

import os
import subprocess
import sys

import jax
import numpy as np

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
np.savez("OUT", sharded=np.asarray(leaf), odd=np.asarray(odd.state.params["decoder"]["logits"]["kernel"]),
         loss=np.asarray(sharded.history[-1]["loss"]))
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
