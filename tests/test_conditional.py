"""Class-conditional diffusion and flow matching with classifier-free guidance:
guidance 0 and 1 are exactly the unconditional and conditional models, a
short conditional run draws the classes asked for, bad settings are named."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import flow_matching
from gen import bundle, families, restore
from gen.data import SourceInfo
from gen.errors import UserError
from tests.helpers import ROOT, subprocess_env, train_in_process

DIGITS = SourceInfo("digits", (8, 8, 1), "image", 10)


def _family(guidance: float, **model):
  config = flow_matching.get_config("cond_digits")
  config.eval.guidance_scale = guidance
  for key, value in model.items():
    config.model[key] = value
  return families.make(config, DIGITS)


def _sweep(workdir, *flags: str):
  """experiments/guidance_sweep.py on `workdir` with 100 samples per scale."""
  command = [sys.executable, os.path.join(ROOT, "experiments", "guidance_sweep.py"),
             f"--workdir={workdir}", "--samples=100", *flags]
  return subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True,
                        text=True, timeout=300)


def _moved(params, scale=0.3):
  """Parameters off their initialization (zero-initialized output layers would
  make every prediction 0, whatever the class)."""
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  return unravel(flat + scale * jax.random.normal(jax.random.PRNGKey(5), flat.shape))


def test_guidance_zero_and_one_are_the_unconditional_and_conditional_models():
  import jax.flatten_util  # noqa: F401
  params = _moved(_family(1.0).init_params(jax.random.PRNGKey(0)))
  labels = jnp.arange(6) % 10
  key = jax.random.PRNGKey(1)
  draw = lambda guidance, labels: jax.jit(lambda p: _family(guidance).sample(
      p, key, 6, labels=labels))(params)
  unconditional = draw(1.0, jnp.full(6, 10))  # the "no class" row, unguided
  conditional = draw(1.0, labels)
  np.testing.assert_array_equal(draw(0.0, labels), unconditional)
  assert not np.allclose(conditional, unconditional)
  # Guidance s mixes the two predictions: u + s (c - u), for any s.
  x = jax.random.normal(key, (6, 8, 8, 1))
  t = jnp.full(6, 0.5)
  family = _family(1.0)
  c = family.network(params, labels=labels)(x, t)
  u = family.network(params)(x, t)
  guided = family.network(params, labels=labels, guidance=3.0)(x, t)
  # (float32: the two halves run as one batch of 12, the references as 6.)
  np.testing.assert_allclose(guided, u + 3.0 * (c - u), rtol=1e-4, atol=1e-4)


def test_guidance_in_an_interval_guides_only_the_noise_levels_inside_it():
  import jax.flatten_util  # noqa: F401
  family = _family(1.0)
  params = _moved(family.init_params(jax.random.PRNGKey(0)))
  labels = jnp.arange(6) % 10
  x = jax.random.normal(jax.random.PRNGKey(2), (6, 8, 8, 1))
  t = jnp.linspace(0.1, 0.9, 6)  # noise levels t / (1 - t): 0.11 0.35 0.72 1.4 2.8 9
  c = family.network(params, labels=labels)(x, t)
  everywhere = family.network(params, labels=labels, guidance=3.0)(x, t)
  limited = _family(1.0)
  limited.config.eval.guidance_interval = (0.5, 2.0)
  out = limited.network(params, labels=labels, guidance=3.0)(x, t)
  inside = np.array([False, False, True, True, False, False])
  np.testing.assert_allclose(out[inside], everywhere[inside], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out[~inside], c[~inside], rtol=1e-4, atol=1e-4)
  assert not np.allclose(everywhere[~inside], c[~inside], atol=1e-3)
  # Scale 0 in an interval: the unconditional model inside it, conditional outside.
  u = family.network(params)(x, t)
  out = limited.network(params, labels=labels, guidance=0.0)(x, t)
  np.testing.assert_allclose(out[inside], u[inside], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out[~inside], c[~inside], rtol=1e-4, atol=1e-4)


def test_the_noise_level_of_each_path_is_sigma_over_alpha():
  from gen.diffusion import paths
  flow = paths.FlowPath()
  np.testing.assert_allclose(flow.noise_level(jnp.array([0.0, 0.5, 0.8])), [0.0, 1.0, 4.0],
                             rtol=1e-6)
  discrete = paths.DiscretePath(paths.make_schedule("cosine", 1000))
  steps = np.array([0, 250, 999])
  abar = discrete.schedule["alphas_cumprod"][steps]
  np.testing.assert_allclose(discrete.noise_level(jnp.asarray(steps)),
                             np.sqrt((1 - abar) / abar), rtol=1e-4)
  # Between steps (the ODE samplers' times) it lies between its neighbours.
  between = float(discrete.noise_level(jnp.array([250.5]))[0])
  assert (float(discrete.noise_level(jnp.array([250]))[0]) < between
          < float(discrete.noise_level(jnp.array([251]))[0]))


def test_conditional_settings_that_cannot_work_are_named():
  with pytest.raises(ValueError, match=r"config.eval.guidance_scale=2.0 guides a "
                                       r"class-conditional model"):
    _family(2.0, num_classes=0).check_config()
  with pytest.raises(ValueError, match="config.model.num_classes=12, but digits has 10"):
    _family(1.0, num_classes=12).check_config()
  bad = _family(2.0)
  bad.config.eval.guidance_interval = (3.0, 1.0)
  with pytest.raises(ValueError, match=r"config.eval.guidance_interval=\(3.0, 1.0\): give "
                                       r"\(low, high\)"):
    bad.check_config()
  with pytest.raises(ValueError, match=r"config.model.label_dropout=1.0"):
    _family(1.0, label_dropout=1.0).check_config()
  with pytest.raises(UserError, match=r"--class=10 is out of range"):
    bundle.image_labels(_family(1.0), 4, 10)
  with pytest.raises(UserError, match=r"--class=3: the model is unconditional"):
    bundle.image_labels(_family(1.0, num_classes=0), 4, 3)


def test_a_short_conditional_run_draws_the_classes_asked_for(tmp_path, digits_classifier):
  from gen.families import classifier as classifier_lib
  workdir = tmp_path / "cond"
  train_in_process("configs/flow_matching.py:cond_digits", workdir,
                   "--config.train.num_steps=400", "--config.eval.num_images=0",
                   "--config.eval.fid_samples=0", f"--config.eval.classifier={digits_classifier}")
  run = restore.load_run(str(workdir))
  classifier, why = classifier_lib.find_classifier(run.config, run.dataset)
  assert classifier is not None, why
  labels = bundle.image_labels(run.family, 200)
  images = bundle.draw(run.family, run.params, 200, seed=0, labels=labels)
  accuracy = float(np.mean(classifier(images)[1] == labels))
  assert accuracy > 0.3, accuracy  # chance: 0.1
  # The sweep's command line: a table row per scale.
  result = _sweep(workdir, "--scales=0,2", f"--out={tmp_path / 'sweep'}")
  assert result.returncode == 0, result.stderr[-2000:]
  rows = [line for line in result.stdout.splitlines() if line.startswith("| 0 |")
          or line.startswith("| 2 |")]
  assert len(rows) == 2
  assert (tmp_path / "sweep.png").stat().st_size > 0


@pytest.mark.parametrize("config_file", ["configs/vae.py:cond_digits",
                                         "configs/conv_vae.py:cond_digits"])
def test_a_conditional_vae_decodes_the_class_it_is_given(tmp_path, config_file,
                                                        digits_classifier):
  """Its decoder sees the label: the same z decoded as two classes gives two
  images; the bounds are finite; samples drawn from the class prior follow the
  classes asked for; label_use.py measures how it uses the label."""
  from experiments.benchmarks import label_use
  from gen.families import classifier as classifier_lib
  results = train_in_process(config_file, tmp_path / "cvae", "--config.eval.fid_samples=0",
                             "--config.eval.num_images=0", "--config.train.num_steps=300",
                             f"--config.eval.classifier={digits_classifier}")
  assert np.isfinite(results["test"]["bits_per_dim_elbo_bound"])
  assert np.isfinite(results["test"]["bits_per_dim_iw20_bound"])
  run = restore.load_run(str(tmp_path / "cvae"))
  family = run.family
  z = jax.random.normal(jax.random.PRNGKey(0), (4, family.model.latent_dim))
  threes = family.decode(run.params, z, jnp.full(4, 3))
  sevens = family.decode(run.params, z, jnp.full(4, 7))
  assert float(jnp.max(jnp.abs(threes - sevens))) > 1e-3
  images = family.sample(run.params, jax.random.PRNGKey(1), 10)
  assert images.shape == (10, 8, 8, 1) and bool(jnp.all(jnp.isfinite(images)))
  assert bundle.num_classes(family) == 10
  classifier, why = classifier_lib.find_classifier(run.config, run.dataset)
  assert classifier is not None, why
  use = label_use.label_use(run, classifier, 200)
  assert use["images"] == 200 and use["prior_sample_accuracy_T0.5"] > 0.3, use  # chance: 0.1


def test_a_conditional_flow_reports_log_p_x_and_log_p_x_given_y(tmp_path):
  """A base distribution per class: log p(x) is the mixture over classes, so it
  lies between the best single class and that minus log C; samples of each
  class start from that class's Gaussian."""
  results = train_in_process("configs/realnvp.py:cond_digits", tmp_path / "cflow",
                             "--config.eval.fid_samples=0", "--config.eval.num_images=0")
  test = results["test"]
  assert np.isfinite(test["bits_per_dim_exact"])
  run = restore.load_run(str(tmp_path / "cflow"))
  family = run.family
  batch = run.dataset.test_source.take(run.dataset.test_rows[:16])
  x = family.prepare({"x": batch["x"], "uid": np.arange(16, dtype=np.int32)}, None,
                     train=False)
  marginal, _ = family.log_likelihood(run.params, x)
  per_class = jnp.stack([family.log_likelihood(run.params, x, jnp.full(16, label))[0]
                         for label in range(10)])
  np.testing.assert_allclose(marginal, jax.nn.logsumexp(per_class, axis=0) - np.log(10),
                             rtol=1e-5)
  images = family.sample(run.params, jax.random.PRNGKey(0), 10)
  assert images.shape == (10, 8, 8, 1) and bool(jnp.all(jnp.isfinite(images)))


def test_a_conditional_gan_projects_the_label_and_draws_the_classes_asked_for(
    tmp_path, digits_classifier):
  """Projection discriminator: the label changes D's logit through <V y, phi(x)>
  alone; a short run's generator draws the requested class more often than
  chance; samples do not depend on the batch they are drawn in."""
  from configs import gan as gan_config
  from gen.families import classifier as classifier_lib
  family = families.make(gan_config.get_config("cond_digits"), DIGITS)
  family.check_config()
  params = family.init_params(jax.random.PRNGKey(0))
  assert "class_projection" in params["discriminator"]
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
  logits = [family.discriminate(params, x, jnp.full(4, c)) for c in (2, 5)]
  assert float(jnp.max(jnp.abs(logits[0] - logits[1]))) > 1e-4
  with pytest.raises(ValueError, match="config.model.num_classes=12, but digits has 10"):
    config = gan_config.get_config("cond_digits")
    config.model.num_classes = 12
    families.make(config, DIGITS).check_config()
  with pytest.raises(ValueError, match="unconditional GAN"):
    families.make(gan_config.get_config("digits"), DIGITS).sample(
        family.init_params(jax.random.PRNGKey(0)), jax.random.PRNGKey(0), 2,
        labels=jnp.zeros(2, jnp.int32))

  workdir = tmp_path / "cgan"
  train_in_process("configs/gan.py:cond_digits", workdir, "--config.train.num_steps=600",
                   "--config.eval.num_images=0", "--config.eval.fid_samples=0",
                   f"--config.eval.classifier={digits_classifier}")
  run = restore.load_run(str(workdir))
  classifier, why = classifier_lib.find_classifier(run.config, run.dataset)
  assert classifier is not None, why
  labels = bundle.image_labels(run.family, 200)
  images = bundle.draw(run.family, run.params, 200, seed=0, labels=labels, batch_size=64)
  accuracy = float(np.mean(classifier(images)[1] == labels))
  assert accuracy > 0.3, accuracy  # chance: 0.1
  again = bundle.draw(run.family, run.params, 20, seed=0, labels=labels[:20], batch_size=7)
  np.testing.assert_array_equal(again, images[:20])
  # The sweep measures it as trained (scale 1): accuracy and FD per class;
  # a scale it cannot apply is named.
  result = _sweep(workdir, "--scales=1", f"--out={tmp_path / 'sweep'}")
  assert result.returncode == 0, result.stderr[-2000:]
  row = json.load(open(tmp_path / "sweep.json"))["rows"][0]
  assert row["conditional_accuracy"] > 0.3 and len(row["fd_per_class"]) == 10
  result = _sweep(workdir, "--scales=1,2")
  assert result.returncode != 0
  assert "gan model has no guidance (diffusion and flow matching have)" in (
      result.stderr.strip().splitlines()[-1])
