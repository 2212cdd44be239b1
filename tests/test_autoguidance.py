"""Autoguidance (config.eval.guide_workdir, gen/families/guide.py): a weaker
run of the same data guides a diffusion or flow-matching model, output =
guide + s (model - guide); scale 1 is the model itself; the guide travels in
a bundle; guides whose outputs are not the same quantity are named."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ddpm, flow_matching, latent
from gen import bundle, families, restore
from gen.data import SourceInfo
from gen.errors import UserError
from gen.families import guide as guide_lib
from tests.helpers import ROOT, subprocess_env, train_in_process

QUICK = ("--config.eval.num_images=0", "--config.eval.fid_samples=0")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_classifier):
  """A flow-matching digits model and a weaker one (fewer steps, narrower),
  each trained a few steps."""
  folder = tmp_path_factory.mktemp("autoguidance")
  train_in_process("configs/flow_matching.py:digits", folder / "model",
                   "--config.train.num_steps=30", "--config.data.validation_size=400",
                   f"--config.eval.classifier={digits_classifier}", *QUICK)
  train_in_process("configs/flow_matching.py:digits", folder / "guide",
                   "--config.train.num_steps=10", "--config.model.channels=8",
                   "--config.model.num_groups=4", *QUICK)
  return folder


def _guided(runs, scale, guide="guide"):
  return restore.load_run(str(runs / "model"), {"eval.guide_workdir": str(runs / guide),
                                                 "eval.guidance_scale": scale})


def test_the_guided_output_is_guide_plus_scale_times_the_difference(runs):
  plain = restore.load_run(str(runs / "model"))
  weak = restore.load_run(str(runs / "guide"))
  guided = _guided(runs, 2.5)
  assert guided.family.guide is not None and guided.family.guide.step == 10
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 8, 8, 1))
  t = jnp.linspace(0.1, 0.9, 6)
  model = plain.family.network(plain.params)(x, t)
  weak_out = weak.family.network(weak.params)(x, t)
  out = guided.family.network(guided.params, guidance=2.5)(x, t)
  np.testing.assert_allclose(out, weak_out + 2.5 * (model - weak_out), rtol=1e-4, atol=1e-5)
  assert not np.allclose(out, model, atol=1e-3)
  # Scale 1 is the model itself, exactly; other scales change the samples.
  images = bundle.draw(plain.family, plain.params, 8, seed=1)
  np.testing.assert_array_equal(
      bundle.draw(_guided(runs, 1.0).family, plain.params, 8, seed=1), images)
  assert not np.array_equal(bundle.draw(guided.family, guided.params, 8, seed=1), images)
  # A model guided by itself is the model (the difference is 0) at any scale.
  itself = _guided(runs, 3.0, guide="model")
  np.testing.assert_allclose(
      itself.family.network(itself.params, guidance=3.0)(x, t), model, rtol=1e-5, atol=1e-5)


def test_a_bundle_carries_its_guide(runs, tmp_path):
  guided = _guided(runs, 2.0)
  images = bundle.draw(guided.family, guided.params, 8, seed=2)
  out = bundle.export(str(runs / "model"), str(tmp_path / "bundle"),
                      {"eval.guide_workdir": str(runs / "guide"), "eval.guidance_scale": 2.0})
  assert bundle.is_bundle(str(tmp_path / "bundle" / "guide"))
  loaded = bundle.load(out)
  assert loaded.config.eval.guidance_scale == 2.0
  np.testing.assert_array_equal(loaded.sample(8, seed=2), images)


def test_the_sweep_measures_an_unconditional_model_autoguided(runs, tmp_path):
  command = [sys.executable, os.path.join(ROOT, "experiments", "guidance_sweep.py"),
             f"--workdir={runs / 'model'}", f"--guide_workdir={runs / 'guide'}",
             "--scales=1,2", "--samples=100", "--steps=3", f"--out={tmp_path / 'sweep'}"]
  result = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = json.load(open(tmp_path / "sweep.json"))["rows"]
  assert [row["scale"] for row in rows] == [1.0, 2.0]
  assert rows[0]["sampling_steps"] == 3 and rows[0]["sampler"] == "heun"
  assert rows[0]["fd"] != rows[1]["fd"] and "conditional_accuracy" not in rows[0]
  assert (tmp_path / "sweep.png").stat().st_size > 0
  # Without a guide an unconditional run has nothing to sweep: one line says so.
  result = subprocess.run(command[:3] + command[4:], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert "autoguidance needs --guide_workdir" in result.stderr.strip().splitlines()[-1]


def test_guides_that_cannot_guide_are_named(runs, tmp_path):
  with pytest.raises(UserError, match=r"config.eval.guide_workdir=.*: neither a run's workdir "
                                      r"nor a bundle"):
    _guided(runs, 2.0, guide="nothing_here")
  # An unconditional model with guidance and no guide: the setting is named.
  config = flow_matching.get_config("digits")
  config.eval.guidance_scale = 2.0
  with pytest.raises(ValueError, match=r"config.eval.guidance_scale=2.0 guides a "
                                       r"class-conditional model, or any model by a weaker "
                                       r"one \(config.eval.guide_workdir\)"):
    families.make(config, SourceInfo("digits", (8, 8, 1), "image", 10)).check_config()


def test_a_guide_must_model_the_same_thing():
  key = "config.eval.guide_workdir='g'"
  with pytest.raises(UserError, match=r"config.eval.guide_workdir='g' has "
                                      r"config.model.objective='eps', this model "
                                      r"'flow_matching': their outputs are not the same"):
    guide_lib.check_guide(ddpm.get_config("digits"), flow_matching.get_config("digits"), key)
  model, guide = latent.get_config("digits"), latent.get_config("digits")
  model.latent.first_stage_workdir, guide.latent.first_stage_workdir = "/runs/a", "/runs/b"
  with pytest.raises(UserError, match=r"models the codes of the first stage in /runs/b, this "
                                      r"model those in /runs/a"):
    guide_lib.check_guide(guide, model, key)
  with pytest.raises(UserError, match=r"a latent model guiding no latent model"):
    guide_lib.check_guide(guide, flow_matching.get_config("digits"), key)
  other = flow_matching.get_config("digits")
  other.data.name = "fashion_mnist"
  with pytest.raises(UserError, match=r"trained on 'fashion_mnist', but "
                                      r"config.data.name='digits'"):
    guide_lib.check_guide(other, flow_matching.get_config("digits"), key)
  conditional = flow_matching.get_config("cond_digits")
  with pytest.raises(UserError, match=r"conditioned on 10 classes, this model on none"):
    guide_lib.check_guide(conditional, flow_matching.get_config("digits"), key)
  guide.latent.first_stage_workdir = "/runs/a"
  guide_lib.check_guide(guide, model, key)  # the same codes: no error
  # A conditional model may be guided by an unconditional one (classifier-free
  # guidance by a separate model).
  guide_lib.check_guide(flow_matching.get_config("digits"), conditional, key)
