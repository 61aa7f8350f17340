"""An independent judge of generated images: a small convnet classifier trained once per data set.

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
_FORMAT = 2


class Classifier(nn.Module):
  """images [B, H, W, C] in [0, 1] -> (logits [B, K], features [B, F]).

  Conv(32, 3x3, /2) -> ReLU -> Conv(64, 3x3, /2) -> ReLU -> Dense(F) -> ReLU (the features)
  -> Dense(K). The convolutions are ``conv.PatchConv`` (patches @ kernel; the same function
  as ``nn.Conv``), which keeps XLA's CPU backend fast inside the training scan (see
  ``genrl_jax.models.conv``).
  """
  num_classes: int = 10
  feature_dim: int = 128

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array]:
    h = nn.relu(conv.PatchConv(32, 3, 2, name="conv_0")(x))
    h = nn.relu(conv.PatchConv(64, 3, 2, name="conv_1")(h))
    h = h.reshape((h.shape[0], -1))
    features = nn.relu(nn.Dense(self.feature_dim, name="features")(h))
    return nn.Dense(self.num_classes, name="logits")(features), features


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """How the classifier is trained (part of the cache's identity)."""
  epochs: int = 15
  batch_size: int = 128
  learning_rate: float = 1e-3
  seed: int = 0
  feature_dim: int = 128


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


def train_classifier(train_images: np.ndarray, train_labels: np.ndarray, num_classes: int,
                     settings: TrainSettings) -> Any:
  """Adam on the mean cross-entropy, ``settings.epochs`` passes over fresh permutations (the last
  partial batch dropped), one jitted lax.scan per epoch; returns the parameters."""
  model = Classifier(num_classes=num_classes, feature_dim=settings.feature_dim)
  x_all = jnp.asarray(train_images)
  y_all = jnp.asarray(train_labels.astype(np.int32))
  n = x_all.shape[0]
  batch = min(settings.batch_size, n)
  n_batches = n // batch
  optimizer = optax.adam(settings.learning_rate)
  key = jax.random.key(settings.seed)
  init_key, key = jax.random.split(key)
  params = model.init(init_key, jnp.zeros((1,) + x_all.shape[1:]))["params"]
  opt_state = optimizer.init(params)

  def loss_fn(p, x, y):
    logits, _ = model.apply({"params": p}, _to_unit(x))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

  @jax.jit
  def epoch(params, opt_state, epoch_key):
    order = jax.random.permutation(epoch_key, n)[:n_batches * batch].reshape(n_batches, batch)

    def body(carry, idx):
      p, s = carry
      loss, grads = jax.value_and_grad(loss_fn)(p, x_all[idx], y_all[idx])
      updates, s = optimizer.update(grads, s, p)
      return (optax.apply_updates(p, updates), s), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), order)
    return params, opt_state, jnp.mean(losses)

  for e in range(settings.epochs):
    params, opt_state, _ = epoch(params, opt_state, jax.random.fold_in(key, e))
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
      raise ValueError(f"it was trained with {key}={meta.get(key)!r}, not {value!r}")
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
  """A trained classifier plus the real test images' statistics; ``judge`` scores a batch."""

  def __init__(self, params: Any, num_classes: int, feature_dim: int, test_accuracy: float,
               test_images_u8: np.ndarray, meta: dict, eval_batch: int = 1000):
    self.params = params
    self.model = Classifier(num_classes=num_classes, feature_dim=feature_dim)
    self.num_classes = num_classes
    self.test_accuracy = test_accuracy
    self.meta = meta
    self._batch = eval_batch
    self._apply = jax.jit(lambda p, x: self._probs_features(p, x))
    real = np.asarray(test_images_u8, np.float32) / 255.0
    probs, features = self.outputs(real)
    self.real_mean, self.real_cov = gaussian_fit(features)
    self.real_probs = probs

  def _probs_features(self, params, x):
    logits, features = self.model.apply({"params": params}, x)
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


def load_or_train(dataset: images_lib.ImageDataset, name: str, cache_dir: str,
                  settings: TrainSettings = TrainSettings(),
                  log: Callable[[str], None] = lambda s: print(s, flush=True)) -> Evaluator:
  """The evaluator of ``dataset``: cached parameters from ``<cache_dir>/<name>/`` when they were
  trained on this very training split with these settings, else a freshly trained classifier
  (saved there). Prints one line saying which, with the test accuracy."""
  from genrl_jax.run.errors import UserError  # pylint: disable=g-import-not-at-top
  if dataset.train_labels is None or dataset.test_labels is None:
    raise UserError(f"the evaluator needs class labels, and {dataset.source} has none; add the "
                    "*-labels-idx1-ubyte files beside the image files")
  num_classes = int(max(dataset.train_labels.max(), dataset.test_labels.max())) + 1
  directory = os.path.join(cache_dir, name)
  expected = {"format": _FORMAT, "fingerprint": fingerprint(dataset.train_images,
                                                            dataset.train_labels),
              "settings": dataclasses.asdict(settings), "num_classes": num_classes,
              "image_shape": list(dataset.image_shape)}
  model = Classifier(num_classes=num_classes, feature_dim=settings.feature_dim)
  template = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                               jnp.zeros((1,) + dataset.image_shape))["params"])
  params = meta = None
  if os.path.exists(os.path.join(directory, META_FILE)):
    try:
      params, meta = _load(directory, template, expected)
    except (files.DamagedFile, ValueError) as e:
      reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
      log(f"warning: evaluator: the cache in {directory} is unusable ({reason}); retraining "
          "(the cache is rewritten)")
  if params is None:
    params = train_classifier(dataset.train_images, dataset.train_labels, num_classes, settings)
    meta = dict(expected, source=dataset.source)
  evaluator = Evaluator(params, num_classes, settings.feature_dim, 0.0, dataset.test_images, meta)
  accuracy = conditional_accuracy(evaluator.real_probs, dataset.test_labels)
  evaluator.test_accuracy = accuracy
  if "test_accuracy" not in meta:
    meta["test_accuracy"] = accuracy
    try:
      _save(directory, params, meta)
    except OSError as e:
      log(f"evaluator: cannot write the cache in {directory} ({e.strerror}); it is used unsaved")
    log(f"evaluator: trained on {len(dataset.train_images)} training images of {name} "
        f"({dataset.source}); test accuracy {accuracy:.4f}; cached in {directory}")
  else:
    log(f"evaluator: loaded from {directory}; test accuracy {accuracy:.4f} "
        f"(trained on {len(dataset.train_images)} training images of {name})")
  return evaluator
