"""DCGAN training: one discriminator step and one generator step per iteration, K per chunk.

Goodfellow et al. (2014), Generative Adversarial Nets: the discriminator minimises the binary
cross-entropy -log D(x) - log(1 - D(G(z))) (eq. 1) and the generator the non-saturating loss
-log D(G(z)) (§3); both come from ``genrl_jax.losses``. Radford et al. (2015), DCGAN: the
architecture (``genrl_jax.models.dcgan``), Adam with step 2e-4 and beta1 = 0.5, batch 64/128.

One iteration, as in the PyTorch DCGAN example: draw a real batch x and noise z; update D on
(x, G(z)) with G's output held fixed; update G on D(G(z)) through the updated D, with the same
G(z) (one generator pass per iteration). The generator's batch norm normalises with the
statistics of the batch (train mode); its running statistics (the ``batch_stats``, updated once
per iteration by that pass) are used to draw samples (``sample``). They live in the state, one
set per seed.

Everything here is pure and works on ONE seed; the runner runs it over seeds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import chex
import flax.struct
import jax
import jax.numpy as jnp
import optax

from genrl_jax import config as cfg
from genrl_jax import losses
from genrl_jax.contract import Train
from genrl_jax.models import dcgan

Array = chex.Array
Params = Any


@dataclasses.dataclass(frozen=True)
class GANConfig:
  """Model and optimisation settings, each field declared once with its flag's help and check."""
  latent_dim: int = cfg.field(100, "Size of the noise z ~ N(0, I) (Radford et al.: 100).",
                              check=cfg.at_least_one)
  width: int = cfg.field(32, "Discriminator's first-layer channels w (then 2w, 4w, 8w); the "
                         "generator's layers have 4w and 2w.",
                         check=cfg.at_least_one)
  discriminator_batch_norm: bool = cfg.field(
      True, "Batch-normalise every discriminator convolution after the first (Radford et al. §3; "
      "each batch with its own statistics). --nodiscriminator_batch_norm: none, each logit "
      "depends on its own example only.")
  discriminator_layers: int = cfg.field(
      4, "Strided 4x4 convolutions in the discriminator: 28 -> 14 -> 7 -> 4 -> 2 pixels, "
      "channels w, 2w, 4w, 8w, batch-normalised after the first. 4 is Radford et al.'s "
      "discriminator (its last layers see the digit's global shape); 2 is the usual small "
      "MNIST DCGAN, half the FLOPs.",
      check=cfg.at_least(2))
  generator_convs: int = cfg.field(
      1, "Stride-1 3x3 convolutions (4w channels, batch norm, ReLU) in the generator at 7x7, "
      "before it upsamples; 0 is Radford et al.'s generator shape.", check=cfg.at_least(0))
  image_shape: tuple[int, int, int] = cfg.field((28, 28, 1), "(H, W, C), from the data.",
                                                flag=None)
  batch_size: int = cfg.field(64, "Real and generated examples per iteration.",
                              check=cfg.at_least_one)
  learning_rate: float = cfg.field(2e-4, "Adam step size of both networks.", check=cfg.positive)
  beta1: float = cfg.field(0.5, "Adam's first-moment decay (Radford et al.: 0.5).",
                           check=cfg.unit_interval)
  iterations: int = cfg.field(3000, "Training iterations (one D and one G step each).",
                              check=cfg.at_least_one)
  iterations_per_chunk: int = cfg.field(250, "Iterations per jitted chunk (checkpoint grain); "
                                        "snapshot iterations must be multiples of it.",
                                        check=cfg.at_least_one)
  snapshot_every: int = cfg.field(1000, "After iteration 3000, a snapshot every this many "
                                  "iterations (before: 0, 250, 500, 1000, 2000, 3000).",
                                  check=cfg.at_least_one)
  ema_decay: float = cfg.field(
      0.999, "Decay of the exponential moving average of the generator's weights that draws the "
      "snapshots (Yazici et al. 2019, 'The unusual effectiveness of averaging in GAN training'); "
      "warmed up as min(decay, (1 + t) / (10 + t)). 0 = draw with the trained weights.",
      check=(lambda d: 0.0 <= d < 1.0, "must be in [0, 1)"))
  eval_samples: int = cfg.field(1000, "Generated images per seed judged by the evaluator at "
                                "each snapshot (one fixed noise batch).", check=cfg.at_least(2))

  @property
  def num_pixels(self) -> int:
    return math.prod(self.image_shape)


@flax.struct.dataclass
class GANState:
  """One seed's everything-to-resume: both networks, the generator's batch-norm statistics and
  the moving average of its weights, both Adam states, the training key and the iteration count."""
  g_params: Params
  g_params_ema: Params
  g_batch_stats: Params
  d_params: Params
  g_opt_state: optax.OptState
  d_opt_state: optax.OptState
  key: jax.Array
  step: jax.Array


class Models(NamedTuple):
  generator: dcgan.Generator
  discriminator: dcgan.Discriminator
  optimizer: optax.GradientTransformation


def make_models(config: GANConfig) -> Models:
  return Models(dcgan.Generator(width=config.width, image_shape=tuple(config.image_shape),
                                extra_convs=config.generator_convs),
                dcgan.Discriminator(width=config.width,
                                    batch_norm=config.discriminator_batch_norm,
                                    conv_layers=config.discriminator_layers),
                optax.adam(config.learning_rate, b1=config.beta1))


def to_unit_range(images_u8: Array, image_shape) -> Array:
  """Stored flat uint8 pixels [B, P] -> images [B, H, W, C] in [-1, 1] (the tanh's range)."""
  return images_u8.astype(jnp.float32).reshape((-1,) + tuple(image_shape)) / 127.5 - 1.0


def init_state(key: jax.Array, models: Models, config: GANConfig) -> GANState:
  g_key, d_key, train_key = jax.random.split(key, 3)
  g_vars = models.generator.init(g_key, jnp.zeros((2, config.latent_dim)), train=False)
  d_params = models.discriminator.init(d_key, jnp.zeros((2,) + tuple(config.image_shape)))["params"]
  return GANState(g_params=g_vars["params"], g_params_ema=g_vars["params"],
                  g_batch_stats=g_vars["batch_stats"], d_params=d_params,
                  g_opt_state=models.optimizer.init(g_vars["params"]),
                  d_opt_state=models.optimizer.init(d_params), key=train_key,
                  step=jnp.zeros((), jnp.int32))


def generate_train(models: Models, g_params: Params, g_batch_stats: Params,
                   z: Array) -> tuple[Array, Params]:
  """G(z) with batch statistics (train mode) -> (images, updated running statistics)."""
  images, updates = models.generator.apply({"params": g_params, "batch_stats": g_batch_stats}, z,
                                           train=True, mutable=["batch_stats"])
  return images, updates["batch_stats"]


def sample(models: Models, state: GANState, z: Array, config: GANConfig) -> Array:
  """Images [B, H, W, C] in [0, 1] drawn for the noise z [B, Z].

  With ``config.ema_decay > 0``: the generator with the moving-average weights, its batch norm
  normalising with the statistics of this batch (the running statistics belong to the trained
  weights, not to their average; draw batches of 64 or more). Else the trained weights with the
  running statistics."""
  if config.ema_decay > 0:
    images, _ = generate_train(models, state.g_params_ema, state.g_batch_stats, z)
  else:
    images = models.generator.apply({"params": state.g_params, "batch_stats": state.g_batch_stats},
                                    z, train=False)
  return (images + 1.0) * 0.5


def ema_update(average: Params, params: Params, step: Array, decay: float) -> Params:
  """average <- d average + (1 - d) params with d = min(decay, (1 + t) / (10 + t)) at step t (the
  warm-up keeps the first iterations' average from sitting at the initial weights)."""
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda a, p: d * a + (1.0 - d) * p, average, params)


def discriminator_loss(d_params: Params, models: Models, real: Array, fake: Array) -> Array:
  """Mean over the batch of softplus(-D(x)) + softplus(D(G(z))) (``losses.gan_discriminator_loss``).

  Real and generated images go through D as separate batches (D's batch norm normalises each
  with its own statistics, as in the PyTorch DCGAN example); without batch norm, as one batch
  (each example's logit then depends on that example only, and one pass is cheaper)."""
  apply = lambda x: models.discriminator.apply({"params": d_params}, x)
  if models.discriminator.batch_norm:
    real_logits, fake_logits = apply(real), apply(fake)
  else:
    real_logits, fake_logits = jnp.split(apply(jnp.concatenate([real, fake])), [real.shape[0]])
  return jnp.mean(jax.vmap(losses.gan_discriminator_loss)(real_logits, fake_logits))


def generator_loss_of_images(fake: Array, d_params: Params, models: Models) -> Array:
  """Mean of -log D(G(z)) over generated images (``losses.gan_generator_loss``)."""
  logits = models.discriminator.apply({"params": d_params}, fake)
  return jnp.mean(jax.vmap(losses.gan_generator_loss)(logits))


def train_iteration(state: GANState, train_u8: Array, models: Models,
                    config: GANConfig) -> tuple[GANState, dict[str, Array]]:
  """One D step and one G step. The real batch is drawn uniformly with replacement and every
  key derives from (state.key, state.step), so an iteration is a pure function of the state.

  G runs forward once (as in the PyTorch DCGAN example, which backpropagates the G step through
  the same ``fake``): ``jax.vjp`` keeps that pass's residuals; D is updated on the detached
  images; the G loss's gradient with respect to the images, through the updated D, is pulled
  back through G with that vjp. The same gradients as differentiating the G loss through a
  second G forward (tests/test_gan.py), one G forward fewer.
  """
  batch_key, z_key = jax.random.split(jax.random.fold_in(state.key, state.step))
  idx = jax.random.randint(batch_key, (config.batch_size,), 0, train_u8.shape[0])
  real = to_unit_range(train_u8[idx], config.image_shape)
  z = jax.random.normal(z_key, (config.batch_size, config.latent_dim))

  fake, pull_back, batch_stats = jax.vjp(
      lambda p: generate_train(models, p, state.g_batch_stats, z), state.g_params, has_aux=True)
  d_loss, d_grads = jax.value_and_grad(discriminator_loss)(
      state.d_params, models, real, jax.lax.stop_gradient(fake))
  d_updates, d_opt_state = models.optimizer.update(d_grads, state.d_opt_state, state.d_params)
  d_params = optax.apply_updates(state.d_params, d_updates)

  g_loss, fake_grads = jax.value_and_grad(generator_loss_of_images)(fake, d_params, models)
  (g_grads,) = pull_back(fake_grads)
  g_updates, g_opt_state = models.optimizer.update(g_grads, state.g_opt_state, state.g_params)
  g_params = optax.apply_updates(state.g_params, g_updates)

  g_params_ema = (ema_update(state.g_params_ema, g_params, state.step, config.ema_decay)
                  if config.ema_decay > 0 else g_params)
  state = state.replace(g_params=g_params, g_params_ema=g_params_ema, g_batch_stats=batch_stats,
                        d_params=d_params,
                        g_opt_state=g_opt_state, d_opt_state=d_opt_state, step=state.step + 1)
  return state, {"d_loss": d_loss, "g_loss": g_loss}


def train_chunk(state: GANState, train_u8: Array, models: Models,
                config: GANConfig) -> tuple[GANState, dict[str, Array]]:
  """``config.iterations_per_chunk`` iterations as a lax.scan; metrics are per-iteration
  [K] arrays of d_loss and g_loss, plus their chunk means ``mean_d_loss`` / ``mean_g_loss``."""
  def body(s, _):
    return train_iteration(s, train_u8, models, config)
  state, metrics = jax.lax.scan(body, state, None, length=config.iterations_per_chunk)
  metrics["mean_d_loss"] = jnp.mean(metrics["d_loss"])
  metrics["mean_g_loss"] = jnp.mean(metrics["g_loss"])
  return state, metrics


def compiler_options() -> dict[str, Any] | None:
  """The VAE's CPU setting (LLVM -O1: faster compiles; convolutions run in library kernels)."""
  return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


class Static(NamedTuple):
  """A GAN's ``Train.static``: its modules and ``sample(state, z) -> images in [0, 1]``."""
  models: Models
  sample: Callable[[GANState, Array], Array]


SNAPSHOTS = (0, 250, 500, 1000, 2000, 3000)


def snapshot_iterations(config: GANConfig) -> list[int]:
  """0, 250, 500, 1000, 2000, 3000 (those within the run), then every ``snapshot_every``."""
  its = [i for i in SNAPSHOTS if i <= config.iterations]
  i = SNAPSHOTS[-1] + config.snapshot_every
  while i <= config.iterations:
    its.append(i)
    i += config.snapshot_every
  if config.iterations not in its:
    its.append(config.iterations)
  return its


def make_train(config: GANConfig) -> Train:
  """init(key, data) -> state and chunk(state, data) -> (state, metrics); data["train"] is the
  flat uint8 training set [N, P]. ``static.sample(state, z)`` draws images in [0, 1]."""
  models = make_models(config)

  def init(key: jax.Array, data: dict) -> GANState:
    del data
    return init_state(key, models, config)

  def chunk(state: GANState, data: dict) -> tuple[GANState, dict[str, Array]]:
    return train_chunk(state, data["train"], models, config)

  return Train(init=init, chunk=chunk,
               static=Static(models=models, sample=lambda s, z: sample(models, s, z, config)))
