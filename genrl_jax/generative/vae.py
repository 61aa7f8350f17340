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
from genrl_jax.run import config as cfg
from genrl_jax.run.runner import Train

Array = chex.Array
Params = Any
_INV_255 = 1.0 / 255.0


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Model, objective and optimisation settings (the canonical MNIST VAE by default).

  Each field is declared once, with its flag's help text and check (``genrl_jax.run.config``);
  ``experiments.vae``'s flags are generated from it. Fields with ``flag=None`` are set by code
  (the image shape comes from the data; the evaluation batch sizes are memory caps).
  """
  latent_dim: int = cfg.field(20, "Dimension D of the latent z (2 also draws the manifold).",
                              check=cfg.at_least_one)
  hidden: tuple[int, ...] = cfg.field(
      (400,), "Hidden layer widths of the encoder, comma-separated; the decoder mirrors them "
      "(mlp: 784-400-20 by default; conv: width of the dense layer after the convolutions).",
      check=cfg.nonempty_positive_sizes)
  arch: str = cfg.field("mlp", "Encoder/decoder: 'mlp' (ReLU MLP) or 'conv' (two 4x4 stride-2 "
                        "convolutions, mirrored by transposed convolutions).",
                        choices=vae_models.ARCHS)
  image_shape: tuple[int, int, int] = cfg.field((28, 28, 1), "(H, W, C), from the data.",
                                                flag=None)
  num_samples: int = cfg.field(1, "J: reparameterized z samples per example in the training "
                               "ELBO (K&W 2013 eq. 10 with the closed-form KL).",
                               check=cfg.at_least_one)
  prior_std: float = cfg.field(1.0, "Standard deviation s of the prior p(z) = N(0, s^2 I).",
                               check=cfg.positive, sweepable=True)
  binarize: str = cfg.field(
      "dynamic", "Pixel targets: 'dynamic' = fresh Bernoulli(intensity) draw of every training "
      "batch (the test set is binarized once); 'static' = one fixed draw of the whole data set; "
      "'none' = grayscale intensities in [0, 1] as Bernoulli targets (the PyTorch VAE "
      "example's BCE).", choices=images_lib.BINARIZE)
  learning_rate: float = cfg.field(1e-3, "Adam step size.", check=cfg.positive, sweepable=True)
  batch_size: int = cfg.field(128, "Examples per Adam step; an epoch drops the last partial "
                              "batch of its fresh permutation.", check=cfg.at_least_one)
  epochs: int = cfg.field(10, "Passes over the training set (one checkpointable chunk each).",
                          check=cfg.at_least_one)
  eval_batch_size: int = cfg.field(1000, "Test examples per evaluation batch.", flag=None)
  eval_iw_samples: int = cfg.field(100, "k of the importance-weighted bound (Burda et al. "
                                   "2015) used for the final test NLL estimate, batched over "
                                   "test examples.", check=cfg.at_least_one)
  eval_iw_rows: int = cfg.field(5000, "Test examples x k samples decoded at once in the IWAE "
                                "evaluation (memory cap).", flag=None)

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


class VAEParts(NamedTuple):
  """What figures and benchmarks need besides the state (``runner.Train.static``)."""
  model: vae_models.VAE
  optimizer: optax.GradientTransformation


def make_train(config: VAEConfig) -> Train:
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

  return Train(init=init, chunk=chunk, evaluate=evaluate, static=VAEParts(model, optimizer))


def evaluation_cost(config: VAEConfig, num_train: int, num_test: int) -> float:
  """The final evaluation's cost in epochs (for the estimate printed before it).

  An epoch: N_train examples x (forward + backward ~ 3 passes of encoder and decoder) plus the
  test -ELBO (one pass over M); the evaluation: a -ELBO pass over M plus M x k decoder passes
  (the decoder is about half of one pass).
  """
  epoch = 3.0 * num_batches(num_train, config.batch_size) * config.batch_size + num_test
  return (num_test + 0.5 * num_test * config.eval_iw_samples) / max(epoch, 1.0)
