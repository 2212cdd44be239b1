"""The diffusion layer (gen.diffusion): objectives and their conversions, and
every sampler on correlated Gaussian data, whose exact denoiser is
closed-form; the flow-matching family on a real run."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ddpm as ddpm_config
from configs import flow_matching as flow_matching_config
from configs import latent as latent_config
from gen import config as config_lib
from gen.data import SourceInfo
from gen.diffusion import likelihood, paths, samplers
from gen.families.ddpm import DDPM
from tests.helpers import compiled_fast, train_in_process

# Data x_0 ~ N(MU, COV), correlated. On any path x_t = a x_0 + s eps, x_t is
# Gaussian and the best predictions are linear in it: with M = (a^2 COV +
# s^2 I)^-1, E[x_0 | x_t] = MU + a COV M (x_t - a MU), E[eps | x_t] = s M (x_t - a MU).
MU = np.array([0.3, -0.5])
COV = np.array([[0.25, 0.1], [0.1, 0.09]])
SHAPE = (50_000, 2)
# Sample mean within this many standard errors (fixed seeds: deterministic).
_Z = 4.5


def _exact_output(objective, x, a, s):
  """The best possible output of an `objective` network at x_t on the Gaussian
  data, for path coefficients a, s ([b]; one time for the whole batch)."""
  mu, cov = jnp.asarray(MU, jnp.float32), jnp.asarray(COV, jnp.float32)
  a0, s0 = a[0], s[0]
  m = jnp.linalg.inv(a0 ** 2 * cov + s0 ** 2 * jnp.eye(2))
  r = x - a0 * mu
  return paths.target(objective, mu + a0 * r @ (cov @ m).T, s0 * r @ m.T, a, s)


def _exact_network(path, objective):
  """network(x, path time t), behind the same output -> (x0_hat, eps_hat)
  conversion as the family's U-Net."""
  return lambda x, t: _exact_output(objective, x, *path.coefficients(t))


def _denoiser(path, objective):
  network = _exact_network(path, objective)
  return lambda x, t: paths.predictions(objective, network(x, t), x, *path.coefficients(t))


def _path(objective):
  return paths.make_path({"objective": objective, "noise_schedule": "linear",
                          "timesteps": 1000})


def _draw(objective, sampler, steps, seed=0):
  path = _path(objective)
  denoise = _denoiser(path, objective)
  rng = jax.random.PRNGKey(seed)
  if sampler == "ddim":
    eps_fn = lambda x, t: denoise(x, t)[1]
    fn = lambda key: samplers.ddim_sample(eps_fn, path.schedule, key, SHAPE, steps)
  else:
    grid = samplers.make_grid(path, steps)
    fn = {
        "euler": lambda key: samplers.euler_sample(denoise, grid, key, SHAPE),
        "heun": lambda key: samplers.heun_sample(denoise, grid, key, SHAPE,
                                                 "flow" if path.continuous else "edm"),
        "dpmpp_2m": lambda key: samplers.dpmpp_2m_sample(denoise, grid, key, SHAPE),
    }[sampler]
  return np.asarray(compiled_fast(fn, rng)(rng), np.float64)


def _covariance_error(samples) -> float:
  """Largest error of the sample covariance, relative to sqrt(C_ii C_jj)."""
  scale = np.sqrt(np.outer(np.diag(COV), np.diag(COV)))
  return float(np.max(np.abs(np.cov(samples.T) - COV) / scale))


@pytest.mark.parametrize("objective,sampler,steps", [
    ("eps", "heun", 100), ("v", "heun", 100), ("eps", "dpmpp_2m", 200),
    ("v", "dpmpp_2m", 200), ("flow_matching", "heun", 100),
    ("flow_matching", "euler", 200)])
def test_sampler_reaches_the_data_mean_and_covariance(objective, sampler, steps):
  samples = _draw(objective, sampler, steps)
  np.testing.assert_array_less(np.abs(samples.mean(0) - MU),
                               _Z * np.sqrt(np.diag(COV) / SHAPE[0]))
  # The sample covariance's own standard error is about 0.6% here; what is
  # left is the sampler's discretization (measured 0.1-1.7%).
  assert _covariance_error(samples) < 0.03, _covariance_error(samples)


@pytest.mark.parametrize("objective,first,second", [
    ("eps", "ddim", "heun"), ("flow_matching", "euler", "heun")])
def test_second_order_steps_are_closer_than_first_order_at_equal_steps(objective, first,
                                                                        second):
  """Heun's method is second order: at 10 steps its covariance is far closer
  than that of the first-order step it corrects (DDIM, Euler): measured 40%
  against 56% for eps, 9% against 31% for flow matching."""
  error_first = _covariance_error(_draw(objective, first, 10))
  error_second = _covariance_error(_draw(objective, second, 10))
  assert error_second < 0.75 * error_first, (error_second, error_first)


def test_v_and_eps_networks_give_the_same_samples():
  """The exact v network, converted to eps, is the exact eps network: DDIM
  from the same noise gives the same samples."""
  np.testing.assert_allclose(_draw("v", "ddim", 20), _draw("eps", "ddim", 20), atol=1e-4)


@pytest.mark.parametrize("objective", paths.OBJECTIVES)
def test_predictions_invert_the_target(objective):
  """For any (x_0, eps), the network output `target` gives converts back to
  them: the objectives' conversions are each other's inverses."""
  path = _path(objective)
  rng = np.random.default_rng(0)
  x0, eps = (jnp.asarray(rng.normal(size=(5, 3)), jnp.float32) for _ in range(2))
  t = path.draw_time(jax.random.PRNGKey(0), 5)
  a, s = path.coefficients(t)
  x_t = a[:, None] * x0 + s[:, None] * eps
  x0_hat, eps_hat = paths.predictions(objective, paths.target(objective, x0, eps, a, s),
                                      x_t, a, s)
  # eps's x0 divides by alpha, which is small near t = T-1.
  np.testing.assert_allclose(eps_hat, eps, atol=1e-4)
  np.testing.assert_allclose(x0_hat, x0, atol=2e-2 if objective == "eps" else 1e-4)


def test_flow_times_follow_the_configured_distribution():
  uniform = np.asarray(paths.FlowPath("uniform").draw_time(jax.random.PRNGKey(0), 100_000))
  assert 0 <= uniform.min() and uniform.max() < 1 and abs(uniform.mean() - 0.5) < 0.005
  logit = np.asarray(paths.FlowPath("logit_normal", 0.5, 0.8).draw_time(
      jax.random.PRNGKey(0), 100_000))
  z = np.log(logit / (1 - logit))
  assert abs(z.mean() - 0.5) < 0.01 and abs(z.std() - 0.8) < 0.01


def test_samplers_by_objective_and_their_network_evaluations():
  assert samplers.resolve_sampler("auto", "eps") == "ddim"
  assert samplers.resolve_sampler("auto", "v") == "ddim"
  assert samplers.resolve_sampler("auto", "flow_matching") == "heun"
  with pytest.raises(ValueError, match=r"config.eval.sampler='euler' does not fit "
                                       r"config.model.objective='eps'"):
    samplers.resolve_sampler("euler", "eps")
  with pytest.raises(ValueError, match=r"config.eval.sampler='ddim' does not fit "
                                       r"config.model.objective='flow_matching'"):
    samplers.resolve_sampler("ddim", "flow_matching")
  assert samplers.network_evaluations("heun", 10) == 19
  assert samplers.network_evaluations("ancestral", 10, 1000) == 1000
  assert samplers.network_evaluations("dpmpp_2m", 10) == 10


# --- the start of sampling on a schedule that ends near abar = 0 ------------------
def _draw_cosine_eps(sampler, steps, max_noise_level, error=0.01):
  """Samples of the exact eps network plus a constant `error`, on the cosine
  schedule of T = 1000 (its last step at sigma / alpha = 2e4)."""
  path = paths.make_path({"objective": "eps", "noise_schedule": "cosine", "timesteps": 1000})
  exact = _denoiser(path, "eps")
  eps_fn = lambda x, t: exact(x, t)[1] + error
  denoise = lambda x, t: paths.predictions("eps", eps_fn(x, t), x, *path.coefficients(t))
  rng = jax.random.PRNGKey(0)
  if sampler == "ddim":
    start = samplers.first_step(path.schedule, max_noise_level)
    fn = lambda key: samplers.ddim_sample(eps_fn, path.schedule, key, SHAPE, steps,
                                          start=start)
  else:
    grid = samplers.make_grid(path, steps, max_noise_level)
    fn = {"heun": lambda key: samplers.heun_sample(denoise, grid, key, SHAPE, "edm"),
          "dpmpp_2m": lambda key: samplers.dpmpp_2m_sample(denoise, grid, key, SHAPE)
          }[sampler]
  return np.asarray(compiled_fast(fn, rng)(rng), np.float64)


@pytest.mark.parametrize("sampler", ["ddim", "heun", "dpmpp_2m"])
def test_a_noise_level_cap_keeps_a_small_eps_error_from_throwing_samples_off(sampler):
  """An eps error of 0.01 reaches x_0 times sigma / alpha: from the cosine
  schedule's last step (2e4) the samples' mean moves by 6-40,000 (20 steps;
  measured); started at sigma / alpha <= 80 (config.eval.max_noise_level)
  by 0.03-0.06."""
  uncapped = _draw_cosine_eps(sampler, 20, 0.0)
  assert np.max(np.abs(uncapped.mean(0) - MU)) > 1.0, uncapped.mean(0)
  capped = _draw_cosine_eps(sampler, 20, 80.0)
  assert np.max(np.abs(capped.mean(0) - MU)) < 0.1, capped.mean(0)


def test_heun_needs_the_cap_even_with_the_exact_network():
  """Heun's first step from sigma / alpha = 2e4 is too long for its
  corrector: the exact network's samples have covariance errors of 5.9 (20
  steps; 293 at 10); from 80, 0.04."""
  assert _covariance_error(_draw_cosine_eps("heun", 20, 0.0, error=0.0)) > 1.0
  assert _covariance_error(_draw_cosine_eps("heun", 20, 80.0, error=0.0)) < 0.1


def test_the_first_step_under_a_noise_level_cap():
  schedule = paths.make_schedule("cosine", 1000)
  abar = schedule["alphas_cumprod"]
  level = np.sqrt((1 - abar) / abar)
  start = samplers.first_step(schedule, 80.0)
  assert level[start] <= 80.0 < level[start + 1]
  assert samplers.first_step(schedule, 0.0) == 999
  assert list(samplers.ddim_timesteps(1000, 3, start)) == [start, round(start / 2), 0]
  with pytest.raises(ValueError, match=r"config.eval.max_noise_level=0.001 is below"):
    samplers.first_step(schedule, 1e-3)
  with pytest.raises(ValueError, match=r"config.eval.sampling_steps=1000 must be in 1 .. "):
    samplers.ddim_timesteps(1000, 1000, start)


@pytest.mark.parametrize("num_steps", [1, 2, 10, 100, 991])
def test_karras_steps_follow_the_ramp_and_stay_strictly_decreasing(num_steps):
  schedule = paths.make_schedule("cosine", 1000)
  start = samplers.first_step(schedule, 80.0)
  times = samplers.karras_timesteps(schedule, num_steps, start)
  assert len(times) == num_steps and times[0] == start
  assert num_steps == 1 or (times[-1] == 0 and np.all(np.diff(times) < 0))
  if num_steps == 10:
    # Where the steps are not crowded, each level is its ramp target's nearest.
    abar = schedule["alphas_cumprod"]
    level = np.sqrt((1 - abar) / abar)
    ramp = (level[start] ** (1 / 7) + np.linspace(0, 1, 10)
            * (level[0] ** (1 / 7) - level[start] ** (1 / 7))) ** 7
    np.testing.assert_allclose(np.log(level[times[:-1]]), np.log(ramp[:-1]), atol=0.05)
  with pytest.raises(ValueError, match=r"config.eval.sampling_steps=992 must be in 1 .. "):
    samplers.karras_timesteps(schedule, 992, start)


def test_karras_steps_keep_a_small_eps_error_in_the_heun_sampler_smaller():
  """Short steps at high noise: Heun's 10 steps with an eps error of 0.01
  move the mean by 0.38 spaced evenly in t, by 0.03 on Karras's ramp."""
  path = paths.make_path({"objective": "eps", "noise_schedule": "cosine", "timesteps": 1000})
  exact = _denoiser(path, "eps")
  denoise = lambda x, t: paths.predictions("eps", exact(x, t)[1] + 0.01, x,
                                           *path.coefficients(t))
  shifts = {}
  for spacing in samplers.STEP_SPACINGS:
    grid = samplers.make_grid(path, 10, 80.0, spacing)
    rng = jax.random.PRNGKey(0)
    fn = lambda key: samplers.heun_sample(denoise, grid, key, SHAPE, "edm")
    samples = np.asarray(compiled_fast(fn, rng)(rng), np.float64)
    shifts[spacing] = np.max(np.abs(samples.mean(0) - MU))
  assert shifts["karras"] < 0.25 * shifts["uniform"], shifts


def test_step_spacing_is_checked_by_name():
  path = paths.make_path({"objective": "eps", "noise_schedule": "cosine", "timesteps": 100})
  with pytest.raises(ValueError, match=r"config.eval.step_spacing='log' is not known"):
    samplers.make_grid(path, 10, 0.0, "log")
  with pytest.raises(ValueError, match=r"config.eval.step_spacing='karras' spaces a discrete"):
    samplers.make_grid(paths.FlowPath("uniform"), 10, 0.0, "karras")
  config = ddpm_config.get_config("digits")
  config.eval.step_spacing = "log"
  with pytest.raises(ValueError, match=r"config.eval.step_spacing='log'"):
    DDPM(config, SourceInfo("digits", (8, 8, 1), "image")).check_config()
  config.eval.sampler = "ancestral"
  with pytest.raises(ValueError, match=r"config.eval.step_spacing='log'"):
    DDPM(config, SourceInfo("digits", (8, 8, 1), "image")).check_config()


def test_ancestral_sampling_from_the_cap_is_ddim_with_eta_one_over_its_steps():
  """Both draw step i's noise from fold_in(key, i), so over the same steps
  from the same start they are the same sampler."""
  path = paths.make_path({"objective": "eps", "noise_schedule": "cosine", "timesteps": 50})
  eps_fn = lambda x, t: _denoiser(path, "eps")(x, t)[1]
  start = samplers.first_step(path.schedule, 20.0)
  assert start < 49
  rng = jax.random.PRNGKey(3)
  shape = (64, 2)
  ancestral = samplers.ancestral_sample(eps_fn, path.schedule, rng, shape, start=start)
  ddim = samplers.ddim_sample(eps_fn, path.schedule, rng, shape, start + 1, eta=1.0,
                              start=start)
  np.testing.assert_allclose(ancestral, ddim, atol=1e-4)


# --- the family with the new objectives -------------------------------------------
@pytest.mark.parametrize("key,value,message", [
    ("model.objective", "x0", "config.model.objective='x0'"),
    ("model.time_sampling", "beta", "config.model.time_sampling='beta'"),
    ("eval.sampler", "ddim", "config.eval.sampler='ddim' does not fit"),
    ("eval.sampling_steps", 0, "config.eval.sampling_steps=0"),
    ("eval.max_noise_level", 80.0, "config.eval.max_noise_level=80.0 caps a discrete"),
])
def test_flow_matching_rejects_impossible_settings_by_name(key, value, message):
  config = flow_matching_config.get_config("digits")
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(ValueError, match=message):
    DDPM(config, SourceInfo("digits", (8, 8, 1), "image")).check_config()


def test_the_family_starts_its_eps_samplers_under_the_cap():
  config = ddpm_config.get_config("digits")
  info = SourceInfo("digits", (8, 8, 1), "image")
  assert DDPM(config, info).first_step == 99
  config.eval.max_noise_level = 3.0
  family = DDPM(config, info)
  assert family.check_config() == [] and family.first_step < 99
  abar = family.schedule["alphas_cumprod"][family.first_step]
  assert math.sqrt((1 - abar) / abar) <= 3.0
  config.eval.sampling_steps = family.first_step + 2
  with pytest.raises(ValueError, match=r"config.eval.sampling_steps=.* below "
                                       r"config.eval.max_noise_level"):
    DDPM(config, info).check_config()
  for level, message in ((-1.0, "must be a number >= 0"), (1e-3, "is below the noise level")):
    config.eval.max_noise_level = level
    with pytest.raises(ValueError, match=rf"config.eval.max_noise_level=.*{message}"):
      DDPM(config, info).check_config()


@pytest.mark.parametrize("variant", ["eps", "v"])
def test_latent_eps_and_v_configs_sample_from_the_cap_on_the_ramp(variant):
  config = latent_config.get_config(variant)
  config_lib.validate(config)
  family = DDPM(config, SourceInfo("codes", (7, 7, 4), "latent"))
  assert family.check_config() == []
  assert (family.sampler_name, family.step_spacing) == ("dpmpp_2m", "karras")
  assert family.first_step == samplers.first_step(family.schedule, 80.0) < 999


@pytest.mark.parametrize("variant", ["", "digits", "wide", "gpu"])
def test_flow_matching_configs_are_valid(variant):
  config = flow_matching_config.get_config(variant)
  config_lib.validate(config)
  shape = (8, 8, 1) if variant == "digits" else (28, 28, 1)
  family = DDPM(config, SourceInfo(config.data.name, shape, "image"))
  assert family.check_config() == [] and family.sampler_name == "heun"
  assert jax.tree_util.tree_leaves(jax.eval_shape(family.init_params, jax.random.PRNGKey(0)))


@pytest.mark.parametrize("config_file,overrides", [
    ("configs/flow_matching.py:digits", ()),
    ("configs/ddpm.py:digits", ("--config.model.objective=v", "--config.eval.sampler=dpmpp_2m")),
])
def test_new_objectives_train_sample_and_report(tmp_path, config_file, overrides):
  """A real run of the loop (one-level U-Net, as test_ddpm's run): the loss
  falls, samples are finite, and the report names the sampler and its cost."""
  results = train_in_process(config_file, tmp_path, "--config.model.channel_mults=(1,)",
                             "--config.model.attention_resolutions=()", *overrides)
  assert results["samples"]["T=1"]["nonfinite"] == 0
  sampler = "heun" if "flow_matching" in config_file else "dpmpp_2m"
  assert results["sampler"] == sampler
  steps = 5 if sampler == "heun" else 10
  assert results["sampler_network_evaluations"] == (9 if sampler == "heun" else 10)
  assert results[f"sampling_seconds_per_sample_{sampler}{steps}"] > 0
  with open(tmp_path / "metrics.jsonl") as file:
    rows = [json.loads(line) for line in file]
  curve = [row["loss"] for row in rows if row["split"] == "train"]
  assert curve[-1] < curve[0], curve


# --- the likelihood through the probability-flow ODE -------------------------------
def _gaussian_log_density(x):
  centred = x - MU
  precision = np.linalg.inv(COV)
  return (-0.5 * np.einsum("bi,ij,bj->b", centred, precision, centred)
          - 0.5 * np.log(np.linalg.det(2 * math.pi * COV)))


@pytest.mark.parametrize("objective", paths.OBJECTIVES)
def test_ode_likelihood_matches_the_closed_form_density(objective):
  """The exact network's probability-flow ODE is the data's own density:
  with the exact trace, log p matches log N(x; MU, COV) to the ODE's
  discretization; Hutchinson's estimate is unbiased around it."""
  path = _path(objective)
  # The network sees network times; the ODE runs between DDPM's steps too.
  scale = paths.FLOW_NETWORK_TIME_SCALE if path.continuous else path.timesteps - 1
  network = lambda x, t: _exact_output(objective, x,
                                       *path.ode_coefficients(t / scale)[1:3])
  velocity = likelihood.probability_flow(network, objective, path)
  x = jnp.asarray(np.random.default_rng(0).multivariate_normal(MU, COV, 8), jnp.float32)
  expected = _gaussian_log_density(np.asarray(x, np.float64))
  exact = jax.jit(lambda x: likelihood.log_likelihood(velocity, x, None, 200,
                                                      exact_trace=True))(x)
  np.testing.assert_allclose(exact, expected, atol=0.02)
  estimates = jax.jit(lambda x, key: likelihood.log_likelihood(velocity, x, key, 200,
                                                               num_probes=500))(
      x, jax.random.PRNGKey(0))
  # v^T J v has a variance of 2 |J|_F^2 per probe; J is at most ~10 here.
  np.testing.assert_allclose(estimates, exact, atol=0.25)
