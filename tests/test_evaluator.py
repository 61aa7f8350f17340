"""Evaluator: the Fréchet distance against a closed form and scipy's sqrtm, the classifier score
against hand-computed cases, and a trained classifier that scores real images far better than
pixel-shuffled and noise images; the cache is reused, and a damaged one or one of an older
format is retrained."""

import json
import os

import numpy as np
import pytest
import scipy.linalg

from genrl_jax.generative import evaluator
from tests import gen_data

SETTINGS = evaluator.TrainSettings(epochs=4, batch_size=64, feature_dim=32, learning_rate=3e-3)


def test_frechet_distance_of_diagonal_gaussians_matches_closed_form():
  # Diagonal covariances commute: (C_a C_b)^(1/2) = diag(s_a s_b), so
  # d = |m_a - m_b|^2 + sum_j (s_a,j - s_b,j)^2.
  rng = np.random.default_rng(0)
  m_a, m_b = rng.normal(size=5), rng.normal(size=5)
  s_a, s_b = rng.uniform(0.1, 3, size=5), rng.uniform(0.1, 3, size=5)
  expected = np.sum((m_a - m_b) ** 2) + np.sum((s_a - s_b) ** 2)
  got = evaluator.frechet_distance(m_a, np.diag(s_a ** 2), m_b, np.diag(s_b ** 2))
  np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 9))
  cov_a, cov_b = a @ a.T + 0.1 * np.eye(6), b @ b.T  # generic SPD matrices
  m_a, m_b = rng.normal(size=6), rng.normal(size=6)
  root = scipy.linalg.sqrtm(cov_a @ cov_b)
  expected = (np.sum((m_a - m_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
              - 2 * np.trace(np.real(root)))
  np.testing.assert_allclose(evaluator.frechet_distance(m_a, cov_a, m_b, cov_b), expected,
                             rtol=1e-8)
  assert abs(evaluator.frechet_distance(m_a, cov_a, m_a, cov_a)) < 1e-8


def test_classifier_score_hand_cases():
  k = 7
  confident_balanced = np.eye(k)[np.arange(70) % k]
  assert evaluator.classifier_score(confident_balanced) == pytest.approx(k)
  one_class = np.tile(np.eye(k)[2], (50, 1))
  assert evaluator.classifier_score(one_class) == pytest.approx(1.0)
  # Two images, p = (0.5, 0.5) and (1, 0): marginal (0.75, 0.25); mean KL by hand.
  p = np.array([[0.5, 0.5], [1.0, 0.0]])
  kl = [0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25), np.log(1 / 0.75)]
  assert evaluator.classifier_score(p) == pytest.approx(np.exp(np.mean(kl)))
  assert evaluator.conditional_accuracy(np.eye(3)[[0, 1, 2, 1]], [0, 1, 1, 1]) == 0.75
  # Label 0: 1 of 1 right; label 1: 2 of 3 (the image of label 1 called 2 is wrong); label 3: none.
  per_label = evaluator.accuracy_per_label(np.eye(4)[[0, 1, 2, 1]], [0, 1, 1, 1], 4)
  np.testing.assert_array_equal(per_label[:2], [1.0, 2 / 3])
  assert np.isnan(per_label[2]) and np.isnan(per_label[3])


def test_score_entropies_by_hand_and_recompose_the_score():
  # Same two images as above: marginal (0.75, 0.25); entropies 0.5 ln 2 (mean of ln 2 and 0).
  h_label, h_cond = evaluator.score_entropies(np.array([[0.5, 0.5], [1.0, 0.0]]))
  assert h_label == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
  assert h_cond == pytest.approx(0.5 * np.log(2))
  assert evaluator.score_entropies(np.eye(5)[np.arange(20) % 5]) == pytest.approx((np.log(5), 0))
  p = np.random.default_rng(0).dirichlet(np.full(10, 0.3), size=200)
  h_label, h_cond = evaluator.score_entropies(p)
  assert evaluator.classifier_score(p) == pytest.approx(np.exp(h_label - h_cond), rel=1e-10)


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("evaluators"))
  return evaluator.load_or_train(gen_data.dataset(), "banded", cache, SETTINGS), cache


def test_real_images_score_far_better_than_shuffled_and_noise(judge):
  judge, _ = judge
  assert judge.test_accuracy > 0.9
  real_x, real_y = gen_data.banded(300, seed=5)
  real = real_x.astype(np.float32) / 255.0
  rng = np.random.default_rng(0)
  flat = real.reshape(len(real), -1)
  shuffled = np.stack([row[rng.permutation(row.size)] for row in flat]).reshape(real.shape)
  noise = rng.uniform(0, 1, size=real.shape).astype(np.float32)
  scores = {name: judge.judge(x) for name, x in
            (("real", real), ("shuffled", shuffled), ("noise", noise))}
  assert scores["real"]["classifier_score"] > 7.0
  for bad in ("shuffled", "noise"):
    assert scores[bad]["classifier_score"] < 0.5 * scores["real"]["classifier_score"], scores
    assert scores[bad]["frechet_distance"] > 10 * scores["real"]["frechet_distance"], scores
  assert judge.judge(real, real_y)["conditional_accuracy"] > 0.9


def test_cache_is_reused_and_a_damaged_cache_is_retrained(judge, capsys):
  first, cache = judge
  lines = []
  again = evaluator.load_or_train(gen_data.dataset(), "banded", cache, SETTINGS, log=lines.append)
  assert lines and lines[0].startswith("evaluator: loaded from")
  np.testing.assert_array_equal(again.real_mean, first.real_mean)
  with open(os.path.join(cache, "banded", evaluator.PARAMS_FILE), "wb") as f:
    f.write(b"not an npz file")
  lines = []
  retrained = evaluator.load_or_train(gen_data.dataset(), "banded", cache, SETTINGS,
                                      log=lines.append)
  assert "unusable" in lines[0] and "retraining" in lines[0]
  assert lines[1].startswith("evaluator: trained on")
  assert retrained.test_accuracy > 0.9
  # Another training split is not served from this cache.
  other = gen_data.dataset(n_train=400)
  lines = []
  evaluator.load_or_train(other, "banded", cache, SETTINGS, log=lines.append)
  assert "fingerprint" in lines[0]


def test_a_cache_of_an_older_format_is_retrained_in_one_warning(judge):
  _, cache = judge
  meta_path = os.path.join(cache, "banded", evaluator.META_FILE)
  with open(meta_path) as f:
    meta = json.load(f)
  meta["format"] = 2
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  lines = []
  evaluator.load_or_train(gen_data.dataset(), "banded", cache, SETTINGS, log=lines.append)
  assert len(lines) == 2, lines
  assert lines[0].startswith("warning: evaluator: the cache in") and "format=2" in lines[0]
  assert lines[1].startswith("evaluator: trained on")
