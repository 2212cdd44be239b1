"""On-device preprocessing: binarization, dequantization, scaling."""

import jax
import jax.numpy as jnp
import numpy as np

from gen.data.preprocess import preprocess


def _pixels(n=256):
  return jnp.tile(jnp.arange(256, dtype=jnp.uint8)[None, :, None, None], (n, 1, 1, 1))


def test_unit_and_symmetric_scaling():
  x = _pixels(2)
  unit = preprocess(x, jnp.arange(2), jax.random.PRNGKey(0), kind="image")
  np.testing.assert_allclose(unit[0, :, 0, 0], np.arange(256) / 255.0, rtol=1e-6)
  sym = preprocess(x, jnp.arange(2), jax.random.PRNGKey(0), kind="image", scale="symmetric")
  np.testing.assert_allclose(sym[0, [0, 255], 0, 0], [-1.0, 1.0], atol=1e-6)


def test_dequantized_pixels_stay_in_their_bin():
  x = _pixels()
  out = preprocess(x, jnp.arange(256), jax.random.PRNGKey(1), kind="image", dequantize=True)
  k = np.arange(256)[None, :, None, None]
  assert np.all(out >= k / 256.0) and np.all(out < (k + 1) / 256.0)
  # The noise is uniform inside the bin: its mean offset is about half a bin.
  offset = np.asarray(out) * 256.0 - k
  assert abs(offset.mean() - 0.5) < 0.01


def test_dynamic_binarization_has_the_pixel_intensity_as_mean():
  x = _pixels(400)
  out = np.asarray(preprocess(x, jnp.arange(400), jax.random.PRNGKey(2), kind="image",
                              binarize="dynamic"))
  assert set(np.unique(out)) <= {0.0, 1.0}
  np.testing.assert_allclose(out.mean(axis=0)[:, 0, 0], np.arange(256) / 255.0, atol=0.08)
  again = preprocess(x, jnp.arange(400), jax.random.PRNGKey(3), kind="image",
                     binarize="dynamic")
  assert not np.array_equal(out, again)  # a fresh draw each step


def test_static_binarization_is_fixed_per_example():
  x = _pixels(4)
  first = preprocess(x, jnp.arange(4), jax.random.PRNGKey(0), kind="image", binarize="static")
  second = preprocess(x, jnp.arange(4), jax.random.PRNGKey(9), kind="image", binarize="static")
  np.testing.assert_array_equal(first, second)  # does not depend on the step's key
  # Same pixels, different examples: different draws.
  assert not np.array_equal(first[0], first[1])


def test_vectors_pass_through():
  points = jnp.array([[0.5, -1.5]], jnp.float32)
  out = preprocess(points, jnp.arange(1), jax.random.PRNGKey(0), kind="vector",
                   dequantize=True, binarize="dynamic")
  np.testing.assert_array_equal(out, points)
