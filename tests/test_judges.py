"""The second judge (bnconv) as the first is tested: real images score far better than
pixel-shuffled and noise images on every number, its cache is reused and a damaged one retrained
(the convnet's cache untouched); the two judges share no parameters; ``judge_all``'s real-image
numbers and ratios against a hand computation."""

import os

import jax
import numpy as np
import pytest

from genrl_jax.generative import evaluator, judges
from tests import gen_data

SETTINGS = (evaluator.TrainSettings(epochs=4, batch_size=64, feature_dim=32, learning_rate=3e-3),
            judges.BNConvSettings(epochs=3, batch_size=64, feature_dim=32))


def _load(cache, lines=None):
  log = (lambda s: None) if lines is None else lines.append
  return judges.load_judges(gen_data.dataset(), "banded", cache, SETTINGS, log=log)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("evaluators"))
  lines = []
  first, second = _load(cache, lines)
  return first, second, cache, lines


def _real_shuffled_noise():
  real_x, real_y = gen_data.banded(300, seed=5)
  real = real_x.astype(np.float32) / 255.0
  rng = np.random.default_rng(0)
  flat = real.reshape(len(real), -1)
  shuffled = np.stack([row[rng.permutation(row.size)] for row in flat]).reshape(real.shape)
  noise = rng.uniform(0, 1, size=real.shape).astype(np.float32)
  return {"real": real, "shuffled": shuffled, "noise": noise}, real_y


def test_load_judges_gives_two_named_judges_each_with_its_line(pair):
  first, second, cache, lines = pair
  assert (first.name, second.name) == ("convnet", "bnconv")
  assert lines[0].startswith("evaluator: trained on") and lines[0].endswith(
      os.path.join(cache, "banded"))
  assert lines[1].startswith("evaluator bnconv: trained on") and lines[1].endswith(
      os.path.join(cache, "banded", "bnconv"))
  assert len(lines) == 2
  for judge in (first, second):
    assert judge.real_probs.shape == (200, 10)
    assert judge.real_classifier_score == pytest.approx(
        evaluator.classifier_score(judge.real_probs))
  assert second.real_features.shape == (200, 32) and second.real_cov.shape == (32, 32)


def test_bnconv_scores_real_images_far_better_than_shuffled_and_noise(pair):
  _, second, _, _ = pair
  assert second.test_accuracy > 0.9
  batches, labels = _real_shuffled_noise()
  scores = {name: judges.judge_all((second,), x, labels)["bnconv"] for name, x in batches.items()}
  real = scores["real"]
  assert real["classifier_score"] > 5.0, real
  assert real["conditional_accuracy"] > 0.9 and real["conditional_accuracy_ratio"] > 0.9, real
  assert 0.8 < real["classifier_score_ratio"] < 1.2, real
  for bad in ("shuffled", "noise"):
    got = scores[bad]
    assert got["classifier_score"] < 0.5 * real["classifier_score"], scores
    assert got["classifier_score_ratio"] < 0.5 * real["classifier_score_ratio"], scores
    assert got["frechet_distance"] > 10 * real["frechet_distance"], scores
    assert got["conditional_accuracy"] < 0.5 * real["conditional_accuracy"], scores
    assert got["conditional_accuracy_ratio"] < 0.5 * real["conditional_accuracy_ratio"], scores


def test_the_two_judges_share_no_parameters(pair):
  first, second, _, _ = pair
  assert (jax.tree.structure(first.params) != jax.tree.structure(second.params))
  assert set(second.params) == {"params", "batch_stats"}
  second_leaves = [np.asarray(v) for v in jax.tree.leaves(second.params)]
  for leaf in jax.tree.leaves(first.params):
    leaf = np.asarray(leaf)
    assert not any(leaf.shape == other.shape and np.array_equal(leaf, other)
                   for other in second_leaves)
  # Their features differ too: not a linear copy of one another's.
  assert first.real_features.shape[1] == second.real_features.shape[1] == 32
  assert not np.allclose(first.real_features, second.real_features)


def _cache_bytes(directory):
  return {name: open(os.path.join(directory, name), "rb").read()
          for name in (evaluator.PARAMS_FILE, evaluator.META_FILE)}


def test_bnconv_cache_is_reused_and_a_damaged_one_retrained_alone(pair):
  first, second, cache, _ = pair
  convnet_dir = os.path.join(cache, "banded")
  bnconv_dir = os.path.join(convnet_dir, "bnconv")
  convnet_files = _cache_bytes(convnet_dir)
  lines = []
  again = _load(cache, lines)
  assert [line.split(" from ")[0] for line in lines] == ["evaluator: loaded",
                                                         "evaluator bnconv: loaded"], lines
  np.testing.assert_array_equal(again[1].real_probs, second.real_probs)
  np.testing.assert_array_equal(again[0].real_probs, first.real_probs)

  for damage in (b"not an npz file", None):
    if damage is None:  # a meta file cut short
      path = os.path.join(bnconv_dir, evaluator.META_FILE)
      with open(path, "rb") as f:
        text = f.read()
      damage = text[:len(text) // 2]
    else:
      path = os.path.join(bnconv_dir, evaluator.PARAMS_FILE)
    with open(path, "wb") as f:
      f.write(damage)
    lines = []
    retrained = _load(cache, lines)
    assert lines[0].startswith("evaluator: loaded from"), lines
    assert lines[1].startswith("warning: evaluator bnconv: the cache in " + bnconv_dir), lines
    assert "unusable" in lines[1] and "retraining" in lines[1], lines
    assert lines[2].startswith("evaluator bnconv: trained on"), lines
    assert len(lines) == 3, lines
    assert retrained[1].test_accuracy > 0.9
    # Retraining one judge leaves the other's cache as it was, and the retrained cache loads.
    assert _cache_bytes(convnet_dir) == convnet_files
    lines = []
    _load(cache, lines)
    assert lines[1].startswith("evaluator bnconv: loaded from"), lines


def _toy_judge(test_images, test_labels, reference=None):
  """A judge without training: class k's logit is 50 x pixel k, the features pixels 0 and 1."""
  def apply(params, x):
    flat = x.reshape(x.shape[0], -1)
    return params["scale"] * flat[:, :3], flat[:, :2]
  return evaluator.Evaluator({"scale": np.float32(50.0)}, 3, 2, 0.0, test_images, {},
                             name="toy", apply=apply, test_labels=test_labels,
                             reference_images_u8=reference)


def _images(classes):
  """[N, 2, 2, 1] images, pixel classes[i] lit (255) and the others dark."""
  x = np.zeros((len(classes), 4), np.uint8)
  x[np.arange(len(classes)), classes] = 255
  return x.reshape(-1, 2, 2, 1)


def test_judge_all_against_a_hand_computation():
  # Real test images: labels 0 0 1 1 2 2, called 0 1 1 1 2 0: per-label accuracy 1/2, 1, 1/2.
  test = _images([0, 1, 1, 1, 2, 0])
  toy = _toy_judge(test, np.array([0, 0, 1, 1, 2, 2]), reference=test)
  np.testing.assert_allclose(toy.real_accuracy_per_label, [0.5, 1.0, 0.5])
  assert toy.test_accuracy == pytest.approx(4 / 6)
  # Generated for labels 0 1 1 1, called 0 1 1 2: accuracy 3/4; the judge's accuracy on real
  # images of those labels (1/2 + 1 + 1 + 1) / 4 = 7/8.
  generated = _images([0, 1, 1, 2]).astype(np.float32) / 255.0
  got = judges.judge_all((toy,), generated, np.array([0, 1, 1, 1]))["toy"]
  assert got["conditional_accuracy"] == pytest.approx(0.75)
  assert got["real_conditional_accuracy"] == pytest.approx(7 / 8)
  assert got["conditional_accuracy_ratio"] == pytest.approx(0.75 / (7 / 8))
  # Confident calls: the score is exp(entropy of the called classes' shares).
  entropy = lambda shares: -sum(s * np.log(s) for s in shares)
  real_score = np.exp(entropy([2 / 6, 3 / 6, 1 / 6]))
  score = np.exp(entropy([1 / 4, 2 / 4, 1 / 4]))
  assert got["real_classifier_score"] == pytest.approx(real_score, rel=1e-6)
  assert got["classifier_score"] == pytest.approx(score, rel=1e-6)
  assert got["classifier_score_ratio"] == pytest.approx(score / real_score, rel=1e-6)
  assert got["test_accuracy"] == pytest.approx(4 / 6)
  # The reference images are the test images themselves: all 6 are at distance 0, the first 4
  # (as many as were generated) at the distance of their pixels 0 and 1's fit to all 6's.
  assert toy.real_frechet_distance(6) == pytest.approx(0.0, abs=1e-9)
  pixels = test.reshape(6, -1)[:, :2] / 255.0
  by_hand = evaluator.frechet_distance(*evaluator.gaussian_fit(pixels[:4]),
                                       *evaluator.gaussian_fit(pixels))
  assert by_hand > 0.01
  assert got["real_frechet_distance"] == pytest.approx(by_hand, rel=1e-6)
  # Without labels there is no accuracy and no ratio of it.
  unlabelled = judges.judge_all((toy,), generated)["toy"]
  assert "conditional_accuracy" not in unlabelled
  assert "conditional_accuracy_ratio" not in unlabelled
