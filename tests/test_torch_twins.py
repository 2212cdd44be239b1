"""The PyTorch twins (experiments/benchmarks/torch_twins.py) are our networks: same parameter
counts; the DCGAN, the dense autoencoder, the dense VAE and RealNVP the same
functions (the VAE's and the flow's losses too); one train step of each runs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from configs import autoencoder, conv_autoencoder, conv_vae, ddpm, gan, realnvp, vae  # noqa: E402
from experiments.benchmarks import torch_twins  # noqa: E402
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


FASHION_MNIST = SourceInfo("fashion_mnist", (28, 28, 1), "image", 10)
# (twin, the config it copies, the twin's network, gen's parameter count)
FAMILY_TWINS = [
    ("autoencoder", autoencoder, lambda: torch_twins.make_autoencoder("autoencoder"), 218_192),
    ("conv_autoencoder", conv_autoencoder,
     lambda: torch_twins.make_autoencoder("conv_autoencoder"), 479_105),
    ("vae", vae, lambda: torch_twins.make_vae("vae"), 1_494_112),
    ("conv_vae", conv_vae, lambda: torch_twins.make_vae("conv_vae"), 1_681_026),
    ("realnvp", realnvp, torch_twins.make_realnvp, 665_521),
]


@pytest.mark.parametrize("name, config_module, make_twin, expected", FAMILY_TWINS,
                         ids=[twin[0] for twin in FAMILY_TWINS])
def test_family_twins_have_our_parameter_counts(name, config_module, make_twin, expected):
  config = config_module.get_config()
  family = families.make(config, FASHION_MNIST)
  ours = _count(jax.eval_shape(family.init_params, jax.random.PRNGKey(0)))
  assert ours == expected
  assert torch_twins.count_params(make_twin()) == ours
  _, _, twin_count = torch_twins.make_train_step(name, "cpu")
  assert twin_count == ours
  # The twin's default batch is the config's.
  assert torch_twins.batch_size_of(name) == config.train.batch_size


@pytest.mark.parametrize("name, config_module", [(twin[0], twin[1]) for twin in FAMILY_TWINS],
                         ids=[twin[0] for twin in FAMILY_TWINS])
def test_family_twins_train_with_our_optimizer_settings(name, config_module):
  from gen.train import optim

  config = config_module.get_config()
  settings = torch_twins.OPTIMIZER_SETTINGS[name]
  assert config.optimizer.name == "adam" and config.optimizer.b1 == 0.9
  assert settings["grad_clip_norm"] == config.optimizer.grad_clip_norm
  assert settings["ema_decay"] == config.train.ema_decay
  schedule = optim.make_schedule(config.optimizer, config.train.num_steps)
  num_steps = config.train.num_steps
  for step in (0, 1, 150, 199, 200, 201, 4321, num_steps - 1, num_steps, num_steps + 7):
    assert torch_twins.learning_rate_at(settings, step) == pytest.approx(
        float(schedule(step)), rel=1e-5, abs=1e-10), step


def _random_params(family, rng, ones=("scale",)):
  """Random values of our parameters' shapes (flax's initializers cost seconds
  to compile, and any values will do), large enough that every layer matters:
  kernels ~ N(0, 1 / fan_in); vectors named in `ones` ~ N(1, 0.1^2), others
  ~ N(0, 0.1^2)."""
  shapes = jax.eval_shape(family.init_params, jax.random.PRNGKey(0))

  def draw(path, leaf):
    noise = rng.normal(size=leaf.shape)
    if len(leaf.shape) > 1:
      return (noise / math.sqrt(math.prod(leaf.shape[:-1]))).astype(np.float32)
    return (0.1 * noise + (path[-1].key in ones)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def _load_dense(layers, dense_params) -> None:
  """flax Dense parameters ({kernel [in, out], bias}) into torch Linear layers, in order."""
  with torch.no_grad():
    for layer, params in zip(layers, dense_params, strict=True):
      layer.weight.copy_(_tensor(np.asarray(params["kernel"]).T))
      layer.bias.copy_(_tensor(params["bias"]))


def _linears(*sequences):
  return [m for sequence in sequences for m in sequence if isinstance(m, torch.nn.Linear)]


def test_dense_autoencoder_twin_computes_our_function():
  family = families.make(autoencoder.get_config(), FASHION_MNIST)
  params = _random_params(family, np.random.default_rng(1))
  twin = torch_twins.make_autoencoder("autoencoder")
  # One channel: the [c, h, w] and [h, w, c] flattens agree, so no permutation.
  _load_dense(_linears(twin.encoder, twin.decoder),
              [params["encoder"]["Dense_0"], params["encoder"]["Dense_1"],
               params["decoder"]["Dense_0"], params["decoder"]["Dense_1"]])
  x = np.random.default_rng(0).random((8, 28, 28, 1), np.float32)
  ours = jax.jit(family.model.apply)({"params": params}, jnp.asarray(x))
  with torch.no_grad():
    logits = twin(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  np.testing.assert_allclose(logits.permute(0, 2, 3, 1).numpy(), np.asarray(ours),
                             atol=1e-4, rtol=1e-4)


def test_dense_vae_twin_computes_our_function_and_likelihood():
  family = families.make(vae.get_config(), FASHION_MNIST)
  params = _random_params(family, np.random.default_rng(2))
  twin = torch_twins.make_vae("vae")
  _load_dense(_linears(twin.encoder),
              [params[key] for key in ("encoder_layers_0", "encoder_layers_1", "posterior")])
  _load_dense(_linears(twin.decoder),
              [params[key] for key in ("decoder_layers_0", "decoder_layers_1", "likelihood")])
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (8, 28, 28, 1)).astype(np.uint8)
  pixels[0, :2] = 0  # both end bins
  pixels[1, :2] = 255
  x = pixels.astype(np.float32) / 255.0 * 2.0 - 1.0
  z = rng.normal(size=(8, 32)).astype(np.float32)
  apply = jax.jit(family.model.apply, static_argnames="method")
  mean, log_var = apply({"params": params}, jnp.asarray(x), method="encode")
  out = apply({"params": params}, jnp.asarray(z), method="decode")  # [b, h, w, c, 2]
  ours_log_px = jax.jit(family.log_likelihood)(out, jnp.asarray(pixels))
  with torch.no_grad():
    twin_mean, twin_log_var = twin.encode(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    loc, log_scale = twin.decode(torch.from_numpy(z))
    log_px = torch_twins.discretized_logistic_log_prob(
        torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()), loc,
        torch.clamp(log_scale, min=torch_twins.MIN_LOG_SCALE)).flatten(1).sum(1)
  np.testing.assert_allclose(twin_mean.numpy(), np.asarray(mean), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(twin_log_var.numpy(), np.asarray(log_var), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(loc.numpy(), np.asarray(out[..., 0, 0])[:, None],
                             atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(log_scale.numpy(), np.asarray(out[..., 0, 1])[:, None],
                             atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(log_px.numpy(), np.asarray(ours_log_px), rtol=1e-4)


def _load_flow(flow, params) -> None:
  """gen's RealNVP parameters into the twin: coupling nets by name, convs in
  order (WeightNormConv_i -> convs[i]), kernels [kh, kw, in, out] -> [out, in, kh, kw]."""
  nets = {f"final_{i}": coupling.net for i, coupling in enumerate(flow.final)}
  for s, (board, split) in enumerate(flow.scales):
    for kind, couplings in enumerate((board, split)):
      nets.update({f"scales_{s}_{kind}_{i}": c.net for i, c in enumerate(couplings)})
  assert set(nets) == set(params)
  with torch.no_grad():
    for key, net in nets.items():
      ours = params[key]["net"]
      net.log_scale_bound.copy_(_tensor(ours["log_scale_bound"]))
      for index, conv in enumerate(net.convs):
        conv_params = ours[f"WeightNormConv_{index}"]
        conv.direction.copy_(_tensor(np.asarray(conv_params["direction"]).transpose(3, 2, 0, 1)))
        conv.gain.copy_(_tensor(conv_params["gain"]))
        conv.bias.copy_(_tensor(conv_params["bias"]))


def test_realnvp_twin_computes_our_bits_per_dim():
  # The digits variant (8x8, 1 scale, 2 + 2 couplings and 2 final): the same
  # code as the default's, compiled in a fraction of the time.
  config = realnvp.get_config("digits")
  family = families.make(config, SourceInfo("digits", (8, 8, 1), "image", 10))
  params = _random_params(family, np.random.default_rng(3), ones=("gain", "log_scale_bound"))
  settings = dict(torch_twins.REALNVP_SETTINGS, **{
      key: config.model[key] for key in ("num_scales", "num_couplings", "num_final_couplings",
                                         "features", "num_res_blocks", "logit_alpha")})
  flow = torch_twins.make_realnvp(settings, image_shape=(1, 8, 8))
  _load_flow(flow, params)
  pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1))
  y = ((pixels + np.random.default_rng(1).random(pixels.shape)) / 256.0).astype(np.float32)
  ours = jax.jit(family._per_example_loss)(params, jnp.asarray(y))
  with torch.no_grad():
    twin = torch_twins.flow_bits_per_dim(flow, torch.from_numpy(y.transpose(0, 3, 1, 2).copy()),
                                         settings["logit_alpha"])
  np.testing.assert_allclose(twin.numpy(), np.asarray(ours), rtol=1e-4)


@pytest.mark.parametrize("name", torch_twins.MODELS)
def test_one_train_step_of_each_twin_gives_a_finite_loss(name, monkeypatch):
  if name == "realnvp":
    # PyTorch's own convolutions, not oneDNN's: oneDNN compiles a kernel for
    # each new convolution shape on first use, ~8 s for the flow's ~100 small
    # convs on 2 cores (the U-Nets' few wide ones run faster with it).
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
  step, shape, _ = torch_twins.make_train_step(name, "cpu")
  batch = torch_twins.random_batch(name, 4, "cpu", torch.Generator().manual_seed(0))
  assert tuple(batch.shape[1:]) == shape
  assert batch.dtype == (torch.uint8 if torch_twins.STEP_INPUTS[name] == "pixels"
                         else torch.float32)
  assert math.isfinite(float(step(batch)))


def test_time_train_step_reports_throughput_and_size():
  result = torch_twins.time_train_step("dcgan", "cpu", batch_size=4, steps=2, repeats=1,
                                       dtype="bfloat16", channels_last=True, warmup_steps=0)
  assert result["examples_per_second"] > 0
  assert result["compile_or_first_step_seconds"] > 0
  assert result["params"] == 1_610_946
  assert math.isfinite(result["loss"])
