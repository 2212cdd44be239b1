"""Reported numbers that cannot look better than the model is.

Each test here failed on the code before its fix (issue 15, "Reported
numbers"): a mean that left non-finite values out, the flow's samples mapped
to pixels by round(255 y), evaluation noise tied to a batch position, an EMA
that started at the initial weights, a sample-quality baseline made of
images the feature classifier trained on, and a VAE loss curve that set two
different quantities side by side.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import autoencoder, ddpm, gan, realnvp, vae
from gen import data as data_lib
from gen import families
from gen.data import to_unit
from gen.evaluate import fidelity
from gen.families.base import Family, apply_if_finite
from gen.train import sharding, steps
from gen.train.state import TrainState


class _StubFamily:
  """evaluate() returns fixed per-example values: [1, inf, 2, ...] by uid."""

  def __init__(self, values):
    self.values = np.asarray(values, np.float32)

  def evaluate(self, params, batch, rng, final=False):
    return {"nll": jnp.asarray(self.values)[batch["uid"] % len(self.values)]}


class _StubDataset:
  def __init__(self, count):
    self.count = count

  def eval_batches(self, split, batch_size, part=slice(None)):
    for start in range(0, self.count, batch_size):
      uid = np.arange(start, start + batch_size)
      mask = (uid < self.count).astype(np.float32)
      yield {"x": np.zeros((batch_size, 1), np.float32),
             "uid": np.minimum(uid, self.count - 1).astype(np.int32), "mask": mask}


def test_a_nonfinite_value_makes_the_mean_nonfinite_and_is_counted():
  """A model that puts zero density where a point lies has an infinite NLL there:
  the mean must say so (the old mean over finite values improved instead)."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  metrics = steps.evaluate_split(steps.make_eval_fn(_StubFamily([1.0, np.inf, 2.0]), mesh),
                                 None, _StubDataset(6), "test", 4, mesh)
  assert metrics["nll"] == np.inf and metrics["nonfinite/nll"] == 2
  finite = steps.evaluate_split(steps.make_eval_fn(_StubFamily([1.0, 3.0]), mesh),
                                None, _StubDataset(5), "test", 4, mesh)
  # Padding rows (the last batch has 3 of 4) never count; 1, 3, 1, 3, 1.
  assert finite["nll"] == pytest.approx(9 / 5) and "nonfinite/nll" not in finite
  nan = steps.evaluate_split(steps.make_eval_fn(_StubFamily([1.0, np.nan]), mesh),
                             None, _StubDataset(3), "test", 4, mesh)
  assert np.isnan(nan["nll"]) and nan["nonfinite/nll"] == 1


_DIGITS = data_lib.SourceInfo("digits", (8, 8, 1), "image", 10)


def _tiny(config_module, variant="digits", **model):
  """The family of a config's :digits variant, with its model made tiny: what
  is tested here does not depend on size, and compiling a small model is fast."""
  config = config_module.get_config(variant)
  for key, value in model.items():
    config.model[key] = value
  return config


_TINY_CONFIGS = {
    "autoencoder": lambda: _tiny(autoencoder),
    "vae": lambda: _tiny(vae, hidden_sizes=(16,)),
    "flow": lambda: _tiny(realnvp, num_scales=1, num_couplings=1, num_final_couplings=1,
                          features=4, num_res_blocks=1),
    "gan": lambda: _tiny(gan, generator_channels=(8,), discriminator_channels=(8,),
                         spectral_norm_iterations=1),
    "ddpm": lambda: _tiny(ddpm, channels=8, channel_mults=(1,), attention_resolutions=(),
                          num_groups=4),
}


@pytest.mark.parametrize("name", sorted(_TINY_CONFIGS))
def test_samples_map_back_to_the_pixels_they_came_from(name):
  """pixels -> the family's preprocessing -> [0, 1] -> Family.to_pixels is the
  identity, dequantization noise included (round(255 y) gave the flow's 0
  pixels back as 1 about half of the time)."""
  config = _TINY_CONFIGS[name]()
  family = families.make(config, _DIGITS)
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (64, 8, 8, 1)).astype(np.uint8)
  pixels[:8] = 0  # the most common Fashion-MNIST value
  pixels[8:16] = 255
  batch = {"x": jnp.asarray(pixels), "uid": jnp.arange(64, dtype=jnp.int32)}
  x = family.prepare(batch, None, train=False)
  unit = np.asarray(to_unit(x, config.data.scale))
  np.testing.assert_array_equal(family.to_pixels(unit), pixels)


def _params_off_init(family):
  """Initial parameters moved by a seeded random amount: zero-initialized
  output layers would make every metric trivially batch-independent."""
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))
  leaves, tree = jax.tree_util.tree_flatten(params)
  # Drawn by numpy: a jax draw per leaf shape would compile a program each.
  rng = np.random.default_rng(1)
  leaves = [np.asarray(leaf) + 0.05 * rng.standard_normal(leaf.shape).astype(leaf.dtype)
            if jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.ndim else leaf
            for leaf in leaves]
  return jax.tree_util.tree_unflatten(tree, leaves)


@pytest.mark.parametrize("name", sorted(_TINY_CONFIGS))
def test_test_metrics_do_not_depend_on_the_evaluation_batch_size(name):
  """Noise drawn per example id (dequantization, the VAE's posterior and
  importance samples, the GAN's latents): the same numbers at batch 40 and
  72. Drawn from one key per batch, the same noise repeated in every batch
  and the numbers moved with the batch size."""
  config = _TINY_CONFIGS[name]()
  config.eval.iw_samples, config.eval.iw_chunk = 8, 4
  dataset = data_lib.load(config)
  family = families.make(config, dataset.info)
  params = _params_off_init(family)
  mesh = sharding.make_mesh(jax.devices()[:1])
  results = []
  for batch_size in (40, 72):
    eval_fn = steps.make_eval_fn(family, mesh, final=True)
    results.append(steps.evaluate_split(eval_fn, params, dataset, "test", batch_size, mesh))
  assert results[0].keys() == results[1].keys()
  for key in results[0]:
    np.testing.assert_allclose(results[0][key], results[1][key], rtol=2e-5, err_msg=key)


def test_ema_is_the_debiased_average_and_ignores_the_initial_weights():
  """After t updates the EMA equals sum_i (1 - d) d^(t-i) p_i / (1 - d^t): the
  initial weights carry no weight (the plain EMA kept d^t of them, 13.5% at
  step 2000 for d = 0.999)."""
  decay = 0.9
  rng = np.random.default_rng(0)
  history = rng.normal(size=(25, 3)).astype(np.float32)
  initial = np.full(3, 100.0, np.float32)  # would dominate a plain EMA early on
  state = TrainState(step=jnp.array(0, jnp.int32), params=jnp.asarray(initial), opt_state=(),
                     rng=jax.random.PRNGKey(0), skipped_updates=jnp.array(0, jnp.int32),
                     ema_params=jnp.asarray(initial))
  for t, params in enumerate(history, start=1):
    state, _ = apply_if_finite(state, jnp.asarray(params), (), jnp.float32(0.0), (), {}, decay)
    weights = (1 - decay) * decay ** (t - 1 - np.arange(t))
    expected = (weights[:, None] * history[:t]).sum(0) / (1 - decay ** t)
    np.testing.assert_allclose(state.ema_params, expected, rtol=1e-5, atol=1e-6)
    if t == 1:  # the first value is exactly the first parameters
      np.testing.assert_array_equal(state.ema_params, history[0])


def test_the_sample_quality_baseline_is_made_of_images_nobody_trained_on():
  """The baseline compares validation images that neither the generator nor the
  feature classifier saw with the test set, at the samples' count (the
  classifier had trained on the train images the old baseline used)."""
  config = _TINY_CONFIGS["autoencoder"]()
  config.eval.fid_samples = 150
  dataset = data_lib.load(config)
  seen_by_features = []

  class Classifier:  # a fixed feature map that records what it is shown
    workdir, step = "stub", 0
    # The classifier held out only half of the generator's validation rows.
    unseen_rows = np.concatenate([dataset.val_rows[::2], [dataset.train.rows[0]]])

    def __call__(self, pixels):
      seen_by_features.append(np.asarray(pixels))
      flat = pixels.reshape(len(pixels), -1).astype(np.float64)
      return flat[:, :16], (flat.sum(1) % 10).astype(int)

  def draw(params, rng, count):
    return jax.random.uniform(rng, (count, 8, 8, 1))

  result = fidelity.sample_quality(draw, None, dataset, config, Classifier())
  unseen = np.intersect1d(dataset.val_rows, Classifier.unseen_rows)
  assert result["num_samples"] == len(unseen) == 100  # min(150, 100 unseen)
  baseline = dataset.train_source.take(np.sort(unseen))["x"]
  shown = [x for x in seen_by_features if x.shape == baseline.shape]
  assert any(np.array_equal(np.sort(x.reshape(len(x), -1), 0),
                            np.sort(baseline.reshape(len(x), -1), 0)) for x in shown)
  for key in ("fid_val_vs_test", "fid_train_vs_test", "precision_val_vs_test"):
    assert np.isfinite(result[key])


def test_vae_loss_curve_sets_the_bound_against_the_bound(tmp_path, monkeypatch):
  """A VAE trains on a KL-warmed-up loss, but validates the full bound: the curve
  must plot the train bound (elbo_bound) against it, not the warmed-up loss."""
  from gen import loop
  from gen.evaluate import plots
  drawn = {}
  original = plots.save_loss_curves

  def spy(workdir, *keys):
    drawn.update(original(workdir, *keys) or {})
    return drawn
  monkeypatch.setattr(plots, "save_loss_curves", spy)
  config = _TINY_CONFIGS["vae"]()
  config.model.kl_warmup_steps = 40
  config.train.log_every = 10
  config.eval.num_images = 0
  config.eval.iw_samples = 0
  config.eval.fid_samples = 0
  loop.train_and_evaluate(config, str(tmp_path))
  from gen.train import metrics_io
  rows = metrics_io.read_metrics(str(tmp_path / "metrics.jsonl"))
  assert drawn["train"] == metrics_io.curve(rows, "train", "elbo_bound")
  assert drawn["train"][1] != metrics_io.curve(rows, "train", "loss")[1]
  assert drawn["val"] == metrics_io.curve(rows, "val", "loss")
