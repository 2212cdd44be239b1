"""Turns raw batches into model inputs, on the device, inside the jitted step.

Running it inside the step keeps host-to-device transfers at uint8 size and
lets the random parts (dynamic binarization, dequantization noise) draw from
the step's own key, so they are reproducible and resume exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SCALES = ("unit", "symmetric")
BINARIZE = ("none", "dynamic", "static")

# Static binarization is one fixed draw per example, the same for every run and
# seed, so that a "statically binarized" dataset means one dataset.
_STATIC_BINARIZATION_SEED = 20170101


def preprocess(x, uid, rng, *, kind: str, scale: str = "unit", binarize: str = "none",
               dequantize: bool = False):
  """Raw examples -> float32 model inputs.

  Args:
    x: [batch, *shape]; uint8 pixels in [0, 255] for kind="image", float32
      points for kind="vector" (returned as they are).
    uid: [batch] int32, a unique id of each example (for static binarization).
    rng: key for the random parts.
    kind, scale, binarize, dequantize: see `config.data` in configs/default.py.

  Returns:
    [batch, *shape] float32: binarized images in {0, 1} (or {-1, 1}); else
    pixels / 255, or (pixels + u) / 256 with u ~ U[0, 1) when dequantizing,
    mapped to [-1, 1] when scale="symmetric".
  """
  if kind != "image":
    return x.astype(jnp.float32)
  pixels = x.astype(jnp.float32)
  if binarize == "dynamic":
    out = jax.random.bernoulli(rng, pixels / 255.0).astype(jnp.float32)
  elif binarize == "static":
    base = jax.random.PRNGKey(_STATIC_BINARIZATION_SEED)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(uid)
    out = jax.vmap(lambda k, p: jax.random.bernoulli(k, p / 255.0))(keys, pixels)
    out = out.astype(jnp.float32)
  elif dequantize:
    out = (pixels + jax.random.uniform(rng, pixels.shape)) / 256.0
  else:
    out = pixels / 255.0
  if scale == "symmetric":
    out = out * 2.0 - 1.0
  return out


def to_unit(x, scale: str):
  """Model-space images -> [0, 1], to compare and draw them the same way."""
  return (x + 1.0) / 2.0 if scale == "symmetric" else x
