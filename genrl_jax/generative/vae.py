"""Variational autoencoder: loss, train step, one-epoch chunk, test -ELBO and IWAE test NLL.

Kingma & Welling (2013), Auto-Encoding Variational Bayes: the SGVB estimator with the closed-form
KL (eq. 10) and the reparameterization trick; Bernoulli decoder, Gaussian encoder (appendix C).
Test log-likelihood with the importance-weighted bound of Burda et al. (2015), eq. 8.

Everything here is pure and works on ONE seed; the runner vmaps it over seeds. ``make_train``
only assembles the module-level pieces into the runner's ``init`` / ``chunk`` pair.
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

from genrl_jax import losses
from genrl_jax.data import images as images_lib
from genrl_jax.models import vae as vae_models

Array = chex.Array
Params = Any
_INV_255 = 1.0 / 255.0


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Model, objective and optimisation settings (the canonical MNIST VAE by default).

  Attributes:
    latent_dim: D.
    hidden: hidden-layer widths of the encoder (the decoder mirrors them).
    arch: "mlp" or "conv".
    image_shape: (H, W, C).
    num_samples: J, reparameterized samples per example in the training ELBO.
    prior_std: sigma_p of the prior p(z) = N(0, sigma_p^2 I).
    binarize: "dynamic" (fresh Bernoulli draw per batch), "static" or "none" (grayscale targets);
      the data arrays must have been prepared with the same scheme (``images.device_arrays``).
    learning_rate: Adam step size.
    batch_size: examples per update; the last partial batch of an epoch is dropped.
    eval_batch_size: test examples per evaluation batch.
    eval_iw_samples: k of the IWAE bound used as the test NLL estimate.
    eval_iw_rows: test examples x k samples decoded at once in the IWAE evaluation (memory cap).
  """
  latent_dim: int = 20
  hidden: tuple[int, ...] = (400,)
  arch: str = "mlp"
  image_shape: tuple[int, int, int] = (28, 28, 1)
  num_samples: int = 1
  prior_std: float = 1.0
  binarize: str = "dynamic"
  learning_rate: float = 1e-3
  batch_size: int = 128
  eval_batch_size: int = 1000
  eval_iw_samples: int = 100
  eval_iw_rows: int = 5000

  @property
  def prior_log_var(self) -> float:
    return 2.0 * math.log(self.prior_std)

  @property
  def num_pixels(self) -> int:
    return math.prod(self.image_shape)


@flax.struct.dataclass
class VAEState:
  """Everything one seed needs to resume bit for bit.

  params: model parameters; opt_state: Adam moments and count; key: training key (shuffling,
  binarization, reparameterization); eval_key: key of the test estimates; epoch: epochs done.
  """
  params: Params
  opt_state: optax.OptState
  key: jax.Array
  eval_key: jax.Array
  epoch: jax.Array


def make_model(config: VAEConfig) -> vae_models.VAE:
  return vae_models.VAE(latent_dim=config.latent_dim, hidden=tuple(config.hidden),
                        image_shape=tuple(config.image_shape), arch=config.arch)


def make_optimizer(config: VAEConfig) -> optax.GradientTransformation:
  return optax.adam(config.learning_rate)


def init_params(model: vae_models.VAE, key: jax.Array, num_pixels: int) -> Params:
  return model.init(key, jnp.zeros((1, num_pixels), jnp.float32))["params"]


def encode(model: vae_models.VAE, params: Params, x: Array) -> tuple[Array, Array]:
  return model.apply({"params": params}, x, method=vae_models.VAE.encode)


def decode(model: vae_models.VAE, params: Params, z: Array) -> Array:
  return model.apply({"params": params}, z, method=vae_models.VAE.decode)


def to_targets(images_u8: Array) -> Array:
  """Stored uint8 pixels -> float intensities in [0, 1] (0/255 binarized pixels -> {0, 1})."""
  return images_u8.astype(jnp.float32) * _INV_255


def example_neg_elbo(params: Params, model: vae_models.VAE, key: jax.Array, x: Array,
                     num_samples: int, prior_log_var: float) -> tuple[Array, Array]:
  """-ELBO of one example x [P] with J = num_samples, and its KL term (both scalars, nats).

      -L(x) = -(1/J) sum_j log p(x | z_j) + KL(q(z|x) || N(0, sigma_p^2 I))   (K&W 2013, eq. 10)
  """
  chex.assert_rank(x, 1)
  mean, log_var = encode(model, params, x)
  log_likelihood = lambda z: losses.bernoulli_log_likelihood(x, decode(model, params, z))
  elbo = losses.elbo(key, mean, log_var, log_likelihood, num_samples, 0.0, prior_log_var)
  kl = losses.gaussian_kl(mean, log_var, 0.0, prior_log_var)
  return -elbo, kl


def example_log_likelihood_bound(params: Params, model: vae_models.VAE, key: jax.Array, x: Array,
                                 num_samples: int, prior_log_var: float) -> Array:
  """IWAE_k(x) = log (1/k) sum_i p(x, z_i) / q(z_i|x) <= log p(x) (Burda et al. 2015, eq. 8)."""
  chex.assert_rank(x, 1)
  mean, log_var = encode(model, params, x)

  def log_joint(z):
    log_prior = losses.gaussian_log_prob(z, jnp.zeros_like(z), prior_log_var)
    return losses.bernoulli_log_likelihood(x, decode(model, params, z)) + log_prior

  return losses.iwae_bound(key, mean, log_var, log_joint, num_samples)


def batch_loss(params: Params, model: vae_models.VAE, key: jax.Array, x: Array, num_samples: int,
               prior_log_var: float) -> tuple[Array, Array]:
  """Mean -ELBO over a batch x [B, P] (the training loss) and the mean KL (aux)."""
  chex.assert_rank(x, 2)
  keys = jax.random.split(key, x.shape[0])
  neg_elbo, kl = jax.vmap(example_neg_elbo, in_axes=(None, None, 0, 0, None, None))(
      params, model, keys, x, num_samples, prior_log_var)
  return jnp.mean(neg_elbo), jnp.mean(kl)


def train_step(params: Params, opt_state: optax.OptState, key: jax.Array, batch_u8: Array,
               model: vae_models.VAE, optimizer: optax.GradientTransformation,
               config: VAEConfig) -> tuple[Params, optax.OptState, Array, Array]:
  """One Adam step on a batch of stored uint8 images [B, P]; returns (params, opt_state, -elbo, kl)."""
  binarize_key, sample_key = jax.random.split(key)
  x = to_targets(batch_u8)
  if config.binarize == "dynamic":
    x = images_lib.dynamic_binarize(binarize_key, x)
  (loss, kl), grads = jax.value_and_grad(batch_loss, has_aux=True)(
      params, model, sample_key, x, config.num_samples, config.prior_log_var)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss, kl


def num_batches(num_examples: int, batch_size: int) -> int:
  return num_examples // batch_size


def epoch_order(key: jax.Array, num_examples: int, batch_size: int) -> Array:
  """[num_batches, batch_size] example indices: a fresh permutation, the last partial batch dropped."""
  n_batches = num_batches(num_examples, batch_size)
  order = jax.random.permutation(key, num_examples)
  return order[:n_batches * batch_size].reshape(n_batches, batch_size)


def train_epoch(state: VAEState, train_u8: Array, model: vae_models.VAE,
                optimizer: optax.GradientTransformation,
                config: VAEConfig) -> tuple[VAEState, dict[str, Array]]:
  """One pass over a fresh permutation of the training set (a lax.scan over its batches).

  The permutation and every per-step key derive from (state.key, state.epoch), so an epoch is a
  pure function of the state: resuming from a checkpoint repeats it bit for bit.
  """
  perm_key, steps_key = jax.random.split(jax.random.fold_in(state.key, state.epoch))
  order = epoch_order(perm_key, train_u8.shape[0], config.batch_size)
  n_batches = order.shape[0]

  def body(carry, xs):
    params, opt_state = carry
    step, idx = xs
    params, opt_state, loss, kl = train_step(params, opt_state, jax.random.fold_in(steps_key, step),
                                             train_u8[idx], model, optimizer, config)
    return (params, opt_state), (loss, kl)

  (params, opt_state), (loss, kl) = jax.lax.scan(
      body, (state.params, state.opt_state), (jnp.arange(n_batches), order))
  metrics = {"loss": jnp.mean(loss), "kl": jnp.mean(kl), "recon": jnp.mean(loss - kl)}
  return state.replace(params=params, opt_state=opt_state, epoch=state.epoch + 1), metrics


def _map_padded(fn: Callable[[Array, Array], Array], images_u8: Array, batch_size: int) -> Array:
  """Mean over all examples of fn(keys_index, x_batch) -> [b] values, in batches (lax.map).

  The set is padded to a whole number of batches; padded rows are masked out of the mean.
  """
  n = images_u8.shape[0]
  batch_size = min(batch_size, n)
  n_batches = -(-n // batch_size)
  pad = n_batches * batch_size - n
  x = jnp.pad(images_u8, ((0, pad), (0, 0))).reshape(n_batches, batch_size, -1)
  index = jnp.arange(n_batches * batch_size).reshape(n_batches, batch_size)
  values = jax.lax.map(lambda a: fn(a[0], to_targets(a[1])), (index, x))
  mask = (index < n).astype(values.dtype)
  return jnp.sum(values * mask) / n


def evaluate_neg_elbo(params: Params, model: vae_models.VAE, key: jax.Array, images_u8: Array,
                  config: VAEConfig) -> Array:
  """Mean -ELBO (J = 1 sample per example, closed-form KL) over a test set [M, P] uint8."""
  def batch_values(index, x):
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, index)
    neg_elbo, _ = jax.vmap(example_neg_elbo, in_axes=(None, None, 0, 0, None, None))(
        params, model, keys, x, 1, config.prior_log_var)
    return neg_elbo
  return _map_padded(batch_values, images_u8, config.eval_batch_size)


def evaluate_nll(params: Params, model: vae_models.VAE, key: jax.Array, images_u8: Array,
             config: VAEConfig, num_samples: int | None = None) -> Array:
  """Test NLL estimate -mean_x IWAE_k(x), k = num_samples (default config.eval_iw_samples).

  An upper bound on the true NLL in expectation, tightening as k grows (Burda et al. 2015).
  """
  k = num_samples or config.eval_iw_samples
  def batch_values(index, x):
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, index)
    bound = jax.vmap(example_log_likelihood_bound, in_axes=(None, None, 0, 0, None, None))(
        params, model, keys, x, k, config.prior_log_var)
    return -bound
  return _map_padded(batch_values, images_u8, max(1, config.eval_iw_rows // k))


def epoch_eval_key(state: VAEState) -> jax.Array:
  """Key of the per-epoch test -ELBO after ``state.epoch`` epochs."""
  return jax.random.fold_in(jax.random.split(state.eval_key, 3)[0], state.epoch)


def final_eval_key(state: VAEState) -> jax.Array:
  """Key of the end-of-run test estimates (disjoint from every per-epoch key)."""
  return jax.random.split(state.eval_key, 3)[1]


def figure_key(state: VAEState) -> jax.Array:
  """Key of the prior samples drawn for the figures."""
  return jax.random.split(state.eval_key, 3)[2]


def compiler_options() -> dict[str, Any] | None:
  """XLA options for this backend. On CPU, LLVM's -O1 halves the compile time of the epoch
  chunk with no measurable change in step time: the matmuls run in library kernels, and the
  elementwise fusions vectorize the same at -O1."""
  return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


class VAETrain(NamedTuple):
  """The runner's pair plus what the entry point needs for evaluation and figures."""
  init: Callable[[jax.Array, dict], VAEState]
  chunk: Callable[[VAEState, dict], tuple[VAEState, dict[str, Array]]]
  evaluate: Callable[[VAEState, dict], dict[str, Array]]
  model: vae_models.VAE
  optimizer: optax.GradientTransformation


def make_train(config: VAEConfig) -> VAETrain:
  """Assembles init(key, data) -> state, chunk(state, data) -> (state, metrics) (one epoch) and
  evaluate(state, data) -> {test_neg_elbo, test_nll}; data = {"train": [N, P], "test": [M, P]} uint8.
  """
  model = make_model(config)
  optimizer = make_optimizer(config)

  def init(key: jax.Array, data: dict) -> VAEState:
    del data
    param_key, train_key, eval_key = jax.random.split(key, 3)
    params = init_params(model, param_key, config.num_pixels)
    return VAEState(params=params, opt_state=optimizer.init(params), key=train_key,
                    eval_key=eval_key, epoch=jnp.zeros((), jnp.int32))

  def chunk(state: VAEState, data: dict) -> tuple[VAEState, dict[str, Array]]:
    state, metrics = train_epoch(state, data["train"], model, optimizer, config)
    metrics["test_neg_elbo"] = evaluate_neg_elbo(state.params, model, epoch_eval_key(state),
                                             data["test"], config)
    return state, metrics

  def evaluate(state: VAEState, data: dict) -> dict[str, Array]:
    key = final_eval_key(state)
    elbo_key, nll_key = jax.random.split(key)
    return {"test_neg_elbo": evaluate_neg_elbo(state.params, model, elbo_key, data["test"], config),
            "test_nll": evaluate_nll(state.params, model, nll_key, data["test"], config)}

  return VAETrain(init=init, chunk=chunk, evaluate=evaluate, model=model, optimizer=optimizer)
