"""gen's DCGAN and DDPM U-Nets in PyTorch, to time a train step side by side with ours.

  python experiments/torch_twins.py --model=dcgan --device=cpu --steps=10
  python experiments/torch_twins.py --model=ddpm_ho --device=cuda --dtype=bfloat16 --compile

prints one JSON line: examples/s (median over --repeats windows of --steps
steps), the first step's seconds (with torch.compile: its compilation), and
the parameter count. Nothing here imports jax, so a device without a working
jax (or a CPU-only run) can time the twins alone.

Models (MODELS):
  dcgan    configs/gan.py on 28x28x1: 1,610,946 parameters, as gen's
  dcgan_gpu  configs/gan.py:gpu (generator (256, 128), discriminator (128, 256)):
           4,794,754 parameters, as gen's
  ddpm     configs/ddpm.py's U-Net on 28x28x1 as diffusers' UNet2DModel: 686,769, as gen's
  ddpm_ho  Ho et al.'s CIFAR-10 widths (128, mults 1-2-2-2, 2 blocks, attention
           at 16x16, dropout 0.1) on 32x32x1: 35,741,697, as gen's UNet so configured

Train steps are ours (gen.families): Adam; the GAN's non-saturating loss, one
discriminator then one generator update per step, on fresh latents each; DDPM's
epsilon-prediction MSE at t ~ U{0..T-1} on the linear beta schedule (1e-4 to
0.02, T = 1000), gradients clipped to norm 1; an EMA (0.999) of the generator /
U-Net after each step, as configs/gan.py and configs/ddpm.py. Not copied:
our step's check that loss and gradients are finite before applying them (a
few reductions). Batches are random images in [-1, 1] made on the device
before timing (a step's cost does not depend on the pixels), as our
benchmark's on-device batches.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from absl import app, flags
from torch import nn

MODELS = ("dcgan", "dcgan_gpu", "ddpm", "ddpm_ho")
DTYPES = ("float32", "bfloat16")

# configs/gan.py and configs/ddpm.py (what the twins copy).
DCGAN_IMAGE_SHAPE = (1, 28, 28)
GAN_SETTINGS = dict(latent_dim=64, generator_channels=(128, 64),
                    discriminator_channels=(64, 128), learning_rate=2e-4, b1=0.5)
# Each DCGAN twin by name: configs/gan.py and its :gpu variant (twice the widths).
DCGAN_SETTINGS = {
    "dcgan": GAN_SETTINGS,
    "dcgan_gpu": dict(GAN_SETTINGS, generator_channels=(256, 128),
                      discriminator_channels=(128, 256)),
}
DDPM_SCHEDULE = dict(timesteps=1000, beta_start=1e-4, beta_end=0.02)
UNET_SETTINGS = {
    # configs/ddpm.py: widths 16/32/64 at 28/14/7, attention at 7x7, 8 groups.
    "ddpm": dict(image_shape=(1, 28, 28), channels=16, channel_mults=(1, 2, 4),
                 num_res_blocks=1, attention_resolutions=(7,), num_groups=8, dropout=0.1,
                 learning_rate=5e-4),
    # Ho et al. (2020), CIFAR-10 widths, on one channel: 32/16/8/4, attention at 16x16.
    "ddpm_ho": dict(image_shape=(1, 32, 32), channels=128, channel_mults=(1, 2, 2, 2),
                    num_res_blocks=2, attention_resolutions=(16,), num_groups=32, dropout=0.1,
                    learning_rate=2e-4),
}
EMA_DECAY = 0.999
GRAD_CLIP_NORM = 1.0


# --- DCGAN ----------------------------------------------------------------------

class DCGANGenerator(nn.Module):
  """z [b, latent_dim] -> images [b, c, h, w] in [-1, 1]; gen.models.gan's generator.

  dense to (h/4)(w/4) 2c_0 -> reshape -> batch norm -> ReLU -> per width c_i:
  4x4 stride-2 transposed conv -> batch norm -> ReLU; -> 3x3 conv -> tanh.
  Batch norm always uses the statistics of the batch at hand
  (track_running_stats=False), as gen's BatchStatisticsNorm in training.

  How it differs from gen's (the same function class, parameter for parameter):
    - PyTorch's ConvTranspose2d(k=4, s=2, padding=1) is the gradient of a
      convolution (kernel flipped, [in, out, kh, kw]); flax's 'SAME'
      transposed convolution convolves the dilated input with the kernel
      unflipped. Both pad the dilated input by 2 on each side, so they agree
      exactly once a kernel is flipped and transposed: 7 -> 14 -> 28.
    - the dense output is read as [c, h, w] (NCHW) here, [h, w, c] there: a
      permutation of the dense layer's columns.
    - initialization: PyTorch's defaults, not flax's (LeCun normal, zero bias).
  """

  def __init__(self, latent_dim: int = 64, image_shape=DCGAN_IMAGE_SHAPE,
               channels: tuple[int, ...] = (128, 64)):
    super().__init__()
    out_channels, height, width = image_shape
    self.start = (channels[0] * 2, height // 2 ** len(channels), width // 2 ** len(channels))
    self.dense = nn.Linear(latent_dim, math.prod(self.start))
    layers = [nn.BatchNorm2d(self.start[0], track_running_stats=False), nn.ReLU()]
    width_in = self.start[0]
    for width_out in channels:
      layers += [nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1),
                 nn.BatchNorm2d(width_out, track_running_stats=False), nn.ReLU()]
      width_in = width_out
    layers += [nn.Conv2d(width_in, out_channels, 3, padding=1), nn.Tanh()]
    self.body = nn.Sequential(*layers)

  def forward(self, z):
    return self.body(self.dense(z).view(z.shape[0], *self.start))


class DCGANDiscriminator(nn.Module):
  """images [b, c, h, w] -> logits [b]; gen.models.gan's discriminator (no spectral norm).

  4x4 stride-2 convs with leaky ReLU (0.2) -> dense to one logit. flax's 'SAME'
  pads a 4x4 stride-2 conv of an even side by 1 on each side, as padding=1
  here: identical outputs. The flatten is [c, h, w] here, [h, w, c] in gen.
  """

  def __init__(self, image_shape=DCGAN_IMAGE_SHAPE, channels: tuple[int, ...] = (64, 128)):
    super().__init__()
    width_in, height, width = image_shape
    layers = []
    for width_out in channels:
      layers += [nn.Conv2d(width_in, width_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
      width_in, height, width = width_out, height // 2, width // 2
    self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(width_in * height * width, 1))

  def forward(self, x):
    return self.body(x)[:, 0]


def make_dcgan(image_shape=DCGAN_IMAGE_SHAPE,
               name: str = "dcgan") -> tuple[DCGANGenerator, DCGANDiscriminator]:
  """The generator and discriminator of DCGAN_SETTINGS[name]."""
  settings = DCGAN_SETTINGS[name]
  return (DCGANGenerator(settings["latent_dim"], image_shape, settings["generator_channels"]),
          DCGANDiscriminator(image_shape, settings["discriminator_channels"]))


# --- the DDPM U-Net ------------------------------------------------------------------

def make_unet(name: str):
  """UNET_SETTINGS[name] as diffusers' UNet2DModel: (x_t [b, c, h, w], t [b]) -> .sample.

  The same layout as gen.models.unet.UNet, block for block, and the same
  parameter count: ResnetBlock2D is our ResBlock (GroupNorm, SiLU, 3x3 conv,
  + dense(SiLU(t embedding)), GroupNorm, SiLU, dropout, 3x3 conv, 1x1 skip
  conv when the width changes); single-head attention (attention_head_dim =
  the width) after every block of a level in attention_resolutions and in
  the middle; stride-2 3x3 conv down, nearest-neighbour + 3x3 conv up;
  num_res_blocks + 1 blocks per level on the way up, over the same skips;
  GroupNorm epsilon 1e-6 (flax's); the sinusoidal embedding in [sin, cos]
  order at frequencies 10000^(-i/half) (flip_sin_to_cos=False, freq_shift=0);
  the output conv, each block's second conv and each attention's output
  projection start at zero, as ours.
  How it differs: the stride-2 downsampling conv pads (1, 1) where flax's
  'SAME' pads (0, 1) on even sides (the sampling grid sits one pixel over);
  attention runs through PyTorch's scaled_dot_product_attention; other
  weights start at PyTorch's initialization, not flax's.
  """
  from diffusers import UNet2DModel
  from diffusers.models.attention_processor import Attention
  from diffusers.models.resnet import ResnetBlock2D

  settings = UNET_SETTINGS[name]
  channels, height = settings["image_shape"][0], settings["image_shape"][1]
  levels = len(settings["channel_mults"])
  attends = [height // 2 ** level in settings["attention_resolutions"] for level in range(levels)]
  unet = UNet2DModel(
      sample_size=height, in_channels=channels, out_channels=channels,
      block_out_channels=tuple(settings["channels"] * m for m in settings["channel_mults"]),
      layers_per_block=settings["num_res_blocks"],
      down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attends),
      up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)),
      norm_num_groups=settings["num_groups"], norm_eps=1e-6, attention_head_dim=None,
      dropout=settings["dropout"], flip_sin_to_cos=False, freq_shift=0)
  with torch.no_grad():
    for module in unet.modules():
      if isinstance(module, ResnetBlock2D):
        zero_(module.conv2)
      elif isinstance(module, Attention):
        zero_(module.to_out[0])
    zero_(unet.conv_out)
  return unet


def zero_(layer: nn.Module) -> None:
  nn.init.zeros_(layer.weight)
  if layer.bias is not None:
    nn.init.zeros_(layer.bias)


def linear_schedule_tables(device) -> tuple[torch.Tensor, torch.Tensor]:
  """sqrt(abar_t), sqrt(1 - abar_t): [T] float32 (computed in float64, as ours)."""
  betas = torch.linspace(DDPM_SCHEDULE["beta_start"], DDPM_SCHEDULE["beta_end"],
                         DDPM_SCHEDULE["timesteps"], dtype=torch.float64)
  alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
  return (alphas_cumprod.sqrt().float().to(device),
          (1.0 - alphas_cumprod).sqrt().float().to(device))


# --- train steps -----------------------------------------------------------------------

def count_params(*modules: nn.Module) -> int:
  return sum(p.numel() for module in modules for p in module.parameters())


def _adam(params, learning_rate: float, b1: float = 0.9, fused: bool = True):
  """Adam as optax's defaults (b2 0.999, eps 1e-8); fused kernels where the device has them."""
  params = list(params)
  if fused:
    try:
      return torch.optim.Adam(params, lr=learning_rate, betas=(b1, 0.999), eps=1e-8, fused=True)
    except RuntimeError:  # a device without fused Adam
      pass
  return torch.optim.Adam(params, lr=learning_rate, betas=(b1, 0.999), eps=1e-8)


class _EMA:
  """An exponential moving average of a module's parameters, updated in place."""

  def __init__(self, module: nn.Module, decay: float):
    self.decay = decay
    self.params = [p for p in module.parameters()]
    self.average = [p.detach().clone() for p in self.params]

  @torch.no_grad()
  def update(self):
    # One fused call for all tensors: a loop would launch a kernel per tensor.
    torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1.0 - self.decay)


def make_train_step(model_name: str, device, dtype: str = "float32",
                    channels_last: bool = False, compile: bool = False,
                    ema_decay: float = EMA_DECAY, fused_adam: bool = True,
                    seed: int = 0) -> tuple[Callable, tuple[int, ...], int]:
  """(step, image shape (c, h, w), parameter count) for one twin.

  step(x [b, c, h, w] float32 in [-1, 1]) takes one train step on that batch
  and returns its loss, a [] float32 tensor left on the device (the GAN's:
  the generator's).

  dtype "bfloat16" runs forward and backward under torch.autocast (weights,
  optimizer and loss stay float32); channels_last stores activations and
  weights NHWC; compile wraps each network in torch.compile.
  """
  if model_name not in MODELS:
    raise ValueError(f"model {model_name!r} is not known; valid: {', '.join(MODELS)}")
  if dtype not in DTYPES:
    raise ValueError(f"dtype {dtype!r} is not known; valid: {', '.join(DTYPES)}")
  device = torch.device(device)
  torch.manual_seed(seed)
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16,
                                    enabled=dtype == "bfloat16")
  prepare = lambda module: module.to(device=device, memory_format=memory_format)
  maybe_compile = (lambda module: torch.compile(module)) if compile else (lambda module: module)

  if model_name in DCGAN_SETTINGS:
    settings = DCGAN_SETTINGS[model_name]
    generator, discriminator = (prepare(m) for m in make_dcgan(name=model_name))
    params = count_params(generator, discriminator)
    g_opt = _adam(generator.parameters(), settings["learning_rate"], settings["b1"],
                  fused_adam)
    d_opt = _adam(discriminator.parameters(), settings["learning_rate"],
                  settings["b1"], fused_adam)
    ema = _EMA(generator, ema_decay) if ema_decay else None
    run_g, run_d = maybe_compile(generator), maybe_compile(discriminator)
    latent_dim = settings["latent_dim"]

    def step(real):
      real = real.contiguous(memory_format=memory_format)
      batch = real.shape[0]
      # Discriminator: non-saturating = minimax for D; fakes are constants to it.
      with autocast():
        with torch.no_grad():
          fake = run_g(torch.randn(batch, latent_dim, device=device))
        d_loss = (F.softplus(-run_d(real).float()).mean()
                  + F.softplus(run_d(fake).float()).mean())
      d_opt.zero_grad(set_to_none=True)
      d_loss.backward()
      d_opt.step()
      # Generator: -log sigma(D(G(z))) on fresh z, through D without D's own
      # weight gradients (ours differentiates with respect to G's alone).
      discriminator.requires_grad_(False)
      with autocast():
        g_loss = F.softplus(-run_d(run_g(torch.randn(batch, latent_dim,
                                                     device=device))).float()).mean()
      g_opt.zero_grad(set_to_none=True)
      g_loss.backward()
      g_opt.step()
      discriminator.requires_grad_(True)
      if ema is not None:
        ema.update()
      return g_loss.detach()

    return step, DCGAN_IMAGE_SHAPE, params

  settings = UNET_SETTINGS[model_name]
  unet = prepare(make_unet(model_name)).train()  # dropout on
  params = count_params(unet)
  optimizer = _adam(unet.parameters(), settings["learning_rate"], fused=fused_adam)
  ema = _EMA(unet, ema_decay) if ema_decay else None
  run = maybe_compile(unet)
  sqrt_abar, sqrt_one_minus_abar = linear_schedule_tables(device)
  timesteps = DDPM_SCHEDULE["timesteps"]

  def step(x0):
    x0 = x0.contiguous(memory_format=memory_format)
    batch = x0.shape[0]
    t = torch.randint(0, timesteps, (batch,), device=device)
    noise = torch.randn_like(x0)
    x_t = (sqrt_abar[t].view(batch, 1, 1, 1) * x0
           + sqrt_one_minus_abar[t].view(batch, 1, 1, 1) * noise)
    with autocast():
      predicted = run(x_t, t).sample
    loss = F.mse_loss(predicted.float(), noise)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), GRAD_CLIP_NORM)
    optimizer.step()
    if ema is not None:
      ema.update()
    return loss.detach()

  return step, settings["image_shape"], params


def _synchronize(device: torch.device) -> None:
  if device.type == "cuda":
    torch.cuda.synchronize(device)


def time_train_step(model_name: str, device="cpu", batch_size: int = 64,
                    dtype: str = "float32", steps: int = 20, repeats: int = 3, *,
                    channels_last: bool = False, compile: bool = False,
                    warmup_steps: int = 2, seed: int = 0) -> dict:
  """Train-step throughput of one twin.

  The first step is timed alone (compile_or_first_step_seconds: with
  `compile`, the compilation; otherwise allocation, cuDNN's algorithm search
  and the optimizer's state), then `warmup_steps` untimed ones, then
  `repeats` windows of `steps` steps; examples_per_second is over the median
  window. On CUDA, cuDNN benchmark mode and TF32 for float32 matmuls are on:
  JAX's default float32 precision on recent NVIDIA GPUs uses TF32 too.

  Returns dict(examples_per_second, compile_or_first_step_seconds, params,
  loss (last step's), window_seconds, and the settings).
  """
  device = torch.device(device)
  if device.type == "cuda":
    torch.backends.cudnn.benchmark = True
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9
      torch.backends.cuda.matmul.fp32_precision = "tf32"
    else:
      torch.backends.cuda.matmul.allow_tf32 = True
  step, image_shape, params = make_train_step(model_name, device, dtype, channels_last,
                                              compile, seed=seed)
  generator = torch.Generator(device=device).manual_seed(seed)
  # A few distinct batches, made on the device before any timing.
  batches = [torch.rand(batch_size, *image_shape, device=device, generator=generator) * 2 - 1
             for _ in range(4)]

  _synchronize(device)
  start = time.perf_counter()
  loss = float(step(batches[0]))
  first_step_s = time.perf_counter() - start
  for index in range(warmup_steps):
    step(batches[index % len(batches)])
  windows = []
  for _ in range(repeats):
    _synchronize(device)
    start = time.perf_counter()
    for index in range(steps):
      last = step(batches[index % len(batches)])
    loss = float(last)  # waits for the device
    windows.append(time.perf_counter() - start)
  return {"model": model_name, "device": str(device), "dtype": dtype,
          "batch_size": batch_size, "steps": steps, "repeats": repeats,
          "channels_last": channels_last, "compile": compile,
          "examples_per_second": steps * batch_size / statistics.median(windows),
          "compile_or_first_step_seconds": first_step_s, "params": params,
          "loss": loss, "window_seconds": windows, "threads": torch.get_num_threads(),
          "torch": torch.__version__}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  if values.threads:
    torch.set_num_threads(values.threads)
  result = time_train_step(values.model, values.device, values.batch_size, values.dtype,
                           values.steps, values.repeats, channels_last=values.channels_last,
                           compile=values.compile)
  print(json.dumps(result), flush=True)


def _define_flags():
  # Defined only when run as a script: importing the module defines no flags.
  flags.DEFINE_enum("model", "dcgan", MODELS, "Which twin.")
  flags.DEFINE_string("device", "cpu", "torch device: cpu, cuda, cuda:1, ...")
  flags.DEFINE_integer("batch_size", 64, "Examples per train step.")
  flags.DEFINE_enum("dtype", "float32", DTYPES, "bfloat16 = torch.autocast.")
  flags.DEFINE_integer("steps", 20, "Train steps per timed window.")
  flags.DEFINE_integer("repeats", 3, "Timed windows; the median is reported.")
  flags.DEFINE_bool("channels_last", False, "NHWC memory format.")
  flags.DEFINE_bool("compile", False, "torch.compile each network.")
  flags.DEFINE_integer("threads", 0, "torch.set_num_threads (0: PyTorch's default).")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
