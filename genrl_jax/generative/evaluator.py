"""A judge of generated images: a small convnet classifier trained once per data set.

Three numbers for a batch of generated images in [0, 1]:

* classifier score, the Inception Score of Salimans et al. (2016, §4) with this classifier in
  place of Inception:   exp E_x[ KL(p(y|x) || p(y)) ],   p(y) = E_x[p(y|x)]   (the batch's
  marginal). Between 1 and the number of classes; high when each image is confidently one class
  and the classes are balanced.
* Fréchet distance (Heusel et al. 2017, "GANs trained by a two time-scale update rule", eq. 6;
  the FID with this classifier's penultimate layer in place of Inception's pool3) between
  Gaussian fits N(mu_g, C_g) of the generated images' features and N(mu_r, C_r) of the real
  test images':   |mu_g - mu_r|^2 + tr(C_g + C_r - 2 (C_g C_r)^(1/2)).
* conditional accuracy: the share of images generated for label k that the classifier calls k.

The classifier trains on the data set's TRAINING split only (for the 10k-image digits directory
that is the 9k-image train part of ``images.load``'s fixed split), its test accuracy is printed,
and its parameters are cached in ``<cache_dir>/<dataset>/`` with the training data's
fingerprint: later runs on the same split load them; a damaged or foreign cache is reported in
one line and the classifier is retrained.

This module's judge is "convnet" (``Classifier``, ``train_classifier``); ``judges`` adds a second,
independent one and scores a batch with both. The training loop (``fit``), the cache
(``load_or_train_judge``) and ``Evaluator`` are shared by the two.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from genrl_jax.data import images as images_lib
from genrl_jax.models import conv
from genrl_jax.run import files

Array = jnp.ndarray
PARAMS_FILE = "params.npz"
META_FILE = "evaluator.json"
_FORMAT = 3  # 3: the convnet's recipe gained weight decay, a cosine schedule, dropout, shifts


class Classifier(nn.Module):
  """images [B, H, W, C] in [0, 1] -> (logits [B, K], features [B, F]).

  Conv(32, 3x3, /2) -> ReLU -> Conv(64, 3x3, /2) -> ReLU -> [dropout] -> Dense(F) -> ReLU (the
  features) -> [dropout] -> Dense(K); dropout only when ``train``. The convolutions are ``conv.PatchConv`` (patches @ kernel; the same function
  as ``nn.Conv``), which keeps XLA's CPU backend fast inside the training scan (see
  ``genrl_jax.models.conv``).
  """
  num_classes: int = 10
  feature_dim: int = 128
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> tuple[Array, Array]:
    h = nn.relu(conv.PatchConv(32, 3, 2, name="conv_0")(x))
    h = nn.relu(conv.PatchConv(64, 3, 2, name="conv_1")(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h.reshape((h.shape[0], -1)))
    features = nn.relu(nn.Dense(self.feature_dim, name="features")(h))
    logits = nn.Dense(self.num_classes, name="logits")(
        nn.Dropout(self.dropout, deterministic=not train)(features))
    return logits, features


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """How the convnet is trained (part of the cache's identity): AdamW (``weight_decay``) with the
  learning rate decayed to 0 on a cosine over the run, dropout, and each training image shifted
  by a random whole number of pixels in [-shift, shift] along each axis (``random_shift``)."""
  epochs: int = 30
  batch_size: int = 128
  learning_rate: float = 1e-3
  seed: int = 0
  feature_dim: int = 128
  weight_decay: float = 1e-4
  dropout: float = 0.1
  shift: int = 1


# --- the three numbers ------------------------------------------------------------------------

def classifier_score(probs: np.ndarray) -> float:
  """exp( mean_i KL(p(y|x_i) || p_hat(y)) ), p_hat = mean_i p(y|x_i); probs [N, K] (Salimans et
  al. 2016). Computed in float64 with 0 log 0 = 0."""
  p = np.asarray(probs, np.float64)
  marginal = p.mean(axis=0, keepdims=True)
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.where(p > 0, p * (np.log(p) - np.log(marginal)), 0.0)
  return float(np.exp(terms.sum(axis=1).mean()))


def score_entropies(probs: np.ndarray) -> tuple[float, float]:
  """(H(p_hat), mean_i H(p(y|x_i))) in nats, the two parts of the classifier score:
  mean_i KL(p(y|x_i) || p_hat) = H(p_hat) - mean_i H(p(y|x_i)), so score = exp(first - second).
  The first is the diversity of the labels (log K at most: every label equally often), the
  second the classifier's uncertainty per image (0: every image unambiguous)."""
  p = np.asarray(probs, np.float64)
  plogp = lambda q: np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)
  return float(-plogp(p.mean(axis=0)).sum()), float(-plogp(p).sum(axis=1).mean())


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean [F], covariance [F, F]) of features [N, F], float64, unbiased (N - 1) covariance."""
  f = np.asarray(features, np.float64)
  return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric positive semi-definite matrix (eigendecomposition;
  round-off negative eigenvalues clipped to 0)."""
  values, vectors = np.linalg.eigh((matrix + matrix.T) * 0.5)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray,
                     cov_b: np.ndarray) -> float:
  """Fréchet (2-Wasserstein squared) distance between N(mean_a, cov_a) and N(mean_b, cov_b):

      |m_a - m_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^(1/2))        (Heusel et al. 2017, eq. 6)

  tr((C_a C_b)^(1/2)) = tr((S C_b S)^(1/2)) with S = C_a^(1/2): C_a C_b = S (S C_b) is similar
  to the PSD matrix S C_b S, so both have the same (non-negative) eigenvalues; their square
  roots' sum is taken from a symmetric eigendecomposition, which needs no complex arithmetic
  (scipy.linalg.sqrtm of the non-symmetric product agrees; see the tests).
  """
  mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
  cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, np.float64)), np.atleast_2d(np.asarray(cov_b, np.float64))
  root_a = _psd_sqrt(cov_a)
  middle = root_a @ cov_b @ root_a
  eigenvalues = np.linalg.eigvalsh((middle + middle.T) * 0.5)
  trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
  diff = mean_a - mean_b
  return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)


def conditional_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
  """Share of images whose most probable class is the label they were generated for."""
  return float(np.mean(np.argmax(np.asarray(probs), axis=1) == np.asarray(labels)))


def accuracy_per_label(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """[K]: for each label k, the share of images of label k whose most probable class is k (NaN
  for a label with no images)."""
  labels = np.asarray(labels)
  hit = np.argmax(np.asarray(probs), axis=1) == labels
  return np.asarray([hit[labels == k].mean() if np.any(labels == k) else np.nan
                     for k in range(num_classes)])


# --- training and the cache -------------------------------------------------------------------

def fingerprint(train_images: np.ndarray, train_labels: np.ndarray) -> str:
  """sha256 of the training split (images, labels): which data a cached classifier has seen."""
  digest = hashlib.sha256()
  digest.update(str(train_images.shape).encode())
  digest.update(np.ascontiguousarray(train_images).tobytes())
  digest.update(np.ascontiguousarray(train_labels.astype(np.int64)).tobytes())
  return digest.hexdigest()


def _to_unit(images_u8: Array) -> Array:
  return images_u8.astype(jnp.float32) / 255.0


def random_shift(key: jax.Array, x: Array, pixels: int) -> Array:
  """x [B, H, W, C], each image moved by its own random (dy, dx) in [-pixels, pixels]^2 whole
  pixels, the uncovered border filled with 0 (the background)."""
  if pixels <= 0:
    return x
  b, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)))
  offsets = jax.random.randint(key, (b, 2), 0, 2 * pixels + 1)
  return jax.vmap(lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c)))(
      padded, offsets)


def steps_per_epoch(n: int, batch_size: int) -> int:
  return n // min(batch_size, n)


def fit(loss_fn: Callable[..., tuple[Array, Any]], params: Any, state: Any,
        optimizer: optax.GradientTransformation, train_images: np.ndarray,
        train_labels: np.ndarray, epochs: int, batch_size: int, key: jax.Array) -> tuple[Any, Any]:
  """Minimises ``loss_fn(params, state, images_u8 [B, ...], labels [B], key) -> (loss, new
  state)`` (the state: batch-norm statistics, or {}) over ``epochs`` passes of fresh permutations
  (the last partial batch dropped), one jitted lax.scan per epoch; returns (params, state)."""
  x_all = jnp.asarray(train_images)
  y_all = jnp.asarray(train_labels.astype(np.int32))
  n = x_all.shape[0]
  batch = min(batch_size, n)
  n_batches = steps_per_epoch(n, batch)
  opt_state = optimizer.init(params)

  @jax.jit
  def epoch(params, state, opt_state, epoch_key):
    order_key, step_key = jax.random.split(epoch_key)
    order = jax.random.permutation(order_key, n)[:n_batches * batch].reshape(n_batches, batch)

    def body(carry, inputs):
      p, s, o = carry
      idx, k = inputs
      (loss, s), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x_all[idx], y_all[idx], k)
      updates, o = optimizer.update(grads, o, p)
      return (optax.apply_updates(p, updates), s, o), loss

    (params, state, opt_state), losses = jax.lax.scan(
        body, (params, state, opt_state), (order, jax.random.split(step_key, n_batches)))
    return params, state, opt_state, jnp.mean(losses)

  for e in range(epochs):
    params, state, opt_state, _ = epoch(params, state, opt_state, jax.random.fold_in(key, e))
  return params, state


def train_classifier(train_images: np.ndarray, train_labels: np.ndarray, num_classes: int,
                     settings: TrainSettings) -> Any:
  """The convnet's recipe (``TrainSettings``) on the mean cross-entropy; returns the parameters."""
  model = Classifier(num_classes=num_classes, feature_dim=settings.feature_dim,
                     dropout=settings.dropout)
  init_key, key = jax.random.split(jax.random.key(settings.seed))
  params = model.init(init_key, jnp.zeros((1,) + train_images.shape[1:]))["params"]
  steps = settings.epochs * steps_per_epoch(len(train_images), settings.batch_size)
  optimizer = optax.adamw(optax.cosine_decay_schedule(settings.learning_rate, max(steps, 1)),
                          weight_decay=settings.weight_decay)

  def loss_fn(p, state, x, y, k):
    shift_key, dropout_key = jax.random.split(k)
    logits, _ = model.apply({"params": p}, random_shift(shift_key, _to_unit(x), settings.shift),
                            True, rngs={"dropout": dropout_key})
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)), state

  params, _ = fit(loss_fn, params, {}, optimizer, train_images, train_labels, settings.epochs,
                  settings.batch_size, key)
  return params


def _save(directory: str, params: Any, meta: dict) -> None:
  os.makedirs(directory, exist_ok=True)
  flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
  tmp = os.path.join(directory, PARAMS_FILE + ".tmp.npz")
  np.savez(tmp, **flat)
  os.replace(tmp, os.path.join(directory, PARAMS_FILE))
  with open(os.path.join(directory, META_FILE + ".tmp"), "w") as f:
    json.dump(meta, f, indent=2)
  os.replace(os.path.join(directory, META_FILE + ".tmp"), os.path.join(directory, META_FILE))


def _load(directory: str, template: Any, expected: dict) -> tuple[Any, dict]:
  """Cached (params, meta); raises ``files.DamagedFile`` for a damaged file of the cache and
  ValueError for one of other settings, data or parameter shapes."""
  meta = files.read_json(os.path.join(directory, META_FILE), "the evaluator's settings")
  for key, value in expected.items():
    if meta.get(key) != value:
      got = meta.get(key)
      if isinstance(got, dict) and isinstance(value, dict):  # name the settings that differ
        differ = [k for k in sorted(set(got) | set(value)) if got.get(k) != value.get(k)]
        raise ValueError("it was trained with " + ", ".join(
            f"{key}.{k}={got.get(k)!r}, not {value.get(k)!r}" for k in differ))
      raise ValueError(f"it was trained with {key}={got!r}, not {value!r}")
  flat = files.load_npz(os.path.join(directory, PARAMS_FILE), "the evaluator's parameters")
  params = {}
  for path, like in traverse_util.flatten_dict(template).items():
    name = "/".join(path)
    if name not in flat or flat[name].shape != like.shape:
      raise ValueError(f"parameter {name} is missing or has the wrong shape")
    if not np.all(np.isfinite(flat[name])):
      raise ValueError(f"parameter {name} is not finite")
    params[path] = jnp.asarray(flat[name], like.dtype)
  return traverse_util.unflatten_dict(params), meta


class Evaluator:
  """A trained classifier plus the real test images' statistics; ``judge`` scores a batch.

  ``name`` says which judge it is. ``real_probs`` [N_test, K] and ``real_features`` are its
  outputs on the real test images (``real_mean``, ``real_cov`` their Gaussian fit, the Fréchet
  distance's reference), ``real_classifier_score`` their classifier score; with ``test_labels``,
  ``test_accuracy`` and ``real_accuracy_per_label`` [K] its accuracy on them. With
  ``reference_images_u8`` (real images it did not test on: a subset of the training split),
  ``real_frechet_distance(n)`` is the distance that n real images reach.
  """

  def __init__(self, params: Any, num_classes: int, feature_dim: int, test_accuracy: float,
               test_images_u8: np.ndarray, meta: dict, eval_batch: int = 1000, *,
               name: str = "convnet",
               apply: Callable[[Any, Array], tuple[Array, Array]] | None = None,
               test_labels: np.ndarray | None = None,
               reference_images_u8: np.ndarray | None = None):
    self.params = params
    self.name = name
    self.num_classes = num_classes
    self.feature_dim = feature_dim
    self.meta = meta
    self._batch = eval_batch
    if apply is None:
      self.model = Classifier(num_classes=num_classes, feature_dim=feature_dim)
      apply = lambda p, x: self.model.apply({"params": p}, x)
    self._apply = jax.jit(lambda p, x: self._probs_features(apply, p, x))
    probs, features = self.outputs(np.asarray(test_images_u8, np.float32) / 255.0)
    self.real_mean, self.real_cov = gaussian_fit(features)
    self.real_probs, self.real_features = probs, features
    self.real_classifier_score = classifier_score(probs)
    self.test_labels = None if test_labels is None else np.asarray(test_labels)
    self.test_accuracy = test_accuracy
    self.real_accuracy_per_label = None
    if self.test_labels is not None:
      self.test_accuracy = conditional_accuracy(probs, self.test_labels)
      self.real_accuracy_per_label = accuracy_per_label(probs, self.test_labels, num_classes)
    self.reference_features = None
    if reference_images_u8 is not None:
      self.reference_features = self.outputs(
          np.asarray(reference_images_u8, np.float32) / 255.0)[1]

  @staticmethod
  def _probs_features(apply, params, x):
    logits, features = apply(params, x)
    return jax.nn.softmax(logits), features

  def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p(y|x) [N, K], penultimate features [N, F]) of images [N, H, W, C] in [0, 1]."""
    images = np.asarray(images, np.float32)
    probs, features = [], []
    for i in range(0, images.shape[0], self._batch):
      p, f = self._apply(self.params, jnp.asarray(images[i:i + self._batch]))
      probs.append(np.asarray(p))
      features.append(np.asarray(f))
    return np.concatenate(probs), np.concatenate(features)

  def judge(self, images: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """{"classifier_score", "frechet_distance", "label_entropy", "conditional_entropy"
    [, "conditional_accuracy"]} of images in [0, 1] [N, H, W, C] (N >= 2); the distance is to the
    real test images' feature fit, the entropies are the score's parts (``score_entropies``)."""
    probs, features = self.outputs(images)
    mean, cov = gaussian_fit(features)
    label_entropy, conditional_entropy = score_entropies(probs)
    out = {"classifier_score": classifier_score(probs),
           "frechet_distance": frechet_distance(mean, cov, self.real_mean, self.real_cov),
           "label_entropy": label_entropy, "conditional_entropy": conditional_entropy}
    if labels is not None:
      out["conditional_accuracy"] = conditional_accuracy(probs, labels)
    return out

  def real_frechet_distance(self, n: int) -> float:
    """Fréchet distance from the first min(n, available) reference (training-split) images'
    features to the test images' fit: what a generator of n copies of training images scores
    (the distance grows as n shrinks). NaN without reference images."""
    if self.reference_features is None:
      return float("nan")
    mean, cov = gaussian_fit(self.reference_features[:max(int(n), 2)])
    return frechet_distance(mean, cov, self.real_mean, self.real_cov)

  def real_accuracy_for(self, labels: np.ndarray) -> float:
    """The judge's accuracy on real test images with the label mix of ``labels``: the mean over
    i of its test accuracy on label labels[i] (NaN without test labels)."""
    if self.real_accuracy_per_label is None:
      return float("nan")
    return float(np.mean(self.real_accuracy_per_label[np.asarray(labels, np.int64)]))


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A judge as ``load_or_train_judge`` builds it: ``init(image_shape)`` -> variables,
  ``train(images_u8, labels)`` -> variables, ``apply(variables, images [B, H, W, C] in [0, 1])``
  -> (logits, features). ``settings`` (a dataclass) and ``format`` are the cache's identity;
  ``label`` starts its log lines."""
  name: str
  label: str
  format: int
  settings: Any
  feature_dim: int
  init: Callable[[tuple], Any]
  train: Callable[[np.ndarray, np.ndarray], Any]
  apply: Callable[[Any, Array], tuple[Array, Array]]


def convnet_recipe(num_classes: int, settings: TrainSettings = TrainSettings()) -> Recipe:
  """The convnet judge (``Classifier`` trained by ``train_classifier``); its variables are the
  plain parameter tree."""
  model = Classifier(num_classes=num_classes, feature_dim=settings.feature_dim)
  return Recipe(
      name="convnet", label="evaluator", format=_FORMAT, settings=settings,
      feature_dim=settings.feature_dim,
      init=lambda shape: model.init(jax.random.key(0), jnp.zeros((1,) + tuple(shape)))["params"],
      train=lambda x, y: train_classifier(x, y, num_classes, settings),
      apply=lambda params, x: model.apply({"params": params}, x))


def num_classes_of(dataset: images_lib.ImageDataset) -> int:
  """The number of classes of a labelled data set (a UserError when it has no labels)."""
  from genrl_jax.run.errors import UserError  # pylint: disable=g-import-not-at-top
  if dataset.train_labels is None or dataset.test_labels is None:
    raise UserError(f"the evaluator needs class labels, and {dataset.source} has none; add the "
                    "*-labels-idx1-ubyte files beside the image files")
  return int(max(dataset.train_labels.max(), dataset.test_labels.max())) + 1


def reference_images(dataset: images_lib.ImageDataset) -> np.ndarray:
  """A fixed random subset of the training images, as many as there are test images (all of
  them when there are fewer): the real images ``Evaluator.real_frechet_distance`` scores."""
  n = min(len(dataset.train_images), len(dataset.test_images))
  pick = np.sort(np.random.default_rng(0).permutation(len(dataset.train_images))[:n])
  return dataset.train_images[pick]


def load_or_train_judge(recipe: Recipe, dataset: images_lib.ImageDataset, name: str,
                        directory: str,
                        log: Callable[[str], None] = lambda s: print(s, flush=True)) -> Evaluator:
  """The judge ``recipe`` of ``dataset`` (called ``name``): cached variables from ``directory``
  when they were trained on this very training split with this recipe, else freshly trained ones
  (saved there). Prints one line saying which, with the test accuracy; a damaged or foreign
  cache is one more line (a warning) before it is retrained."""
  num_classes = num_classes_of(dataset)
  expected = {"format": recipe.format, "judge": recipe.name,
              "fingerprint": fingerprint(dataset.train_images, dataset.train_labels),
              "settings": dataclasses.asdict(recipe.settings), "num_classes": num_classes,
              "image_shape": list(dataset.image_shape)}
  template = jax.eval_shape(lambda: recipe.init(dataset.image_shape))
  params = meta = None
  if os.path.exists(os.path.join(directory, META_FILE)):
    try:
      params, meta = _load(directory, template, expected)
    except (files.DamagedFile, ValueError) as e:
      reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
      log(f"warning: {recipe.label}: the cache in {directory} is unusable ({reason}); retraining "
          "(the cache is rewritten)")
  if params is None:
    params = recipe.train(dataset.train_images, dataset.train_labels)
    meta = dict(expected, source=dataset.source)
  evaluator = Evaluator(params, num_classes, recipe.feature_dim, 0.0, dataset.test_images, meta,
                        name=recipe.name, apply=recipe.apply, test_labels=dataset.test_labels,
                        reference_images_u8=reference_images(dataset))
  accuracy = evaluator.test_accuracy
  if "test_accuracy" not in meta:
    meta["test_accuracy"] = accuracy
    try:
      _save(directory, params, meta)
    except OSError as e:
      log(f"{recipe.label}: cannot write the cache in {directory} ({e.strerror}); it is used "
          "unsaved")
    log(f"{recipe.label}: trained on {len(dataset.train_images)} training images of {name} "
        f"({dataset.source}); test accuracy {accuracy:.4f}; cached in {directory}")
  else:
    log(f"{recipe.label}: loaded from {directory}; test accuracy {accuracy:.4f} "
        f"(trained on {len(dataset.train_images)} training images of {name})")
  return evaluator


def load_or_train(dataset: images_lib.ImageDataset, name: str, cache_dir: str,
                  settings: TrainSettings = TrainSettings(),
                  log: Callable[[str], None] = lambda s: print(s, flush=True)) -> Evaluator:
  """The convnet judge of ``dataset``: cached parameters from ``<cache_dir>/<name>/`` when they
  were trained on this very training split with these settings, else a freshly trained
  classifier (saved there). Prints one line saying which, with the test accuracy. Both judges:
  ``judges.load_judges``."""
  return load_or_train_judge(convnet_recipe(num_classes_of(dataset), settings), dataset, name,
                             os.path.join(cache_dir, name), log)
