"""DCGAN: batch-stat norm equals flax's BatchNorm in training mode, generator/discriminator
shapes, the losses' gradients flow where they should, seeds are independent, and a SIGKILLed run
resumes bit-identically (batch-norm statistics included)."""

import json
import os
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from genrl_jax import run as runner
from genrl_jax.generative import gan
from genrl_jax.models import dcgan
from tests import gen_data
from tests.test_conv import _random_params
from tests.test_vae_experiment import ROOT, _env


def test_batch_stat_norm_equals_flax_batch_norm_in_training_mode():
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (6, 5, 5, 4))
  ours = dcgan.BatchStatNorm()
  variables = _random_params(ours.init(jax.random.key(1), x))
  reference = nn.BatchNorm(use_running_average=False, epsilon=1e-5)
  ref_vars = reference.init(jax.random.key(1), x)
  ref_vars = {"params": variables["params"], "batch_stats": ref_vars["batch_stats"]}
  expected, _ = reference.apply(ref_vars, x, mutable=["batch_stats"])
  np.testing.assert_allclose(ours.apply(variables, x), expected, atol=1e-5)


@pytest.mark.parametrize("layers,generator_convs", [(2, 0), (3, 1), (4, 2)])
def test_generator_and_discriminator_shapes_and_ranges(layers, generator_convs):
  config = gan.GANConfig(width=4, latent_dim=8, discriminator_layers=layers,
                         generator_convs=generator_convs)
  models = gan.make_models(config)
  state = gan.init_state(jax.random.key(0), models, config)
  z = jax.random.normal(jax.random.key(1), (5, 8))
  fake, stats = gan.generate_train(models, state.g_params, state.g_batch_stats, z)
  assert fake.shape == (5, 28, 28, 1) and float(jnp.abs(fake).max()) <= 1.0
  assert jax.tree.structure(stats) == jax.tree.structure(state.g_batch_stats)
  logits = models.discriminator.apply({"params": state.d_params}, fake)
  assert logits.shape == (5,)
  # Layer i (4x4, stride 2, "SAME") takes 28 -> 14 -> 7 -> 4 -> 2 pixels and 4 * 2^(i-1) -> 4 * 2^i
  # channels; the logit reads the last layer's side^2 * channels features.
  for i in range(layers):
    assert state.d_params[f"conv_{i}"]["kernel"].shape == (4, 4, 4 * 2 ** (i - 1) if i else 1,
                                                           4 * 2 ** i)
  # The generator's stride-1 3x3 convolutions keep 7x7 x 4w = 16 channels.
  for i in range(generator_convs):
    assert state.g_params[f"conv_{i}"]["kernel"].shape == (3, 3, 16, 16)
  assert f"conv_{generator_convs}" not in state.g_params
  side = [28, 14, 7, 4, 2][layers]
  assert state.d_params["logit"]["kernel"].shape == (side * side * 4 * 2 ** (layers - 1), 1)
  samples = gan.sample(models, state, z, config)
  assert samples.shape == (5, 28, 28, 1) and 0.0 <= float(samples.min()) <= float(samples.max()) <= 1.0


def test_one_iteration_updates_both_networks_and_batch_stats():
  config = gan.GANConfig(width=4, latent_dim=8, batch_size=8, iterations_per_chunk=2)
  models = gan.make_models(config)
  state = gan.init_state(jax.random.key(0), models, config)
  train_u8 = jnp.asarray(gen_data.banded(40)[0].reshape(40, -1))
  new, metrics = jax.jit(lambda s: gan.train_iteration(s, train_u8, models, config))(state)
  for name in ("g_params", "d_params", "g_batch_stats"):
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), getattr(state, name),
                           getattr(new, name))
    assert all(jax.tree.leaves(changed)), name
  # At initialisation D(x) ~ 1/2: the BCE is close to 2 log 2, the G loss close to log 2.
  assert abs(float(metrics["d_loss"]) - 2 * np.log(2)) < 0.1
  assert abs(float(metrics["g_loss"]) - np.log(2)) < 0.1
  assert int(new.step) == 1


@pytest.mark.parametrize("batch_norm,layers,generator_convs", [(True, 2, 0), (False, 2, 0),
                                                               (True, 3, 1)])
def test_one_iteration_equals_the_textbook_two_pass_iteration(batch_norm, layers,
                                                              generator_convs):
  """The iteration (one G forward kept by jax.vjp, D on real and fake as one batch) against an
  independent transcription of Goodfellow et al.'s alternating steps: D's BCE on two separate D
  calls, then jax.grad of the G loss through a second G forward; with and without D's batch norm,
  and with the generator's 3x3 convolution."""
  config = gan.GANConfig(width=4, latent_dim=8, batch_size=8, discriminator_batch_norm=batch_norm,
                         discriminator_layers=layers, generator_convs=generator_convs,
                         ema_decay=0.999)
  models = gan.make_models(config)
  state = gan.init_state(jax.random.key(3), models, config)
  train_u8 = jnp.asarray(gen_data.banded(40)[0].reshape(40, -1))
  new, metrics = jax.jit(lambda s: gan.train_iteration(s, train_u8, models, config))(state)

  batch_key, z_key = jax.random.split(jax.random.fold_in(state.key, state.step))
  real = gan.to_unit_range(train_u8[jax.random.randint(batch_key, (8,), 0, 40)], (28, 28, 1))
  z = jax.random.normal(z_key, (8, 8))
  d_apply = lambda p, x: models.discriminator.apply({"params": p}, x)
  fake, _ = gan.generate_train(models, state.g_params, state.g_batch_stats, z)
  d_loss_fn = lambda p: jnp.mean(jax.nn.softplus(-d_apply(p, real))
                                 + jax.nn.softplus(d_apply(p, fake)))
  d_loss, d_grads = jax.value_and_grad(d_loss_fn)(state.d_params)
  d_updates, _ = models.optimizer.update(d_grads, state.d_opt_state, state.d_params)
  d_params = jax.tree.map(lambda a, b: a + b, state.d_params, d_updates)
  def g_loss_fn(p):
    images, new_stats = gan.generate_train(models, p, state.g_batch_stats, z)
    return jnp.mean(jax.nn.softplus(-d_apply(d_params, images))), new_stats
  (g_loss, stats), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params)
  g_updates, _ = models.optimizer.update(g_grads, state.g_opt_state, state.g_params)
  g_params = jax.tree.map(lambda a, b: a + b, state.g_params, g_updates)

  np.testing.assert_allclose(metrics["d_loss"], d_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["g_loss"], g_loss, rtol=1e-5)
  # The weights' moving average after step 0: decay min(0.999, 1/10) = 0.1.
  g_ema = jax.tree.map(lambda a, b: 0.1 * a + 0.9 * b, state.g_params, g_params)
  for ours, reference in ((new.d_params, d_params), (new.g_params, g_params),
                          (new.g_batch_stats, stats), (new.g_params_ema, g_ema)):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _experiment(config):
  train = gan.make_train(config)
  data = {"train": jnp.asarray(gen_data.banded(64)[0].reshape(64, -1))}
  return runner.Experiment(name="gan", init=train.init, chunk=train.chunk, num_chunks=2, data=data,
                           finite_key="mean_d_loss")


def test_seeds_are_independent():
  config = gan.GANConfig(width=2, latent_dim=4, batch_size=4, iterations_per_chunk=3)
  both = runner.run(_experiment(config), seeds=2, seed=3, seed_loop="map", log=lambda s: None)
  alone = runner.run(_experiment(config), seeds=1, seed=4, seed_loop="map", log=lambda s: None)
  for a, b in zip(jax.tree.leaves(runner.unstack_seed(both.state.g_params, 1)),
                  jax.tree.leaves(runner.unstack_seed(alone.state.g_params, 0))):
    np.testing.assert_array_equal(a, b)
  differ = [bool(np.any(a[0] != a[1])) for a in jax.tree.leaves(both.state.g_params)]
  assert all(differ)


# --- SIGKILL and resume -------------------------------------------------------------------------

def sigkill_and_resume(module, flags, data_dir, tmp_path, final_step, name):
  """Runs ``module`` once uninterrupted and once SIGKILLed after its first checkpoint and rerun;
  returns the two workdirs after asserting the rerun said it resumed."""
  reference, killed = str(tmp_path / "uninterrupted"), str(tmp_path / "killed")
  command = lambda w: [sys.executable, "-m", module, f"--data_dir={data_dir}", f"--workdir={w}",
                       *flags]
  proc = subprocess.run(command(reference), cwd=ROOT, capture_output=True, text=True,
                        timeout=400, env=_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  victim = subprocess.Popen(command(killed), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env())
  checkpoints = os.path.join(killed, "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline and victim.poll() is None:
    if os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints)):
      break
    time.sleep(0.02)
  assert victim.poll() is None, "the run ended before it could be killed; make it longer"
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  saved = sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit())
  assert saved and saved[-1] < final_step, saved
  resumed = subprocess.run(command(killed), cwd=ROOT, capture_output=True, text=True,
                           timeout=400, env=_env())
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resuming {name} from" in resumed.stdout
  return reference, killed


def assert_same_final_state(reference, killed, final_step):
  restore = lambda w: ocp.tree.to_flat_dict(ocp.StandardCheckpointer().restore(
      os.path.join(w, "checkpoints", str(final_step), "default")))
  a, b = restore(reference), restore(killed)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))
  return a


def metrics_rows(workdir, name="metrics.jsonl", drop=("seconds",)):
  with open(os.path.join(workdir, name)) as f:
    rows = [json.loads(line) for line in f]
  return sorted(({k: v for k, v in r.items() if k not in drop} for r in rows),
                key=lambda r: json.dumps(r, sort_keys=True))


def test_sigkill_then_rerun_resumes_bit_identically(tmp_path):
  data = str(tmp_path / "data")
  gen_data.write_banded_idx(data, 300, 100)
  flags = ["--width=2", "--latent_dim=4", "--batch_size=8", "--iterations=250",
           "--iterations_per_chunk=25", "--eval_samples=20", "--seeds=2", "--seed=5",
           f"--evaluator_dir={tmp_path / 'evaluators'}"]
  reference, killed = sigkill_and_resume("experiments.gan", flags, data, tmp_path, 10, "gan")
  state = assert_same_final_state(reference, killed, 10)
  assert any("g_batch_stats" in str(k) for k in state)
  assert metrics_rows(reference) == metrics_rows(killed)
  snapshots = lambda w: {(r["iteration"], r["seed"]): r for r in
                         metrics_rows(w, "snapshots.jsonl", ())}
  assert snapshots(reference) == snapshots(killed)
  assert sorted({k[0] for k in snapshots(reference)}) == [0, 250]
  with open(os.path.join(reference, "results.json")) as f:
    results = json.load(f)
  assert set(results["extra"]["snapshots"]) == {"0", "250"}
  assert os.path.exists(os.path.join(reference, "snapshots.png"))
