"""Sample-quality metrics: Frechet distance, KID, precision/recall, and the report."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from configs import vae as vae_config
from gen import data as data_lib
from gen.evaluate import fidelity
from gen.families import classifier as classifier_lib


def _scipy_frechet(a, b):
  """The textbook formula with scipy's general matrix square root."""
  mean_a, mean_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root = scipy.linalg.sqrtm(cov_a @ cov_b).real
  return np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * root)


def test_frechet_distance_matches_scipy_on_gaussian_features():
  rng = np.random.default_rng(0)
  mixing = rng.standard_normal((16, 16))
  a = rng.standard_normal((2000, 16)) @ mixing
  b = rng.standard_normal((1500, 16)) @ (mixing * 0.7) + 0.5
  ours = fidelity.frechet_distance(*fidelity.feature_statistics(a),
                                   *fidelity.feature_statistics(b))
  np.testing.assert_allclose(ours, _scipy_frechet(a, b), rtol=1e-8)
  # 1-D closed form: (m1 - m2)^2 + (s1 - s2)^2.
  np.testing.assert_allclose(fidelity.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]),
                             4.0 + 1.0, rtol=1e-12)
  assert abs(fidelity.frechet_distance(*fidelity.feature_statistics(a),
                                       *fidelity.feature_statistics(a))) < 1e-6


def test_kid_is_unbiased_on_identical_distributions():
  """Over independent pairs of sets from one distribution, KID averages to 0;
  the plug-in (biased) MMD^2, diagonal included, does not."""
  rng = np.random.default_rng(1)
  unbiased, biased = [], []
  for _ in range(40):
    a, b = rng.standard_normal((100, 8)), rng.standard_normal((100, 8))
    unbiased.append(fidelity.kernel_distance(a, b, num_subsets=1, subset_size=100)[0])
    kernel = lambda x, y: (x @ y.T / 8 + 1.0) ** 3
    biased.append(kernel(a, a).mean() + kernel(b, b).mean() - 2 * kernel(a, b).mean())
  standard_error = np.std(unbiased) / np.sqrt(len(unbiased))
  assert abs(np.mean(unbiased)) < 3 * standard_error
  assert np.mean(biased) > np.mean(unbiased) + 6 * standard_error
  shifted = fidelity.kernel_distance(rng.standard_normal((100, 8)),
                                     rng.standard_normal((100, 8)) + 0.5, num_subsets=5)
  assert shifted[0] > 10 * standard_error


def test_precision_recall_separate_realism_from_coverage():
  rng = np.random.default_rng(2)
  real = rng.standard_normal((600, 4))
  same = rng.standard_normal((600, 4))
  precision, recall = fidelity.precision_recall(real, same)
  assert precision > 0.6 and recall > 0.6
  # Mode collapse: realistic samples, all near one real point.
  collapsed = real[0] + 0.01 * rng.standard_normal((600, 4))
  precision, recall = fidelity.precision_recall(real, collapsed)
  assert precision > 0.95 and recall < 0.05
  # Unrealistic samples: far from the data.
  precision, _ = fidelity.precision_recall(real, same + 10.0)
  assert precision == 0.0


def test_histogram_and_total_variation():
  shares = fidelity.histogram([0, 0, 1, 3], 4)
  np.testing.assert_allclose(shares, [0.5, 0.25, 0.0, 0.25])
  assert fidelity.total_variation(shares, [0.25] * 4) == pytest.approx(0.25)


def test_to_pixels_keeps_nonfinite_samples_as_zero():
  pixels = data_lib.to_pixels(np.array([[np.nan, 1.2], [0.5, -np.inf]]))
  np.testing.assert_array_equal(pixels, [[0, 255], [128, 0]])


# conftest.digits_classifier holds out as many: 300 unseen images form the baseline below.
_VALIDATION_SIZE = 400


def _digits_dataset():
  config = vae_config.get_config("digits")
  config.data.validation_size = _VALIDATION_SIZE
  return config, data_lib.load(config)


def test_sample_quality_ranks_real_images_above_a_constant_and_counts_nan(digits_classifier):
  config, dataset = _digits_dataset()
  config.eval.fid_samples = 300
  classifier = classifier_lib.ClassifierFeatures(digits_classifier, dataset)
  train = jnp.asarray(dataset.train_source.take(dataset.train.rows[-600:])["x"] / 255.0,
                      jnp.float32)

  def real_images(images, rng, count):  # a "model" that memorized other train images
    return images[jax.random.choice(rng, images.shape[0], (count,), replace=False)]

  real = fidelity.sample_quality(real_images, train, dataset, config, classifier)
  constant = fidelity.sample_quality(
      lambda mean, rng, count: jnp.broadcast_to(mean, (count, *mean.shape)),
      train.mean(0), dataset, config, classifier)
  nan = fidelity.sample_quality(
      lambda shape_of, rng, count: jnp.full((count, *shape_of.shape), jnp.nan),
      train[0], dataset, config, classifier)
  assert real["num_samples"] == 300 and real["nonfinite_samples"] == 0
  # Train images are as far from the test set as the baseline (the same kind of sample).
  assert real["fid"] < 3 * real["fid_val_vs_test"] + 1.0
  assert constant["fid"] > 10 * real["fid"]
  assert real["recall"] > 0.5 and constant["recall"] < 0.05
  assert real["class_histogram"]["classes_covered"] == 10
  assert constant["class_histogram"]["classes_covered"] <= 2
  assert real["class_histogram"]["total_variation_to_test"] < 0.2
  # NaN samples are counted and scored (as black images), not dropped.
  assert nan["nonfinite_samples"] == 300 and nan["num_samples"] == 300
  assert np.isfinite(nan["fid"]) and nan["fid"] > 10 * real["fid"]


def test_missing_classifier_is_skipped_by_default_and_an_error_when_named(tmp_path,
                                                                          monkeypatch):
  config, dataset = _digits_dataset()
  monkeypatch.setattr(classifier_lib, "default_classifier_dir",
                      lambda name: str(tmp_path / name))
  config.eval.classifier = "auto"
  classifier, why = classifier_lib.find_classifier(config, dataset)
  assert classifier is None and "experiments/train_classifier.py" in why
  assert "configs/classifier.py:digits" in why
  config.eval.classifier = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="config.eval.classifier"):
    classifier_lib.find_classifier(config, dataset)


def test_classifier_of_other_data_is_refused(digits_classifier):
  config, dataset = _digits_dataset()
  dataset.info = data_lib.SourceInfo("fashion_mnist", (28, 28, 1), "image", 10)
  with pytest.raises(ValueError, match="trained on 'digits'"):
    classifier_lib.ClassifierFeatures(digits_classifier, dataset)
