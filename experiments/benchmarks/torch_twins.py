"""gen's networks in PyTorch, to time a train step side by side with ours.

  python experiments/benchmarks/torch_twins.py --model=dcgan --device=cpu --steps=10
  python experiments/benchmarks/torch_twins.py --model=ddpm_ho --device=cuda \
      --dtype=bfloat16 --compile
  python experiments/benchmarks/torch_twins.py --model=realnvp --device=cuda

prints one JSON line: examples/s (median over --repeats windows of --steps
steps), the first step's seconds (with torch.compile: its compilation), and
the parameter count. Nothing here imports jax, so a device without a working
jax (or a CPU-only run) can time the twins alone.

Models (MODELS), each with gen's parameter count (tests/test_torch_twins.py):
  dcgan    configs/gan.py on 28x28x1: 1,610,946 parameters, as gen's
  dcgan_gpu  configs/gan.py:gpu (generator (256, 128), discriminator (128, 256)):
           4,794,754 parameters, as gen's
  ddpm     configs/ddpm.py's U-Net on 28x28x1 as diffusers' UNet2DModel: 686,769, as gen's
  ddpm_ho  Ho et al.'s CIFAR-10 widths (128, mults 1-2-2-2, 2 blocks, attention
           at 16x16, dropout 0.1) on 32x32x1: 35,741,697, as gen's UNet so configured
  autoencoder       configs/autoencoder.py: 784-128-64-128-784, 218,192
  conv_autoencoder  configs/conv_autoencoder.py: convs 32, 64, code 64, 479,105
  vae               configs/vae.py: 784-512-256-(2x32) / 32-256-512-(784x2), 1,494,112
  conv_vae          configs/conv_vae.py: convs 32, 64, dense 256, latent 32, 1,681,026
  realnvp           configs/realnvp.py: 2 scales x (3 + 3) couplings + 4, width 32, 665,521

Train steps are ours (gen.families), each as its config sets it:
  GAN     Adam (b1 0.5); the non-saturating loss, one discriminator then one
          generator update per step, on fresh latents each.
  DDPM    Adam; epsilon-prediction MSE at t ~ U{0..T-1} on the linear beta
          schedule (1e-4 to 0.02, T = 1000), gradients clipped to norm 1.
  AEs     Adam 1e-3; sigmoid binary cross-entropy from logits against the
          pixels / 255.
  VAEs    Adam, cosine from 1e-3 to 5e-5 over 20,000 steps; x = 2 pixels / 255
          - 1, one reparameterized z, the discretized logistic likelihood of
          the 8-bit pixels (log-scale floored at -7) and the analytic KL
          weighted by min(1, step / 2000); loss in bits/dim.
  RealNVP Adam, linear warm-up over 200 steps then cosine to 0 at 9,000,
          gradients clipped to norm 100; (pixels + u) / 256, u ~ U[0, 1),
          RealNVP's logit (alpha 0.05), exact bits/dim with every log-det.
An EMA of the generator / U-Net / flow after each step where the config keeps
one (gan, ddpm: 0.999; realnvp: 0.999; the AEs and VAEs: none), debiased as
ours (gen.train.state.ema_update). The learning rate follows the config's
schedule step by step (torch's LambdaLR). Not copied: our step's check that
loss and gradients are finite before applying them (a few reductions).

What step(x) takes (STEP_INPUTS): the GAN and DDPM twins take float32 images
in [-1, 1]; the AE, VAE and flow twins take uint8 pixels 0..255, which the
step itself scales (and, for the flow, dequantizes), as our step does with
batch["x"]. time_train_step makes random batches of the right kind on the
device before timing (a step's cost does not depend on the pixels), as our
benchmark's on-device batches, at each config's train.batch_size unless told
otherwise (batch_size_of).
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

MODELS = ("dcgan", "dcgan_gpu", "ddpm", "ddpm_ho", "autoencoder", "conv_autoencoder", "vae",
          "conv_vae", "realnvp")
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

# Fashion-MNIST, [c, h, w]: what configs/autoencoder.py ... configs/realnvp.py train on.
FASHION_MNIST_SHAPE = (1, 28, 28)
# configs/autoencoder.py and configs/conv_autoencoder.py.
AUTOENCODER_SETTINGS = {
    "autoencoder": dict(hidden_sizes=(128,), bottleneck=64),
    "conv_autoencoder": dict(features=(32, 64), bottleneck=64),
}
# configs/vae.py and configs/conv_vae.py (logistic decoder, beta 1).
VAE_SETTINGS = {
    "vae": dict(latent_dim=32, hidden_sizes=(512, 256)),
    "conv_vae": dict(latent_dim=32, channels=(32, 64), hidden_size=256),
}
VAE_LOSS = dict(beta=1.0, kl_warmup_steps=2000)
# gen.families.vae's floor on the decoder's log-scale.
MIN_LOG_SCALE = -7.0
# configs/realnvp.py.
REALNVP_SETTINGS = dict(num_scales=2, num_couplings=3, num_final_couplings=4, features=32,
                        num_res_blocks=2, logit_alpha=0.05)
# config.optimizer (Adam, b1 0.9) and config.train of each of those twins:
# gen.train.optim's schedule (linear warm-up from 0, then constant or cosine
# to learning_rate * end_factor at num_steps), clipping (0 = none), EMA (0 = none).
OPTIMIZER_SETTINGS = {
    "autoencoder": dict(learning_rate=1e-3, schedule="constant", warmup_steps=0,
                        end_factor=0.0, num_steps=5000, grad_clip_norm=0.0, ema_decay=0.0),
    "vae": dict(learning_rate=1e-3, schedule="cosine", warmup_steps=0, end_factor=0.05,
                num_steps=20_000, grad_clip_norm=0.0, ema_decay=0.0),
    "realnvp": dict(learning_rate=1e-3, schedule="cosine", warmup_steps=200, end_factor=0.0,
                    num_steps=9000, grad_clip_norm=100.0, ema_decay=0.999),
}
OPTIMIZER_SETTINGS["conv_autoencoder"] = OPTIMIZER_SETTINGS["autoencoder"]
OPTIMIZER_SETTINGS["conv_vae"] = OPTIMIZER_SETTINGS["vae"]

# What each twin's step(x) takes (x: [b, c, h, w]): "symmetric" = float32
# images in [-1, 1]; "pixels" = uint8 pixel values 0..255, scaled (and
# dequantized) inside the step, as our families do with batch["x"].
STEP_INPUTS = {**dict.fromkeys(("dcgan", "dcgan_gpu", "ddpm", "ddpm_ho"), "symmetric"),
               **dict.fromkeys(("autoencoder", "conv_autoencoder", "vae", "conv_vae",
                                "realnvp"), "pixels")}
# Each config's train.batch_size: time_train_step's default. The GAN and DDPM
# twins keep 64 (configs/gan.py's and configs/ddpm.py's), dcgan_gpu and
# ddpm_ho too, although configs/gan.py:gpu trains at 256.
BATCH_SIZES = {"dcgan": 64, "dcgan_gpu": 64, "ddpm": 64, "ddpm_ho": 64, "autoencoder": 128,
               "conv_autoencoder": 128, "vae": 128, "conv_vae": 128, "realnvp": 64}


def batch_size_of(model_name: str) -> int:
  """The train.batch_size of the config a twin copies: time_train_step's default."""
  _check_model(model_name)
  return BATCH_SIZES[model_name]


def _check_model(model_name: str) -> None:
  if model_name not in MODELS:
    raise ValueError(f"model {model_name!r} is not known; valid: {', '.join(MODELS)}")


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


# --- the autoencoders -------------------------------------------------------------

class DenseAutoencoder(nn.Module):
  """x [b, c, h, w] -> logits [b, c, h, w]; gen.models.autoencoder.DenseAutoencoder.

  flatten -> per hidden size: dense -> ReLU; dense to the bottleneck -> ReLU
  (the code, the bottleneck layer's activation as ours); per hidden size in
  reverse: dense -> ReLU; dense to c*h*w logits -> reshape.

  How it differs from gen's (the same function class, parameter for parameter):
    - the flatten is [c, h, w] here, [h, w, c] in gen: a permutation of the
      first layer's rows and the last one's columns, none at all for one
      channel (Fashion-MNIST), where the two compute the same function.
    - initialization: PyTorch's defaults, not flax's (LeCun normal, zero bias).
  """

  def __init__(self, image_shape=FASHION_MNIST_SHAPE, hidden_sizes: tuple[int, ...] = (128,),
               bottleneck: int = 64):
    super().__init__()
    self.image_shape = tuple(image_shape)
    widths = [math.prod(image_shape), *hidden_sizes, bottleneck]
    encoder = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
      encoder += [nn.Linear(width_in, width_out), nn.ReLU()]
    self.encoder = nn.Sequential(nn.Flatten(), *encoder)
    widths = widths[::-1]
    decoder = []
    for width_in, width_out in zip(widths[:-2], widths[1:-1]):
      decoder += [nn.Linear(width_in, width_out), nn.ReLU()]
    self.decoder = nn.Sequential(*decoder, nn.Linear(widths[-2], widths[-1]))

  def encode(self, x):
    return self.encoder(x)

  def decode(self, code):
    return self.decoder(code).view(code.shape[0], *self.image_shape)

  def forward(self, x):
    return self.decode(self.encode(x))


def _conv_down(image_shape, widths) -> tuple[tuple[int, int, int], list, int]:
  """The conv encoders' stride-2 3x3 conv + ReLU per width: (bottom [c, h, w],
  layers, last width)."""
  width_in, height, width = image_shape
  scale = 2 ** len(widths)
  layers = []
  for width_out in widths:
    layers += [nn.Conv2d(width_in, width_out, 3, stride=2, padding=1), nn.ReLU()]
    width_in = width_out
  return (widths[-1], height // scale, width // scale), layers, width_in


class ConvAutoencoder(nn.Module):
  """x [b, c, h, w] -> logits [b, c, h, w]; gen.models.autoencoder.ConvAutoencoder.

  per width f_i: 3x3 stride-2 conv -> ReLU (28 -> 14 -> 7); flatten -> dense
  to the bottleneck -> ReLU; dense to (h/4)(w/4) f_last -> ReLU -> reshape;
  per width in reverse: 3x3 stride-2 transposed conv -> ReLU (7 -> 14 -> 28);
  3x3 conv to c logits.

  How it differs from gen's (the same parameters, one for one):
    - where the stride-2 layers sample. flax's 'SAME' stride-2 conv of an
      even side pads (0, 1), PyTorch's padding=1 pads (1, 1): the sampling
      grid sits one pixel over. flax's 'SAME' transposed conv pads the dilated
      input (2, 1) with the kernel unflipped, PyTorch's ConvTranspose2d(3, 2,
      padding=1, output_padding=1) pads it (1, 2) with the kernel flipped:
      with a flipped kernel the output is ours shifted by one pixel. Same
      shapes and multiply-adds; an exact copy would need an extra pad or crop
      per layer (a copy of the activations), which ours does not pay.
    - the flatten and reshape are [c, h, w] here, [h, w, c] in gen: a
      permutation of the dense layers' rows and columns.
    - initialization: PyTorch's defaults, not flax's (LeCun normal, zero bias).
  """

  def __init__(self, image_shape=FASHION_MNIST_SHAPE, features: tuple[int, ...] = (32, 64),
               bottleneck: int = 64):
    super().__init__()
    channels = image_shape[0]
    self.bottom, encoder, width_in = _conv_down(image_shape, features)
    self.encoder = nn.Sequential(*encoder, nn.Flatten(),
                                 nn.Linear(math.prod(self.bottom), bottleneck), nn.ReLU())
    self.dense_up = nn.Sequential(nn.Linear(bottleneck, math.prod(self.bottom)), nn.ReLU())
    decoder = []
    for width_out in reversed(features):
      decoder += [nn.ConvTranspose2d(width_in, width_out, 3, stride=2, padding=1,
                                     output_padding=1), nn.ReLU()]
      width_in = width_out
    self.decoder = nn.Sequential(*decoder, nn.Conv2d(width_in, channels, 3, padding=1))

  def encode(self, x):
    return self.encoder(x)

  def decode(self, code):
    return self.decoder(self.dense_up(code).view(code.shape[0], *self.bottom))

  def forward(self, x):
    return self.decode(self.encode(x))


def make_autoencoder(name: str) -> nn.Module:
  """The autoencoder twin of AUTOENCODER_SETTINGS[name]."""
  settings = AUTOENCODER_SETTINGS[name]
  if name == "autoencoder":
    return DenseAutoencoder(FASHION_MNIST_SHAPE, settings["hidden_sizes"],
                            settings["bottleneck"])
  return ConvAutoencoder(FASHION_MNIST_SHAPE, settings["features"], settings["bottleneck"])


# --- the VAEs ------------------------------------------------------------------------

class _VAE(nn.Module):
  """encode(x) -> (mean, log_var) [b, latent]; decode(z) -> (loc, log_scale) [b, c, h, w].

  forward(x) is the training pass (one module call, so torch.compile sees all
  of it): encode, z = mean + exp(log_var / 2) eps with eps ~ N(0, I) drawn
  in float32, decode.
  """

  def forward(self, x):
    mean, log_var = self.encode(x)
    mean, log_var = mean.float(), log_var.float()
    z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
    loc, log_scale = self.decode(z)
    return mean, log_var, loc, log_scale


class DenseVAE(_VAE):
  """gen.models.vae.DenseVAE with the logistic decoder; x [b, c, h, w] in [-1, 1].

  Encoder: flatten -> per hidden size: dense -> ReLU; dense to 2 latent_dim,
  split into mean and log-variance. Decoder: per hidden size in reverse:
  dense -> ReLU; dense to 2 values per pixel, interleaved (pixel i's
  location at 2i, log-scale at 2i + 1), as ours reshapes to [..., 2].

  How it differs from gen's: the flatten is [c, h, w] here, [h, w, c] in gen
  (none at all for one channel: then the same function); initialization:
  PyTorch's defaults, not flax's (LeCun normal, zero bias).
  """

  def __init__(self, image_shape=FASHION_MNIST_SHAPE, latent_dim: int = 32,
               hidden_sizes: tuple[int, ...] = (512, 256)):
    super().__init__()
    self.image_shape = tuple(image_shape)
    widths = [math.prod(image_shape), *hidden_sizes]
    encoder = [nn.Flatten()]
    for width_in, width_out in zip(widths[:-1], widths[1:]):
      encoder += [nn.Linear(width_in, width_out), nn.ReLU()]
    self.encoder = nn.Sequential(*encoder, nn.Linear(widths[-1], 2 * latent_dim))
    widths = [latent_dim, *reversed(hidden_sizes)]
    decoder = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
      decoder += [nn.Linear(width_in, width_out), nn.ReLU()]
    self.decoder = nn.Sequential(*decoder,
                                 nn.Linear(widths[-1], 2 * math.prod(image_shape)))

  def encode(self, x):
    mean, log_var = self.encoder(x).chunk(2, dim=-1)
    return mean, log_var

  def decode(self, z):
    out = self.decoder(z).view(z.shape[0], *self.image_shape, 2)
    return out[..., 0], out[..., 1]


class ConvVAE(_VAE):
  """gen.models.vae.ConvVAE with the logistic decoder; x [b, c, h, w] in [-1, 1].

  Encoder: per width: 3x3 stride-2 conv -> ReLU (28 -> 14 -> 7); flatten ->
  dense to hidden_size -> ReLU -> dense to 2 latent_dim (mean, log-variance).
  Decoder: dense to hidden_size -> ReLU -> dense to (h/4)(w/4) c_last -> ReLU
  -> reshape; 3x3 stride-2 transposed convs -> ReLU to widths
  channels[-2::-1] + channels[0] (ours: 32, 32); 3x3 conv to 2 channels per
  image channel (channel 2k: location, 2k + 1: log-scale, as ours).

  How it differs from gen's (the same parameters, one for one): where the
  stride-2 convs and transposed convs sample (PyTorch's padding=1 /
  output_padding=1 against flax's 'SAME': one pixel over; see
  ConvAutoencoder), the flatten / reshape order ([c, h, w] against [h, w,
  c]: a permutation of the dense layers' rows and columns), and PyTorch's
  default initialization.
  """

  def __init__(self, image_shape=FASHION_MNIST_SHAPE, latent_dim: int = 32,
               channels: tuple[int, ...] = (32, 64), hidden_size: int = 256):
    super().__init__()
    image_channels = image_shape[0]
    self.image_shape = tuple(image_shape)
    self.bottom, down, width_in = _conv_down(image_shape, channels)
    self.encoder = nn.Sequential(*down, nn.Flatten(),
                                 nn.Linear(math.prod(self.bottom), hidden_size), nn.ReLU(),
                                 nn.Linear(hidden_size, 2 * latent_dim))
    self.dense_up = nn.Sequential(nn.Linear(latent_dim, hidden_size), nn.ReLU(),
                                  nn.Linear(hidden_size, math.prod(self.bottom)), nn.ReLU())
    up = []
    for width_out in [*reversed(channels[:-1]), channels[0]]:
      up += [nn.ConvTranspose2d(width_in, width_out, 3, stride=2, padding=1,
                                output_padding=1), nn.ReLU()]
      width_in = width_out
    self.decoder = nn.Sequential(*up, nn.Conv2d(width_in, 2 * image_channels, 3, padding=1))

  def encode(self, x):
    mean, log_var = self.encoder(x).chunk(2, dim=-1)
    return mean, log_var

  def decode(self, z):
    h = self.dense_up(z).view(z.shape[0], *self.bottom)
    out = self.decoder(h).view(z.shape[0], self.image_shape[0], 2, *self.image_shape[1:])
    return out[:, :, 0], out[:, :, 1]


def make_vae(name: str) -> _VAE:
  """The VAE twin of VAE_SETTINGS[name]."""
  settings = VAE_SETTINGS[name]
  if name == "vae":
    return DenseVAE(FASHION_MNIST_SHAPE, settings["latent_dim"], settings["hidden_sizes"])
  return ConvVAE(FASHION_MNIST_SHAPE, settings["latent_dim"], settings["channels"],
                 settings["hidden_size"])


def discretized_logistic_log_prob(pixels, loc, log_scale):
  """log P(pixel) of 8-bit values under a logistic discretized to 256 bins.

  gen.families.vae's, operation for operation: pixels (any dtype, values
  0..255) sit at 2 p / 255 - 1 and own the bin of half-width 1 / 255 there;
  the end bins reach to -inf and +inf. Shapes broadcast; returns float32.
  """
  pixels = pixels.float()
  x = 2.0 * pixels / 255.0 - 1.0
  inverse_scale = torch.exp(-log_scale)
  upper = (x + 1.0 / 255.0 - loc) * inverse_scale
  lower = (x - 1.0 / 255.0 - loc) * inverse_scale
  log_cdf_upper = F.logsigmoid(upper)
  log_survival_lower = F.logsigmoid(-lower)
  # sigmoid(a) - sigmoid(b) without cancellation, the bin width not from a
  # difference of two rounded edges (see ours).
  middle = (log_cdf_upper + log_survival_lower
            + torch.log(-torch.expm1(-2.0 / 255.0 * inverse_scale)))
  return torch.where(pixels <= 0, log_cdf_upper,
                     torch.where(pixels >= 255, log_survival_lower, middle))


def vae_loss(pixels, mean, log_var, loc, log_scale, kl_weight: float):
  """Our VAE's training loss in bits/dim: mean over the batch of
  -log p(x | z) + kl_weight KL(q(z | x) || N(0, I)), over D ln 2.

  pixels [b, c, h, w] 0..255; mean, log_var [b, latent]; loc, log_scale
  [b, c, h, w] (the log-scale floored at MIN_LOG_SCALE here, as ours).
  """
  log_px = discretized_logistic_log_prob(pixels, loc.float(),
                                         torch.clamp(log_scale.float(), min=MIN_LOG_SCALE))
  reconstruction = log_px.flatten(1).sum(1)
  kl = 0.5 * torch.sum(mean ** 2 + torch.exp(log_var) - 1.0 - log_var, dim=-1)
  num_dims = math.prod(pixels.shape[1:])
  return torch.mean(-reconstruction + kl_weight * kl) / (num_dims * math.log(2.0))


# --- RealNVP ---------------------------------------------------------------------------

class WeightNormConv(nn.Module):
  """gen.models.flow.WeightNormConv: a 3x3 conv with kernel g v / ||v|| (per output
  channel, +1e-12 under the root), 'SAME' (= padding 1: exact). direction v
  [out, in, k, k] starts LeCun-normal (truncated, as flax's), gain g at 1 (or
  0 with zero_init), bias at 0: ours. PyTorch's own weight_norm has the same
  parameters but starts g at ||v|| and has no epsilon, so it is not used."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
               zero_init: bool = False):
    super().__init__()
    fan_in = in_channels * kernel_size ** 2
    # flax's lecun_normal: a normal truncated at 2 sigma, its std corrected to 1 / sqrt(fan_in).
    std = 1.0 / math.sqrt(fan_in) / 0.87962566103423978
    self.direction = nn.Parameter(nn.init.trunc_normal_(
        torch.empty(out_channels, in_channels, kernel_size, kernel_size), std=std,
        a=-2 * std, b=2 * std))
    self.gain = nn.Parameter(torch.zeros(out_channels) if zero_init
                             else torch.ones(out_channels))
    self.bias = nn.Parameter(torch.zeros(out_channels))
    self.padding = kernel_size // 2

  def forward(self, x):
    # The norm in float32 (autocast leaves these ops alone); the conv in the autocast dtype.
    norm = torch.sqrt(torch.sum(self.direction ** 2, dim=(1, 2, 3)) + 1e-12)
    kernel = self.direction * (self.gain / norm).view(-1, 1, 1, 1)
    return F.conv2d(x, kernel, self.bias, padding=self.padding)


class ResidualScaleShift(nn.Module):
  """gen.models.flow.ResidualScaleShift: (masked x, mask) [b, c, h, w] -> (log-scale,
  shift), each [b, c, h, w] float32.

  convs[0] on [x, mask] (2c channels) to `features`; per residual block
  h += conv(ReLU(conv(ReLU(h)))); convs[-1] (zero gain) on ReLU(h) to 2c,
  split into raw log-scale and shift; log-scale = bound * tanh(raw), a
  learned bound per channel starting at 1. convs[i] is ours WeightNormConv_i.
  """

  def __init__(self, channels: int, features: int, num_res_blocks: int):
    super().__init__()
    self.convs = nn.ModuleList(
        [WeightNormConv(2 * channels, features)]
        + [WeightNormConv(features, features) for _ in range(2 * num_res_blocks)]
        + [WeightNormConv(features, 2 * channels, zero_init=True)])
    self.log_scale_bound = nn.Parameter(torch.ones(channels))

  def forward(self, x, mask):
    h = self.convs[0](torch.cat([x, mask.expand_as(x)], dim=1))
    for inner, outer in zip(self.convs[1:-1:2], self.convs[2:-1:2]):
      h = h + outer(F.relu(inner(F.relu(h))))
    raw_log_scale, shift = self.convs[-1](F.relu(h)).float().chunk(2, dim=1)
    return self.log_scale_bound.view(1, -1, 1, 1) * torch.tanh(raw_log_scale), shift


class AffineCoupling(nn.Module):
  """gen.models.flow.AffineCoupling: y = m x + (1 - m)(x exp(s(m x)) + t(m x)).

  mask: [1, h, w] (checkerboard) or [c, 1, 1] (channels), 1 = passes unchanged.
  forward(x [b, c, h, w]) -> (y [b, c, h, w], log |det| [b]).
  """

  def __init__(self, mask: torch.Tensor, net: ResidualScaleShift):
    super().__init__()
    self.register_buffer("mask", mask)
    self.net = net

  def forward(self, x):
    mask = self.mask
    log_scale, shift = self.net(x * mask, mask)
    log_scale, shift = log_scale * (1 - mask), shift * (1 - mask)
    y = x * mask + (1 - mask) * (x * torch.exp(log_scale) + shift)
    return y, log_scale.flatten(1).sum(1)


def checkerboard_mask(height: int, width: int, parity: int) -> torch.Tensor:
  """[1, h, w]: 1 where (row + column + parity) is even, as ours ([h, w, 1] there)."""
  rows, columns = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
  return ((rows + columns + parity) % 2 == 0).float()[None]


def channel_mask(channels: int, parity: int) -> torch.Tensor:
  """[c, 1, 1]: the first half of the channels (parity 0) or the second, as ours ([c])."""
  first_half = (torch.arange(channels) < channels // 2).float()
  return (first_half if parity == 0 else 1.0 - first_half).view(-1, 1, 1)


def squeeze(x):
  """[b, c, h, w] -> [b, 4c, h/2, w/2]; pixel (2i + di, 2j + dj) of channel k goes to
  channel di 2c + dj c + k, ours's order (its squeeze on [h, w, c])."""
  b, c, h, w = x.shape
  x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4)
  return x.reshape(b, 4 * c, h // 2, w // 2)


class RealNVP(nn.Module):
  """gen.models.flow.RealNVP: forward(x [b, c, h, w]) -> (z [b, c h w], log |det dz/dx| [b]).

  Per scale: num_couplings checkerboard couplings (parities 0, 1, 0, ...), a
  squeeze, num_couplings channel couplings, then the second half of the
  channels is factored out as latents; num_final_couplings checkerboard
  couplings at the coarsest scale. The same function as ours, parameter for
  parameter (a mask, the squeeze and the split pick the same values in NCHW
  as ours in NHWC; conv kernels are [out, in, kh, kw] here, [kh, kw, in, out]
  there); only z's order differs (its pieces are flattened [c, h, w]), which
  the standard normal prior does not see. Initialization as ours.
  """

  def __init__(self, image_shape=FASHION_MNIST_SHAPE, num_scales: int = 2,
               num_couplings: int = 3, num_final_couplings: int = 4, features: int = 32,
               num_res_blocks: int = 2):
    super().__init__()
    channels, height, width = image_shape
    net = lambda c: ResidualScaleShift(c, features, num_res_blocks)
    self.scales = nn.ModuleList()
    for _ in range(num_scales):
      board = nn.ModuleList([AffineCoupling(checkerboard_mask(height, width, i % 2),
                                            net(channels)) for i in range(num_couplings)])
      height, width, channels = height // 2, width // 2, channels * 4
      split = nn.ModuleList([AffineCoupling(channel_mask(channels, i % 2), net(channels))
                             for i in range(num_couplings)])
      self.scales.append(nn.ModuleList([board, split]))
      channels //= 2  # half is factored out
    self.final = nn.ModuleList([AffineCoupling(checkerboard_mask(height, width, i % 2),
                                               net(channels))
                                for i in range(num_final_couplings)])

  def forward(self, x):
    log_det = torch.zeros(x.shape[0], device=x.device)
    latents = []
    for board, split in self.scales:
      for coupling in board:
        x, coupling_log_det = coupling(x)
        log_det = log_det + coupling_log_det
      x = squeeze(x)
      for coupling in split:
        x, coupling_log_det = coupling(x)
        log_det = log_det + coupling_log_det
      keep = x.shape[1] // 2
      latents.append(x[:, keep:].flatten(1))
      x = x[:, :keep]
    for coupling in self.final:
      x, coupling_log_det = coupling(x)
      log_det = log_det + coupling_log_det
    latents.append(x.flatten(1))
    return torch.cat(latents, dim=1), log_det


def make_realnvp(settings: dict = REALNVP_SETTINGS, image_shape=FASHION_MNIST_SHAPE) -> RealNVP:
  """The RealNVP twin of `settings` (configs/realnvp.py's by default)."""
  return RealNVP(image_shape, settings["num_scales"], settings["num_couplings"],
                 settings["num_final_couplings"], settings["features"],
                 settings["num_res_blocks"])


def dequantize(pixels, generator=None):
  """uint8-valued pixels -> (pixels + u) / 256, u ~ U[0, 1): float32 in [0, 1)."""
  noise = torch.rand(pixels.shape, device=pixels.device, generator=generator)
  return (pixels.float() + noise) / 256.0


def flow_bits_per_dim(flow: RealNVP, y, logit_alpha: float):
  """[b] exact bits/dim of dequantized images y [b, c, h, w] in [0, 1]: our
  Flow's per-example loss. The logit of alpha + (1 - 2 alpha) y goes through
  the flow to a standard normal; the logit's and the 1/256 scaling's
  log-determinants move the density to 8-bit pixel values.
  """
  num_dims = math.prod(y.shape[1:])
  squeezed = logit_alpha + (1.0 - 2.0 * logit_alpha) * y
  x = torch.log(squeezed) - torch.log1p(-squeezed)
  logit_log_det = (math.log(1.0 - 2.0 * logit_alpha) - torch.log(squeezed)
                   - torch.log1p(-squeezed)).flatten(1).sum(1)
  pre_log_det = logit_log_det + num_dims * math.log(1.0 / 256.0)
  z, log_det = flow(x)
  log_prob = torch.sum(-0.5 * (z.float() ** 2 + math.log(2.0 * math.pi)), dim=1) + log_det
  return -(log_prob + pre_log_det) / (num_dims * math.log(2.0))


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
  """An exponential moving average of a module's parameters, updated in place.

  Debiased as ours (gen.train.state.ema_update): the t-th update moves the
  average toward the parameters by (1 - d) / (1 - d^t), which is 1 at t = 1
  and falls to 1 - d; the same one lerp per tensor as a plain EMA.
  """

  def __init__(self, module: nn.Module, decay: float):
    self.decay = decay
    self.count = 0
    self.params = [p for p in module.parameters()]
    self.average = [p.detach().clone() for p in self.params]

  @torch.no_grad()
  def update(self):
    self.count += 1
    weight = (1.0 - self.decay) / (1.0 - self.decay ** self.count)
    # One fused call for all tensors: a loop would launch a kernel per tensor.
    torch._foreach_lerp_(self.average, [p.detach() for p in self.params], weight)


def learning_rate_at(settings: dict, step: int) -> float:
  """gen.train.optim.make_schedule's learning rate for update `step` (0, 1, ...):
  linear from 0 over warmup_steps, then constant or optax's cosine decay to
  learning_rate * end_factor over num_steps - warmup_steps."""
  learning_rate, warmup = settings["learning_rate"], settings["warmup_steps"]
  if step < warmup:
    return learning_rate * step / warmup
  if settings["schedule"] == "constant":
    return learning_rate
  decay_steps = max(settings["num_steps"] - warmup, 1)
  cosine = 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, decay_steps) / decay_steps))
  return learning_rate * ((1.0 - settings["end_factor"]) * cosine + settings["end_factor"])


def _scheduled_adam(module: nn.Module, settings: dict, fused: bool):
  """(Adam, its LambdaLR) for OPTIMIZER_SETTINGS-style `settings`; call the
  scheduler's step() after each optimizer step, as optax counts updates."""
  optimizer = _adam(module.parameters(), settings["learning_rate"], fused=fused)
  schedule = torch.optim.lr_scheduler.LambdaLR(
      optimizer, lambda step: learning_rate_at(settings, step) / settings["learning_rate"])
  return optimizer, schedule


def random_batch(model_name: str, batch_size: int, device="cpu",
                 generator: torch.Generator | None = None) -> torch.Tensor:
  """A random batch of what model_name's step takes (STEP_INPUTS): [b, c, h, w]
  float32 in [-1, 1], or uint8 pixels 0..255."""
  device = torch.device(device)
  shape = (batch_size, *image_shape_of(model_name))
  if STEP_INPUTS[model_name] == "pixels":
    return torch.randint(0, 256, shape, dtype=torch.uint8, device=device, generator=generator)
  return torch.rand(shape, device=device, generator=generator) * 2 - 1


def image_shape_of(model_name: str) -> tuple[int, int, int]:
  """(c, h, w) of the images model_name's step takes."""
  _check_model(model_name)
  if model_name in DCGAN_SETTINGS:
    return DCGAN_IMAGE_SHAPE
  if model_name in UNET_SETTINGS:
    return UNET_SETTINGS[model_name]["image_shape"]
  return FASHION_MNIST_SHAPE


def make_train_step(model_name: str, device, dtype: str = "float32",
                    channels_last: bool = False, compile: bool = False,
                    ema_decay: float | None = None, fused_adam: bool = True,
                    seed: int = 0) -> tuple[Callable, tuple[int, ...], int]:
  """(step, image shape (c, h, w), parameter count) for one twin.

  step(x [b, c, h, w]) takes one train step on that batch and returns its
  loss, a [] float32 tensor left on the device (the GAN's: the generator's;
  the VAEs' and the flow's: bits/dim). x is what STEP_INPUTS[model_name]
  says: float32 in [-1, 1] (GAN, DDPM) or uint8 pixels 0..255 (AEs, VAEs,
  RealNVP); random_batch makes either.

  dtype "bfloat16" runs forward and backward under torch.autocast (weights,
  optimizer and loss stay float32); channels_last stores activations and
  weights NHWC; compile wraps each network in torch.compile. ema_decay: None
  = the config's (EMA_DECAY for the GAN and DDPM; OPTIMIZER_SETTINGS'
  ema_decay for the others), 0 = no EMA.
  """
  _check_model(model_name)
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
    ema_decay = EMA_DECAY if ema_decay is None else ema_decay
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

  if model_name in AUTOENCODER_SETTINGS:
    return _autoencoder_step(model_name, prepare, maybe_compile, autocast, memory_format,
                             ema_decay, fused_adam)
  if model_name in VAE_SETTINGS:
    return _vae_step(model_name, prepare, maybe_compile, autocast, memory_format, ema_decay,
                     fused_adam)
  if model_name == "realnvp":
    return _realnvp_step(prepare, maybe_compile, autocast, memory_format, ema_decay,
                         fused_adam)

  settings = UNET_SETTINGS[model_name]
  unet = prepare(make_unet(model_name)).train()  # dropout on
  params = count_params(unet)
  optimizer = _adam(unet.parameters(), settings["learning_rate"], fused=fused_adam)
  ema_decay = EMA_DECAY if ema_decay is None else ema_decay
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


def _optimizer_step(module: nn.Module, settings: dict, optimizer, schedule, ema) -> None:
  """After backward: clip (if the config clips), Adam, the schedule's next rate, EMA."""
  if settings["grad_clip_norm"]:
    torch.nn.utils.clip_grad_norm_(module.parameters(), settings["grad_clip_norm"])
  optimizer.step()
  schedule.step()
  if ema is not None:
    ema.update()


def _optimizer_of(model_name: str, module: nn.Module, ema_decay: float | None,
                  fused_adam: bool):
  """(settings, Adam, schedule, EMA or None) of OPTIMIZER_SETTINGS[model_name]."""
  settings = OPTIMIZER_SETTINGS[model_name]
  optimizer, schedule = _scheduled_adam(module, settings, fused_adam)
  ema_decay = settings["ema_decay"] if ema_decay is None else ema_decay
  return settings, optimizer, schedule, _EMA(module, ema_decay) if ema_decay else None


def _autoencoder_step(model_name, prepare, maybe_compile, autocast, memory_format, ema_decay,
                      fused_adam):
  """Our Autoencoder family's step: sigmoid cross-entropy of the logits
  against the pixels / 255 (config.data.scale 'unit'), mean over everything."""
  model = prepare(make_autoencoder(model_name))
  settings, optimizer, schedule, ema = _optimizer_of(model_name, model, ema_decay, fused_adam)
  run = maybe_compile(model)

  def step(pixels):
    x = (pixels.float() / 255.0).contiguous(memory_format=memory_format)
    with autocast():
      logits = run(x)
    loss = F.binary_cross_entropy_with_logits(logits.float(), x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    _optimizer_step(model, settings, optimizer, schedule, ema)
    return loss.detach()

  return step, FASHION_MNIST_SHAPE, count_params(model)


def _vae_step(model_name, prepare, maybe_compile, autocast, memory_format, ema_decay,
              fused_adam):
  """Our VAE family's step (vae_loss) on x = 2 pixels / 255 - 1 (config.data.scale
  'symmetric'), the KL weighted by beta min(1, updates so far / kl_warmup_steps)."""
  model = prepare(make_vae(model_name))
  settings, optimizer, schedule, ema = _optimizer_of(model_name, model, ema_decay, fused_adam)
  run = maybe_compile(model)
  updates = 0

  def step(pixels):
    nonlocal updates
    x = (pixels.float() * (2.0 / 255.0) - 1.0).contiguous(memory_format=memory_format)
    kl_weight = VAE_LOSS["beta"] * min(1.0, updates / VAE_LOSS["kl_warmup_steps"])
    with autocast():
      mean, log_var, loc, log_scale = run(x)
    loss = vae_loss(pixels, mean, log_var, loc, log_scale, kl_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    _optimizer_step(model, settings, optimizer, schedule, ema)
    updates += 1
    return loss.detach()

  return step, FASHION_MNIST_SHAPE, count_params(model)


def _realnvp_step(prepare, maybe_compile, autocast, memory_format, ema_decay, fused_adam):
  """Our Flow family's step: the mean exact bits/dim (flow_bits_per_dim) of the
  pixels dequantized with fresh uniform noise. Clipping: torch's
  clip_grad_norm_ scales by max_norm / (norm + 1e-6), optax's by max_norm /
  norm (a 1e-8 relative difference at norm 100)."""
  flow = prepare(make_realnvp())
  settings, optimizer, schedule, ema = _optimizer_of("realnvp", flow, ema_decay, fused_adam)
  run = maybe_compile(flow)

  def step(pixels):
    y = dequantize(pixels).contiguous(memory_format=memory_format)
    with autocast():
      loss = flow_bits_per_dim(run, y, REALNVP_SETTINGS["logit_alpha"]).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    _optimizer_step(flow, settings, optimizer, schedule, ema)
    return loss.detach()

  return step, FASHION_MNIST_SHAPE, count_params(flow)


def _synchronize(device: torch.device) -> None:
  if device.type == "cuda":
    torch.cuda.synchronize(device)


def time_train_step(model_name: str, device="cpu", batch_size: int | None = None,
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
  batch_size None: the config's (batch_size_of); batches are random_batch's.

  Returns dict(examples_per_second, compile_or_first_step_seconds, params,
  loss (last step's), window_seconds, and the settings).
  """
  device = torch.device(device)
  batch_size = batch_size_of(model_name) if batch_size is None else batch_size
  if device.type == "cuda":
    torch.backends.cudnn.benchmark = True
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9
      torch.backends.cuda.matmul.fp32_precision = "tf32"
    else:
      torch.backends.cuda.matmul.allow_tf32 = True
  step, _, params = make_train_step(model_name, device, dtype, channels_last, compile,
                                    seed=seed)
  generator = torch.Generator(device=device).manual_seed(seed)
  # A few distinct batches, made on the device before any timing.
  batches = [random_batch(model_name, batch_size, device, generator) for _ in range(4)]

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
  flags.DEFINE_integer("batch_size", None, "Examples per train step (default: the "
                       "config's train.batch_size, BATCH_SIZES).")
  flags.DEFINE_enum("dtype", "float32", DTYPES, "bfloat16 = torch.autocast.")
  flags.DEFINE_integer("steps", 20, "Train steps per timed window.")
  flags.DEFINE_integer("repeats", 3, "Timed windows; the median is reported.")
  flags.DEFINE_bool("channels_last", False, "NHWC memory format.")
  flags.DEFINE_bool("compile", False, "torch.compile each network.")
  flags.DEFINE_integer("threads", 0, "torch.set_num_threads (0: PyTorch's default).")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
