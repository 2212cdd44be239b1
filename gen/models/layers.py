"""Small pieces shared by several models."""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "tanh": jax.numpy.tanh,
    "leaky_relu": nn.leaky_relu,
    "elu": nn.elu,
}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"config.model.activation={name!r} is not known; "
                     f"valid: {', '.join(sorted(ACTIVATIONS))}")
  return ACTIVATIONS[name]


def _phase_taps(kernel_size: int, stride: int) -> tuple[np.ndarray, int, int]:
  """How a 'SAME' transposed convolution splits into `stride` stride-1 convolutions.

  Output position stride * m + phase reads input m + offset through kernel tap
  k for every k with (phase + k - pad) % stride == 0, offset = (phase + k - pad)
  // stride, where pad is what lax.conv_transpose puts in front of the dilated
  input. Returns taps[phase, t] (the kernel tap read at offset lowest + t, or
  kernel_size for none), lowest offset, highest offset.
  """
  pad_len = kernel_size + stride - 2
  pad = kernel_size - 1 if stride > kernel_size - 1 else math.ceil(pad_len / 2)
  offsets = {(phase, (phase + k - pad) // stride): k
             for phase in range(stride) for k in range(kernel_size)
             if (phase + k - pad) % stride == 0}
  lowest = min(o for _, o in offsets)
  highest = max(o for _, o in offsets)
  taps = np.full((stride, highest - lowest + 1), kernel_size)
  for (phase, offset), k in offsets.items():
    taps[phase, offset - lowest] = k
  return taps, lowest, highest


CONV_TRANSPOSE_IMPLS = ("phases", "subpixel", "dilated")


class ConvTranspose(nn.Module):
  """nn.ConvTranspose(features, (k, k), strides=(s, s), padding="SAME"), three ways.

  All three have flax's parameters (kernel [k, k, in, out], bias) and give its
  outputs to float rounding, so checkpoints move between them; they differ in
  speed. XLA:CPU differentiates the input-dilated convolution that lax uses
  for a transposed convolution ("dilated") 10-20x slower than a plain one
  (experiments/benchmarks/benchmark.py), so on CPU the default splits the layer instead:
    phases    each of the s*s output phases is a sum over the kernel taps
              that reach it of (shifted input) @ tap; then interleave. Exactly
              the transposed convolution's multiply-adds.
    subpixel  one stride-1 convolution into s*s phase channels, then
              depth-to-space; simpler, but multiplies zero taps too
              (16/9 the work for k=3, s=2).
    dilated   flax's own layer (lax.conv_transpose).
  """

  features: int
  kernel_size: int = 3
  stride: int = 2
  impl: str = "phases"
  # Computation dtype; the parameters stay float32.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, s = self.kernel_size, self.stride
    if self.impl not in CONV_TRANSPOSE_IMPLS:
      raise ValueError(f"conv transpose impl {self.impl!r} is not known; "
                       f"valid: {', '.join(CONV_TRANSPOSE_IMPLS)}")
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
    taps, lowest, highest = _phase_taps(k, s)
    before, after = max(-lowest, 0), max(highest, 0)
    batch, height, width, _ = x.shape
    if self.impl == "dilated":
      y = jax.lax.conv_transpose(x, kernel, (s, s), "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
      return y + bias
    if self.impl == "subpixel":
      # A zero tap at index k stands for "no tap" in `taps`.
      padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
      phases = padded[taps[:, :, None, None], taps[None, None, :, :]]  # [s, T, s, T, in, out]
      size = taps.shape[1]
      phases = phases.transpose(1, 3, 4, 0, 2, 5).reshape(size, size, x.shape[-1], -1)
      y = jax.lax.conv_general_dilated(x, phases, (1, 1), ((before, after), (before, after)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
      y = y.reshape(batch, height, width, s, s, self.features)
    else:
      x = jnp.pad(x, ((0, 0), (before, after), (before, after), (0, 0)))
      rows = []
      for phase_h in range(s):
        columns = []
        for phase_w in range(s):
          shifts, weights = [], []
          for t_h, k_h in enumerate(taps[phase_h]):
            for t_w, k_w in enumerate(taps[phase_w]):
              if k_h == k or k_w == k:
                continue
              top, left = before + lowest + t_h, before + lowest + t_w
              shifts.append(x[:, top:top + height, left:left + width, :])
              weights.append(kernel[k_h, k_w])
          if not shifts:  # a kernel smaller than the stride leaves some phases empty
            columns.append(jnp.zeros((batch, height, width, self.features), x.dtype))
            continue
          # One matmul per tap, summed: 30% faster on XLA:CPU than one matmul
          # of the taps concatenated, whose copy cost more than it saved.
          columns.append(sum(shift @ weight for shift, weight in zip(shifts, weights)))
        rows.append(jnp.stack(columns, axis=3))  # [batch, h, w, phase_w, out]
      # Stacked where each phase interleaves, [batch, h, phase_h, w, phase_w,
      # out], the reshape below is free: no transpose pass over the output.
      y = jnp.stack(rows, axis=2)
      return y.reshape(batch, height * s, width * s, self.features) + bias
    y = y.transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(batch, height * s, width * s, self.features) + bias



def sum_rows(x):
  """x [..., n, c] -> [..., c], the sum over n, as a matrix-vector product.

  XLA:CPU splits a long reduction into a reduce-window and a short reduce
  (its tree-reduction rewrite), which ran 3x slower than a product with a
  vector of ones for batch-norm statistics over 64x28x28 rows
  (experiments/benchmarks/op_microbenchmark.py). HIGHEST precision: full float32 on
  accelerators too, whose default float32 matmul rounds to bfloat16.
  """
  ones = jnp.ones(x.shape[-2:-1], x.dtype)
  return jnp.einsum("...nc,n->...c", x, ones, precision=jax.lax.Precision.HIGHEST)


class GroupNorm(nn.Module):
  """nn.GroupNorm(num_groups, epsilon=1e-6) on x [b, h, w, c], reduced per channel first.

  The same function and parameters ("scale", "bias": [c]) as flax's layer,
  so checkpoints are interchangeable, computed so that XLA:CPU makes fewer
  slow passes: flax reduces x viewed as [b, h, w, groups, c / groups] over
  three non-adjacent axes; here the sums of x and x^2 over the image run
  with the channels contiguous ([b, c]), are summed within each group on
  that small array, and the output is one multiply-add per element with a
  per-(example, channel) scale and shift. On the DDPM U-Net's blocks this
  is 2.6x faster forward, 1.6x forward + backward (experiments/
  twin_benchmark.py --profile). Statistics and normalization run in float32
  whatever `dtype` (flax's default); the variance is E[x^2] - E[x]^2
  clipped at 0, as flax's use_fast_variance.
  """

  num_groups: int
  epsilon: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    if channels % self.num_groups:
      raise ValueError(f"GroupNorm: {channels} channels do not split into "
                       f"{self.num_groups} groups")
    scale = self.param("scale", nn.initializers.ones_init(), (channels,))
    bias = self.param("bias", nn.initializers.zeros_init(), (channels,))
    per_group = channels // self.num_groups
    x32 = x.astype(jnp.float32)
    image_axes = tuple(range(1, x.ndim - 1))
    count = per_group * math.prod(x.shape[1:-1])

    def group_mean(values):  # [b, c] channel sums -> [b, c] mean of each channel's group
      sums = values.reshape(-1, self.num_groups, per_group).sum(-1) / count
      return jnp.repeat(sums, per_group, axis=-1)

    rows = x32.reshape(x.shape[0], -1, channels)
    mean = group_mean(sum_rows(rows))
    mean_square = group_mean(sum_rows(jnp.square(rows)))
    variance = jnp.maximum(mean_square - jnp.square(mean), 0.0)
    multiplier = scale * jax.lax.rsqrt(variance + self.epsilon)  # [b, c]
    shift = bias - mean * multiplier
    expand = (slice(None),) + (None,) * len(image_axes) + (slice(None),)
    return (x32 * multiplier[expand] + shift[expand]).astype(self.dtype)
