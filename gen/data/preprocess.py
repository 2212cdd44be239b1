"""Turns raw batches into model inputs, on the device, inside the jitted step,
and samples back into pixels.

Running it inside the step keeps host-to-device transfers at uint8 size and
lets the random parts (dynamic binarization, dequantization noise) draw from
the step's own key, so they are reproducible and resume exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SCALES = ("unit", "symmetric")
BINARIZE = ("none", "dynamic", "static")

# Static binarization is one fixed draw per example, the same for every run and
# seed, so that a "statically binarized" dataset means one dataset.
_STATIC_BINARIZATION_SEED = 20170101


def example_keys(rng, uid):
  """[batch] keys, one per example id: fold_in(rng, uid).

  Noise drawn from these belongs to the example, not to its place in a batch,
  so an evaluation gives the same numbers at any batch size.
  """
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(uid)


def preprocess(x, uid, rng, *, kind: str, scale: str = "unit", binarize: str = "none",
               dequantize: bool = False, per_example: bool = False):
  """Raw examples -> float32 model inputs.

  Args:
    x: [batch, *shape]; uint8 pixels in [0, 255] for kind="image", float32
      points for kind="vector" (returned as they are).
    uid: [batch] int32, a unique id of each example (for static binarization).
    rng: key for the random parts; with per_example=True, [batch] keys, one
      per example (`example_keys`), as evaluation uses.
    kind, scale, binarize, dequantize: see `config.data` in configs/default.py.

  Returns:
    [batch, *shape] float32: binarized images in {0, 1} (or {-1, 1}); else
    pixels / 255, or (pixels + u) / 256 with u ~ U[0, 1) when dequantizing,
    mapped to [-1, 1] when scale="symmetric". `to_pixels` inverts it.
  """
  if kind != "image":
    return x.astype(jnp.float32)
  pixels = x.astype(jnp.float32)

  def draw(sampler, shape_of):
    if per_example:
      return jax.vmap(lambda key, p: sampler(key, p))(rng, shape_of)
    return sampler(rng, shape_of)

  if binarize == "dynamic":
    out = draw(lambda key, p: jax.random.bernoulli(key, p / 255.0), pixels)
    out = out.astype(jnp.float32)
  elif binarize == "static":
    base = jax.random.PRNGKey(_STATIC_BINARIZATION_SEED)
    keys = example_keys(base, uid)
    out = jax.vmap(lambda k, p: jax.random.bernoulli(k, p / 255.0))(keys, pixels)
    out = out.astype(jnp.float32)
  elif dequantize:
    out = (pixels + draw(lambda key, p: jax.random.uniform(key, p.shape), pixels)) / 256.0
  else:
    out = pixels / 255.0
  if scale == "symmetric":
    out = out * 2.0 - 1.0
  return out


def to_unit(x, scale: str):
  """Model-space images -> [0, 1], to compare and draw them the same way."""
  return (x + 1.0) / 2.0 if scale == "symmetric" else x


def to_pixels(images, dequantized: bool = False) -> np.ndarray:
  """[n, h, w, c] images in [0, 1] -> uint8 pixels, the inverse of `preprocess`.

  Pixels p became p / 255 (round(255 y) brings them back) or, dequantized,
  (p + u) / 256 with u in [0, 1), whose inverse is floor(256 y): rounding
  255 y instead would turn half of the dequantized 0 pixels into 1.
  Non-finite values become 0 (and are counted by the caller); values
  outside [0, 1] are clipped.
  """
  images = np.nan_to_num(np.asarray(images, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
  images = np.clip(images, 0.0, 1.0)
  if dequantized:
    return np.minimum(np.floor(images * 256.0), 255.0).astype(np.uint8)
  return np.round(images * 255.0).astype(np.uint8)
