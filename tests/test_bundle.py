"""experiments/sample.py and experiments/export.py (gen/bundle.py): sample files
from a run or a bundle, the same images for the same seed, a bundle that
round-trips without its workdir."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from gen import bundle, restore
from gen.errors import UserError
from tests.helpers import ROOT, subprocess_env, train_in_process


def _script(name, *args):
  command = [sys.executable, os.path.join(ROOT, "experiments", name), *args]
  return subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True,
                        text=True, timeout=300)


def test_samples_are_files_a_seed_fixes_and_a_bundle_reproduces(tmp_path):
  workdir = tmp_path / "run"
  train_in_process("configs/ddpm.py:digits", workdir, "--config.train.num_steps=20",
                   "--config.eval.num_images=0", "--config.eval.fid_samples=0")
  run = restore.load_run(str(workdir))
  # Image i comes from its own key: batch size and count do not change it.
  ten = bundle.draw(run.family, run.params, 10, seed=3, batch_size=4)
  six = bundle.draw(run.family, run.params, 6, seed=3, batch_size=8)
  assert ten.dtype == np.uint8 and ten.shape == (10, 8, 8, 1)
  np.testing.assert_array_equal(ten[:6], six)
  assert not np.array_equal(ten, bundle.draw(run.family, run.params, 10, seed=4))

  exported = bundle.export(str(workdir), str(tmp_path / "bundle"))
  card = open(os.path.join(exported, "README.md")).read()
  assert "# unet on digits" in card and "20 steps" in card and "| loss |" in card
  shutil.rmtree(workdir)  # a bundle needs no workdir
  loaded = bundle.load(exported)
  assert loaded.step == 20
  np.testing.assert_array_equal(loaded.sample(10, seed=3, batch_size=4), ten)

  # The command line: files, and a sampler setting of the family's.
  result = _script("sample.py", f"--bundle={exported}", "--num_samples=5", "--seed=3",
                   "--sampler=ddim", "--steps=5", f"--out={tmp_path / 'out'}")
  assert result.returncode == 0, result.stderr[-2000:]
  with np.load(tmp_path / "out" / "samples.npz") as files:
    assert files["images"].shape == (5, 8, 8, 1) and files["images"].dtype == np.uint8
  assert (tmp_path / "out" / "samples.png").stat().st_size > 0
  wrong = _script("sample.py", f"--bundle={exported}", f"--workdir={tmp_path}")
  assert wrong.returncode != 0
  assert wrong.stderr.strip().splitlines()[-1] == "error: give exactly one of --workdir and --bundle"


def test_an_autoencoder_samples_from_its_run_and_says_why_not_from_a_bundle(tmp_path):
  workdir = tmp_path / "ae"
  train_in_process("configs/autoencoder.py:digits", workdir, "--config.train.num_steps=10",
                   "--config.eval.num_images=0")
  result = _script("sample.py", f"--workdir={workdir}", "--num_samples=3", "--seed=1")
  assert result.returncode == 0, result.stderr[-2000:]
  with np.load(workdir / "samples_seed1" / "samples.npz") as files:
    assert files["images"].shape == (3, 8, 8, 1)
  settings = _script("sample.py", f"--workdir={workdir}", "--steps=5")
  assert "error: --steps: a dense_autoencoder model has no sampler settings" in settings.stderr
  exported = bundle.export(str(workdir), str(tmp_path / "bundle"))
  refused = _script("sample.py", f"--bundle={exported}")
  assert refused.returncode != 0 and "draws no samples" in refused.stderr
  with pytest.raises(UserError, match="not a bundle"):
    bundle.load(str(tmp_path))


def test_a_latent_models_bundle_carries_its_first_stage(tmp_path):
  """Both stages and the code statistics travel in the bundle: with the run's
  folders gone, the bundle draws the run's images."""
  workdir = tmp_path / "latent"
  first = tmp_path / "first"
  train_in_process("configs/latent.py:digits", workdir,
                   f"--config.latent.first_stage_workdir={first}",
                   "--config.train.num_steps=10", "--config.eval.num_images=0",
                   "--config.eval.fid_samples=0")
  run = restore.load_run(str(workdir))
  images = bundle.draw(run.family, run.params, 6, seed=2, batch_size=4)
  exported = bundle.export(str(workdir), str(tmp_path / "bundle"))
  assert os.path.exists(os.path.join(exported, "first_stage", "params.safetensors"))
  shutil.rmtree(workdir)
  shutil.rmtree(first)
  loaded = bundle.load(exported)
  np.testing.assert_array_equal(loaded.sample(6, seed=2, batch_size=3), images)
  os.remove(os.path.join(exported, "code_statistics.safetensors"))
  with pytest.raises(UserError, match="code_statistics.safetensors"):
    bundle.load(exported)
