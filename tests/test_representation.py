"""Representation metrics: linear probe accuracy and k-means NMI on codes with known answers."""

import numpy as np
import pytest

from gen.evaluate import representation

NUM_CLASSES = 4


def _blobs(count, spread, seed, dims=16):
  """Codes [count, dims]: one Gaussian blob per label, centres `spread` apart per axis."""
  rng = np.random.default_rng(seed)
  centres = np.random.default_rng(100).standard_normal((NUM_CLASSES, dims)) * spread
  labels = rng.integers(0, NUM_CLASSES, count)
  return centres[labels] + rng.standard_normal((count, dims)), labels


def test_separated_blobs_are_read_out_perfectly():
  train_codes, train_labels = _blobs(1000, spread=10.0, seed=0)
  test_codes, test_labels = _blobs(500, spread=10.0, seed=1)
  assert representation.linear_probe_accuracy(train_codes, train_labels,
                                               test_codes, test_labels) == 1.0
  assert representation.kmeans_nmi(test_codes, test_labels) > 0.99


def test_codes_of_any_trailing_shape_are_flattened():
  train_codes, train_labels = _blobs(400, spread=10.0, seed=0)
  test_codes, test_labels = _blobs(200, spread=10.0, seed=1)
  as_images = lambda codes: codes.reshape(len(codes), 2, 4, 2)
  assert representation.linear_probe_accuracy(as_images(train_codes), train_labels,
                                               as_images(test_codes), test_labels) == 1.0
  assert representation.kmeans_nmi(as_images(test_codes), test_labels) == pytest.approx(
      representation.kmeans_nmi(test_codes, test_labels))


def test_codes_independent_of_labels_give_chance():
  rng = np.random.default_rng(2)
  num_test = 2000
  train_codes, test_codes = rng.standard_normal((2000, 16)), rng.standard_normal((num_test, 16))
  train_labels = rng.integers(0, NUM_CLASSES, 2000)
  test_labels = rng.integers(0, NUM_CLASSES, num_test)
  accuracy = representation.linear_probe_accuracy(train_codes, train_labels,
                                                  test_codes, test_labels)
  # Test labels are uniform and independent of everything the probe sees, so
  # the number correct is Binomial(num_test, 1/k) whatever the probe predicts:
  # sd = sqrt(1/4 * 3/4 / 2000) ~ 0.0097; 4 sd ~ 0.039 (a false alarm < 1e-4).
  chance = 1 / NUM_CLASSES
  assert abs(accuracy - chance) < 4 * np.sqrt(chance * (1 - chance) / num_test)
  # Plug-in MI of independent variables is biased up by about
  # (k-1)^2 / (2 n) = 9 / 4000 nats, against entropies of ln 4 ~ 1.39: NMI ~ 0.002.
  assert representation.kmeans_nmi(test_codes, test_labels) < 0.05


def test_nmi_ignores_how_labels_are_numbered():
  # Overlapping blobs, so the NMI is strictly between 0 and 1 and a
  # numbering-sensitive score (e.g. cluster id == label accuracy) would move.
  codes, labels = _blobs(800, spread=0.5, seed=3)
  nmi = representation.kmeans_nmi(codes, labels)
  assert 0.1 < nmi < 0.9
  renamed = np.array([2, 0, 3, 1])[labels] + 10
  assert representation.kmeans_nmi(codes, renamed) == pytest.approx(nmi, abs=1e-12)
  # More clusters than labels is allowed and changes the answer.
  assert representation.kmeans_nmi(codes, labels, num_clusters=8) != pytest.approx(nmi)


def test_non_finite_codes_raise_naming_the_row_count():
  codes, labels = _blobs(100, spread=10.0, seed=4)
  codes[3, 0] = np.nan
  codes[5, :2] = np.nan  # two NaNs, one row
  codes[7, 4] = np.inf
  with pytest.raises(ValueError, match=r"\b3 of 100 rows\b"):
    representation.kmeans_nmi(codes, labels)
  with pytest.raises(ValueError, match=r"test_codes: 3 of 100 rows"):
    representation.linear_probe_accuracy(_blobs(100, 10.0, 5)[0], labels, codes, labels)


def test_rejects_mismatched_labels():
  codes, labels = _blobs(50, spread=10.0, seed=6)
  with pytest.raises(ValueError, match="labels"):
    representation.kmeans_nmi(codes, labels[:-1])
