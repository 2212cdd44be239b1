"""Autoencoder models and family: shapes, encode/decode, learning to reconstruct."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import autoencoder, conv_autoencoder
from gen import families
from gen.data import SourceInfo
from gen import loop

FASHION = SourceInfo("fashion_mnist", (28, 28, 1), "image", 10)


@pytest.mark.parametrize("make_config", [autoencoder.get_config, conv_autoencoder.get_config])
@pytest.mark.parametrize("bottleneck", [64, 16])
def test_encode_decode_shapes(make_config, bottleneck):
  config = make_config()
  config.model.bottleneck = bottleneck
  family = families.make(config, FASHION)
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (5, 28, 28, 1))
  # Compiled: op by op, each primitive compiles on its own.
  code = jax.jit(family.encode)(params, x)
  assert code.shape == (5, bottleneck)
  recon = jax.jit(family.reconstruct)(params, x)
  assert recon.shape == x.shape
  assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0  # sigmoid output


def test_dense_autoencoder_has_the_course_size():
  family = families.make(autoencoder.get_config(), FASHION)
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))
  count = sum(x.size for x in jax.tree_util.tree_leaves(params))
  # 784*128+128 + 128*64+64 + 64*128+128 + 128*784+784: "about 200K parameters".
  assert count == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 128 + 128 + 128 * 784 + 784


def test_conv_autoencoder_rejects_sizes_it_cannot_halve():
  config = conv_autoencoder.get_config()
  config.model.features = (8, 8, 8)  # 28 is not divisible by 8
  family = families.make(config, FASHION)
  with pytest.raises(ValueError, match=r"config.model.features=\(8, 8, 8\).*divisible by 8"):
    jax.jit(family.init_params)(jax.random.PRNGKey(0))


def test_conv_transpose_form_is_a_checked_setting():
  config = conv_autoencoder.get_config()
  config.model.conv_transpose_impl = "dilated"
  dilated = jax.jit(families.make(config, FASHION).init_params)(jax.random.PRNGKey(0))
  config.model.conv_transpose_impl = "phases"
  phases = jax.jit(families.make(config, FASHION).init_params)(jax.random.PRNGKey(0))
  # The forms share parameters, so a checkpoint of one loads into the other.
  assert jax.tree_util.tree_structure(dilated) == jax.tree_util.tree_structure(phases)
  config.model.conv_transpose_impl = "fft"
  family = families.make(config, FASHION)
  with pytest.raises(ValueError, match=r"config.model.conv_transpose_impl='fft'.*phases"):
    jax.jit(family.init_params)(jax.random.PRNGKey(0))


@pytest.mark.parametrize("make_config,model_overrides", [
    (autoencoder.get_config, {"hidden_sizes": (64,), "bottleneck": 16}),
    (conv_autoencoder.get_config, {"features": (16, 32), "bottleneck": 16}),
])
def test_trained_autoencoder_beats_the_mean_image(request, tmp_path, make_config,
                                                  model_overrides):
  """Test reconstruction MSE after training is well below predicting the mean image."""
  if make_config is conv_autoencoder.get_config:  # 600 conv steps: 17 s at level 0, 6 s
    request.getfixturevalue("fully_optimized_steps")
  config = make_config()
  config.data.name = "digits"
  config.data.validation_size = 200
  for key, value in model_overrides.items():
    config.model[key] = value
  # 8x8 images: compiling unrolled steps would cost more than the loop saves.
  config.train.update(batch_size=64, num_steps=600, eval_every=300, log_every=100,
                      steps_per_call=100, unroll_steps=1)
  config.checkpoint.every_steps = 600
  config.eval.update(batch_size=120, num_images=8)
  config.optimizer.learning_rate = 3e-3
  # Two devices, still data-parallel: 600 steps of 8 small shards each cost
  # twice the time on this 2-core CPU.
  results = loop.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:2])

  from gen import data
  dataset = data.load(config)
  train = dataset.train_source.take(dataset.train.rows)["x"] / 255.0
  test = dataset.test_source.take(dataset.test_rows)["x"] / 255.0
  mean_image_mse = float(np.mean((test - train.mean(axis=0)) ** 2))
  assert results["test"]["mse"] < 0.5 * mean_image_mse, (results["test"], mean_image_mse)
