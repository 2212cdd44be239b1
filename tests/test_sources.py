"""Dataset sources: IDX files, digits, 2-D densities, TFDS by name, and their errors."""

import gzip
import os

import numpy as np
import pytest

from configs import default
from gen.data import sources, toy2d


def _data_config(**overrides):
  config = default.get_config().data
  for key, value in overrides.items():
    config[key] = value
  return config


def _write_idx(path, array, magic):
  header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion_dir(directory, num_train=12, num_test=5):
  rng = np.random.default_rng(0)
  arrays = {}
  for prefix, n in (("train", num_train), ("t10k", num_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    _write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), images, 2051)
    _write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), labels, 2049)
    arrays[prefix] = (images, labels)
  return arrays


def test_idx_files_are_read_exactly(tmp_path):
  arrays = _fake_fashion_dir(str(tmp_path))
  for split, prefix in (("train", "train"), ("test", "t10k")):
    source = sources.load_source(_data_config(dir=str(tmp_path)), split)
    images, labels = arrays[prefix]
    got = source.take(np.arange(len(images)))
    assert source.info.shape == (28, 28, 1) and got["x"].dtype == np.uint8
    np.testing.assert_array_equal(got["x"][..., 0], images)
    np.testing.assert_array_equal(got["label"], labels)


def test_corrupt_idx_files_name_the_file(tmp_path):
  _fake_fashion_dir(str(tmp_path))
  bad = tmp_path / "train-labels-idx1-ubyte.gz"
  _write_idx(bad, np.zeros((3, 2), np.uint8), 2051)  # an images header in a labels file
  with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz: not an IDX labels file"):
    sources.load_source(_data_config(dir=str(tmp_path)), "train")
  with gzip.open(bad, "wb") as f:
    f.write((2049).to_bytes(4, "big") + (12).to_bytes(4, "big") + b"\x00" * 7)
  with pytest.raises(ValueError, match="truncated"):
    sources.load_source(_data_config(dir=str(tmp_path)), "train")


def test_missing_files_name_the_path_and_the_package(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    sources.load_source(_data_config(dir=str(tmp_path)), "train")
  message = str(error.value)
  assert f"config.data.dir='{tmp_path}'" in message
  assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in message
  assert "apt-get install -y dataset-fashion-mnist" in message


@pytest.mark.skipif(not os.path.isdir(sources.FASHION_MNIST_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_is_the_full_dataset():
  train = sources.load_source(_data_config(), "train")
  test = sources.load_source(_data_config(), "test")
  assert (len(train), len(test)) == (60_000, 10_000)
  labels = train.take(np.arange(len(train)))["label"]
  np.testing.assert_array_equal(np.bincount(labels), [6000] * 10)
  pixels = test.take(np.arange(100))["x"]
  assert pixels.shape == (100, 28, 28, 1) and pixels.max() == 255 and pixels.min() == 0


def test_digits_split_is_fixed_stratified_and_disjoint():
  train = sources.load_source(_data_config(name="digits"), "train")
  test = sources.load_source(_data_config(name="digits"), "test")
  assert (len(train), len(test)) == (1437, 360)
  test_batch = test.take(np.arange(len(test)))
  assert test_batch["x"].shape == (360, 8, 8, 1) and test_batch["x"].max() == 255
  # Stratified: every digit has its share (1797 images, ~10% each) in test.
  assert np.all(np.abs(np.bincount(test_batch["label"]) - 36) <= 1)
  again = sources.load_source(_data_config(name="digits"), "test").take(np.arange(360))
  np.testing.assert_array_equal(again["x"], test_batch["x"])
  from sklearn.datasets import load_digits
  raw = np.round(load_digits().images * 255 / 16).astype(np.uint8).reshape(-1, 64)
  train_x = train.take(np.arange(len(train)))["x"].reshape(-1, 64)
  seen = {row.tobytes() for row in raw}
  assert all(row.tobytes() in seen for row in test_batch["x"].reshape(-1, 64))
  # No test image also appears in train (digits has a handful of exact duplicates
  # within itself, so compare by index of the raw table instead of by content).
  assert len(train_x) + len(test_batch["x"]) == len(raw)


def test_unknown_dataset_names_the_valid_ones():
  with pytest.raises(ValueError) as error:
    sources.load_source(_data_config(name="fashion-mnist"), "train")
  for name in ("fashion_mnist", "digits", "toy2d", "TFDS"):
    assert name in str(error.value)


@pytest.mark.parametrize("name", ["ring8", "moons", "checkerboard"])
def test_toy_density_integrates_to_one_and_matches_its_samples(name):
  density = toy2d.make(name)
  # Riemann sum of exp(log_prob) over a grid that holds all the mass.
  # Cells of 0.05, half the narrowest blur's std (0.1): the midpoint sum of a
  # Gaussian blur errs by about exp(-2 pi^2 (std / cell)^2) = 1e-34 relative,
  # and the cell edges fall on the checkerboard's, so its jumps cost nothing.
  edges = np.linspace(-3.5, 3.5, 141)
  centers = (edges[:-1] + edges[1:]) / 2
  xx, yy = np.meshgrid(centers, centers, indexing="ij")
  grid = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
  log_prob = np.concatenate([np.asarray(density.log_prob(chunk), np.float64)
                             for chunk in np.array_split(grid, 8)])
  prob = np.exp(log_prob).reshape(xx.shape)
  cell = (edges[1] - edges[0]) ** 2
  assert abs(prob.sum() * cell - 1.0) < 2e-3
  # The samples' histogram on coarse cells agrees with the integrated density.
  points = density.sample(np.random.default_rng(0), 200_000)
  coarse = np.linspace(-3.5, 3.5, 15)
  counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=[coarse, coarse])
  # 140 fine cells per axis = 14 coarse cells of 10.
  mass = prob.reshape(14, 10, 14, 10).sum(axis=(1, 3)) * cell
  np.testing.assert_allclose(counts / len(points), mass, atol=3e-3)


def test_toy2d_source_is_fixed_and_configurable():
  config = _data_config(name="toy2d")
  config.toy2d.density = "moons"
  config.toy2d.num_train = 300
  first = sources.load_source(config, "train").take(np.arange(300))["x"]
  second = sources.load_source(config, "train").take(np.arange(300))["x"]
  np.testing.assert_array_equal(first, second)
  assert first.dtype == np.float32 and first.shape == (300, 2)
  test = sources.load_source(config, "test")
  assert len(test) == config.toy2d.num_test and not np.allclose(test.take([0])["x"], first[0])
  config.toy2d.density = "spiral"
  with pytest.raises(ValueError, match="config.data.toy2d.density='spiral'.*ring8, moons"):
    sources.load_source(config, "train")
  config.toy2d.density = "checkerboard"
  config.toy2d.noise = 0.1
  with pytest.raises(ValueError, match="config.data.toy2d.noise"):
    sources.load_source(config, "train")


def test_ring8_log_prob_is_the_closed_form():
  density = toy2d.make("ring8", noise=0.5)
  point = np.array([[2.0, 0.0]], np.float32)
  modes = density.modes()
  sq = ((point - modes) ** 2).sum(-1)
  expected = np.log(np.mean(np.exp(-sq / (2 * 0.25)) / (2 * np.pi * 0.25)))
  np.testing.assert_allclose(density.log_prob(point), [expected], rtol=1e-5)


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_dataset_by_name(name, shape):
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=24):
    source = sources.load_source(_data_config(name=name), "train")
    batch = source.take(np.array([3, 0, 7]))
    again = source.take(np.array([3]))
  assert len(source) == 24 and source.info.shape == shape and source.info.num_classes == 10
  assert batch["x"].shape == (3, *shape) and batch["x"].dtype == np.uint8
  assert batch["label"].dtype == np.int32
  np.testing.assert_array_equal(again["x"][0], batch["x"][0])


def test_tfds_failure_is_an_error_not_random_data(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds

  def no_network(*args, **kwargs):
    raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

  monkeypatch.setattr(tfds, "data_source", no_network)
  # The quick reachability check passes; the download itself fails.
  monkeypatch.setattr(sources, "network_problem", lambda: None)
  with pytest.raises(FileNotFoundError, match="TFDS could not load 'mnist'.*storage.googleapis"):
    sources.load_source(_data_config(name="mnist", dir=str(tmp_path)), "train")
