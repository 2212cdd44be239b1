"""DDPM: the U-Net's shapes, the noise schedules, the forward process, both
samplers on data whose exact noise predictor is known, and a real run."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ddpm as ddpm_config
from gen import config as config_lib
from gen.data import SourceInfo
from gen.families import ddpm
from gen.families.ddpm import DDPM
from gen.models.unet import UNet, padding
from tests.helpers import check_bfloat16_run, check_stop_and_resume, compiled_fast

# Standard errors allowed between a sample statistic and its exact value. The
# seeds are fixed, so each test is deterministic; 4.5 keeps the chance that a
# correct implementation fails any of a test's few dozen comparisons below 1e-3.
_Z = 4.5


def _random_params(model, *inputs, seed=0):
  """Parameters of `model` drawn by numpy at their shapes: a net that does
  something (no zero-initialized layer), without compiling flax's initializers
  (XLA:CPU takes ~0.2 s per parameter shape to compile their random draws)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs, train=False))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if leaf.ndim >= 2:  # kernels: unit gain for their fan-in
      return rng.normal(size=leaf.shape) / math.sqrt(math.prod(leaf.shape[:-1]))
    centre = 1.0 if path[-1].key == "scale" else 0.0  # GroupNorm scales near 1
    return centre + 0.1 * rng.normal(size=leaf.shape)

  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: jnp.asarray(draw(path, leaf), jnp.float32), shapes["params"])


# --- the U-Net ------------------------------------------------------------------
@pytest.mark.parametrize("shape,mults,attention", [
    ((8, 8, 1), (1, 2), (4,)),
    # Four levels halve three times: 28 is padded to 32 (2 rows on each side).
    ((28, 28, 1), (1, 2, 2, 2), (8,)),
    ((32, 32, 3), (1, 2, 2), (16,)),
])
def test_unet_output_has_the_input_shape(shape, mults, attention):
  model = UNet(data_shape=shape, channels=8, channel_mults=mults, num_res_blocks=1,
               attention_resolutions=attention, dropout=0.5, num_groups=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, *shape))
  t = jnp.array([3, 70])
  # Compiled whole: op-by-op, each of the U-Net's many ops would compile on its own.
  apply = jax.jit(model.apply, static_argnames="train")
  params = _random_params(model, x, t)
  out = apply({"params": params}, x, t, train=False)
  assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
  # The timestep is seen: the same x at another t gives another prediction.
  other_t = apply({"params": params}, x, t + 5, train=False)
  assert float(jnp.max(jnp.abs(other_t - out))) > 1e-3
  # Dropout acts in training only, drawing from the "dropout" rng.
  train = lambda seed: apply({"params": params}, x, t, train=True,
                             rngs={"dropout": jax.random.PRNGKey(seed)})
  assert float(jnp.max(jnp.abs(train(0) - train(1)))) > 1e-3
  np.testing.assert_array_equal(train(0), train(0))


def test_padded_unet_output_pixel_is_centred_on_its_input_pixel():
  """28x28 is padded to 32x32 and cropped back: a crop off by the padding would
  centre each output pixel's sensitivity on another input pixel."""
  model = UNet(data_shape=(28, 28, 1), channels=8, channel_mults=(1, 2, 2, 2),
               num_res_blocks=1, attention_resolutions=(), dropout=0.0, num_groups=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 28, 28, 1))
  t = jnp.array([3])
  params = _random_params(model, x, t)
  sensitivity = jax.jit(lambda i, j: jax.grad(
      lambda v: model.apply({"params": params}, v, t, train=False)[0, i, j, 0])(x)[0, :, :, 0])
  radius = 4
  rows, columns = np.mgrid[-radius:radius + 1, -radius:radius + 1]
  for i, j in ((10, 10), (14, 17), (8, 20), (20, 9)):
    weight = np.asarray(sensitivity(i, j))[i - radius:i + radius + 1,
                                           j - radius:j + radius + 1] ** 2
    centre = ((weight * rows).sum() / weight.sum(), (weight * columns).sum() / weight.sum())
    assert np.hypot(*centre) < 1.0, ((i, j), centre)


def test_padding_reaches_the_next_multiple_centred():
  assert padding(28, 8) == (2, 2)
  assert padding(28, 4) == (0, 0)
  assert padding(27, 4) == (0, 1)


@pytest.mark.parametrize("fields,message", [
    ({"num_groups": 3}, r"config.model.num_groups=3"),
    ({"attention_resolutions": (5,)}, r"config.model.attention_resolutions=\(5,\)"),
])
def test_unet_rejects_impossible_settings_by_name(fields, message):
  fields = {"channels": 8, "channel_mults": (1, 2), "num_res_blocks": 1,
            "attention_resolutions": (4,), "num_groups": 4, **fields}
  model = UNet(data_shape=(8, 8, 1), **fields)
  with pytest.raises(ValueError, match=message):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,), jnp.int32),
               train=False)


# --- the schedules and the forward process --------------------------------------
def test_cosine_schedule():
  schedule = ddpm.make_schedule("cosine", 1000)
  abar, betas = schedule["alphas_cumprod"], schedule["betas"]
  assert abar[0] > 0.9999 and abar[-1] < 1e-6
  assert np.all(np.diff(abar) < 0)
  assert np.all(betas > 0) and np.all(betas <= 0.999) and betas[-1] == 0.999
  # Where no beta is clipped, abar is Nichol and Dhariwal's f(t + 1) / f(0).
  f = lambda u: np.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
  unclipped = betas < 0.999
  t = np.arange(1000)[unclipped]
  np.testing.assert_allclose(abar[unclipped], f(t + 1) / f(0), rtol=1e-9)
  # beta~_0 = 0: the last reverse step adds no noise.
  assert schedule["posterior_variance"][0] == 0.0


def test_linear_schedule_is_ho_et_al():
  schedule = ddpm.make_schedule("linear", 1000, 1e-4, 0.02)
  np.testing.assert_allclose(schedule["betas"][[0, 999]], [1e-4, 0.02])
  np.testing.assert_allclose(schedule["alphas_cumprod"], np.cumprod(1 - schedule["betas"]))
  assert 1e-5 < schedule["alphas_cumprod"][-1] < 1e-4


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_closed_form_matches_iterating_the_forward_process(name):
  schedule = ddpm.make_schedule(name, 1000)
  abar, betas = schedule["alphas_cumprod"], schedule["betas"]
  x0 = np.array([-0.8, 0.1, 0.9])
  n = 20_000
  checkpoints = (0, 99, 499, 999)
  # x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps, step by step, in float64.
  rng = np.random.default_rng(0)
  x = np.broadcast_to(x0, (n, 3)).copy()
  iterated = {}
  for t in range(1000):
    x = np.sqrt(1 - betas[t]) * x + np.sqrt(betas[t]) * rng.standard_normal((n, 3))
    if t in checkpoints:
      iterated[t] = x.copy()
  for t in checkpoints:
    noise = jax.random.normal(jax.random.PRNGKey(t), (n, 3))
    closed = np.asarray(ddpm.q_sample(jnp.broadcast_to(jnp.asarray(x0, jnp.float32), (n, 3)),
                                      jnp.full((n,), t), noise, schedule), np.float64)
    mean, var = math.sqrt(abar[t]) * x0, 1.0 - abar[t]
    for samples in (iterated[t], closed):
      # Standard errors of a Gaussian sample's mean and variance.
      np.testing.assert_array_less(np.abs(samples.mean(0) - mean), _Z * math.sqrt(var / n))
      np.testing.assert_array_less(np.abs(samples.var(0) - var), _Z * var * math.sqrt(2 / n))


# --- the samplers, on Gaussian data ---------------------------------------------
# Data x_0 ~ N(MU, S^2) per coordinate: then x_t ~ N(sqrt(abar) MU, v_t), v_t =
# abar S^2 + 1 - abar, and the best possible noise prediction is linear,
# E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) MU) / v_t.
MU = np.array([0.3, -0.5])
S = np.array([0.5, 0.25])


def _exact_eps_fn(schedule):
  abar = jnp.asarray(schedule["alphas_cumprod"], jnp.float32)
  mu, s = jnp.asarray(MU, jnp.float32), jnp.asarray(S, jnp.float32)

  def eps_fn(x, t):
    a = abar[t][:, None]
    return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * mu) / (a * s ** 2 + 1 - a)

  return eps_fn


def _propagated(schedule, ts, eta):
  """The exact mean and std of a sampler's output on the Gaussian data, in float64.

  Each step is linear in x, x_s - m_s = k (x_t - m_t) + sigma z with
  k = sqrt(abar_s) g + sqrt(1 - abar_s - sigma^2) c, where E[x_0 | x_t] - MU =
  g (x_t - m_t) and E[eps | x_t] = c (x_t - m_t); so mean and variance follow
  in closed form from x_{T-1} ~ N(0, 1). This is the posterior-mean form of
  the update, independent of how the samplers arrange it.
  """
  abar = schedule["alphas_cumprod"]
  offset, var = -math.sqrt(abar[ts[0]]) * MU, np.ones_like(MU)
  for t, s_step in zip(ts, [*ts[1:], -1]):
    a, a_next = abar[t], (abar[s_step] if s_step >= 0 else 1.0)
    v = a * S ** 2 + 1 - a
    sigma2 = eta ** 2 * (1 - a_next) / (1 - a) * (1 - a / a_next)
    k = (math.sqrt(a_next) * math.sqrt(a) * S ** 2 / v
         + math.sqrt(max(1 - a_next - sigma2, 0.0)) * math.sqrt(1 - a) / v)
    offset, var = k * offset, k ** 2 * var + sigma2
  return MU + offset, np.sqrt(var)


def _check_moments(samples, mean, std):
  """Sample mean and std within _Z standard errors of the exact values."""
  samples = np.asarray(samples, np.float64)
  n = samples.shape[0]
  np.testing.assert_array_less(np.abs(samples.mean(0) - mean), _Z * std / math.sqrt(n))
  np.testing.assert_array_less(np.abs(samples.std(0) - std), _Z * std / math.sqrt(2 * n))


@pytest.fixture(scope="module")
def gaussian_setting():
  schedule = ddpm.make_schedule("linear", 1000)
  return schedule, _exact_eps_fn(schedule), (50_000, 2)


def test_ddim_with_eta_1_over_all_steps_is_ancestral_sampling(gaussian_setting):
  schedule, eps_fn, shape = gaussian_setting
  rng = jax.random.PRNGKey(0)
  # 1000 steps each over a large batch: run time, not compile time, is the cost.
  ancestral = compiled_fast(lambda key: ddpm.ancestral_sample(eps_fn, schedule, key, shape),
                            rng)(rng)
  ddim = compiled_fast(lambda key: ddpm.ddim_sample(eps_fn, schedule, key, shape, 1000, 1.0),
                       rng)(rng)
  # The same noise through two arrangements of one update: the same samples.
  np.testing.assert_allclose(ddim, ancestral, atol=2e-4)
  mean, std = _propagated(schedule, np.arange(999, -1, -1), eta=1.0)
  _check_moments(ancestral, mean, std)
  _check_moments(ddim, mean, std)
  # The reverse process itself reaches the data distribution up to the
  # discretization of T = 1000 steps: with beta~ as its variance it
  # under-disperses a little (std 0.8% and 1.9% low here).
  np.testing.assert_allclose(mean, MU, atol=1e-5)
  np.testing.assert_allclose(std, S, rtol=0.02)
  # So the samples' std is within that bias and its standard error of the data's.
  samples = np.asarray(ancestral, np.float64)
  np.testing.assert_array_less(np.abs(samples.mean(0) - MU), _Z * S / math.sqrt(shape[0]))
  np.testing.assert_array_less(np.abs(samples.std(0) - S),
                               np.abs(std - S) + _Z * S / math.sqrt(2 * shape[0]))


def test_deterministic_ddim_with_few_steps_approaches_the_data(gaussian_setting):
  schedule, eps_fn, shape = gaussian_setting
  rng = jax.random.PRNGKey(1)
  for steps, std_bias in ((20, 0.35), (1000, 0.01)):
    samples = jax.jit(lambda key: ddpm.ddim_sample(eps_fn, schedule, key, shape, steps, 0.0))(rng)
    mean, std = _propagated(schedule, ddpm.ddim_timesteps(1000, steps), eta=0.0)
    _check_moments(samples, mean, std)
    # Each Euler step of the probability-flow ODE keeps the mean and loses a
    # little variance (a factor cos^2 of the step's angle between the signal
    # and noise directions); few large steps lose more.
    np.testing.assert_allclose(mean, MU, atol=2e-3)
    assert np.all(std <= S) and np.all(std >= S * (1 - std_bias)), (steps, std / S)


def test_temperature_scales_all_the_noise(gaussian_setting):
  schedule, eps_fn, shape = gaussian_setting
  rng = jax.random.PRNGKey(2)
  for frozen in (ddpm.ancestral_sample(eps_fn, schedule, rng, (100, 2), temperature=0.0),
                 ddpm.ddim_sample(eps_fn, schedule, rng, (100, 2), 50, 1.0, temperature=0.0)):
    # No initial and no injected noise: every sample is the same deterministic path,
    # which ends near the data's mean.
    np.testing.assert_allclose(frozen, np.broadcast_to(frozen[0], frozen.shape), atol=1e-6)
    np.testing.assert_allclose(frozen[0], MU, atol=0.02)


# --- the family -----------------------------------------------------------------
def _family(**changes):
  config = ddpm_config.get_config("digits")
  for key, value in changes.items():
    section, name = key.split(".")
    config[section][name] = value
  return DDPM(config, SourceInfo("digits", (8, 8, 1), "image"))


@pytest.mark.parametrize("key,value,message", [
    ("model.noise_schedule", "quadratic", "config.model.noise_schedule='quadratic'"),
    ("model.timesteps", 0, "config.model.timesteps=0"),
    ("model.beta_end", 1.5, "config.model.beta_end=1.5"),
    ("eval.sampler", "euler", "config.eval.sampler='euler'"),
    ("eval.sampling_steps", 101, "config.eval.sampling_steps=101"),
    ("eval.sampling_steps", 0, "config.eval.sampling_steps=0"),
    ("eval.ddim_eta", -0.5, "config.eval.ddim_eta=-0.5"),
    ("data.scale", "unit", "config.data.scale='unit'"),
])
def test_rejects_impossible_settings_by_name(key, value, message):
  with pytest.raises(ValueError, match=message):
    _family(**{key: value}).check_config()


@pytest.mark.parametrize("variant,shape", [("", (28, 28, 1)), ("digits", (8, 8, 1))])
def test_shipped_configs_are_valid_and_build(variant, shape):
  config = ddpm_config.get_config(variant)
  config_lib.validate(config)
  family = DDPM(config, SourceInfo(config.data.name, shape, "image"))
  assert family.check_config() == []
  # Traced, not compiled: the U-Net's own checks (groups, attention sizes) run.
  params = jax.eval_shape(family.init_params, jax.random.PRNGKey(0))
  assert jax.tree_util.tree_leaves(params)
  with pytest.raises(ValueError, match="configs/ddpm.py:cifar"):
    ddpm_config.get_config("cifar")


def test_rejects_vector_data_and_warns_of_a_short_linear_schedule():
  config = ddpm_config.get_config("digits")
  with pytest.raises(ValueError, match="config.data.name"):
    DDPM(config, SourceInfo("toy2d/ring8", (2,), "vector")).check_config()
  assert _family().check_config() == []
  # Ho et al.'s T = 1000 betas over 100 steps end at abar = 0.37.
  warnings = _family(**{"model.beta_start": 1e-4, "model.beta_end": 0.02}).check_config()
  assert len(warnings) == 1 and "abar=0.36" in warnings[0], warnings


def test_untrained_model_loss_is_one_and_evaluation_is_per_example():
  family = _family()
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))
  pixels = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 1), dtype=np.uint8)
  batch = {"x": pixels, "uid": np.arange(6, dtype=np.int32)}
  # The zero-initialized last conv: the untrained net predicts exactly 0 ...
  x = jax.random.normal(jax.random.PRNGKey(2), (6, 8, 8, 1))
  np.testing.assert_array_equal(jax.jit(family.eps_fn(params))(x, jnp.arange(6)), 0.0)
  # ... so its loss is the mean square of standard normal noise.
  loss, _ = jax.jit(family.loss)(params, batch, jax.random.PRNGKey(1), 0)
  assert abs(float(loss) - 1.0) < _Z * math.sqrt(2 / (6 * 64))
  evaluate = jax.jit(family.evaluate)
  params = _random_params(family.model, x, jnp.arange(6))
  metrics = evaluate(params, batch, jax.random.PRNGKey(0))
  assert set(metrics) == {"loss", "loss_t10", "loss_t50", "loss_t89", "loss_fixed_t_mean"}
  assert all(v.shape == (6,) for v in metrics.values())
  # Each example's noise and t come from its uid: another batching gives the same values.
  half = {k: v[3:] for k, v in batch.items()}
  np.testing.assert_allclose(evaluate(params, half, jax.random.PRNGKey(0))["loss"],
                             metrics["loss"][3:], rtol=1e-5)


# One level (attention only in the middle): what is run here is the loop's
# DDPM family (EMA, resume, sampling, reports, bfloat16); the U-Net's levels
# are test_unet_output_has_the_input_shape's. Each of a run's programs holds
# the U-Net: with the :digits config's two levels this test took 114 s alone
# on 2 cores, with one 79 s.
_RUN_OVERRIDES = ["--config.train.ema_decay=0.9", "--config.model.channel_mults=(1,)",
                  "--config.model.attention_resolutions=()"]


def test_trains_reports_and_resumes_exactly_with_ema(tmp_path):
  results = check_stop_and_resume("configs/ddpm.py:digits", tmp_path, _RUN_OVERRIDES)
  check_bfloat16_run("configs/ddpm.py:digits", tmp_path, _RUN_OVERRIDES, results)
  assert np.isfinite(results["test"]["loss"]), results["test"]
  entry = results["samples"]["T=1"]
  assert entry["nonfinite"] == 0 and (tmp_path / "straight" / entry["file"]).exists()
  assert results["sampling_seconds_per_sample_ancestral"] > 0
  assert results["sampling_seconds_per_sample_ddim50"] > 0
  assert (tmp_path / "straight" / "denoising.png").exists()
