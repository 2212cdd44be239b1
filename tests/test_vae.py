"""VAE: the KL term, the discretized likelihood, and the bounds on log p(x)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import conv_vae, vae
from gen.data import SourceInfo
from gen.families.vae import VAE, discretized_logistic_log_prob, gaussian_kl
from tests.helpers import compiled_fast


@pytest.mark.parametrize("standard_prior", [True, False])
def test_analytic_kl_matches_monte_carlo(standard_prior):
  """KL(q || p) against N(0, I) (the defaults) and against another Gaussian."""
  rng = np.random.default_rng(0 if standard_prior else 1)
  draw = lambda scale: jnp.asarray(rng.normal(scale=scale, size=(4, 3)), jnp.float32)
  mean, log_var = draw(1.0), draw(0.7)
  prior = () if standard_prior else (draw(1.0), draw(0.7))
  prior_mean, prior_log_var = prior or (0.0, 0.0)
  num = 200_000
  eps = jax.random.normal(jax.random.PRNGKey(0), (num, 4, 3))
  z = mean + jnp.exp(0.5 * log_var) * eps
  log_q = jnp.sum(-0.5 * (eps ** 2 + log_var), axis=-1)
  log_p = jnp.sum(-0.5 * ((z - prior_mean) ** 2 * jnp.exp(-prior_log_var) + prior_log_var),
                  axis=-1)
  samples = np.asarray(log_q - log_p, np.float64)  # [num, 4]
  estimate = samples.mean(axis=0)
  standard_error = samples.std(axis=0) / math.sqrt(num)
  analytic = np.asarray(gaussian_kl(mean, log_var, *prior))
  assert np.all(np.abs(estimate - analytic) < 4 * standard_error), (estimate, analytic)
  assert np.all(analytic > 0.1)


@pytest.mark.parametrize("mean,log_scale", [(0.0, -3.0), (0.7, -5.0), (-0.99, -1.0),
                                            (2.5, 0.5), (0.0, -7.0)])
def test_discretized_logistic_masses_sum_to_one(mean, log_scale):
  pixels = jnp.arange(256)
  log_probs = discretized_logistic_log_prob(pixels, jnp.full(256, mean), jnp.full(256, log_scale))
  assert np.all(np.isfinite(log_probs))
  np.testing.assert_allclose(float(jax.nn.logsumexp(log_probs)), 0.0, atol=1e-5)


def test_discretized_logistic_bins_share_their_edges():
  # A narrow logistic centred on each edge between two bins puts about half
  # its mass in each; the masses sum to one only if the upper edge of one bin
  # is the very float the next bin's lower edge is (rounding them apart by one
  # float32 ulp moved 1.6e-5 of mass at the edge of bins 127 and 128).
  pixels = jnp.arange(256)
  edges = (2.0 * np.arange(1, 256, dtype=np.float64) - 1.0) / 255.0 - 1.0
  sums = jax.vmap(lambda mean: jax.nn.logsumexp(discretized_logistic_log_prob(
      pixels, jnp.full(256, mean), jnp.full(256, -7.0))))(jnp.asarray(edges, jnp.float32))
  np.testing.assert_allclose(np.asarray(sums), 0.0, atol=1e-5)


def test_discretized_logistic_middle_bin_is_a_cdf_difference():
  # Pixel 100 at x = 2 * 100 / 255 - 1; its bin is x +- 1/255.
  x, scale = 2 * 100 / 255 - 1, 0.02
  mean = x + 0.01
  cdf = lambda t: 1 / (1 + math.exp(-(t - mean) / scale))
  expected = math.log(cdf(x + 1 / 255) - cdf(x - 1 / 255))
  got = discretized_logistic_log_prob(jnp.array([100]), jnp.array([mean]),
                                      jnp.array([math.log(scale)]))
  np.testing.assert_allclose(float(got[0]), expected, rtol=1e-5)


def _digits_family(latent_dim=2, **model):
  config = vae.get_config("digits")
  config.model.latent_dim = latent_dim
  config.model.hidden_sizes = (64,)
  for key, value in model.items():
    config.model[key] = value
  return VAE(config, SourceInfo("digits", (8, 8, 1), "image"))


def _digits_batch(count=48):
  from sklearn.datasets import load_digits
  images = load_digits().images[:count]
  pixels = np.round(images * 255.0 / 16.0).astype(np.uint8)[..., None]
  return {"x": jnp.asarray(pixels), "uid": jnp.arange(count, dtype=jnp.int32)}


def _log_px_by_quadrature(family, params, batch, half_width=7.0, points=281, label=None):
  """log p(x) = log of the integral of p(x | z) p(z) over a 2-D latent grid
  (with `label`, of p(x | z, y) p(z | y) for that one class: log p(x | y))."""
  x = family.prepare(batch, None, train=False)
  target = family.targets(batch, x)
  axis = np.linspace(-half_width, half_width, points, dtype=np.float32)
  grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
  labels = None if label is None else jnp.full(len(grid), label)
  prior_mean, prior_log_var = (np.asarray(v)[0] for v in family.prior(params, labels, 1))
  log_prior = -0.5 * np.sum((grid - prior_mean) ** 2 * np.exp(-prior_log_var) + prior_log_var,
                            axis=1) - math.log(2 * math.pi)
  cell = math.log((axis[1] - axis[0]) ** 2)

  out = jax.jit(family.decode)(params, jnp.asarray(grid), labels)

  # `out` is an argument, not a closed-over constant: XLA would fold the
  # 79k-row decoder output into the program and take seconds to compile it.
  def one(out, target_row):
    tiled = jnp.broadcast_to(target_row, (len(grid), *target_row.shape))
    return jax.nn.logsumexp(family.log_likelihood(out, tiled) + log_prior) + cell

  one = compiled_fast(one, out, target[0])
  return np.array([float(one(out, row)) for row in target])


def test_importance_weighted_bound_rises_with_k_toward_log_px():
  """With a 2-D latent, log p(x) itself is a quadrature; the bounds must sit below
  it, rise with K (means over examples, beyond 4 standard errors of the noise) and
  close most of the ELBO's gap by K = 1000."""
  family = _digits_family(latent_dim=2)
  # Untrained, q(z | x) is far from the posterior: a gap of ~40 nats to close.
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))
  batch = _digits_batch()
  x = family.prepare(batch, None, train=False)
  target = family.targets(batch, x)
  log_px = _log_px_by_quadrature(family, params, batch)

  elbo_parts, elbo_draws = jax.jit(family.elbo_parts), []
  for seed in range(200):
    reconstruction, kl = elbo_parts(params, x, target, jax.random.PRNGKey(seed))
    elbo_draws.append(np.asarray(reconstruction - kl))
  elbo = np.mean(elbo_draws, axis=0)

  iw = jax.jit(family.iw_log_likelihood, static_argnums=(4, 5))
  per_example = lambda seed: jax.random.split(jax.random.PRNGKey(seed), len(x))
  bounds = {k: np.asarray(iw(params, x, target, per_example(k), k, min(k, 100)))
            for k in (1, 10, 100, 1000)}
  # K=1 is a one-sample ELBO: the same expectation.
  assert abs(bounds[1].mean() - elbo.mean()) < 4 * bounds[1].std() / math.sqrt(len(elbo))
  gaps = {k: log_px - bound for k, bound in bounds.items()}
  previous = log_px - elbo
  for k in (10, 100, 1000):
    noise = gaps[k].std() / math.sqrt(len(gaps[k]))
    assert gaps[k].mean() < previous.mean() + 4 * noise, (k, gaps[k].mean(), previous.mean())
    assert gaps[k].mean() > -4 * noise, f"K={k} bound above log p(x)"
    previous = gaps[k]
  elbo_gap, final_gap = (log_px - elbo).mean(), gaps[1000].mean()
  assert elbo_gap > 1.0, "the test needs a real gap between the ELBO and log p(x)"
  assert final_gap < 0.25 * elbo_gap, (elbo_gap, final_gap)


def _class_prior_family():
  """A conditional digits VAE with a 2-D latent and a class prior moved off N(0, I)."""
  config = vae.get_config("cond_digits")
  config.model.hidden_sizes = (64,)
  config.model.class_prior = True
  family = VAE(config, SourceInfo("digits", (8, 8, 1), "image", 10))
  family.check_config()
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))
  # Weights moved off their initialization, so that p(x | z) depends on z and
  # the prior matters to log p(x | y).
  params = jax.tree_util.tree_map(
      lambda w: w + 0.05 * jax.random.normal(jax.random.PRNGKey(w.size), w.shape), params)
  classes = np.arange(10, dtype=np.float32)[:, None]
  params = dict(params, prior_mean=jnp.asarray(np.concatenate(
      [0.4 * classes - 2.0, 1.5 - 0.3 * classes], axis=1)),
                prior_log_var=jnp.asarray(np.log(np.full((10, 2), 0.6 ** 2, np.float32))))
  return family, params


def test_a_class_prior_enters_the_kl_the_bounds_and_the_samples():
  """p(z | y) = N(prior_mean[y], exp(prior_log_var[y])): the ELBO's KL, the
  importance-weighted bound (below log p(x | y) by quadrature, and closing most
  of the ELBO's gap) and the samples (z = the class's mean at temperature 0)
  all use it; with N(0, I) in any of them the checks fail."""
  family, params = _class_prior_family()
  batch = _digits_batch()
  label = 3
  labels = jnp.full(len(batch["x"]), label)
  mean, log_var = family.prior(params, labels, len(labels))
  np.testing.assert_allclose(mean, np.broadcast_to(params["prior_mean"][label], mean.shape))
  x = family.prepare(batch, None, train=False)
  target = family.targets(batch, x)
  log_px = _log_px_by_quadrature(family, params, batch, label=label)

  elbo_parts = jax.jit(lambda p, key: family.elbo_parts(p, x, target, key, labels=labels))
  q_mean, q_log_var = family.encode(params, x, labels)
  _, kl = elbo_parts(params, jax.random.PRNGKey(0))
  np.testing.assert_allclose(kl, gaussian_kl(q_mean, q_log_var, mean, log_var), rtol=1e-5)
  assert np.all(np.abs(kl - gaussian_kl(q_mean, q_log_var)) > 0.5)
  elbo = np.mean([np.asarray(r - k) for r, k in
                  (elbo_parts(params, jax.random.PRNGKey(seed)) for seed in range(100))], axis=0)
  iw = jax.jit(lambda p, keys, k, chunk: family.iw_log_likelihood(p, x, target, keys, k, chunk,
                                                                 labels=labels),
               static_argnums=(2, 3))
  keys = lambda seed: jax.random.split(jax.random.PRNGKey(seed), len(x))
  # K = 1 is a one-sample ELBO: its mean over 100 draws per image is the ELBO's.
  ones = np.stack([np.asarray(iw(params, keys(seed), 1, 1)) for seed in range(100)])
  one_noise = ones.std() / math.sqrt(ones.size)
  assert abs(ones.mean() - elbo.mean()) < 4 * one_noise, (ones.mean(), elbo.mean(), one_noise)
  many = np.asarray(iw(params, keys(7), 1000, 100))
  gap = log_px - many
  assert gap.mean() > -4 * gap.std() / math.sqrt(len(gap)), "K=1000 bound above log p(x | y)"
  elbo_gap = (log_px - elbo).mean()
  assert elbo_gap > 1.0 and gap.mean() < 0.25 * elbo_gap, (elbo_gap, gap.mean())

  images = family.sample(params, jax.random.PRNGKey(1), 10, temperature=0.0,
                         labels=jnp.arange(10))
  at_means = family._mean_image(family.decode(params, params["prior_mean"], jnp.arange(10)))
  np.testing.assert_allclose(images, at_means, atol=1e-6)


def test_a_class_prior_needs_classes():
  config = vae.get_config("digits")
  config.model.class_prior = True
  with pytest.raises(ValueError, match="config.model.class_prior=True needs classes"):
    VAE(config, SourceInfo("digits", (8, 8, 1), "image", 10)).check_config()


def test_kl_weight_warms_up_linearly_to_beta():
  family = _digits_family(beta=0.5, kl_warmup_steps=100)
  weights = [float(family.kl_weight(jnp.array(s))) for s in (0, 50, 100, 1000)]
  np.testing.assert_allclose(weights, [0.0, 0.25, 0.5, 0.5], rtol=1e-6)
  no_warmup = _digits_family(beta=2.0, kl_warmup_steps=0)
  assert float(no_warmup.kl_weight(jnp.array(0))) == 2.0


@pytest.mark.parametrize("overrides,message", [
    ({"model.decoder": "bernoulli"}, "config.model.decoder='bernoulli' models binary pixels"),
    ({"model.decoder": "gaussian"}, "config.model.decoder='gaussian' is for real-valued"),
    ({"data.dequantize": True}, "config.model.decoder='logistic' gives the probability"),
    ({"model.decoder": "poisson"}, "config.model.decoder='poisson' is not known"),
])
def test_vae_rejects_decoders_that_do_not_fit_the_data(overrides, message):
  config = vae.get_config("digits")
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  with pytest.raises(ValueError, match=message):
    VAE(config, SourceInfo("digits", (8, 8, 1), "image")).check_config()


def test_conv_vae_decodes_to_the_image_shape():
  config = conv_vae.get_config()
  family = VAE(config, SourceInfo("fashion_mnist", (28, 28, 1), "image"))
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))
  # Shapes only: traced, not compiled.
  mean, log_var = jax.eval_shape(family.encode, params, jnp.zeros((3, 28, 28, 1)))
  assert mean.shape == log_var.shape == (3, config.model.latent_dim)
  assert jax.eval_shape(family.decode, params, mean).shape == (3, 28, 28, 1, 2)
