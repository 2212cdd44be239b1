"""Inception-v3 pool features for FID, from user-supplied weights (optional).

The standard FID network is the TF-slim Inception-v3 graph of 2015-12-05 as
ported to PyTorch by pytorch-fid (`pt_inception-2015-12-05-6726825d.pth`).
It is torchvision's Inception-v3 without the auxiliary classifier, except that

  * the pool branch of Mixed_5b/5c/5d (InceptionA), Mixed_6b..6e (InceptionC)
    and Mixed_7b (first InceptionE) is a 3x3/1 average pool that divides by
    the number of *unpadded* pixels in the window (TF's SAME average pool);
  * the pool branch of Mixed_7c (second InceptionE) is a 3x3/1 *max* pool;
  * the classifier has 1008 logits (it is not used for the features);
  * every batch norm has eps = 0.001 and every conv has no bias.

The features are the 2048 channels of the global average pool after Mixed_7c
(before dropout and the classifier), for 299x299 RGB input scaled to [-1, 1].

Nothing here downloads weights or needs PyTorch. The weight file is a `.npz`
whose keys are the PyTorch state-dict names of pytorch-fid's FID Inception
(`Conv2d_1a_3x3.conv.weight`, `Conv2d_1a_3x3.bn.running_mean`,
`Mixed_5b.branch1x1.conv.weight`, ..., `fc.weight`, `fc.bias`) holding arrays in
PyTorch layouts (conv weight [out, in, kh, kw], linear weight [out, in]).
`num_batches_tracked` entries may be present; they are ignored. Where PyTorch
is installed, the `.pth` converts with one line:

  python -c "import torch, numpy as np; sd = torch.load('pt_inception-2015-12-05-6726825d.pth'); np.savez('inception_fid.npz', **{k: v.numpy() for k, v in sd.items()})"

or `python experiments/convert_inception_weights.py --input=... --output=...`,
which also checks the result with `load_params`.

Scores from `load_feature_fn` are close to, but not identical with, published
FIDs: the resize to 299x299 is not TF's (see `_resize`), and a different
framework's convolutions round differently.
"""

from __future__ import annotations

import functools
import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008
BN_EPSILON = 1e-3

# Convolutions in full float32: on GPUs that would otherwise use TF32 the
# features would lose about three decimal digits.
_PRECISION = jax.lax.Precision.HIGHEST


def _pair(v):
  return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class BasicConv2d(nn.Module):
  """Conv (no bias) -> batch norm with stored statistics -> ReLU."""
  features: int
  kernel: int | tuple[int, int]
  stride: int = 1
  padding: int | tuple[int, int] = 0  # symmetric, per spatial axis (PyTorch's)

  @nn.compact
  def __call__(self, x):
    ph, pw = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel), strides=_pair(self.stride),
                padding=((ph, ph), (pw, pw)), use_bias=False,
                precision=_PRECISION, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  # TF's SAME average pool: padded zeros do not count in the mean.
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), (2, 2), "VALID")


class InceptionA(nn.Module):
  """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (Mixed_5b..5d)."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, 1, name="branch1x1")(x)
    b5 = BasicConv2d(48, 1, name="branch5x5_1")(x)
    b5 = BasicConv2d(64, 5, padding=2, name="branch5x5_2")(b5)
    b3 = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
    b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(b3)
    b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_3")(b3)
    bp = BasicConv2d(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """35x35 -> 17x17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 (Mixed_6a)."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, 3, stride=2, name="branch3x3")(x)
    bd = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
    bd = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = BasicConv2d(96, 3, stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block with factorized 7x7 convs (Mixed_6b..6e)."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    b1 = BasicConv2d(192, 1, name="branch1x1")(x)
    b7 = BasicConv2d(c, 1, name="branch7x7_1")(x)
    b7 = BasicConv2d(c, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv2d(c, 1, name="branch7x7dbl_1")(x)
    bd = BasicConv2d(c, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv2d(c, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv2d(c, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv2d(192, 1, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """17x17 -> 8x8 reduction (Mixed_7a)."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, 1, name="branch3x3_1")(x)
    b3 = BasicConv2d(320, 3, stride=2, name="branch3x3_2")(b3)
    b7 = BasicConv2d(192, 1, name="branch7x7x3_1")(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv2d(192, 3, stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block with split 1x3/3x1 convs (Mixed_7b: avg pool, Mixed_7c: max pool)."""
  pool: str  # "avg" (padding not counted) or "max"

  @nn.compact
  def __call__(self, x):
    def split(h, prefix):  # 1x3 and 3x1 side by side
      return jnp.concatenate([
          BasicConv2d(384, (1, 3), padding=(0, 1), name=prefix + "a")(h),
          BasicConv2d(384, (3, 1), padding=(1, 0), name=prefix + "b")(h)], axis=-1)

    b1 = BasicConv2d(320, 1, name="branch1x1")(x)
    b3 = split(BasicConv2d(384, 1, name="branch3x3_1")(x), "branch3x3_2")
    bd = BasicConv2d(448, 1, name="branch3x3dbl_1")(x)
    bd = split(BasicConv2d(384, 3, padding=1, name="branch3x3dbl_2")(bd), "branch3x3dbl_3")
    if self.pool == "avg":
      pooled = _avg_pool_3x3(x)
    elif self.pool == "max":
      pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    else:
      raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
    bp = BasicConv2d(192, 1, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3FID(nn.Module):
  """[n, 299, 299, 3] float32 in [-1, 1] -> [n, 2048] pool features.

  Inference only: batch norm always uses the stored statistics (collection
  "batch_stats"). With `with_logits`, returns (features, [n, 1008] logits);
  the weight file always holds the classifier, and `load_params` returns it,
  so its variables also work (unused) with the default module.
  """
  with_logits: bool = False

  @nn.compact
  def __call__(self, x):
    x = BasicConv2d(32, 3, stride=2, name="Conv2d_1a_3x3")(x)      # 149x149
    x = BasicConv2d(32, 3, name="Conv2d_2a_3x3")(x)                # 147x147
    x = BasicConv2d(64, 3, padding=1, name="Conv2d_2b_3x3")(x)     # 147x147
    x = _max_pool_3x3_s2(x)                                        # 73x73
    x = BasicConv2d(80, 1, name="Conv2d_3b_1x1")(x)                # 73x73
    x = BasicConv2d(192, 3, name="Conv2d_4a_3x3")(x)               # 71x71
    x = _max_pool_3x3_s2(x)                                        # 35x35
    x = InceptionA(32, name="Mixed_5b")(x)                         # 256 ch
    x = InceptionA(64, name="Mixed_5c")(x)                         # 288 ch
    x = InceptionA(64, name="Mixed_5d")(x)                         # 288 ch
    x = InceptionB(name="Mixed_6a")(x)                             # 17x17x768
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160),
                     ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)                             # 8x8x1280
    x = InceptionE("avg", name="Mixed_7b")(x)                      # 8x8x2048
    x = InceptionE("max", name="Mixed_7c")(x)                      # 8x8x2048
    features = jnp.mean(x, axis=(1, 2))
    if not self.with_logits:
      return features
    return features, nn.Dense(NUM_CLASSES, precision=_PRECISION, name="fc")(features)


# ---------------------------------------------------------------------------
# PyTorch state dict <-> Flax variables.
#
# A Flax leaf at (collection, *modules, leaf) is the PyTorch entry
# "<modules joined by '.'>.<torch leaf>"; the module names above are
# PyTorch's attribute names, so only the leaf name and the layout change.

_LEAF_NAMES = {  # (collection, Flax leaf) -> PyTorch leaf
    ("params", "kernel"): "weight",        # conv and fc
    ("params", "scale"): "weight",         # batch norm gamma
    ("params", "bias"): "bias",            # batch norm beta and fc bias
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def _to_torch_layout(a):
  if a.ndim == 4:   # HWIO -> OIHW
    return np.transpose(a, (3, 2, 0, 1))
  if a.ndim == 2:   # [in, out] -> [out, in]
    return a.T
  return a


def _from_torch_layout(a):
  if a.ndim == 4:   # OIHW -> HWIO
    return np.transpose(a, (2, 3, 1, 0))
  if a.ndim == 2:
    return a.T
  return a


def _torch_name(collection: str, path: tuple[str, ...]) -> str:
  return ".".join(path[:-1] + (_LEAF_NAMES[(collection, path[-1])],))


@functools.lru_cache(maxsize=1)
def _flax_shapes():
  """{(collection, path): Flax shape} of InceptionV3FID(with_logits=True)."""
  x = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  tree = jax.eval_shape(InceptionV3FID(with_logits=True).init, jax.random.key(0), x)
  shapes = {}
  for key_path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    names = tuple(k.key for k in key_path)
    shapes[(names[0], names[1:])] = tuple(leaf.shape)
  return shapes


def expected_state_dict_shapes() -> dict[str, tuple[int, ...]]:
  """Every PyTorch state-dict key of the FID Inception -> its PyTorch shape.

  Derived from `InceptionV3FID`'s own variables (so it cannot drift from the
  network), without `num_batches_tracked` (optional, ignored on load).
  """
  shapes = {}
  for (collection, path), shape in _flax_shapes().items():
    shape = tuple(_to_torch_layout(np.empty(shape, np.int8)).shape)
    shapes[_torch_name(collection, path)] = shape
  return shapes


def _set(tree, keys, value):
  for k in keys[:-1]:
    tree = tree.setdefault(k, {})
  tree[keys[-1]] = value


def params_from_state_dict(state_dict, source: str = "<state dict>"):
  """PyTorch-named, PyTorch-layout arrays -> {"params": ..., "batch_stats": ...}.

  Raises ValueError naming `source` and the first few missing keys, keys whose
  shape differs, or unexpected keys (another Inception's weights, say
  torchvision's with its auxiliary classifier, fail here instead of loading).
  """
  expected = expected_state_dict_shapes()
  given = {k: v for k, v in state_dict.items() if not k.endswith(".num_batches_tracked")}
  missing = [k for k in expected if k not in given]
  wrong = [f"{k} {tuple(np.shape(given[k]))} (expected {expected[k]})"
           for k in expected if k in given and tuple(np.shape(given[k])) != expected[k]]
  extra = [k for k in given if k not in expected]
  problems = []
  for what, items in (("missing keys", missing), ("wrong shapes", wrong),
                      ("unexpected keys", extra)):
    if items:
      more = f" and {len(items) - 5} more" if len(items) > 5 else ""
      problems.append(f"{len(items)} {what}: {', '.join(items[:5])}{more}")
  if problems:
    raise ValueError(f"{source} is not a pytorch-fid FID Inception state dict "
                     f"({len(expected)} keys expected): " + "; ".join(problems))
  variables = {}
  for collection, path in _flax_shapes():
    array = np.asarray(given[_torch_name(collection, path)], np.float32)
    _set(variables, (collection,) + path, _from_torch_layout(array))
  return variables


def load_params(path: str):
  """Reads a `.npz` state dict (module docstring) into Flax variables.

  Returns {"params": ..., "batch_stats": ...} (numpy float32, Flax layouts:
  conv kernels HWIO, fc kernel [2048, 1008]) for `InceptionV3FID().apply`.
  Raises ValueError naming the file and the first missing/mismatched keys.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"Inception weight file {path} does not exist; see "
                            "gen/evaluate/inception.py for how to make it.")
  with np.load(path) as npz:
    state_dict = {k: npz[k] for k in npz.files}
  return params_from_state_dict(state_dict, source=path)


def _resize(images):
  """[b, h, w, 3] -> [b, 299, 299, 3], bilinear.

  Half-pixel centres without antialiasing: the same weights as PyTorch's
  F.interpolate(mode="bilinear", align_corners=False), which pytorch-fid uses,
  up to float rounding. It does NOT exactly match the original TF FID graph,
  whose legacy ResizeBilinear samples at dst * in / out (no half-pixel
  offset), so scores are close to, but not identical with, published FIDs.
  """
  b = images.shape[0]
  return jax.image.resize(images, (b, INPUT_SIZE, INPUT_SIZE, 3), "bilinear",
                          antialias=False)


def load_feature_fn(path: str, batch_size: int = 100) -> Callable[[np.ndarray], np.ndarray]:
  """Inception pool features of images, with weights from `path` (`load_params`).

  Returns f(images) -> float64 [n, 2048], for images [n, h, w, c] float in
  [0, 1] with c = 1 (grey, repeated to RGB) or 3. Images are resized to
  299x299 (`_resize`), scaled to [-1, 1] and run through the jitted network in
  batches of min(batch_size, n); the last batch is zero-padded so that every
  call compiles once per image size.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  variables = jax.device_put(load_params(path))
  model = InceptionV3FID()

  @jax.jit
  def features(variables, images):
    return model.apply(variables, 2.0 * _resize(images) - 1.0)

  def feature_fn(images) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ValueError(f"expected images [n, h, w, 1 or 3], got shape {images.shape}")
    if images.shape[-1] == 1:
      images = np.repeat(images, 3, axis=-1)
    n = images.shape[0]
    out = np.empty((n, FEATURE_DIM), np.float64)
    if n == 0:
      return out
    size = min(batch_size, n)
    for start in range(0, n, size):
      batch = images[start:start + size]
      k = batch.shape[0]
      if k < size:
        batch = np.pad(batch, ((0, size - k), (0, 0), (0, 0), (0, 0)))
      out[start:start + k] = np.asarray(features(variables, batch))[:k]
    return out

  return feature_fn
