"""Layers whose fast forms must compute exactly what the plain forms compute."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen.models import layers


@pytest.mark.parametrize("impl", layers.CONV_TRANSPOSE_IMPLS)
@pytest.mark.parametrize("kernel_size,stride,size", [(3, 2, 7), (4, 2, 5), (5, 2, 6),
                                                      (3, 3, 4), (2, 2, 3), (1, 2, 4)])
def test_conv_transpose_matches_flax(impl, kernel_size, stride, size):
  x = jax.random.normal(jax.random.PRNGKey(1), (3, size, size + 1, 5))
  reference = nn.ConvTranspose(6, (kernel_size, kernel_size), strides=(stride, stride),
                               padding="SAME")
  params = reference.init(jax.random.PRNGKey(0), x)
  # A non-zero bias, so that it is checked too.
  params = jax.tree_util.tree_map(
      lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
  ours = layers.ConvTranspose(6, kernel_size, stride, impl=impl)
  assert jax.tree_util.tree_structure(ours.init(jax.random.PRNGKey(0), x)) == \
      jax.tree_util.tree_structure(params)
  # Compiled, here and below: op by op, each primitive compiles on its own.
  expected = jax.jit(reference.apply)(params, x)
  got = jax.jit(ours.apply)(params, x)
  assert got.shape == (3, size * stride, (size + 1) * stride, 6)
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
  # Gradients agree as well: training takes the same path whichever form runs.
  loss = lambda module: lambda p: jnp.sum(jnp.sin(module.apply(p, x)))
  gradients = lambda module: jax.tree_util.tree_leaves(jax.jit(jax.grad(loss(module)))(params))
  for got_grad, expected_grad in zip(gradients(ours), gradients(reference)):
    np.testing.assert_allclose(got_grad, expected_grad, atol=1e-4, rtol=1e-4)


def test_unknown_impl_is_named():
  with pytest.raises(ValueError, match="'fft'.*phases, subpixel, dilated"):
    layers.ConvTranspose(4, impl="fft").init(jax.random.PRNGKey(0), jnp.ones((1, 3, 3, 2)))



def test_auto_impl_computes_the_platform_form():
  """A family built straight from a config (no families.make, no loop) still
  runs: "auto" stands for this backend's form, with the same parameters."""
  from configs import conv_vae
  from gen import platform
  from gen.data import SourceInfo
  from gen.families.vae import VAE
  info = SourceInfo("digits", (8, 8, 1), "image")
  config = conv_vae.get_config()
  assert config.model.conv_transpose_impl == "auto"
  auto = VAE(config, info)
  chosen = platform.resolve(config)[0].model.conv_transpose_impl
  config.model.conv_transpose_impl = chosen
  explicit = VAE(config, info)
  params = jax.jit(auto.init_params)(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 8, 8, 1))
  mean, _ = jax.jit(auto.encode)(params, x)
  np.testing.assert_array_equal(jax.jit(auto.decode)(params, mean),
                                jax.jit(explicit.decode)(params, mean))


@pytest.mark.parametrize("shape, groups, dtype", [
    ((3, 14, 14, 48), 8, jnp.float32), ((2, 7, 7, 64), 32, jnp.float32),
    ((2, 5, 6, 32), 8, jnp.bfloat16), ((4, 16), 4, jnp.float32)])
def test_group_norm_is_flax_group_norm(shape, groups, dtype):
  # Same parameters, outputs and gradients as nn.GroupNorm (checkpoints move
  # between them), on data far from zero mean and unit scale.
  x = (jax.random.normal(jax.random.PRNGKey(0), shape) * 3 + 1).astype(dtype)
  ours, flax_layer = layers.GroupNorm(groups, dtype=dtype), nn.GroupNorm(groups, dtype=dtype)
  params = flax_layer.init(jax.random.PRNGKey(1), x)
  assert jax.tree_util.tree_structure(ours.init(jax.random.PRNGKey(1), x)) == \
      jax.tree_util.tree_structure(params)
  params = jax.tree_util.tree_map(
      lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
  tolerance = 1e-2 if dtype == jnp.bfloat16 else 1e-5
  # Compiled: op by op, each primitive compiles on its own.
  got = jax.jit(ours.apply)(params, x)
  np.testing.assert_allclose(np.asarray(got, np.float32),
                             np.asarray(jax.jit(flax_layer.apply)(params, x), np.float32),
                             atol=tolerance, rtol=tolerance)
  assert got.dtype == dtype

  def gradients(layer):
    return jax.jit(jax.grad(
        lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x).astype(jnp.float32))), (0, 1)))(params, x)
  for a, b in zip(jax.tree_util.tree_leaves(gradients(ours)),
                  jax.tree_util.tree_leaves(gradients(flax_layer))):
    scale = float(jnp.max(jnp.abs(b.astype(jnp.float32))))
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               atol=tolerance * max(scale, 1.0) * 10)


def test_group_norm_rejects_channels_that_do_not_split():
  with pytest.raises(ValueError, match="48 channels do not split into 5 groups"):
    layers.GroupNorm(5).init(jax.random.PRNGKey(0), jnp.ones((1, 2, 2, 48)))
