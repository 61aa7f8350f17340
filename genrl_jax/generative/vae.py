"""Variational autoencoder: loss, train step, one-epoch chunk, test -ELBO and IWAE test NLL.

Kingma & Welling (2013), Auto-Encoding Variational Bayes: the SGVB estimator with the closed-form
KL (eq. 10) and the reparameterization trick; Bernoulli decoder, Gaussian encoder (appendix C).
Test log-likelihood with the importance-weighted bound of Burda et al. (2015), eq. 8.

The conditional VAE (Sohn et al. 2015) is the same code with a label input: with
``config.num_classes = K > 0`` every function below takes the examples' one-hot labels y and
bounds log p(x|y) >= E_q(z|x,y)[log p(x|z,y)] - KL(q(z|x,y) || p(z|y)), where p(z|y) is
N(0, sigma_p^2 I) (``prior="standard"``) or the model's learned N(mu(y), diag(s(y)^2))
(``prior="learned"``), the KL in the general closed form of ``losses.gaussian_kl``. The data then
holds ``train_labels`` / ``test_labels`` (``images.device_arrays``).

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

from genrl_jax import config as cfg
from genrl_jax import losses
from genrl_jax.contract import Train
from genrl_jax.data import images as images_lib
from genrl_jax.models import vae as vae_models

Array = chex.Array
Params = Any
_INV_255 = 1.0 / 255.0
PRIORS = ("standard", "learned")


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Model, objective and optimisation settings (the canonical MNIST VAE by default).

  Each field is declared once, with its flag's help text and check (``genrl_jax.config``);
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
  num_classes: int = cfg.field(0, "K > 0: a conditional VAE on K labels (set from the data).",
                               flag=None)
  prior: str = cfg.field("standard", "p(z|y): 'standard' or 'learned'.", flag=None,
                         choices=PRIORS)

  @property
  def prior_log_var(self) -> float:
    # jnp.log when prior_std is a traced scalar (an in-program --sweep of prior_std).
    log = math.log if isinstance(self.prior_std, (int, float)) else jnp.log
    return 2.0 * log(self.prior_std)

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
                        image_shape=tuple(config.image_shape), arch=config.arch,
                        num_classes=config.num_classes)


def make_optimizer(config: VAEConfig) -> optax.GradientTransformation:
  return optax.adam(config.learning_rate)


def init_params(model: vae_models.VAE, key: jax.Array, num_pixels: int) -> Params:
  y = jnp.zeros((1, model.num_classes), jnp.float32) if model.num_classes else None
  return model.init(key, jnp.zeros((1, num_pixels), jnp.float32), y)["params"]


def encode(model: vae_models.VAE, params: Params, x: Array,
           y: Array | None = None) -> tuple[Array, Array]:
  return model.apply({"params": params}, x, y, method=vae_models.VAE.encode)


def decode(model: vae_models.VAE, params: Params, z: Array, y: Array | None = None) -> Array:
  return model.apply({"params": params}, z, y, method=vae_models.VAE.decode)


def one_hot(labels: Array, num_classes: int) -> Array:
  return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def prior_params(model: vae_models.VAE, params: Params, y: Array | None, prior: str,
                 prior_log_var: float) -> tuple[Array | float, Array | float]:
  """(mean_p, log_var_p) of p(z|y): the learned N(mu(y), s(y)^2) for ``prior="learned"``
  (y required), else N(0, exp(prior_log_var) I) as scalars (broadcast by the losses)."""
  if prior == "learned":
    if y is None:
      raise ValueError("the learned prior p(z|y) needs the label y")
    return model.apply({"params": params}, y, method=vae_models.VAE.prior)
  return 0.0, prior_log_var


def to_targets(images_u8: Array) -> Array:
  """Stored uint8 pixels -> float intensities in [0, 1] (0/255 binarized pixels -> {0, 1})."""
  return images_u8.astype(jnp.float32) * _INV_255


def example_neg_elbo(params: Params, model: vae_models.VAE, key: jax.Array, x: Array,
                     num_samples: int, prior_log_var: float, y: Array | None = None,
                     prior: str = "standard") -> tuple[Array, Array]:
  """-ELBO of one example x [P] with J = num_samples, and its KL term (both scalars, nats).

      -L(x) = -(1/J) sum_j log p(x | z_j) + KL(q(z|x) || N(0, sigma_p^2 I))   (K&W 2013, eq. 10)

  With the one-hot label y [K]: -(1/J) sum_j log p(x | z_j, y) + KL(q(z|x,y) || p(z|y)), p(z|y)
  from ``prior_params``.
  """
  chex.assert_rank(x, 1)
  mean, log_var = encode(model, params, x, y)
  mean_p, log_var_p = prior_params(model, params, y, prior, prior_log_var)
  log_likelihood = lambda z: losses.bernoulli_log_likelihood(x, decode(model, params, z, y))
  elbo = losses.elbo(key, mean, log_var, log_likelihood, num_samples, mean_p, log_var_p)
  kl = losses.gaussian_kl(mean, log_var, mean_p, log_var_p)
  return -elbo, kl


def example_log_likelihood_bound(params: Params, model: vae_models.VAE, key: jax.Array, x: Array,
                                 num_samples: int, prior_log_var: float, y: Array | None = None,
                                 prior: str = "standard") -> Array:
  """IWAE_k(x) = log (1/k) sum_i p(x, z_i) / q(z_i|x) <= log p(x) (Burda et al. 2015, eq. 8);
  with the label y, the same bound on log p(x|y) with p(x, z|y) = p(x|z,y) p(z|y), q(z|x,y)."""
  chex.assert_rank(x, 1)
  mean, log_var = encode(model, params, x, y)
  mean_p, log_var_p = prior_params(model, params, y, prior, prior_log_var)

  def log_joint(z):
    log_prior = losses.gaussian_log_prob(z, jnp.broadcast_to(mean_p, z.shape), log_var_p)
    return losses.bernoulli_log_likelihood(x, decode(model, params, z, y)) + log_prior

  return losses.iwae_bound(key, mean, log_var, log_joint, num_samples)


def batch_loss(params: Params, model: vae_models.VAE, key: jax.Array, x: Array, num_samples: int,
               prior_log_var: float, y: Array | None = None,
               prior: str = "standard") -> tuple[Array, Array]:
  """Mean -ELBO over a batch x [B, P] (labels y [B, K] or None) and the mean KL (aux)."""
  chex.assert_rank(x, 2)
  keys = jax.random.split(key, x.shape[0])
  per_example = lambda k, xi, yi: example_neg_elbo(params, model, k, xi, num_samples,
                                                   prior_log_var, yi, prior)
  neg_elbo, kl = jax.vmap(per_example)(keys, x, y)
  return jnp.mean(neg_elbo), jnp.mean(kl)


def train_step(params: Params, opt_state: optax.OptState, key: jax.Array, batch_u8: Array,
               model: vae_models.VAE, optimizer: optax.GradientTransformation,
               config: VAEConfig,
               labels: Array | None = None) -> tuple[Params, optax.OptState, Array, Array]:
  """One Adam step on a batch of stored uint8 images [B, P] (integer labels [B] for a CVAE);
  returns (params, opt_state, -elbo, kl)."""
  binarize_key, sample_key = jax.random.split(key)
  x = to_targets(batch_u8)
  if config.binarize == "dynamic":
    x = images_lib.dynamic_binarize(binarize_key, x)
  y = None if labels is None else one_hot(labels, config.num_classes)
  (loss, kl), grads = jax.value_and_grad(batch_loss, has_aux=True)(
      params, model, sample_key, x, config.num_samples, config.prior_log_var, y, config.prior)
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
                optimizer: optax.GradientTransformation, config: VAEConfig,
                train_labels: Array | None = None) -> tuple[VAEState, dict[str, Array]]:
  """One pass over a fresh permutation of the training set (a lax.scan over its batches);
  ``train_labels`` [N] (a CVAE) travel with their images.

  The permutation and every per-step key derive from (state.key, state.epoch), so an epoch is a
  pure function of the state: resuming from a checkpoint repeats it bit for bit.
  """
  perm_key, steps_key = jax.random.split(jax.random.fold_in(state.key, state.epoch))
  order = epoch_order(perm_key, train_u8.shape[0], config.batch_size)
  n_batches = order.shape[0]

  def body(carry, xs):
    params, opt_state = carry
    step, idx = xs
    labels = None if train_labels is None else train_labels[idx]
    params, opt_state, loss, kl = train_step(params, opt_state, jax.random.fold_in(steps_key, step),
                                             train_u8[idx], model, optimizer, config, labels)
    return (params, opt_state), (loss, kl)

  (params, opt_state), (loss, kl) = jax.lax.scan(
      body, (state.params, state.opt_state), (jnp.arange(n_batches), order))
  metrics = {"loss": jnp.mean(loss), "kl": jnp.mean(kl), "recon": jnp.mean(loss - kl)}
  return state.replace(params=params, opt_state=opt_state, epoch=state.epoch + 1), metrics


def _map_padded(fn: Callable[[Array, Array, Array | None], Array], images_u8: Array,
                batch_size: int, labels: Array | None = None) -> Array:
  """Mean over all examples of fn(keys_index, x_batch, labels_batch or None) -> [b] values, in
  batches (lax.map).

  The set is padded to a whole number of batches; padded rows are masked out of the mean.
  """
  n = images_u8.shape[0]
  batch_size = min(batch_size, n)
  n_batches = -(-n // batch_size)
  pad = n_batches * batch_size - n
  x = jnp.pad(images_u8, ((0, pad), (0, 0))).reshape(n_batches, batch_size, -1)
  y = None if labels is None else jnp.pad(labels, (0, pad)).reshape(n_batches, batch_size)
  index = jnp.arange(n_batches * batch_size).reshape(n_batches, batch_size)
  values = jax.lax.map(lambda a: fn(a[0], to_targets(a[1]), a[2]), (index, x, y))
  mask = (index < n).astype(values.dtype)
  return jnp.sum(values * mask) / n


def _labels_one_hot(labels: Array | None, config: VAEConfig) -> Array | None:
  return None if labels is None else one_hot(labels, config.num_classes)


def evaluate_neg_elbo(params: Params, model: vae_models.VAE, key: jax.Array, images_u8: Array,
                      config: VAEConfig, labels: Array | None = None) -> Array:
  """Mean -ELBO (J = 1 sample per example, closed-form KL) over a test set [M, P] uint8 (a
  CVAE's: of log p(x|y), with the test labels [M])."""
  def batch_values(index, x, y):
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, index)
    per_example = lambda k, xi, yi: example_neg_elbo(params, model, k, xi, 1, config.prior_log_var,
                                                     yi, config.prior)
    neg_elbo, _ = jax.vmap(per_example)(keys, x, _labels_one_hot(y, config))
    return neg_elbo
  return _map_padded(batch_values, images_u8, config.eval_batch_size, labels)


def evaluate_nll(params: Params, model: vae_models.VAE, key: jax.Array, images_u8: Array,
                 config: VAEConfig, num_samples: int | None = None,
                 labels: Array | None = None) -> Array:
  """Test NLL estimate -mean_x IWAE_k(x), k = num_samples (default config.eval_iw_samples);
  with the test labels, -mean_x IWAE_k(x|y), the estimate of -log p(x|y).

  An upper bound on the true NLL in expectation, tightening as k grows (Burda et al. 2015).
  """
  k = num_samples or config.eval_iw_samples
  def batch_values(index, x, y):
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, index)
    per_example = lambda kk, xi, yi: example_log_likelihood_bound(
        params, model, kk, xi, k, config.prior_log_var, yi, config.prior)
    return -jax.vmap(per_example)(keys, x, _labels_one_hot(y, config))
  return _map_padded(batch_values, images_u8, max(1, config.eval_iw_rows // k), labels)


def conditional_samples(params: Params, model: vae_models.VAE, key: jax.Array, labels: Array,
                        config: VAEConfig) -> Array:
  """Bernoulli means sigmoid(decoder(z, y)) [N, P] of z ~ p(z|y) for integer labels [N]."""
  y = one_hot(labels, config.num_classes)
  mean_p, log_var_p = prior_params(model, params, y, config.prior, config.prior_log_var)
  eps = jax.random.normal(key, (labels.shape[0], config.latent_dim))
  z = mean_p + jnp.exp(0.5 * jnp.asarray(log_var_p)) * eps
  return jax.nn.sigmoid(decode(model, params, z, y))


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

  def labels(data: dict, split: str) -> Array | None:
    return data[f"{split}_labels"] if config.num_classes else None

  def chunk(state: VAEState, data: dict) -> tuple[VAEState, dict[str, Array]]:
    state, metrics = train_epoch(state, data["train"], model, optimizer, config,
                                 labels(data, "train"))
    metrics["test_neg_elbo"] = evaluate_neg_elbo(state.params, model, epoch_eval_key(state),
                                                 data["test"], config, labels(data, "test"))
    return state, metrics

  def evaluate(state: VAEState, data: dict) -> dict[str, Array]:
    key = final_eval_key(state)
    elbo_key, nll_key = jax.random.split(key)
    test_labels = labels(data, "test")
    return {"test_neg_elbo": evaluate_neg_elbo(state.params, model, elbo_key, data["test"], config,
                                               test_labels),
            "test_nll": evaluate_nll(state.params, model, nll_key, data["test"], config,
                                     labels=test_labels)}

  return Train(init=init, chunk=chunk, evaluate=evaluate, static=VAEParts(model, optimizer))


def evaluation_cost(config: VAEConfig, num_train: int, num_test: int) -> float:
  """The final evaluation's cost in epochs (for the estimate printed before it).

  An epoch: N_train examples x (forward + backward ~ 3 passes of encoder and decoder) plus the
  test -ELBO (one pass over M); the evaluation: a -ELBO pass over M plus M x k decoder passes
  (the decoder is about half of one pass).
  """
  epoch = 3.0 * num_batches(num_train, config.batch_size) * config.batch_size + num_test
  return (num_test + 0.5 * num_test * config.eval_iw_samples) / max(epoch, 1.0)
