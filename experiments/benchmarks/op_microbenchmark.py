"""The layers that decide the DDPM and DCGAN steps, alone: XLA:CPU against PyTorch.

  python experiments/benchmarks/op_microbenchmark.py            # every case, ~3 min on 2 cores
  python experiments/benchmarks/op_microbenchmark.py --cases=conv3x3_64

Each case times forward, and forward + backward (input and parameter
gradients, against a fixed random cotangent), at batch 64: in JAX as gen runs
it (NHWC, the process's XLA flags, so gen's CPU flags when gen is imported
first; --gen_flags=false for XLA's defaults) and in PyTorch, default NCHW and
channels_last. GFLOP/s counts the layer's multiply-adds x 2 (x 3 with the
backward), whatever each framework does to compute them. Median of 7 windows
of 5 calls each, after a warm-up call. The twin benchmark's op profile
(twin_benchmark.py --profile) says how much of a step each case stands for.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from absl import app, flags

# The repository root (this file is experiments/benchmarks/op_microbenchmark.py).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name -> (kind, input [b, h, w, c], output channels, what it is)
CASES = {
    "conv3x3_16": ("conv", (64, 28, 28, 16), 16, "U-Net 28x28 block conv 16->16"),
    "conv3x3_48_16": ("conv", (64, 28, 28, 48), 16, "U-Net 28x28 up-path conv 48->16"),
    "conv3x3_32": ("conv", (64, 14, 14, 32), 32, "U-Net 14x14 block conv 32->32"),
    "conv3x3_64": ("conv", (64, 7, 7, 64), 64, "U-Net 7x7 block conv 64->64"),
    "conv3x3_64_at_28": ("conv", (64, 28, 28, 64), 64, "3x3 conv 64->64 at 28x28"),
    "conv_transpose_256_128": ("conv_transpose", (64, 7, 7, 256), 128,
                               "DCGAN generator 4x4 stride-2 transposed conv 7->14"),
    "conv_transpose_128_64": ("conv_transpose", (64, 14, 14, 128), 64,
                              "DCGAN generator 4x4 stride-2 transposed conv 14->28"),
    "conv4x4_s2_64_128": ("conv_s2", (64, 14, 14, 64), 128,
                          "DCGAN discriminator 4x4 stride-2 conv 14->7"),
    "group_norm_silu": ("group_norm", (64, 28, 28, 48), 48,
                        "GroupNorm (8 groups) + SiLU, U-Net 28x28 up path"),
    "matmul_2048": ("matmul", (2048, 2048), 2048, "2048x2048 float32 matmul"),
    "matmul_2048_bf16": ("matmul_bf16", (2048, 2048), 2048, "2048x2048 bfloat16 matmul"),
}

_CASES = flags.DEFINE_list("cases", list(CASES), f"Cases: {', '.join(CASES)}.")
_GEN_FLAGS = flags.DEFINE_bool("gen_flags", True, "gen's own XLA:CPU flags (gen/platform.py); "
                               "false: XLA's defaults.")


def _median_ms(run) -> float:
  run()
  windows = []
  for _ in range(7):
    start = time.perf_counter()
    for _ in range(5):
      run()
    windows.append((time.perf_counter() - start) / 5 * 1000)
  return statistics.median(windows)


def _flops(kind: str, shape, out: int) -> float:
  """Multiply-adds x 2 of the forward pass."""
  if kind.startswith("matmul"):
    return 2.0 * shape[0] * shape[1] * out
  batch, height, width, channels = shape
  if kind == "conv":
    return 2.0 * batch * height * width * 9 * channels * out
  if kind == "conv_s2":
    return 2.0 * batch * (height // 2) * (width // 2) * 16 * channels * out
  if kind == "conv_transpose":  # each output pixel gets 2x2 of the 4x4 taps
    return 2.0 * batch * (2 * height) * (2 * width) * 4 * channels * out
  return 8.0 * batch * height * width * channels  # normalization: a few flops per element


def _jax_case(kind: str, shape, out: int):
  """(forward, forward + backward) zero-argument callables that block."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np

  from gen.models import layers

  rng = np.random.default_rng(0)
  dtype = jnp.bfloat16 if kind == "matmul_bf16" else jnp.float32
  x = jnp.asarray(rng.normal(size=shape), dtype)
  if kind.startswith("matmul"):
    w = jnp.asarray(rng.normal(size=(shape[1], out)), dtype)
    forward = jax.jit(jnp.matmul)
    return (lambda: jax.block_until_ready(forward(x, w)), None)
  module = {"conv": nn.Conv(out, (3, 3)), "conv_s2": nn.Conv(out, (4, 4), strides=(2, 2)),
            "conv_transpose": layers.ConvTranspose(out, 4, 2, "phases"),
            "group_norm": layers.GroupNorm(8)}[kind]
  activation = nn.silu if kind == "group_norm" else (lambda h: h)
  params = module.init(jax.random.PRNGKey(0), x)
  apply = lambda p, x: activation(module.apply(p, x))
  cotangent = jnp.asarray(rng.normal(size=jax.eval_shape(apply, params, x).shape), dtype)
  forward = jax.jit(apply)
  # The cotangent is an argument: a closed-over constant would be folded at compile time.
  both = jax.jit(jax.grad(lambda p, x, c: jnp.sum(apply(p, x) * c), (0, 1)))
  return (lambda: jax.block_until_ready(forward(params, x)),
          lambda: jax.block_until_ready(both(params, x, cotangent)))


def _torch_case(kind: str, shape, out: int, channels_last: bool):
  import torch

  torch.manual_seed(0)
  if kind.startswith("matmul"):
    dtype = torch.bfloat16 if kind == "matmul_bf16" else torch.float32
    a, b = torch.randn(*shape, dtype=dtype), torch.randn(shape[1], out, dtype=dtype)
    return (lambda: torch.matmul(a, b), None)
  batch, height, width, channels = shape
  layer = {"conv": lambda: torch.nn.Conv2d(channels, out, 3, padding=1),
           "conv_s2": lambda: torch.nn.Conv2d(channels, out, 4, stride=2, padding=1),
           "conv_transpose": lambda: torch.nn.ConvTranspose2d(channels, out, 4, 2, 1),
           "group_norm": lambda: torch.nn.GroupNorm(8, channels, eps=1e-6)}[kind]()
  activation = torch.nn.functional.silu if kind == "group_norm" else (lambda h: h)
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  layer = layer.to(memory_format=memory_format)
  x = torch.randn(batch, channels, height, width).contiguous(memory_format=memory_format)
  x.requires_grad_()
  with torch.no_grad():
    cotangent = torch.randn_like(activation(layer(x))).contiguous(memory_format=memory_format)

  def forward():
    with torch.no_grad():
      activation(layer(x))

  def both():
    layer.zero_grad(set_to_none=True)
    x.grad = None
    (activation(layer(x)) * cotangent).sum().backward()
  return forward, both


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = [c for c in _CASES.value if c not in CASES]
  if unknown:
    raise app.UsageError(f"--cases: unknown {', '.join(unknown)}; valid: {', '.join(CASES)}")
  sys.path.insert(0, ROOT)
  if not _GEN_FLAGS.value:
    os.environ["GEN_CPU_XLA_FLAGS"] = "0"
  import gen  # noqa: F401  (its XLA:CPU flags, if any, before JAX starts)
  import jax
  import torch

  from gen.train import compute
  for line in compute.machine_summary(("torch",)):
    print(line)
  print(f"XLA_FLAGS in effect: {os.environ.get('XLA_FLAGS') or '(none)'}; "
        f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)\n")
  print("| case | pass | JAX ms | PyTorch ms | PyTorch channels_last ms | "
        "JAX GFLOP/s | PyTorch GFLOP/s | channels_last GFLOP/s |")
  print("|---|---|---:|---:|---:|---:|---:|---:|")
  for name in _CASES.value:
    kind, shape, out, what = CASES[name]
    flops = _flops(kind, shape, out)
    sides = [_jax_case(kind, shape, out), _torch_case(kind, shape, out, False)]
    if not kind.startswith("matmul"):
      sides.append(_torch_case(kind, shape, out, True))
    for index, (label, multiple) in enumerate((("forward", 1), ("forward + backward", 3))):
      runs = [side[index] for side in sides]
      if any(run is None for run in runs):
        continue
      ms = [_median_ms(run) for run in runs]
      rates = [f"{multiple * flops / m / 1e6:,.0f}" for m in ms]
      cells = [f"{m:.2f}" for m in ms] + [""] * (3 - len(ms))
      rates += [""] * (3 - len(rates))
      print(f"| {name}: {what} | {label} | {' | '.join(cells)} | {' | '.join(rates)} |",
            flush=True)


if __name__ == "__main__":
  app.run(main)
