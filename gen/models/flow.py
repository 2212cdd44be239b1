"""RealNVP (Dinh, Sohl-Dickstein and Bengio, 2017): images and 2-D points.

An invertible map x -> z built from affine coupling layers: half of the
values (chosen by a mask) pass unchanged and set a scale and shift for the
other half,

  y = m * x + (1 - m) * (x * exp(s(m * x)) + t(m * x)),

so the Jacobian is triangular and log |det| = sum over the changed values of s.
Both modules expose `forward(x) -> (z, log_det)` with z flattened to
[batch, D], and `inverse(z) -> x`; the family adds the prior and the
preprocessing (gen.families.flow).

The image model is the paper's multi-scale architecture: at each scale,
checkerboard couplings, a squeeze (2x2 pixels -> 4 channels), channel-wise
couplings, then half the channels are factored out as latents and only the
other half goes on to the next scale; a last block of checkerboard couplings
ends it. The s/t networks are residual CNNs with weight normalization, which
does not depend on the batch (the paper's batch norm does, and misbehaves at
the small per-device batches of data-parallel training).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen.models import layers, register


class WeightNormConv(nn.Module):
  """A convolution with kernel g * v / ||v|| (Salimans and Kingma, 2016).

  zero_init starts g at 0, so the layer outputs its bias (0): a coupling whose
  last layer is zero starts as the identity, which keeps a deep flow stable.
  """

  features: int
  kernel_size: int = 3
  zero_init: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    direction = self.param("direction", nn.initializers.lecun_normal(),
                           (k, k, x.shape[-1], self.features))
    gain = self.param("gain", nn.initializers.zeros_init() if self.zero_init
                      else nn.initializers.ones_init(), (self.features,))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    # The norm in float32; the convolution in the compute dtype.
    norm = jnp.sqrt(jnp.sum(direction ** 2, axis=(0, 1, 2)) + 1e-12)
    kernel = (direction * (gain / norm)).astype(self.dtype)
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(self.dtype)


class ResidualScaleShift(nn.Module):
  """Masked input (and the mask) -> (log-scale, shift), each shaped like the input.

  The log-scale is bounded: scale * tanh(raw), with a learned per-channel
  scale, so one coupling cannot blow values up by more than exp(scale).
  The network runs in `dtype`; what it returns is float32, so that the
  coupling's affine map, its inverse and its log-determinant are float32.
  """

  features: int
  num_res_blocks: int
  activation: str = "relu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    act = layers.activation(self.activation)
    channels = x.shape[-1]
    conv = lambda width, **kwargs: WeightNormConv(width, dtype=self.dtype, **kwargs)
    h = conv(self.features)(jnp.concatenate([x, jnp.broadcast_to(mask, x.shape)], -1))
    for _ in range(self.num_res_blocks):
      inner = conv(self.features)(act(h))
      h = h + conv(self.features)(act(inner))
    out = conv(2 * channels, zero_init=True)(act(h)).astype(jnp.float32)
    raw_log_scale, shift = jnp.split(out, 2, axis=-1)
    bound = self.param("log_scale_bound", nn.initializers.ones_init(), (channels,))
    return bound * jnp.tanh(raw_log_scale), shift


class MLPScaleShift(nn.Module):
  """The 2-D model's s/t network: an MLP on the masked point."""

  hidden_sizes: Sequence[int]
  activation: str = "relu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    act = layers.activation(self.activation)
    h = x
    for size in self.hidden_sizes:
      h = act(nn.Dense(size, dtype=self.dtype)(h))
    out = nn.Dense(2 * x.shape[-1], kernel_init=nn.initializers.zeros_init(),
                   dtype=self.dtype)(h).astype(jnp.float32)
    raw_log_scale, shift = jnp.split(out, 2, axis=-1)
    bound = self.param("log_scale_bound", nn.initializers.ones_init(), (x.shape[-1],))
    return bound * jnp.tanh(raw_log_scale), shift


class AffineCoupling(nn.Module):
  """One coupling layer; `mask` (1 = passes unchanged) broadcasts against x."""

  mask: np.ndarray
  net: nn.Module

  def forward(self, x):
    mask = jnp.asarray(self.mask, x.dtype)
    log_scale, shift = self.net(x * mask, mask)
    log_scale, shift = log_scale * (1 - mask), shift * (1 - mask)
    y = x * mask + (1 - mask) * (x * jnp.exp(log_scale) + shift)
    return y, jnp.sum(log_scale.reshape(x.shape[0], -1), axis=1)

  def inverse(self, y):
    mask = jnp.asarray(self.mask, y.dtype)
    # The passed half of y is the passed half of x, so s and t are recomputed exactly.
    log_scale, shift = self.net(y * mask, mask)
    log_scale, shift = log_scale * (1 - mask), shift * (1 - mask)
    return y * mask + (1 - mask) * ((y - shift) * jnp.exp(-log_scale))

  def __call__(self, x):
    return self.forward(x)


def checkerboard_mask(height: int, width: int, parity: int) -> np.ndarray:
  rows, columns = np.indices((height, width))
  return ((rows + columns + parity) % 2 == 0).astype(np.float32)[:, :, None]


def channel_mask(channels: int, parity: int) -> np.ndarray:
  first_half = (np.arange(channels) < channels // 2).astype(np.float32)
  return first_half if parity == 0 else 1.0 - first_half


def squeeze(x):
  """[b, h, w, c] -> [b, h/2, w/2, 4c]: each 2x2 patch becomes 4 channels."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(x):
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, 2, 2, c // 4).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, c // 4)


class ClassPrior(nn.Module):
  """A class-conditional flow's base distribution: N(mean_y, diag(exp(2 log_scale_y)))
  per class y, over the flattened z; starts as N(0, I) for every class."""

  num_classes: int
  size: int

  @nn.compact
  def __call__(self):
    shape = (self.num_classes, self.size)
    return (self.param("mean", nn.initializers.zeros_init(), shape),
            self.param("log_scale", nn.initializers.zeros_init(), shape))


@register("realnvp", family="flow")
class RealNVP(nn.Module):
  """Multi-scale RealNVP for [h, w, c] images (in logit space, see the family).

  Each scale needs even height and width (a squeeze halves them) and at least
  2 channels after the squeeze to factor out half; 28x28 allows 2 scales.
  """

  data_shape: Sequence[int]
  num_scales: int = 2
  # Checkerboard couplings, then (after the squeeze) channel couplings, per scale.
  num_couplings: int = 3
  # Checkerboard couplings at the last, coarsest scale.
  num_final_couplings: int = 4
  features: int = 64
  num_res_blocks: int = 2
  activation: str = "relu"
  # Class-conditional when > 0: a base distribution per class (ClassPrior).
  num_classes: int = 0
  # Computation dtype of the s/t networks only (config.train.compute_dtype);
  # the flow's own values, inverse and log-determinant stay float32.
  dtype: Any = jnp.float32

  def setup(self):
    height, width, channels = self.data_shape
    check_scales(self.data_shape, self.num_scales)
    if self.num_classes:
      self.class_prior = ClassPrior(self.num_classes, math.prod(self.data_shape))
    if self.num_couplings < 1 or self.num_final_couplings < 1:
      raise ValueError("config.model.num_couplings and config.model.num_final_couplings "
                       "must be >= 1")
    net = lambda: ResidualScaleShift(self.features, self.num_res_blocks, self.activation,
                                     self.dtype)
    scales = []
    for _ in range(self.num_scales):
      board = [AffineCoupling(checkerboard_mask(height, width, i % 2), net())
               for i in range(self.num_couplings)]
      height, width, channels = height // 2, width // 2, channels * 4
      split = [AffineCoupling(channel_mask(channels, i % 2), net())
               for i in range(self.num_couplings)]
      scales.append((board, split))
      channels //= 2  # half is factored out
    self.scales = scales
    self.final = [AffineCoupling(checkerboard_mask(height, width, i % 2), net())
                  for i in range(self.num_final_couplings)]

  def forward(self, x):
    """x: [b, h, w, c] -> (z [b, h*w*c], log |det dz/dx| [b])."""
    log_det = jnp.zeros(x.shape[0], x.dtype)
    latents = []
    for board, split in self.scales:
      for coupling in board:
        x, ld = coupling.forward(x)
        log_det += ld
      x = squeeze(x)
      for coupling in split:
        x, ld = coupling.forward(x)
        log_det += ld
      keep = x.shape[-1] // 2
      latents.append(x[..., keep:].reshape(x.shape[0], -1))
      x = x[..., :keep]
    for coupling in self.final:
      x, ld = coupling.forward(x)
      log_det += ld
    latents.append(x.reshape(x.shape[0], -1))
    return jnp.concatenate(latents, axis=1), log_det

  def inverse(self, z):
    """z: [b, h*w*c] -> x: [b, h, w, c], in the layout `forward` returns."""
    height, width, channels = self.data_shape
    shapes = []  # shape of each factored-out piece, coarsest last
    for _ in range(self.num_scales):
      height, width, channels = height // 2, width // 2, channels * 4
      shapes.append((height, width, channels - channels // 2))
      channels //= 2
    sizes = [math.prod(s) for s in shapes] + [height * width * channels]
    pieces = jnp.split(z, np.cumsum(sizes)[:-1], axis=1)
    x = pieces[-1].reshape(z.shape[0], height, width, channels)
    for coupling in reversed(self.final):
      x = coupling.inverse(x)
    for (board, split), shape, piece in zip(reversed(self.scales), reversed(shapes),
                                            reversed(pieces[:-1])):
      x = jnp.concatenate([x, piece.reshape(z.shape[0], *shape)], axis=-1)
      for coupling in reversed(split):
        x = coupling.inverse(x)
      x = unsqueeze(x)
      for coupling in reversed(board):
        x = coupling.inverse(x)
    return x

  def prior_parameters(self):
    """(mean, log_scale) [num_classes, D] of a class-conditional base distribution."""
    return self.class_prior()

  def __call__(self, x):
    return self.forward(x)


def check_scales(data_shape, num_scales: int) -> None:
  height, width, channels = data_shape
  if num_scales < 1:
    raise ValueError(f"config.model.num_scales={num_scales} must be >= 1")
  for scale in range(num_scales):
    if height % 2 or width % 2:
      raise ValueError(
          f"config.model.num_scales={num_scales} is too many for {tuple(data_shape)} "
          f"images: scale {scale + 1} would squeeze {height}x{width}, which is not even")
    height, width, channels = height // 2, width // 2, channels * 4 // 2


def fixed_rotation(index: int) -> np.ndarray:
  """The 2x2 rotation between couplings `index` and `index + 1`: fixed, not learned.

  Axis-aligned couplings alone can only shear along the two axes in turn; a
  rotation between them lets the next coupling act along a new direction, at
  no cost to the likelihood (log |det| = 0) or to inversion (its transpose).
  The angles are the golden-angle sequence, so no two are alike.
  """
  angle = index * math.pi * (3.0 - math.sqrt(5.0))
  return np.array([[math.cos(angle), -math.sin(angle)],
                   [math.sin(angle), math.cos(angle)]], np.float32)


@register("realnvp2d", family="flow")
class RealNVP2D(nn.Module):
  """RealNVP for 2-D points: couplings that alternate which coordinate passes,
  with a fixed rotation after each when `rotate` is set."""

  data_shape: Sequence[int]
  num_couplings: int = 8
  hidden_sizes: Sequence[int] = (128, 128)
  activation: str = "relu"
  rotate: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    if tuple(self.data_shape) != (2,):
      raise ValueError(f"model realnvp2d is for 2-D points, not data of shape "
                       f"{tuple(self.data_shape)}; use realnvp for images")
    if self.num_couplings < 2:
      raise ValueError(f"config.model.num_couplings={self.num_couplings} must be >= 2, "
                       f"so that both coordinates are transformed")
    self.couplings = [
        AffineCoupling(np.array([1.0, 0.0]) if i % 2 == 0 else np.array([0.0, 1.0]),
                       MLPScaleShift(tuple(self.hidden_sizes), self.activation, self.dtype))
        for i in range(self.num_couplings)]

  def forward(self, x):
    log_det = jnp.zeros(x.shape[0], x.dtype)
    for index, coupling in enumerate(self.couplings):
      x, ld = coupling.forward(x)
      log_det += ld
      if self.rotate:
        x = x @ fixed_rotation(index)
    return x, log_det

  def inverse(self, z):
    for index, coupling in reversed(list(enumerate(self.couplings))):
      if self.rotate:
        z = z @ fixed_rotation(index).T
      z = coupling.inverse(z)
    return z

  def __call__(self, x):
    return self.forward(x)


def half_mask(dims: int, seed: int) -> np.ndarray:
  """[dims] float32 with a random half of the entries 1, fixed by `seed`."""
  mask = np.zeros(dims, np.float32)
  mask[np.random.default_rng(seed).permutation(dims)[:dims // 2]] = 1.0
  return mask


@register("realnvp_vector", family="flow")
class RealNVPVector(nn.Module):
  """RealNVP for vectors of any length: a flow prior on a first stage's codes
  (configs/latent.py:flow). Couplings come in pairs: a fixed random half of
  the coordinates passes through the first, the other half through the
  second, so every coordinate is transformed once per pair; a new random
  split for each pair mixes all coordinates."""

  # Data is a flat vector: a latent model flattens feature-map codes for it.
  vector_input = True
  data_shape: Sequence[int]
  num_couplings: int = 8
  hidden_sizes: Sequence[int] = (512, 512)
  activation: str = "relu"
  dtype: Any = jnp.float32

  def setup(self):
    if len(self.data_shape) != 1:
      raise ValueError(f"model realnvp_vector is for vectors, not data of shape "
                       f"{tuple(self.data_shape)}")
    if self.num_couplings < 2 or self.num_couplings % 2:
      raise ValueError(f"config.model.num_couplings={self.num_couplings} must be an even "
                       f"number >= 2 (couplings come in complementary pairs)")
    dims = self.data_shape[0]
    masks = []
    for pair in range(self.num_couplings // 2):
      mask = half_mask(dims, pair)
      masks += [mask, 1.0 - mask]
    self.couplings = [AffineCoupling(mask, MLPScaleShift(tuple(self.hidden_sizes),
                                                         self.activation, self.dtype))
                      for mask in masks]

  def forward(self, x):
    log_det = jnp.zeros(x.shape[0], jnp.float32)
    for coupling in self.couplings:
      x, ld = coupling.forward(x)
      log_det += ld
    return x, log_det

  def inverse(self, z):
    for coupling in reversed(self.couplings):
      z = coupling.inverse(z)
    return z

  def __call__(self, x):
    return self.forward(x)


# --- Glow (Kingma and Dhariwal, 2018) -----------------------------------------------
class ActNorm(nn.Module):
  """y = (x + bias) * exp(log_scale), per channel; log |det| = h w sum(log_scale).

  Data-dependent initialization: the parameters' initializers read the input
  that `init` is called with, so initialized on a real batch (the flow
  family's `init_params(rng, batch)`) every channel of y starts at mean 0 and
  standard deviation 1 over that batch, each layer seeing the output of the
  layers before it already initialized. On a constant input (the zeros of a
  shape-only init, where no batch is given) it starts as the identity.
  """

  @nn.compact
  def __call__(self, x):
    axes = tuple(range(x.ndim - 1))

    def bias_init(rng, shape):
      return -jnp.mean(x, axis=axes).astype(jnp.float32)

    def log_scale_init(rng, shape):
      std = jnp.std(x, axis=axes).astype(jnp.float32)
      # A channel with no spread (a constant batch) stays unscaled.
      return jnp.where(std > 1e-6, -jnp.log(jnp.maximum(std, 1e-6)), 0.0)

    channels = x.shape[-1]
    bias = self.param("bias", bias_init, (channels,))
    log_scale = self.param("log_scale", log_scale_init, (channels,))
    return bias, log_scale

  def forward(self, x):
    bias, log_scale = self(x)
    pixels = math.prod(x.shape[1:-1])
    return (x + bias) * jnp.exp(log_scale), jnp.full(x.shape[0], pixels * jnp.sum(log_scale))

  def inverse(self, y):
    bias, log_scale = self(y)
    return y * jnp.exp(-log_scale) - bias


class InvertibleConv1x1(nn.Module):
  """A learned 1x1 convolution (a channel mixing W), LU-parameterized:
  W = P L (U + diag(sign * exp(log_s))) with P a fixed permutation, L unit
  lower and U strictly upper triangular, so log |det W| = sum(log_s) costs
  nothing. Starts at a random rotation (QR of a Gaussian drawn from `seed`)."""

  channels: int
  seed: int

  def setup(self):
    import scipy.linalg
    rng = np.random.default_rng(self.seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((self.channels, self.channels)))
    p, lower, upper = scipy.linalg.lu(rotation)
    diagonal = np.diag(upper)
    self.permutation = p.astype(np.float32)
    self.sign = np.sign(diagonal).astype(np.float32)
    self.lower = self.param("lower", lambda *_: jnp.asarray(lower, jnp.float32))
    self.upper = self.param("upper", lambda *_: jnp.asarray(np.triu(upper, 1), jnp.float32))
    self.log_s = self.param("log_s", lambda *_: jnp.asarray(np.log(np.abs(diagonal)),
                                                            jnp.float32))

  def weight(self):
    c = self.channels
    lower = jnp.tril(self.lower, -1) + jnp.eye(c)
    upper = jnp.triu(self.upper, 1) + jnp.diag(self.sign * jnp.exp(self.log_s))
    return self.permutation @ lower @ upper

  def forward(self, x):
    pixels = math.prod(x.shape[1:-1])
    y = jnp.einsum("...c,cd->...d", x, self.weight())
    return y, jnp.full(x.shape[0], pixels * jnp.sum(self.log_s))

  def inverse(self, y):
    return jnp.einsum("...d,dc->...c", y, jnp.linalg.inv(self.weight()))

  def __call__(self, x):
    return self.forward(x)


class VariationalDequantizer(nn.Module):
  """q(u | x): dequantization noise u in (0, 1)^D learned per image (Flow++,
  Ho et al., 2019) in place of uniform noise.

  eps ~ N(0, I) goes through `num_couplings` affine couplings on alternating
  checkerboard halves, whose scale and shift networks also see features of
  the 8-bit image x, then a sigmoid: u = sigmoid(g(eps; x)). Returns u and
  log q(u | x) = log N(eps) - log |det du/deps|. The couplings start as the
  identity (zero-initialized last layers), so q starts as the logistic-normal
  sigmoid(eps).
  """

  num_couplings: int = 4
  features: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels, eps):
    """pixels: [b, h, w, c] values 0..255 (float); eps: [b, h, w, c] -> (u, log_q [b])."""
    conv = lambda width, **kwargs: WeightNormConv(width, dtype=self.dtype, **kwargs)
    context = conv(self.features)(pixels / 127.5 - 1.0)
    context = conv(self.features)(nn.relu(context))
    _, height, width, channels = eps.shape
    z, log_det = eps, jnp.zeros(eps.shape[0], jnp.float32)
    for index in range(self.num_couplings):
      mask = jnp.asarray(checkerboard_mask(height, width, index % 2))
      h = conv(self.features)(jnp.concatenate([z * mask, context], axis=-1))
      h = conv(self.features)(nn.relu(h))
      out = conv(2 * channels, zero_init=True)(nn.relu(h)).astype(jnp.float32)
      raw_log_scale, shift = jnp.split(out, 2, axis=-1)
      log_scale = jnp.tanh(raw_log_scale) * (1 - mask)
      z = z * mask + (1 - mask) * (z * jnp.exp(log_scale) + shift * (1 - mask))
      log_det += jnp.sum(log_scale.reshape(z.shape[0], -1), axis=1)
    u = nn.sigmoid(z)
    log_det += jnp.sum((nn.log_sigmoid(z) + nn.log_sigmoid(-z)).reshape(z.shape[0], -1), axis=1)
    log_normal = jnp.sum((-0.5 * (eps ** 2 + math.log(2.0 * math.pi))).reshape(z.shape[0], -1),
                         axis=1)
    return u, log_normal - log_det


@register("glow", family="flow")
class Glow(nn.Module):
  """Glow's multi-scale flow for [h, w, c] images (in logit space, see the family).

  Each scale: a squeeze (2x2 pixels -> 4 channels), then `steps_per_scale`
  steps of actnorm, an invertible 1x1 convolution and an affine coupling
  (the first half of the channels sets the scale and shift of the second;
  the 1x1 convolutions decide what the halves hold), then half of the
  channels are factored out, except after the last scale. The s/t networks
  are RealNVP's residual CNNs. 28x28 allows 2 scales (14x14x4, 7x7x8).
  """

  data_shape: Sequence[int]
  num_scales: int = 2
  steps_per_scale: int = 8
  features: int = 64
  num_res_blocks: int = 1
  activation: str = "relu"
  # "uniform": the data's own U[0, 1) noise; "variational": q(u | x) learned
  # with the flow (VariationalDequantizer), and the bound is over it.
  dequantization: str = "uniform"
  dequantizer_couplings: int = 4
  dequantizer_features: int = 32
  # Class-conditional when > 0: a base distribution per class (ClassPrior).
  num_classes: int = 0
  dtype: Any = jnp.float32

  def setup(self):
    check_scales(self.data_shape, self.num_scales)
    if self.num_classes:
      self.class_prior = ClassPrior(self.num_classes, math.prod(self.data_shape))
    if self.dequantization not in ("uniform", "variational"):
      raise ValueError(f"config.model.dequantization={self.dequantization!r}: valid are "
                       f"'uniform' and 'variational'")
    if self.dequantization == "variational":
      self.dequantizer = VariationalDequantizer(self.dequantizer_couplings,
                                                self.dequantizer_features, self.dtype)
    if self.steps_per_scale < 1:
      raise ValueError(f"config.model.steps_per_scale={self.steps_per_scale} must be >= 1")
    channels = self.data_shape[-1]
    scales = []
    for scale in range(self.num_scales):
      channels *= 4
      scales.append([
          (ActNorm(), InvertibleConv1x1(channels, seed=1000 * scale + step),
           AffineCoupling(channel_mask(channels, 0),
                          ResidualScaleShift(self.features, self.num_res_blocks,
                                             self.activation, self.dtype)))
          for step in range(self.steps_per_scale)])
      if scale != self.num_scales - 1:
        channels //= 2
    self.scales = scales

  def forward(self, x):
    """x: [b, h, w, c] -> (z [b, h*w*c], log |det dz/dx| [b])."""
    log_det = jnp.zeros(x.shape[0], jnp.float32)
    latents = []
    for index, steps in enumerate(self.scales):
      x = squeeze(x)
      for layers_of_step in steps:
        for layer in layers_of_step:
          x, ld = layer.forward(x)
          log_det += ld
      if index != len(self.scales) - 1:
        keep = x.shape[-1] // 2
        latents.append(x[..., keep:].reshape(x.shape[0], -1))
        x = x[..., :keep]
    latents.append(x.reshape(x.shape[0], -1))
    return jnp.concatenate(latents, axis=1), log_det

  def inverse(self, z):
    """z: [b, h*w*c] -> x: [b, h, w, c], in the layout `forward` returns."""
    height, width, channels = self.data_shape
    shapes = []
    for scale in range(self.num_scales):
      height, width, channels = height // 2, width // 2, channels * 4
      if scale != self.num_scales - 1:
        shapes.append((height, width, channels - channels // 2))
        channels //= 2
    sizes = [math.prod(s) for s in shapes] + [height * width * channels]
    pieces = jnp.split(z, np.cumsum(sizes)[:-1], axis=1)
    x = pieces[-1].reshape(z.shape[0], height, width, channels)
    for index in reversed(range(len(self.scales))):
      if index != len(self.scales) - 1:
        x = jnp.concatenate([x, pieces[index].reshape(z.shape[0], *shapes[index])], axis=-1)
      for layers_of_step in reversed(self.scales[index]):
        for layer in reversed(layers_of_step):
          x = layer.inverse(x)
      x = unsqueeze(x)
    return x

  def dequantize(self, pixels, eps):
    """(u, log q(u | x)) of the variational dequantizer."""
    return self.dequantizer(pixels, eps)

  def prior_parameters(self):
    """(mean, log_scale) [num_classes, D] of a class-conditional base distribution."""
    return self.class_prior()

  def __call__(self, x):
    return self.forward(x)
