"""Latent models (gen.families.latent): the spatial autoencoder first stage,
one command that trains both stages, the checks on a first stage, and the
reconstruction FD that bounds a latent model."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import ddpm as ddpm_config
from configs import latent as latent_config
from configs import spatial_autoencoder as spatial_config
from configs import vae as vae_config
from gen import data as data_lib
from gen import families
from gen.errors import UserError
from gen.evaluate import fidelity
from gen.families import classifier as classifier_lib
from gen.families import latent
from gen.models.autoencoder import SpatialAutoencoder
from tests.helpers import train_in_process


def test_spatial_autoencoder_codes_are_feature_maps():
  model = SpatialAutoencoder(data_shape=(28, 28, 1), features=(8, 16), code_channels=4)
  x = jnp.zeros((2, 28, 28, 1))
  shapes = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), x))
  assert shapes[0].shape == x.shape
  params = shapes[1]["params"]
  code = jax.eval_shape(lambda p: model.apply({"params": p}, x, method="encode"), params)
  assert code.shape == (2, 7, 7, 4)
  with pytest.raises(ValueError, match=r"config.model.features=\(8, 16, 32\)"):
    bad = SpatialAutoencoder(data_shape=(28, 28, 1), features=(8, 16, 32))
    jax.eval_shape(lambda: bad.init(jax.random.PRNGKey(0), x))


def test_one_command_trains_both_stages_and_reuses_a_finished_first_stage(tmp_path):
  results = train_in_process("configs/latent.py:digits", tmp_path / "latent")
  first = tmp_path / "first_stage_spatial_autoencoder_digits"
  assert latent.finished(str(first))
  assert results["first_stage"]["code_shape"] == [2, 2, 4]
  assert results["first_stage"]["workdir"] == str(first)
  assert results["samples"]["T=1"]["nonfinite"] == 0
  assert np.isfinite(results["test"]["loss"])
  with open(tmp_path / "latent" / "config.json") as file:
    assert json.load(file)["latent"]["first_stage_workdir"] == str(first)
  # A second latent model on the same first stage does not train it again.
  stamp = os.path.getmtime(first / "results.json")
  train_in_process("configs/latent.py:digits", tmp_path / "latent_eps",
                   "--config.model.objective=eps", "--config.eval.sampler=ddim")
  # And a flow prior on the same codes (flattened): decoded samples, finite.
  flow = train_in_process("configs/latent.py:flow_digits", tmp_path / "latent_flow")
  assert flow["samples"]["T=1"]["nonfinite"] == 0 and np.isfinite(flow["test"]["nll_exact"])
  assert os.path.getmtime(first / "results.json") == stamp


def _write_run(workdir, config, finished=False):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as file:
    file.write(config.to_json_best_effort())
  if finished:
    with open(os.path.join(workdir, "results.json"), "w") as file:
      json.dump({"step": config.train.num_steps}, file)


def test_a_first_stage_without_an_encoder_or_of_other_data_is_refused(tmp_path):
  config = latent_config.get_config("digits")
  no_encoder = str(tmp_path / "ddpm")
  _write_run(no_encoder, ddpm_config.get_config("digits"))
  config.latent.first_stage_workdir = no_encoder
  with pytest.raises(UserError, match=r"config.latent.first_stage_workdir=.*ddpm family\), "
                                      r"which has no encoder"):
    latent.prepare_first_stage(config, str(tmp_path / "run"), lambda *_: None)
  other_data = str(tmp_path / "fashion")
  _write_run(other_data, spatial_config.get_config())
  config.latent.first_stage_workdir = other_data
  with pytest.raises(UserError, match=r"'fashion_mnist', but config.data.name='digits'"):
    latent.prepare_first_stage(config, str(tmp_path / "run"), lambda *_: None)
  config.latent.first_stage_workdir = ""
  config.latent.first_stage = "configs/nothing.py"
  with pytest.raises(UserError, match=r"config.latent.first_stage='configs/nothing.py'"):
    latent.prepare_first_stage(config, str(tmp_path / "run"), lambda *_: None)


def test_reconstruction_fd_is_the_baseline_for_perfect_reconstructions(digits_classifier):
  config = vae_config.get_config("digits")
  config.data.validation_size = 400
  config.eval.fid_samples = 300
  dataset = data_lib.load(config)
  classifier = classifier_lib.ClassifierFeatures(digits_classifier, dataset)
  perfect = fidelity.reconstruction_quality(lambda batch: batch["x"] / 255.0, dataset, config,
                                            classifier)
  assert perfect["num_images"] == 300
  # The reconstructions are the baseline's images: the same distance.
  np.testing.assert_allclose(perfect["fid"], perfect["fid_val_vs_test"], rtol=1e-9)
  blurred = fidelity.reconstruction_quality(
      lambda batch: jnp.broadcast_to(jnp.mean(batch["x"] / 255.0, axis=(1, 2), keepdims=True),
                                     batch["x"].shape), dataset, config, classifier)
  assert blurred["fid"] > 10 * perfect["fid_val_vs_test"]


def test_code_noise_fixes_the_code_scale_and_perturbs_only_training():
  config = spatial_config.get_config("digits")
  config.model.code_noise = 0.2
  info = data_lib.SourceInfo("digits", (8, 8, 1), "image", 10)
  family = families.make(config, info)
  family.check_config()
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (6, 8, 8, 1))
  code = jax.jit(family.encode)(params, x)
  # Unit RMS per code: the encoder cannot outgrow the noise.
  np.testing.assert_allclose(np.sqrt(np.mean(np.square(code), axis=(1, 2, 3))), 1.0, rtol=1e-4)
  batch = {"x": np.asarray(x * 255, np.uint8), "uid": np.arange(6, dtype=np.int32)}
  loss = jax.jit(lambda rng: family.loss(params, batch, rng, 0)[0])
  # Training sees noisy codes (its loss moves with the key) ...
  assert float(loss(jax.random.PRNGKey(0))) != float(loss(jax.random.PRNGKey(1)))
  # ... evaluation and reconstruction do not.
  evaluate = jax.jit(lambda rng: family.evaluate(params, batch, rng)["loss"])
  np.testing.assert_array_equal(evaluate(jax.random.PRNGKey(0)), evaluate(jax.random.PRNGKey(1)))
  # Without code noise the codes keep their scale and training its random stream.
  config.model.code_noise = 0.0
  plain = families.make(config, info)
  assert not np.allclose(np.mean(np.square(jax.jit(plain.encode)(params, x))), 1.0, rtol=1e-2)
  config.model.code_noise = 1.5
  with pytest.raises(ValueError, match=r"config.model.code_noise=1.5"):
    families.make(config, info).check_config()


def test_a_residual_mlp_second_stage_trains_and_samples(tmp_path):
  results = train_in_process("configs/latent.py:mlp_digits", tmp_path / "latent_mlp")
  assert results["samples"]["T=1"]["nonfinite"] == 0
  assert np.isfinite(results["test"]["loss"])
  assert results["first_stage"]["code_shape"] == [2, 2, 4]
  with pytest.raises(ValueError, match=r"config.model.num_blocks=0"):
    families.make(_residual_mlp_config(num_blocks=0),
                  data_lib.SourceInfo("digits", (8, 8, 1), "image", 10)).init_params(
                      jax.random.PRNGKey(0))


def _residual_mlp_config(**model):
  config = ddpm_config.get_config("digits")
  keep = ("objective", "timesteps", "noise_schedule", "beta_start", "beta_end")
  config.model = ml_collections.ConfigDict(
      {"name": "residual_mlp", **{k: v for k, v in config.model.items() if k in keep}, **model})
  return config


def test_a_flow_prior_on_vae_codes_reports_both_bounds(tmp_path):
  results = train_in_process("configs/latent.py:vae_flow_digits", tmp_path / "prior")
  test = results["test"]
  names = ["bits_per_dim_elbo_bound", "bits_per_dim_learned_prior_elbo_bound",
           "bits_per_dim_iw20_bound", "bits_per_dim_learned_prior_iw20_bound"]
  assert all(np.isfinite(test[name]) for name in names), test
  # The importance-weighted bound is the tighter one, with either prior.
  assert test["bits_per_dim_iw20_bound"] < test["bits_per_dim_elbo_bound"]
  assert test["bits_per_dim_learned_prior_iw20_bound"] < test["bits_per_dim_learned_prior_elbo_bound"]
  from gen import restore
  from gen.evaluate import report
  bits, kind = report.likelihood(results)
  assert bits == min(test[name] for name in names[2:]) and kind.startswith("bound, importance")
  run = restore.load_run(str(tmp_path / "prior"))
  family = run.family
  batch = run.dataset.test_source.take(run.dataset.test_rows[:8])
  batch = {"x": batch["x"], "uid": run.dataset.test_rows[:8].astype(np.int32)}
  # The second stage trains on posterior draws; reconstructions use the means.
  means = family.encode(batch)
  draws = [family.encode(batch, jax.random.PRNGKey(seed)) for seed in (0, 1)]
  assert not np.allclose(draws[0], draws[1]) and not np.allclose(draws[0], means)
  # With the prior a flow at its (identity) initialization on unstandardized
  # codes, the learned prior is N(0, I): both bounds must agree.
  family.code_mean = jnp.zeros_like(family.code_mean)
  family.code_std = jnp.ones_like(family.code_std)
  identity = family.init_params(jax.random.PRNGKey(0))
  bounds = jax.jit(family.vae_bounds)(identity, batch)
  np.testing.assert_allclose(bounds["bits_per_dim_learned_prior_iw20_bound"],
                             bounds["bits_per_dim_iw20_bound"], rtol=1e-5)
  np.testing.assert_allclose(bounds["bits_per_dim_learned_prior_elbo_bound"],
                             bounds["bits_per_dim_elbo_bound"], rtol=1e-5)


def test_a_conditional_latent_model_trains_and_draws_each_class(tmp_path):
  """The second stage sees the labels of the images whose codes it models;
  samples of two classes from the same noise differ."""
  from gen import bundle, restore
  workdir = tmp_path / "latent_cond"
  train_in_process("configs/latent.py:cond_digits", workdir,
                   f"--config.latent.first_stage_workdir={tmp_path / 'first'}",
                   "--config.eval.num_images=0", "--config.eval.fid_samples=0")
  run = restore.load_run(str(workdir))
  assert bundle.num_classes(run.family) == 10
  key = jax.random.PRNGKey(0)
  threes = run.family.sample(run.params, key, 4, labels=jnp.full(4, 3))
  sevens = run.family.sample(run.params, key, 4, labels=jnp.full(4, 7))
  assert threes.shape == (4, 8, 8, 1)
  assert float(jnp.max(jnp.abs(threes - sevens))) > 1e-3
