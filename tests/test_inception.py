"""The optional Inception-v3 FID features: weight-file format and feature function.

No real weights are used (none are downloaded): a fake state dict with every
expected key and shape stands in for pytorch-fid's file.
"""

import re

import numpy as np
import pytest

from gen.evaluate import inception


def _fake_state_dict(seed=0):
  """Random arrays with the FID Inception's keys and PyTorch shapes.

  He-scaled conv weights and near-identity batch norms keep activations O(1)
  through the 94 conv layers and keep the input's influence on the features
  (unit-variance weights overflow float32; 1/sqrt(fan_in) makes every image
  give the same features to 1e-8).
  """
  rng = np.random.default_rng(seed)
  sd = {}
  for key, shape in inception.expected_state_dict_shapes().items():
    if key.endswith(("conv.weight", "fc.weight")):
      a = rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    elif key.endswith(("running_var", "bn.weight")):
      a = rng.uniform(0.8, 1.2, shape)
    else:  # running_mean, bn.bias, fc.bias
      a = rng.normal(scale=0.01, size=shape)
    sd[key] = a.astype(np.float32)
  return sd


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
  sd = _fake_state_dict()
  path = tmp_path_factory.mktemp("inception") / "inception_fid.npz"
  # As written by the documented conversion, num_batches_tracked included.
  np.savez(path, **sd, **{"Mixed_5b.branch1x1.bn.num_batches_tracked": np.array(0)})
  return str(path), sd


def test_load_params_puts_each_array_in_its_flax_place(weights_file):
  path, sd = weights_file
  v = inception.load_params(path)
  p, stats = v["params"], v["batch_stats"]

  # Conv weight [out, in, kh, kw] -> kernel [kh, kw, in, out]; the 1x7 kernel
  # catches a swapped kh/kw and an unequal in/out a swapped in/out.
  for layer, flax_layer in (("Conv2d_1a_3x3", p["Conv2d_1a_3x3"]),
                            ("Mixed_6b.branch7x7_2", p["Mixed_6b"]["branch7x7_2"]),
                            ("Mixed_7c.branch3x3dbl_3b", p["Mixed_7c"]["branch3x3dbl_3b"])):
    w = sd[layer + ".conv.weight"]
    kernel = flax_layer["conv"]["kernel"]
    o, i, kh, kw = w.shape
    assert kernel.shape == (kh, kw, i, o)
    np.testing.assert_array_equal(kernel, np.transpose(w, (2, 3, 1, 0)))
    assert kernel[kh - 1, kw - 1, 1, 0] == w[0, 1, kh - 1, kw - 1]
  assert p["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"].shape == (1, 7, 128, 128)

  # Batch norm: affine parameters in "params", running statistics in "batch_stats".
  for layer, keys in (("Conv2d_4a_3x3", ("Conv2d_4a_3x3",)),
                      ("Mixed_7c.branch_pool", ("Mixed_7c", "branch_pool"))):
    bn_params, bn_stats = p, stats
    for k in keys:
      bn_params, bn_stats = bn_params[k], bn_stats[k]
    np.testing.assert_array_equal(bn_params["bn"]["scale"], sd[layer + ".bn.weight"])
    np.testing.assert_array_equal(bn_params["bn"]["bias"], sd[layer + ".bn.bias"])
    np.testing.assert_array_equal(bn_stats["bn"]["mean"], sd[layer + ".bn.running_mean"])
    np.testing.assert_array_equal(bn_stats["bn"]["var"], sd[layer + ".bn.running_var"])

  np.testing.assert_array_equal(p["fc"]["kernel"], sd["fc.weight"].T)
  np.testing.assert_array_equal(p["fc"]["bias"], sd["fc.bias"])
  # Every array of the file used exactly once: the totals agree.
  n_loaded = sum(a.size for a in _leaves(v))
  assert n_loaded == sum(a.size for a in sd.values())


def _leaves(tree):
  if isinstance(tree, dict):
    for value in tree.values():
      yield from _leaves(value)
  else:
    yield tree


def test_feature_fn_shape_and_grey_equals_rgb(weights_file):
  path, _ = weights_file
  # batch_size 2 with 3 images: one full batch and one padded batch.
  feature_fn = inception.load_feature_fn(path, batch_size=2)
  rng = np.random.default_rng(1)
  grey = rng.uniform(size=(3, 28, 28, 1)).astype(np.float32)
  f_grey = feature_fn(grey)
  assert f_grey.shape == (3, inception.FEATURE_DIM)
  assert f_grey.dtype == np.float64
  assert np.all(np.isfinite(f_grey))
  assert np.std(f_grey) > 0  # not collapsed to a constant
  # Different images give different features, and padding did not leak in:
  # the padded last image matches the same image in a full batch.
  assert not np.allclose(f_grey[0], f_grey[1])
  f_rgb = feature_fn(np.repeat(grey, 3, axis=-1))
  np.testing.assert_allclose(f_grey, f_rgb, rtol=1e-6, atol=1e-6)
  f_last = feature_fn(grey[[2, 0]])
  np.testing.assert_allclose(f_last[0], f_grey[2], rtol=1e-4, atol=1e-5)


def test_missing_key_names_key_and_file(weights_file, tmp_path):
  _, sd = weights_file
  sd = dict(sd)
  del sd["Mixed_6e.branch7x7dbl_3.bn.running_var"]
  path = tmp_path / "broken.npz"
  np.savez(path, **sd)
  with pytest.raises(ValueError, match=re.escape("Mixed_6e.branch7x7dbl_3.bn.running_var")) as e:
    inception.load_params(str(path))
  assert str(path) in str(e.value)


def test_wrong_shape_is_named(weights_file, tmp_path):
  _, sd = weights_file
  sd = dict(sd)
  sd["fc.weight"] = np.zeros((1000, 2048), np.float32)  # torchvision's classifier
  path = tmp_path / "torchvision.npz"
  np.savez(path, **sd)
  with pytest.raises(ValueError, match=r"fc\.weight \(1000, 2048\)") as e:
    inception.load_params(str(path))
  assert str(path) in str(e.value)


def test_parameter_count_is_the_fid_inceptions():
  shapes = inception.expected_state_dict_shapes()
  trainable = sum(int(np.prod(s)) for k, s in shapes.items()
                  if not k.endswith(("running_mean", "running_var")))
  # torchvision documents inception_v3 (with its auxiliary classifier, 1000
  # classes) as num_params = 27,161,264. Its AuxLogits hold conv0 768*128 +
  # BN 2*128, conv1 128*768*5*5 + BN 2*768 and fc 768*1000 + 1000, i.e.
  # 3,326,696, which the FID Inception lacks; its 1008-way fc adds
  # 8 * (2048 + 1) = 16,392. So 27,161,264 - 3,326,696 + 16,392 = 23,850,960.
  aux = (768 * 128 + 2 * 128) + (128 * 768 * 25 + 2 * 768) + (768 * 1000 + 1000)
  assert trainable == 27_161_264 - aux + 8 * (2048 + 1) == 23_850_960
  # 94 conv+BN layers (stem 5, 3 x A 7, B 4, 4 x C 10, D 6, 2 x E 9), each with
  # weight, bn weight/bias/running_mean/running_var, plus fc weight and bias.
  assert sum(k.endswith(".conv.weight") for k in shapes) == 94
  assert len(shapes) == 94 * 5 + 2


def test_block_average_pool_ignores_padding():
  """TF's SAME average pool (FIDInceptionA/C/E_1): a constant stays constant at
  the border; counting the zero padding would give 4/9 in the corners."""
  x = np.full((1, 5, 5, 2), 3.0, np.float32)
  np.testing.assert_allclose(np.asarray(inception._avg_pool_3x3(x)), x, rtol=1e-6)


def test_resize_matches_pytorch_bilinear():
  """_resize = F.interpolate(bilinear, align_corners=False), written out in numpy."""
  def torch_like(img, out):  # img [h, w]
    def axis(n_in):
      src = np.maximum((np.arange(out) + 0.5) * n_in / out - 0.5, 0.0)
      i0 = np.floor(src).astype(int)
      i1 = np.minimum(i0 + 1, n_in - 1)
      return i0, i1, src - i0
    r0, r1, lr = axis(img.shape[0])
    c0, c1, lc = axis(img.shape[1])
    rows = img[r0] * (1 - lr)[:, None] + img[r1] * lr[:, None]
    return rows[:, c0] * (1 - lc) + rows[:, c1] * lc

  rng = np.random.default_rng(2)
  # Up-sampling agrees to float32 rounding of the weights. Down-sampling from
  # n pixels also carries float32 rounding of the sample positions, about
  # n * 2**-24 = 4e-5 pixels at n = 600. A different convention (align_corners,
  # TF's legacy dst * in / out, antialiasing) differs by ~0.1 on noise images.
  for (h, w), atol in (((28, 28), 5e-6), ((32, 17), 5e-6), ((400, 350), 1e-4),
                       ((600, 598), 1e-4)):
    img = rng.uniform(size=(h, w)).astype(np.float32)
    ours = np.asarray(inception._resize(np.repeat(img[None, :, :, None], 3, -1)))[0, :, :, 0]
    np.testing.assert_allclose(ours, torch_like(img.astype(np.float64), 299), atol=atol)
