"""Your own images (gen/data/image_folder.py): real RGB photographs that
scikit-learn ships (its two sample images), cut into crops and written to a
temporary folder as PNG and JPEG; decoded once and cached; bad input named;
and a model trained on them end to end."""

import os

import numpy as np
import pytest
from PIL import Image

from configs import ddpm
from gen.data import image_folder
from gen.errors import UserError
from tests.helpers import train_in_process


def _photo_crops(folder, per_class=24, size=40, jpeg_every=3):
  """<folder>/<china|flower>/<i>.png|jpg: crops of varied size (size .. 2 size)
  from scikit-learn's sample photographs, every third one a JPEG."""
  from sklearn.datasets import load_sample_images
  photos = load_sample_images()
  rng = np.random.default_rng(0)
  for name, photo in zip(("china", "flower"), photos.images):
    os.makedirs(folder / name, exist_ok=True)
    for index in range(per_class):
      side = int(rng.integers(size, 2 * size))
      top = int(rng.integers(0, photo.shape[0] - side))
      left = int(rng.integers(0, photo.shape[1] - side))
      crop = Image.fromarray(photo[top:top + side, left:left + side])
      suffix = "jpg" if index % jpeg_every == 0 else "png"
      crop.save(folder / name / f"{index}.{suffix}")
  return folder


def _data_config(folder, **settings):
  config = ddpm.get_config("digits").data
  config.name, config.dir, config.image_size = "image_folder", str(folder), 16
  for key, value in settings.items():
    config[key] = value
  return config


def test_a_folder_of_photographs_is_decoded_once_labelled_and_split(tmp_path, monkeypatch):
  folder = _photo_crops(tmp_path / "photos")
  config = _data_config(folder)
  train, test = image_folder.load(config, "train"), image_folder.load(config, "test")
  assert train.info.shape == (16, 16, 3) and train.info.class_names == ("china", "flower")
  assert len(train) + len(test) == 48 and len(test) == 5  # 10% carved with a fixed seed
  assert set(np.unique(train.take(np.arange(len(train)))["label"])) == {0, 1}
  assert train.x.dtype == np.uint8 and train.x.std() > 10  # real pixels, not a constant
  # Cached: a second load decodes nothing; a changed folder is decoded again.
  calls = []
  real = image_folder._decode
  monkeypatch.setattr(image_folder, "_decode", lambda *a: calls.append(a) or real(*a))
  np.testing.assert_array_equal(image_folder.load(config, "train").x, train.x)
  assert not calls
  Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "china" / "new.png")
  assert len(image_folder.load(config, "train")) + 5 == 49 and len(calls) == 49
  # Grey on request; train/ and test/ folders are the splits.
  assert image_folder.load(_data_config(folder, channels=1), "test").info.shape == (16, 16, 1)
  split = tmp_path / "split"
  _photo_crops(split / "train", per_class=6)
  _photo_crops(split / "test", per_class=2)
  assert len(image_folder.load(_data_config(split), "test")) == 4


def test_bad_input_names_the_file_or_setting(tmp_path):
  folder = _photo_crops(tmp_path / "photos", per_class=4)
  with pytest.raises(UserError, match="config.data.image_size to resize"):
    image_folder.load(_data_config(folder, image_size=0), "train")
  (folder / "china" / "notes.txt").write_text("not an image")
  with pytest.raises(UserError, match=r"notes.txt: not a PNG or JPEG file"):
    image_folder.load(_data_config(folder), "train")
  os.remove(folder / "china" / "notes.txt")
  (folder / "china" / "broken.png").write_bytes(b"\x89PNG not really")
  with pytest.raises(UserError, match=r"broken.png: cannot be read as an image"):
    image_folder.load(_data_config(folder), "train")
  assert len(image_folder.load(_data_config(folder, skip_bad_files=True), "train")) == 7
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(UserError, match="no PNG or JPEG images"):
    image_folder.load(_data_config(empty), "train")
  with pytest.raises(UserError, match="config.data.dir='/no/such'"):
    image_folder.load(_data_config("/no/such"), "train")


def test_flow_matching_trains_on_rgb_photographs(tmp_path):
  folder = _photo_crops(tmp_path / "photos", per_class=40)
  results = train_in_process(
      "configs/flow_matching.py:digits", tmp_path / "run", "--config.data.name=image_folder",
      f"--config.data.dir={folder}", "--config.data.image_size=16",
      "--config.data.validation_size=8", "--config.train.num_steps=20",
      "--config.eval.fid_samples=0", *_NO_ATTENTION)
  assert np.isfinite(results["test"]["loss"]) and results["samples"]["T=1"]["nonfinite"] == 0


# The digits U-Nets attend at 4x4, a level 8x8 images have and 32x32 ones do
# not (the U-Net says so, naming the key): no attention here.
_NO_ATTENTION = ("--config.model.attention_resolutions=()",)
_EVERY_FAMILY = [("configs/autoencoder.py:digits", ()), ("configs/conv_autoencoder.py", ()),
                 ("configs/vae.py:digits", ()), ("configs/conv_vae.py:digits", ()),
                 ("configs/realnvp.py:digits", ()), ("configs/glow.py:digits", ()),
                 ("configs/gan.py:digits", ()), ("configs/ddpm.py:digits", _NO_ATTENTION),
                 ("configs/flow_matching.py:digits", _NO_ATTENTION)]


@pytest.mark.parametrize("config_file,extra", _EVERY_FAMILY)
def test_every_family_trains_on_32x32_rgb_cifar10_by_name(tmp_path, config_file, extra):
  """CIFAR-10 through TFDS, its examples mocked (tfds.testing.mock_data: no
  network, no TensorFlow): 32x32x3 images end to end, a few steps each."""
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=48, policy=tfds.testing.MockPolicy.USE_CODE):
    results = train_in_process(config_file, tmp_path / "run", "--config.data.name=cifar10",
                               "--config.data.validation_size=16",
                               "--config.train.num_steps=4", "--config.train.eval_every=4",
                               "--config.train.batch_size=16", "--config.eval.batch_size=16",
                               "--config.eval.fid_samples=0", "--config.eval.num_images=8",
                               *extra)
  assert results["step"] == 4
  assert all(np.isfinite(v) for v in results["test"].values()), results["test"]


def test_unlabelled_images_get_inception_fd_or_say_why_not(tmp_path):
  """No labels, no classifier to train: FD in the FID Inception's features
  where config.eval.inception_weights names them (random weights here), else
  the report says what to set."""
  from tests.test_inception import _fake_state_dict
  labelled = _photo_crops(tmp_path / "photos", per_class=30)
  folder = tmp_path / "loose"
  folder.mkdir()
  for name in ("china", "flower"):
    for file in os.listdir(labelled / name):
      os.rename(labelled / name / file, folder / f"{name}_{file}")
  common = ("--config.data.name=image_folder", f"--config.data.dir={folder}",
            "--config.data.image_size=16", "--config.data.validation_size=12",
            "--config.train.num_steps=5", "--config.eval.num_images=0",
            "--config.eval.fid_samples=10", "--config.eval.pr_neighbours=3", *_NO_ATTENTION)
  results = train_in_process("configs/flow_matching.py:digits", tmp_path / "plain", *common)
  why = results["sample_quality"]["skipped"]
  assert "no class labels" in why and "config.eval.inception_weights" in why
  weights = tmp_path / "inception_fid.npz"
  np.savez(weights, **_fake_state_dict())
  results = train_in_process("configs/flow_matching.py:digits", tmp_path / "inception", *common,
                             f"--config.eval.inception_weights={weights}")
  quality = results["sample_quality"]
  assert quality["classifier"].startswith("FID Inception-v3")
  assert quality["num_samples"] == 10
  assert np.isfinite(quality["fid"]) and np.isfinite(quality["fid_val_vs_test"])
  assert "class_histogram" not in quality
