"""RealNVP: invertibility, log-determinants, normalization, bits/dim."""

import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from configs import glow, realnvp, realnvp2d
from gen.data import SourceInfo
from gen.evaluate import likelihood
from gen.families.flow import Flow
from gen.models.flow import (ActNorm, Glow, InvertibleConv1x1, RealNVP, RealNVP2D, RealNVPVector,
                             VariationalDequantizer, squeeze, unsqueeze)


def _perturbed(params, scale, seed=1):
  """Parameters moved off the identity initialization, so the flow does something.

  One normal draw for all leaves: a draw per leaf shape compiles its own
  random-number program (seconds for a flow's many shapes).
  """
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  return unravel(flat + scale * jax.random.normal(jax.random.PRNGKey(seed), flat.shape))


def _image_flow(shape=(8, 8, 1), num_scales=2, **fields):
  fields = {"features": 8, "num_res_blocks": 1, "num_couplings": 2,
            "num_final_couplings": 2, **fields}
  model = RealNVP(data_shape=shape, num_scales=num_scales, **fields)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, *shape))
  params = _perturbed(jax.jit(model.init)(jax.random.PRNGKey(2), x)["params"], 0.3)
  return model, params, x


def test_squeeze_is_inverted_by_unsqueeze():
  x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
  assert squeeze(x).shape == (2, 2, 3, 12)
  np.testing.assert_array_equal(unsqueeze(squeeze(x)), x)
  # A 2x2 patch of one channel lands in four channels of one position.
  np.testing.assert_array_equal(np.sort(squeeze(x)[0, 0, 0, ::3]),
                                np.sort(x[0, :2, :2, 0].ravel()))


@pytest.mark.parametrize("shape,num_scales", [((8, 8, 1), 2), ((28, 28, 1), 2), ((4, 4, 3), 1)])
def test_image_flow_inverse_returns_the_input(shape, num_scales):
  model, params, x = _image_flow(shape, num_scales)
  # Compiled: op by op, a flow's many small ops take seconds each to dispatch.
  z, log_det = jax.jit(lambda v: model.apply({"params": params}, v, method="forward"))(x)
  assert z.shape == (3, math.prod(shape))
  assert float(jnp.max(jnp.abs(log_det))) > 0.1, "perturbed flow should not be volume-preserving"
  back = jax.jit(lambda v: model.apply({"params": params}, v, method="inverse"))(z)
  np.testing.assert_allclose(back, x, atol=1e-4)


def test_2d_flow_inverse_returns_the_input():
  model = RealNVP2D(data_shape=(2,), num_couplings=6, hidden_sizes=(32, 32))
  # Points at the scale of toy2d data; float32 round-off grows with |x| and exp(s).
  x = jax.random.normal(jax.random.PRNGKey(0), (100, 2))
  params = _perturbed(jax.jit(model.init)(jax.random.PRNGKey(1), x)["params"], 0.3)
  z, _ = jax.jit(lambda v: model.apply({"params": params}, v, method="forward"))(x)
  assert float(jnp.max(jnp.abs(z - x))) > 0.1
  back = jax.jit(lambda v: model.apply({"params": params}, v, method="inverse"))(z)
  np.testing.assert_allclose(back, x, atol=1e-4)


def _jacobian_log_dets(fn, x):
  """log |det| of fn's Jacobian at each example of x, by jax.jacfwd."""
  single = lambda v: fn(v.reshape(1, *x.shape[1:])).reshape(-1)
  jacobians = jax.jit(jax.vmap(jax.jacfwd(single)))(x.reshape(x.shape[0], -1))
  return np.linalg.slogdet(np.asarray(jacobians, np.float64))[1]


@pytest.mark.parametrize("shape,num_scales", [((4, 4, 1), 1), ((4, 4, 2), 2)])
def test_image_flow_log_det_matches_jacfwd(shape, num_scales):
  with jax.default_matmul_precision("highest"):
    model, params, x = _image_flow(shape, num_scales)
    _, log_det = jax.jit(lambda v: model.apply({"params": params}, v, method="forward"))(x)
    forward = lambda v: model.apply({"params": params}, v, method="forward")[0]
    np.testing.assert_allclose(log_det, _jacobian_log_dets(forward, x), rtol=1e-4, atol=1e-3)


def test_bfloat16_image_flow_inverts_and_its_log_det_is_its_jacobians():
  """In bfloat16 only the coupling networks compute in bfloat16; the flow's own
  values, the affine maps, the inverse and the log-determinant are float32.
  So the inverse is exact to float32 round-off, as in float32, and the
  log-determinant is still the sum of float32 log-scales. jax.jacfwd's
  Jacobian, however, pushes tangents through the bfloat16 networks: each
  entry can be off by about 2^-8 relative, which moves log|det J| by up to
  2^-8 sum_ij |J^-1|_ji |J_ij| to first order: that is the tolerance, per
  example, computed from J itself (about 0.3 here; the error seen is 1e-3)."""
  model, params, x = _image_flow((8, 8, 1), 2, dtype=jnp.bfloat16)
  z, log_det = jax.jit(lambda v: model.apply({"params": params}, v, method="forward"))(x)
  assert z.dtype == jnp.float32 and log_det.dtype == jnp.float32
  back = jax.jit(lambda v: model.apply({"params": params}, v, method="inverse"))(z)
  np.testing.assert_allclose(back, x, atol=1e-4)
  forward = lambda v: model.apply({"params": params}, v.reshape(1, *x.shape[1:]),
                                  method="forward")[0].reshape(-1)
  jacobians = jax.jit(jax.vmap(jax.jacfwd(forward)))(x.reshape(x.shape[0], -1))
  for i in range(x.shape[0]):
    jacobian = np.asarray(jacobians[i], np.float64)
    expected = np.linalg.slogdet(jacobian)[1]
    tolerance = 2.0 ** -8 * np.sum(np.abs(np.linalg.inv(jacobian)).T * np.abs(jacobian))
    assert abs(float(log_det[i]) - expected) < tolerance, (float(log_det[i]), expected)
    # Not vacuous: the flow moves volume by far more than the tolerance.
    assert abs(expected) > 10 * tolerance


def test_2d_flow_log_det_matches_jacfwd():
  model = RealNVP2D(data_shape=(2,), num_couplings=4, hidden_sizes=(16,))
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 2))
  params = _perturbed(jax.jit(model.init)(jax.random.PRNGKey(1), x)["params"], 0.5)
  _, log_det = model.apply({"params": params}, x, method="forward")
  forward = lambda v: model.apply({"params": params}, v, method="forward")[0]
  np.testing.assert_allclose(log_det, _jacobian_log_dets(forward, x), rtol=1e-4, atol=1e-4)


def test_vector_flow_inverts_and_its_log_det_is_its_jacobians():
  """The latent models' flow prior (RealNVPVector): every coordinate moves,
  the inverse returns the input and the log-determinant is the Jacobian's."""
  model = RealNVPVector(data_shape=(12,), num_couplings=4, hidden_sizes=(16,))
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 12))
  params = _perturbed(jax.jit(model.init)(jax.random.PRNGKey(1), x)["params"], 0.5)
  z, log_det = jax.jit(lambda v: model.apply({"params": params}, v, method="forward"))(x)
  assert float(jnp.min(jnp.max(jnp.abs(z - x), axis=0))) > 1e-3
  back = jax.jit(lambda v: model.apply({"params": params}, v, method="inverse"))(z)
  np.testing.assert_allclose(back, x, atol=1e-4)
  with jax.default_matmul_precision("highest"):
    forward = lambda v: model.apply({"params": params}, v, method="forward")[0]
    np.testing.assert_allclose(log_det, _jacobian_log_dets(forward, x), rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="config.model.num_couplings=3"):
    RealNVPVector(data_shape=(12,), num_couplings=3).init(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize("layer", [
    lambda: ActNorm(), lambda: InvertibleConv1x1(channels=4, seed=3),
    lambda: Glow(data_shape=(4, 4, 2), num_scales=2, steps_per_scale=2, features=8)])
def test_glow_layers_invert_and_their_log_dets_are_their_jacobians(layer):
  """Glow's actnorm, LU 1x1 convolution and the whole multi-scale model."""
  model = layer()
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 2 if isinstance(model, Glow) else 4))
  # Initialized on data, then moved off the initial values (by 0.1: the
  # scales of 4 actnorms and 4 convolutions multiply, and with 0.3 |z| reaches
  # 200, where float32 round-off alone moves the inverse by 5e-4).
  params = _perturbed(jax.jit(lambda v: model.init(jax.random.PRNGKey(1), v,
                                                    method="forward"))(x)["params"], 0.1)
  z, log_det = jax.jit(lambda v: model.apply({"params": params}, v, method="forward"))(x)
  back = jax.jit(lambda v: model.apply({"params": params}, v, method="inverse"))(z)
  np.testing.assert_allclose(back, x, atol=1e-4)
  with jax.default_matmul_precision("highest"):
    single = lambda v: model.apply({"params": params}, v, method="forward")[0]
    np.testing.assert_allclose(log_det, _jacobian_log_dets(single, x), rtol=1e-4, atol=1e-3)


def test_actnorm_starts_by_normalizing_the_batch_it_is_initialized_on():
  x = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(0), (64, 4, 4, 3))
  model = ActNorm()
  params = model.init(jax.random.PRNGKey(1), x, method="forward")["params"]
  y, _ = model.apply({"params": params}, x, method="forward")
  np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(jnp.std(y, axis=(0, 1, 2)), 1.0, atol=1e-4)
  # A constant input (a shape-only init) leaves the layer the identity in scale.
  flat = model.init(jax.random.PRNGKey(1), jnp.zeros((2, 4, 4, 3)), method="forward")
  np.testing.assert_array_equal(flat["params"]["log_scale"], 0.0)


def test_glow_trains_on_digits_from_a_data_initialized_start(tmp_path):
  from tests.helpers import train_in_process
  results = train_in_process("configs/glow.py:digits", tmp_path)
  assert np.isfinite(results["test"]["bits_per_dim_exact"])
  assert results["samples"]["T=1"]["nonfinite"] == 0
  with pytest.raises(ValueError, match="configs/glow.py:huge"):
    glow.get_config("huge")


def test_variational_dequantizer_gives_noise_in_the_unit_box_and_its_exact_density():
  """log q(u | x) = log N(eps) - log |det du/deps|, the Jacobian by jacfwd."""
  model = VariationalDequantizer(num_couplings=4, features=8)
  pixels = jnp.floor(256 * jax.random.uniform(jax.random.PRNGKey(0), (3, 4, 4, 1)))
  eps = jax.random.normal(jax.random.PRNGKey(1), pixels.shape)
  params = _perturbed(model.init(jax.random.PRNGKey(2), pixels, eps)["params"], 0.3)
  u, log_q = jax.jit(lambda e: model.apply({"params": params}, pixels, e))(eps)
  assert float(u.min()) > 0 and float(u.max()) < 1
  with jax.default_matmul_precision("highest"):
    log_dets = []
    for i in range(3):
      jacobian = jax.jacfwd(lambda e: model.apply({"params": params}, pixels[i:i + 1],
                                                  e.reshape(1, 4, 4, 1))[0].ravel())(
          eps[i].ravel())
      log_dets.append(np.linalg.slogdet(np.asarray(jacobian, np.float64))[1])
  log_normal = stats.norm.logpdf(np.asarray(eps, np.float64)).reshape(3, -1).sum(axis=1)
  np.testing.assert_allclose(log_q, log_normal - np.array(log_dets), rtol=1e-4, atol=1e-3)
  # The image conditions the noise: another image, other u from the same eps.
  other, _ = model.apply({"params": params}, 255.0 - pixels, eps)
  assert float(jnp.max(jnp.abs(other - u))) > 1e-3


def test_glow_with_variational_dequantization_trains_and_reports_its_bound(tmp_path):
  from gen.evaluate import report
  from tests.helpers import train_in_process
  results = train_in_process("configs/glow.py:vd_digits", tmp_path)
  bound = results["test"]["bits_per_dim_variational_bound"]
  assert np.isfinite(bound) and "bits_per_dim_exact" not in results["test"]
  assert report.likelihood(results) == (bound, "bound, variational dequantization")
  assert results["samples"]["T=1"]["nonfinite"] == 0
  config = glow.get_config("vd_digits")
  config.data.dequantize = True
  with pytest.raises(ValueError, match="config.model.dequantization='variational' draws"):
    Flow(config, SourceInfo("digits", (8, 8, 1), "image")).check_config()
  flat = realnvp2d.get_config()
  flat.model.dequantization = "variational"
  with pytest.raises(ValueError, match="config.model.dequantization is not a setting of "
                                       "model 'realnvp2d'"):
    Flow(flat, SourceInfo("toy2d/moons", (2,), "vector"))


def test_logit_preprocessing_log_det_matches_jacfwd():
  y = jax.random.uniform(jax.random.PRNGKey(0), (2, 3, 3, 1))
  _, log_det = likelihood.logit(y, 0.05)
  expected = _jacobian_log_dets(lambda v: likelihood.logit(v, 0.05)[0], y)
  np.testing.assert_allclose(log_det, expected, rtol=1e-5)
  back = likelihood.inverse_logit(likelihood.logit(y, 0.05)[0], 0.05)
  np.testing.assert_allclose(back, y, atol=1e-5)


def _ring_family():
  config = realnvp2d.get_config()
  config.model.num_couplings = 6
  config.model.hidden_sizes = (32, 32)
  return Flow(config, SourceInfo("toy2d/ring8", (2,), "vector"))


def test_2d_flow_density_integrates_to_one():
  family = _ring_family()
  params = _perturbed(jax.jit(family.init_params)(jax.random.PRNGKey(0)), 0.1)
  xs = np.linspace(-10, 10, 801, dtype=np.float32)
  grid = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)
  log_prob, _ = jax.jit(family.log_likelihood)(params, grid)
  density = np.exp(np.asarray(log_prob, np.float64)).reshape(801, 801)
  # The perturbed flow is far from a standard normal: the test is not trivial.
  xx, yy = np.meshgrid(xs.astype(np.float64), xs.astype(np.float64))
  standard_normal = np.exp(-(xx ** 2 + yy ** 2) / 2) / (2 * math.pi)
  assert np.max(np.abs(density - standard_normal)) > 0.02
  mass = density.sum() * (xs[1] - xs[0]) ** 2
  assert abs(mass - 1.0) < 0.01, mass


def test_uniform_density_is_eight_bits_per_dim():
  # Uniform on [0, 256)^D has density 256^-D: log2(256) = 8 bits per value,
  # whether the model saw pixel values (v / 256: density 1 on [0, 1)^D) or [-1, 1).
  num_dims = 784
  for scale, density in (("unit", 0.0), ("symmetric", num_dims * math.log(0.5))):
    bpd = likelihood.bits_per_dim(jnp.array([density]), num_dims,
                                  likelihood.scale_log_det(num_dims, scale))
    np.testing.assert_allclose(bpd, [8.0], rtol=1e-6)


def test_identity_flow_bits_per_dim_matches_the_analytic_value():
  """At initialization the image flow is the identity (zero-initialized couplings), so
  the model says logit(alpha + (1 - 2 alpha) v / 256) ~ N(0, I). On uniformly random
  8-bit images, dequantized, its expected bits/dim is a 1-D integral over y = v / 256."""
  alpha = 0.05
  config = realnvp.get_config("digits")
  config.model.logit_alpha = alpha
  family = Flow(config, SourceInfo("digits", (8, 8, 1), "image"))
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))

  def nll_of(y):  # -log p_v(v) for one value, by the change of variables, in float64
    s = alpha + (1 - 2 * alpha) * y
    z = math.log(s / (1 - s))
    return -(stats.norm.logpdf(z) + math.log((1 - 2 * alpha) / (s * (1 - s)))
             - math.log(256))

  expected = integrate.quad(nll_of, 0.0, 1.0, limit=200)[0] / math.log(2)
  pixels = np.random.default_rng(0).integers(0, 256, size=(4000, 8, 8, 1), dtype=np.uint8)
  batch = {"x": pixels, "uid": np.arange(4000, dtype=np.int32)}
  x = jax.jit(family.prepare, static_argnames="train")(batch, jax.random.PRNGKey(1),
                                                      train=True)  # dequantized
  bpd = np.asarray(jax.jit(family._per_example_loss)(params, x))
  standard_error = bpd.std() / math.sqrt(len(bpd))
  assert abs(bpd.mean() - expected) < 4 * standard_error, (bpd.mean(), expected)
  assert standard_error < 0.01


def test_temperature_scales_the_latent_of_samples():
  family = _ring_family()
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))  # identity: samples are the latents
  cold = family.sample(params, jax.random.PRNGKey(3), 4000, 0.5)
  warm = family.sample(params, jax.random.PRNGKey(3), 4000, 1.0)
  np.testing.assert_allclose(cold, 0.5 * warm, rtol=1e-5, atol=1e-6)
  assert abs(float(jnp.std(warm)) - 1.0) < 0.05


@pytest.mark.parametrize("key,value,message", [
    ("data.dequantize", False, "config.data.dequantize=False"),
    ("data.scale", "symmetric", "config.data.scale='symmetric'"),
    ("model.logit_alpha", 0.5, "config.model.logit_alpha=0.5"),
])
def test_flow_rejects_settings_that_break_its_likelihood(key, value, message):
  config = realnvp.get_config("digits")
  section, name = key.split(".")
  config[section][name] = value
  family = Flow(config, SourceInfo("digits", (8, 8, 1), "image"))
  with pytest.raises(ValueError, match=message.replace("(", r"\(")):
    family.check_config()


def test_too_many_scales_names_the_setting():
  with pytest.raises(ValueError, match="config.model.num_scales=3"):
    _image_flow((28, 28, 1), 3)
