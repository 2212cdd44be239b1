"""Bits per dimension that mean the same thing for every family.

Every likelihood number is brought back to one space before it is reported:
8-bit pixel values, where a pixel's value v lies in [0, 256) after uniform
dequantization (v = p + u, p in {0..255}, u ~ U[0, 1)). A density there and a
probability mass on the integers p are in the same units, because each
integer owns a bin of width 1:

  * a discrete model (a VAE with a discretized logistic decoder) gives
    log P(p) directly: no change of variables;
  * a continuous model of preprocessed data x = f(v) (scaling to [0, 1],
    a logit, ...) gives log p_x(x); the density of v is
    log p_v(v) = log p_x(f(v)) + log |det df/dv|, the sum of the log-Jacobians
    of every preprocessing step. Its expectation over u is a lower bound on
    the discrete log P(p) (Theis et al., 2016), so a flow's dequantized
    bits/dim are exact for the dequantized data and never flatter the model.

Then bits/dim = -log p / (D ln 2) with D the number of pixel values.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

# 8-bit data: 256 values per dimension.
NUM_PIXEL_VALUES = 256


def bits_per_dim(log_likelihood, num_dims: int, log_det=0.0):
  """-log p / (D ln 2) in the space of 8-bit pixel values.

  Args:
    log_likelihood: [batch] nats: log P(p) of a discrete model, or log p_x(x)
      of a continuous model of preprocessed data x = f(v).
    num_dims: D, values per example (28 * 28 for Fashion-MNIST).
    log_det: [batch] or scalar, log |det df/dv| summed over every
      preprocessing step between pixel values v and the model's x (the
      `*_log_det` functions below); 0 for a discrete model.
  """
  return -(log_likelihood + log_det) / (num_dims * math.log(2.0))


def scale_log_det(num_dims: int, scale: str) -> float:
  """log |det dx/dv| of x = v / 256 ('unit') or 2 v / 256 - 1 ('symmetric')."""
  width = {"unit": 1.0, "symmetric": 2.0}[scale]
  return num_dims * math.log(width / NUM_PIXEL_VALUES)


def logit(y, alpha: float):
  """y in [0, 1] -> (logit(alpha + (1 - 2 alpha) y), log |det| per example).

  The squeeze into [alpha, 1 - alpha] keeps the logit finite at 0 and 1
  (RealNVP's preprocessing, Dinh et al. 2017, section 4.1).
  """
  squeezed = alpha + (1.0 - 2.0 * alpha) * y
  z = jnp.log(squeezed) - jnp.log1p(-squeezed)
  per_value = math.log(1.0 - 2.0 * alpha) - jnp.log(squeezed) - jnp.log1p(-squeezed)
  return z, jnp.sum(per_value.reshape(y.shape[0], -1), axis=1)


def inverse_logit(z, alpha: float):
  """The inverse of `logit`'s map (without the log-determinant)."""
  return (jnp.reciprocal(1.0 + jnp.exp(-z)) - alpha) / (1.0 - 2.0 * alpha)


def standard_normal_log_prob(z):
  """[batch, ...] -> [batch] log N(z; 0, I) summed over all but the first axis."""
  per_value = -0.5 * (z ** 2 + math.log(2.0 * math.pi))
  return jnp.sum(per_value.reshape(z.shape[0], -1), axis=1)
