"""GANs: the two phases of a step, the losses, R1, spectral norm, mode coverage, runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gan as gan_config
from gen import families
from gen.data import SourceInfo
from gen.families import gan
from gen.train import sharding, steps
from tests.helpers import check_bfloat16_run, check_stop_and_resume

_DIGITS = SourceInfo("digits", (8, 8, 1), "image", 10)
_POINTS = SourceInfo("toy2d/ring8", (2,), "vector")
_FASHION = SourceInfo("fashion_mnist", (28, 28, 1), "image", 10)


def _family(variant="digits", info=_DIGITS, **model):
  config = gan_config.get_config(variant)
  for key, value in model.items():
    config.model[key] = value
  family = families.make(config, info)
  family.check_config()
  return family


def _changed(before, after) -> list[bool]:
  return [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(before),
                                                   jax.tree_util.tree_leaves(after))]


def test_each_phase_changes_only_its_own_player():
  family = _family()
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))
  tx = family.make_optimizer()
  opt_state = family.init_opt_state(tx, params)
  real = jax.random.uniform(jax.random.PRNGKey(1), (16, 8, 8, 1), minval=-1, maxval=1)

  # Jitted: op by op, each of the phase's primitives would compile on its own.
  discriminator_phase = jax.jit(lambda *args: family.discriminator_phase(*args, tx))
  generator_phase = jax.jit(lambda *args: family.generator_phase(*args, 16, tx))
  disc, disc_opt, _, _, _ = discriminator_phase(params, opt_state, real, jax.random.PRNGKey(2))
  assert all(_changed(params["discriminator"], disc))
  after_disc = {"generator": params["generator"], "discriminator": disc}
  opt_after_disc = {"generator": opt_state["generator"], "discriminator": disc_opt}

  gen, gen_opt, _, _ = generator_phase(after_disc, opt_after_disc, jax.random.PRNGKey(3))
  assert all(_changed(params["generator"], gen))
  # Each phase returns only its own player's parameters and optimizer state.
  assert jax.tree_util.tree_structure(gen) == jax.tree_util.tree_structure(params["generator"])
  assert jax.tree_util.tree_structure(disc) == jax.tree_util.tree_structure(
      params["discriminator"])

  # Through the whole compiled step: D moves by its phase, G by its own.
  state = steps.init_state(family, tx, family.config, sharding.make_mesh(jax.devices()[:1]))
  batch = {"x": np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1), np.uint8),
           "uid": np.arange(32, dtype=np.int32), "label": np.zeros(32, np.int32)}
  new_state, metrics = jax.jit(lambda s, b: family.train_step(s, b, jax.random.PRNGKey(4),
                                                              tx))(state, batch)
  assert bool(metrics["finite"])
  for player in ("generator", "discriminator"):
    assert all(_changed(state.params[player], new_state.params[player]))


def test_generator_phase_leaves_the_discriminator_alone():
  """generator_phase's gradients are with respect to the generator only: a
  discriminator loss term cannot leak into them."""
  family = _family()
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))
  tx = family.make_optimizer()
  opt_state = family.init_opt_state(tx, params)
  # Structures only: traced (eval_shape), not compiled and run.
  _, _, _, grads = jax.eval_shape(
      lambda: family.generator_phase(params, opt_state, jax.random.PRNGKey(1), 8, tx))
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(
      params["generator"])
  _, _, _, _, grads = jax.eval_shape(lambda: family.discriminator_phase(
      params, opt_state, jnp.zeros((8, 8, 8, 1)), jax.random.PRNGKey(1), tx))
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(
      params["discriminator"])


def test_minimax_generator_loss_saturates_and_non_saturating_does_not():
  """Where D confidently rejects a sample (logit -8), the minimax generator
  gets almost no gradient; the non-saturating loss gets nearly full gradient."""
  logit = jnp.array(-8.0)
  minimax = jax.grad(lambda l: gan.generator_loss("minimax", l))(logit)
  non_saturating = jax.grad(lambda l: gan.generator_loss("non_saturating", l))(logit)
  assert abs(minimax) < 1e-3 and abs(non_saturating) > 0.99
  # Both move the logit the same way (up); the minimax loss is log(1 - D).
  assert minimax < 0 and non_saturating < 0
  np.testing.assert_allclose(gan.generator_loss("minimax", jnp.array(0.3)),
                             np.log(1 - 1 / (1 + np.exp(-0.3))), rtol=1e-6)
  # Discriminator: binary cross-entropy with real = 1, fake = 0.
  d = 1 / (1 + np.exp(-np.array([1.5, -0.5])))
  np.testing.assert_allclose(gan.discriminator_loss("minimax", jnp.array(1.5), jnp.array(-0.5)),
                             -np.log(d[0]) - np.log(1 - d[1]), rtol=1e-6)
  np.testing.assert_allclose(gan.discriminator_loss("hinge", jnp.array(0.5), jnp.array(-2.0)),
                             0.5, rtol=1e-6)


def test_r1_penalty_of_a_linear_discriminator_is_its_squared_weight_norm():
  family = _family("toy2d", _POINTS, hidden_sizes=(), r1_weight=1.0)
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))
  tx = family.make_optimizer()
  real = jax.random.normal(jax.random.PRNGKey(1), (32, 2))
  # Compiled: op by op, each primitive of the phase compiles on its own.
  _, _, _, metrics, _ = jax.jit(lambda p, x, key: family.discriminator_phase(
      p, family.init_opt_state(tx, p), x, key, tx))(params, real, jax.random.PRNGKey(2))
  kernel = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params["discriminator"])
            if "kernel" in jax.tree_util.keystr(path)]
  assert len(kernel) == 1  # logit = w.x + b, so grad_x = w
  np.testing.assert_allclose(metrics["r1_penalty"], np.sum(np.square(kernel[0])), rtol=1e-5)


@pytest.mark.parametrize("variant, info", [("", _FASHION), ("toy2d", _POINTS)])
def test_spectral_normalization_carries_its_vector_and_reaches_unit_norm(variant, info):
  """The normalized kernels (4x4x1x64, 4x4x64x128, 6272x1 of the DCGAN; 2x128,
  128x128, 128x128, 128x1 of the MLP) have largest singular value 1 within 1% after 30
  steps of one power iteration each (of 12,000 in a run), because the iteration's vector is
  state carried from step to step (Miyato et al., 2018). Restarted from a
  fixed vector every call, one iteration gave 1.24 (4x4x64x128), 1.32
  (4x4x1x64) and 1.42 (128x128)."""
  family = _family(variant, info, spectral_norm_iterations=1)
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (4, *info.shape))
  step = jax.jit(lambda p: family.discriminate(p, x, update=True)[1])
  for _ in range(30):  # one train step each; from a random u it takes ~20 to converge
    params = dict(params, spectral=step(params))
  kernels = {jax.tree_util.keystr(path[:-1]): np.asarray(leaf).reshape(-1, leaf.shape[-1])
             for path, leaf in jax.tree_util.tree_leaves_with_path(params["discriminator"])
             if jax.tree_util.keystr(path).endswith("['kernel']")}
  sigmas = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params["spectral"]):
    name = jax.tree_util.keystr(path)
    if name.endswith("/kernel/sigma']"):
      layer = name.rsplit("['", 1)[1].split("/")[0]
      sigmas[layer] = float(leaf)
  assert len(sigmas) == len(kernels) >= 3
  for path, kernel in kernels.items():
    layer = path.rsplit("['", 1)[1].rstrip("']")
    top = np.linalg.svd(kernel / sigmas[layer], compute_uv=False)[0]
    np.testing.assert_allclose(top, 1.0, rtol=0.01, err_msg=f"{layer} {kernel.shape}")
  # Gradients flow through the kernel, not through the power iteration's vectors.
  grad = jax.jit(jax.grad(
      lambda d: jnp.sum(family.discriminate(dict(params, discriminator=d), x))))(
          params["discriminator"])
  assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in jax.tree_util.tree_leaves(grad))


def test_mode_coverage_counts_modes_and_far_points():
  modes = np.array([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
  rng = np.random.default_rng(0)
  spread = modes[rng.integers(0, 4, 4000)] + 0.05 * rng.standard_normal((4000, 2))
  one_mode = modes[:1] + 0.05 * rng.standard_normal((4000, 2))
  nowhere = np.zeros((4000, 2))
  assert gan.mode_coverage(spread, modes, 0.05)["modes_covered"] == 4
  collapsed = gan.mode_coverage(one_mode, modes, 0.05)
  assert collapsed["modes_covered"] == 1
  # In 2-D, P(|N(0, s^2 I)| > 3 s) = exp(-9 / 2): the "far" share of a perfect mode.
  expected = np.exp(-4.5)
  assert abs(collapsed["far_share"] - expected) < 3 * np.sqrt(expected * (1 - expected) / 4000)
  assert gan.mode_coverage(nowhere, modes, 0.05)["far_share"] == 1.0
  with_nan = gan.mode_coverage(np.full((10, 2), np.nan), modes, 0.05)
  assert with_nan["far_share"] == 1.0 and with_nan["modes_covered"] == 0


@pytest.mark.parametrize("key, value, message", [
    ("loss", "wasserstein", "config.model.loss"),
    ("disc_steps", 3, "config.model.disc_steps=3"),
    ("r1_weight", -1.0, "config.model.r1_weight"),
])
def test_bad_settings_name_the_key(key, value, message):
  with pytest.raises(ValueError, match=message):
    _family(**{key: value})


def test_dcgan_trains_checkpoints_ema_and_resumes_exactly(tmp_path):
  results = check_stop_and_resume("configs/gan.py:digits", tmp_path,
                                  ["--config.model.disc_steps=2"])
  check_bfloat16_run("configs/gan.py:digits", tmp_path, ["--config.model.disc_steps=2"],
                     results)
  for key in ("d_loss", "g_loss", "d_real", "d_fake"):
    assert np.isfinite(results["test"][key]), results["test"]
  assert results["samples"]["T=1"]["nonfinite"] == 0


@pytest.mark.parametrize("reference_rows", [0, 3])
def test_batch_statistics_norm_is_the_textbook_batch_norm(reference_rows):
  # One pass for both moments must give the two-pass (x - mean)^2 answer,
  # on activations far from zero mean.
  from gen.models.gan import BatchStatisticsNorm
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 5, 5, 6)) * 2 + 3
  layer = BatchStatisticsNorm()
  params = layer.init(jax.random.PRNGKey(1), x)
  params = jax.tree_util.tree_map(
      lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
  stats_of = x[:reference_rows] if reference_rows else x
  mean = np.mean(np.asarray(stats_of, np.float64), axis=(0, 1, 2))
  variance = np.mean((np.asarray(stats_of, np.float64) - mean) ** 2, axis=(0, 1, 2))
  p = params["params"]
  expected = ((np.asarray(x, np.float64) - mean) / np.sqrt(variance + layer.epsilon)
              * np.asarray(p["scale"]) + np.asarray(p["bias"]))
  np.testing.assert_allclose(layer.apply(params, x, reference_rows), expected,
                             rtol=1e-4, atol=1e-4)



def test_batch_statistics_norm_gradient_is_the_textbook_gradient():
  # Autodiff of the one-pass form must be the gradient of the two-pass
  # textbook batch norm.
  from gen.models.gan import BatchStatisticsNorm
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 5, 5, 6)) * 2 + 3
  layer = BatchStatisticsNorm()
  params = layer.init(jax.random.PRNGKey(1), x)
  params = jax.tree_util.tree_map(
      lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), params)

  def textbook(p, x):
    mean = jnp.mean(x, axis=(0, 1, 2))
    variance = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
    return ((x - mean) * jax.lax.rsqrt(variance + layer.epsilon) * p["params"]["scale"]
            + p["params"]["bias"])

  cotangent = jax.random.normal(jax.random.PRNGKey(3), x.shape)
  ours = jax.grad(lambda p, x: jnp.vdot(layer.apply(p, x), cotangent), (0, 1))(params, x)
  expected = jax.grad(lambda p, x: jnp.vdot(textbook(p, x), cotangent), (0, 1))(params, x)
  for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_a_batch_norm_generator_draws_a_batch_in_one_pass():
  """bundle.sample_fn draws image i from keys[i] alone, the images
  sample(params, keys[i], 1) gives, but in one generator pass: drawn one by one,
  each image ran the reference batch of train.batch_size latents again (20 GB
  for 256 conditional Fashion-MNIST images)."""
  from configs import gan as gan_config
  from gen import bundle, families
  from gen.data import SourceInfo
  config = gan_config.get_config("cond_digits")
  family = families.make(config, SourceInfo("digits", (8, 8, 1), "image", 10))
  assert family.model.batch_dependent
  params = family.init_params(jax.random.PRNGKey(0))
  draw = jax.jit(bundle.sample_fn(family))
  keys = jax.random.split(jax.random.PRNGKey(1), 16)
  labels = jnp.arange(16) % 10
  images = draw(params, keys, labels)
  one_by_one = jnp.stack([family.sample(params, key, 1, labels=label[None])[0]
                          for key, label in zip(keys, labels)])
  np.testing.assert_allclose(images, one_by_one, atol=1e-5)
  flops = lambda n: draw.lower(params, keys[:n], labels[:n]).compile().cost_analysis()["flops"]
  # One pass: the reference batch plus n latents; one by one: n (reference + 1).
  assert flops(16) < 2 * flops(1), (flops(16), flops(1))
