"""Two judges of generated images per data set, and every score by both beside real images' own.

The judges are two classifiers trained on the data set's training split only, different in
architecture, features and training recipe, so that a generator tuned against one is checked by
the other:

* "convnet" (``evaluator.Classifier``): two stride-2 3x3 convolutions (32, 64 channels) and a
  128-unit ReLU feature layer, no normalisation; 30 epochs of AdamW (weight decay 1e-4) with
  the learning rate decayed to 0 on a cosine, dropout 0.1, each training image shifted by up
  to 1 pixel each way.
* "bnconv" (``BNConvNet`` here): a full-resolution 3x3 convolution (16 channels) and a 3x3
  convolution (64), each batch-normalised and followed by 2x2 max pooling, and a 256-unit
  batch-normalised feature layer; 12 epochs of SGD with Nesterov momentum 0.9 and coupled weight
  decay 5e-4, the learning rate (0.1) warmed up linearly over the first epoch then decayed on a
  cosine, dropout 0.25, no augmentation.

They down-sample differently (strided convolutions vs full-resolution convolutions and max
pooling), normalise differently (none vs batch norm), take their features from different layers
(128 plain vs 256 batch-normalised units), and are trained from different seeds by different
optimisers and schedules on different inputs (shifted images vs the images as they are): they
share no parameters and no gradient step, so what fools one need not fool the other.

``load_judges`` gives both (each cached in its own directory: the convnet in
``<cache_dir>/<dataset>/`` as ``evaluator.load_or_train`` keeps it, bnconv in
``<cache_dir>/<dataset>/bnconv/``); ``judge_all`` scores one batch of generated images with
both, each beside its numbers on real images and the ratio of the two.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genrl_jax.data import images as images_lib
from genrl_jax.generative import evaluator
from genrl_jax.models import conv

Array = jnp.ndarray
SECOND = "bnconv"
_FORMAT = 1


def max_pool_2x2(x: Array) -> Array:
  """2x2 max pooling with stride 2 of x [B, H, W, C] (H, W even), as a reshape and a max (its
  gradient is a select, where ``nn.max_pool``'s is XLA's slower select-and-scatter)."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class BNConvNet(nn.Module):
  """images [B, H, W, C] in [0, 1] -> (logits [B, K], features [B, F]); H, W divisible by 4.

  Conv(16, 3x3) -> BN -> ReLU -> MaxPool(2x2) -> Conv(64, 3x3) -> BN -> ReLU -> MaxPool(2x2)
  -> [dropout] -> Dense(F) -> BN -> ReLU (the features) -> [dropout] -> Dense(K). Batch
  statistics when ``train``, else the running averages; dropout only when ``train``.
  """
  num_classes: int = 10
  feature_dim: int = 256
  dropout: float = 0.25

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> tuple[Array, Array]:
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name)
    h = max_pool_2x2(nn.relu(norm("bn_0")(conv.PatchConv(16, 3, 1, name="conv_0")(x))))
    h = max_pool_2x2(nn.relu(norm("bn_1")(conv.PatchConv(64, 3, 1, name="conv_1")(h))))
    h = nn.Dropout(self.dropout, deterministic=not train)(h.reshape((h.shape[0], -1)))
    features = nn.relu(norm("bn_features")(nn.Dense(self.feature_dim, name="features")(h)))
    logits = nn.Dense(self.num_classes, name="logits")(
        nn.Dropout(self.dropout, deterministic=not train)(features))
    return logits, features


@dataclasses.dataclass(frozen=True)
class BNConvSettings:
  """How bnconv is trained (part of its cache's identity): SGD, Nesterov momentum ``momentum``,
  the gradient plus ``weight_decay`` times the parameters, the learning rate rising linearly
  from 0 over the first epoch then decayed to 0 on a cosine."""
  epochs: int = 12
  batch_size: int = 128
  learning_rate: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 5e-4
  dropout: float = 0.25
  feature_dim: int = 256
  seed: int = 1


def train_bnconv(train_images: np.ndarray, train_labels: np.ndarray, num_classes: int,
                 settings: BNConvSettings) -> dict[str, Any]:
  """bnconv's recipe on the mean cross-entropy; returns {"params", "batch_stats"}."""
  model = BNConvNet(num_classes=num_classes, feature_dim=settings.feature_dim,
                    dropout=settings.dropout)
  init_key, key = jax.random.split(jax.random.key(settings.seed))
  variables = model.init(init_key, jnp.zeros((1,) + train_images.shape[1:]))
  per_epoch = evaluator.steps_per_epoch(len(train_images), settings.batch_size)
  total = max(settings.epochs * per_epoch, per_epoch + 1)
  schedule = optax.warmup_cosine_decay_schedule(0.0, settings.learning_rate, per_epoch, total)
  optimizer = optax.chain(optax.add_decayed_weights(settings.weight_decay),
                          optax.sgd(schedule, settings.momentum, nesterov=True))

  def loss_fn(params, batch_stats, x, y, k):
    (logits, _), updated = model.apply({"params": params, "batch_stats": batch_stats},
                                       x.astype(jnp.float32) / 255.0, True,
                                       rngs={"dropout": k}, mutable=["batch_stats"])
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    return loss, updated["batch_stats"]

  params, batch_stats = evaluator.fit(loss_fn, variables["params"], variables["batch_stats"],
                                      optimizer, train_images, train_labels, settings.epochs,
                                      settings.batch_size, key)
  return {"params": params, "batch_stats": batch_stats}


def bnconv_recipe(num_classes: int, settings: BNConvSettings = BNConvSettings()
                  ) -> evaluator.Recipe:
  model = BNConvNet(num_classes=num_classes, feature_dim=settings.feature_dim)
  return evaluator.Recipe(
      name=SECOND, label=f"evaluator {SECOND}", format=_FORMAT, settings=settings,
      feature_dim=settings.feature_dim,
      init=lambda shape: model.init(jax.random.key(0), jnp.zeros((1,) + tuple(shape))),
      train=lambda x, y: train_bnconv(x, y, num_classes, settings),
      apply=lambda variables, x: model.apply(variables, x))


def load_judges(dataset: images_lib.ImageDataset, name: str, cache_dir: str,
                settings: tuple[evaluator.TrainSettings, BNConvSettings] | None = None,
                log: Callable[[str], None] = lambda s: print(s, flush=True)
                ) -> tuple[evaluator.Evaluator, ...]:
  """(convnet, bnconv): the two judges of ``dataset`` (called ``name``), each loaded from its
  cache (``<cache_dir>/<name>/`` and ``<cache_dir>/<name>/bnconv/``) or trained and saved there;
  one line each says which. ``settings`` replaces the two recipes' defaults (tests)."""
  convnet_settings, bnconv_settings = settings or (evaluator.TrainSettings(), BNConvSettings())
  num_classes = evaluator.num_classes_of(dataset)
  directory = os.path.join(cache_dir, name)
  first = evaluator.load_or_train_judge(evaluator.convnet_recipe(num_classes, convnet_settings),
                                        dataset, name, directory, log)
  second = evaluator.load_or_train_judge(bnconv_recipe(num_classes, bnconv_settings), dataset,
                                         name, os.path.join(directory, SECOND), log)
  return first, second


def _ratio(value: float, real: float) -> float:
  return float(value / real) if real > 0 else float("nan")


def judge_all(judges: tuple[evaluator.Evaluator, ...], images: np.ndarray,
              labels: np.ndarray | None = None) -> dict[str, dict[str, float]]:
  """{judge name: scores} of generated images [N, H, W, C] in [0, 1] (and the labels they were
  generated for). Each judge's scores are ``Evaluator.judge``'s plus

  * ``test_accuracy``: its accuracy on the real test images;
  * ``real_classifier_score``: the classifier score of the real test images, and
    ``classifier_score_ratio`` = classifier_score / real_classifier_score;
  * ``real_frechet_distance``: the distance N real training-split images reach (the floor a
    generator of N images is measured against; ``Evaluator.real_frechet_distance``);
  * with labels, ``real_conditional_accuracy``: its accuracy on real test images of the same
    labels (per-label test accuracy averaged over ``labels``), and
    ``conditional_accuracy_ratio`` = conditional_accuracy / real_conditional_accuracy.
  """
  out = {}
  for judge in judges:
    scores = judge.judge(images, labels)
    scores["test_accuracy"] = float(judge.test_accuracy)
    scores["real_classifier_score"] = float(judge.real_classifier_score)
    scores["classifier_score_ratio"] = _ratio(scores["classifier_score"],
                                              judge.real_classifier_score)
    scores["real_frechet_distance"] = judge.real_frechet_distance(len(images))
    if labels is not None:
      real = judge.real_accuracy_for(labels)
      scores["real_conditional_accuracy"] = real
      scores["conditional_accuracy_ratio"] = _ratio(scores["conditional_accuracy"], real)
    out[judge.name] = scores
  return out
