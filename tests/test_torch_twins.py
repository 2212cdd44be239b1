"""The PyTorch twins (experiments/torch_twins.py) are our networks: same parameter
counts, the DCGAN the same function, and one train step of each runs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from configs import ddpm, gan  # noqa: E402
from experiments import torch_twins  # noqa: E402
from gen import families  # noqa: E402
from gen.data import SourceInfo  # noqa: E402


def _count(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


# (twin, configs/gan.py variant it copies)
DCGAN_TWINS = [("dcgan", ""), ("dcgan_gpu", "gpu")]


def _dcgan_family(variant: str = ""):
  return families.make(gan.get_config(variant),
                       SourceInfo("fashion_mnist", (28, 28, 1), "image", 10))


def _our_unet_count(name: str) -> int:
  settings = torch_twins.UNET_SETTINGS[name]
  config = ddpm.get_config()
  for key in ("channels", "channel_mults", "num_res_blocks", "attention_resolutions",
              "num_groups", "dropout"):
    config.model[key] = settings[key]
  channels, height, width = settings["image_shape"]
  family = families.make(config, SourceInfo(name, (height, width, channels), "image"))
  # Shapes only: nothing is initialized (35.7M parameters for ddpm_ho).
  return _count(jax.eval_shape(family.init_params, jax.random.PRNGKey(0)))


@pytest.mark.parametrize("name, variant, expected",
                         [("dcgan", "", 1_610_946), ("dcgan_gpu", "gpu", 4_794_754)])
def test_dcgan_twin_has_our_parameter_count(name, variant, expected):
  params = jax.eval_shape(_dcgan_family(variant).init_params, jax.random.PRNGKey(0))
  ours = _count(params["generator"]) + _count(params["discriminator"])
  generator, discriminator = torch_twins.make_dcgan(name=name)
  assert ours == expected
  assert torch_twins.count_params(generator, discriminator) == ours


@pytest.mark.parametrize("name, expected", [("ddpm", 686_769), ("ddpm_ho", 35_741_697)])
def test_unet_twins_have_our_parameter_counts(name, expected):
  ours = _our_unet_count(name)
  assert ours == expected
  assert torch_twins.count_params(torch_twins.make_unet(name)) == ours


def _tensor(array) -> "torch.Tensor":
  return torch.from_numpy(np.array(array, np.float32))  # a writable copy


def _load_ours_into_twin(params, generator, discriminator) -> None:
  """Copies gen's DCGAN parameters into the twins (see the twins' docstrings)."""
  g, d = params["generator"], params["discriminator"]
  c, h, w = generator.start
  with torch.no_grad():
    # Dense columns are [h, w, c] in gen, [c, h, w] in the twin.
    kernel = np.asarray(g["Dense_0"]["kernel"]).reshape(-1, h, w, c).transpose(0, 3, 1, 2)
    generator.dense.weight.copy_(_tensor(kernel.reshape(kernel.shape[0], -1).T))
    generator.dense.bias.copy_(_tensor(np.asarray(g["Dense_0"]["bias"]).reshape(h, w, c)
                                       .transpose(2, 0, 1).reshape(-1)))
    norms = [m for m in generator.body if isinstance(m, torch.nn.BatchNorm2d)]
    for index, norm in enumerate(norms):
      norm.weight.copy_(_tensor(g[f"BatchStatisticsNorm_{index}"]["scale"]))
      norm.bias.copy_(_tensor(g[f"BatchStatisticsNorm_{index}"]["bias"]))
    transposed = [m for m in generator.body if isinstance(m, torch.nn.ConvTranspose2d)]
    for index, layer in enumerate(transposed):
      # flax [kh, kw, in, out] unflipped -> PyTorch [in, out, kh, kw] flipped.
      kernel = np.asarray(g[f"ConvTranspose_{index}"]["kernel"])[::-1, ::-1]
      layer.weight.copy_(_tensor(kernel.transpose(2, 3, 0, 1)))
      layer.bias.copy_(_tensor(g[f"ConvTranspose_{index}"]["bias"]))
    out_conv = [m for m in generator.body if type(m) is torch.nn.Conv2d][0]
    out_conv.weight.copy_(_tensor(np.asarray(g["Conv_0"]["kernel"]).transpose(3, 2, 0, 1)))
    out_conv.bias.copy_(_tensor(g["Conv_0"]["bias"]))

    convs = [m for m in discriminator.body if isinstance(m, torch.nn.Conv2d)]
    for index, layer in enumerate(convs):
      layer.weight.copy_(_tensor(np.asarray(d[f"Conv_{index}"]["kernel"]).transpose(3, 2, 0, 1)))
      layer.bias.copy_(_tensor(d[f"Conv_{index}"]["bias"]))
    dense = discriminator.body[-1]
    width = convs[-1].out_channels
    kernel = np.asarray(d["Dense_0"]["kernel"])[:, 0].reshape(h, w, width).transpose(2, 0, 1)
    dense.weight.copy_(_tensor(kernel.reshape(1, -1)))
    dense.bias.copy_(_tensor(d["Dense_0"]["bias"]))


@pytest.mark.parametrize("name, variant", DCGAN_TWINS)
def test_dcgan_twin_computes_our_function(name, variant):
  family = _dcgan_family(variant)
  # Random values of the right shapes (flax's initializers cost seconds to
  # compile, and any values will do), large enough that every layer matters.
  shapes = jax.eval_shape(family.init_params, jax.random.PRNGKey(0))
  rng = np.random.default_rng(1)
  # Kernels ~ N(0, 1 / fan_in), biases ~ N(0, 0.1^2), norm scales ~ N(1, 0.1^2).
  def draw(path, leaf):
    noise = rng.normal(size=leaf.shape)
    if len(leaf.shape) > 1:
      return (noise / math.sqrt(math.prod(leaf.shape[:-1]))).astype(np.float32)
    return (0.1 * noise + (path[-1].key == "scale")).astype(np.float32)
  params = jax.tree_util.tree_map_with_path(draw, shapes)
  generator, discriminator = torch_twins.make_dcgan(name=name)
  _load_ours_into_twin(params, generator, discriminator)
  z = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
  # Our modules' own methods, called with their first arguments only; jitted,
  # as one compilation costs less than running op by op.
  apply = jax.jit(family.model.apply, static_argnames="method")
  ours = apply({"params": params}, jnp.asarray(z), method="generate")
  with torch.no_grad():
    twin = generator(torch.from_numpy(z))
  np.testing.assert_allclose(twin.permute(0, 2, 3, 1).numpy(), np.asarray(ours),
                             atol=2e-5, rtol=1e-4)
  x = np.array(ours)
  ours_logits = apply({"params": params}, jnp.asarray(x), method="discriminate")
  with torch.no_grad():
    twin_logits = discriminator(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  np.testing.assert_allclose(twin_logits.numpy(), np.asarray(ours_logits), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", torch_twins.MODELS)
def test_one_train_step_of_each_twin_gives_a_finite_loss(name):
  step, shape, _ = torch_twins.make_train_step(name, "cpu")
  batch = torch.rand(4, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
  assert math.isfinite(float(step(batch)))


def test_time_train_step_reports_throughput_and_size():
  result = torch_twins.time_train_step("dcgan", "cpu", batch_size=4, steps=2, repeats=1,
                                       dtype="bfloat16", channels_last=True, warmup_steps=0)
  assert result["examples_per_second"] > 0
  assert result["compile_or_first_step_seconds"] > 0
  assert result["params"] == 1_610_946
  assert math.isfinite(result["loss"])
