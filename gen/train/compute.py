"""FLOPs of a compiled program, accelerator peaks, and model-FLOPs utilization (MFU).

  flops = compiled_flops(train_step, state, batch)   # one step, as XLA compiled it
  value, basis = mfu(flops * steps_per_second, jax.devices()[0])

MFU here is achieved FLOP/s over a peak: on an accelerator, its datasheet's
dense bf16 figure (`PEAK_FLOPS`, the convention of PaLM's MFU, so a float32
program scores low by construction); on a CPU, where a shared VM core has no
datasheet figure, the rate of a jitted float32 matmul measured on the same
machine (`measure_cpu_matmul_flops`).
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp


def _flops_of(analysis: Any) -> float | None:
  """The "flops" entry of a cost analysis in any of the forms JAX has returned.

  jax 0.10.x returns a dict; some earlier releases returned a list holding
  one dict (per compiled module); None means the backend has no analysis.
  XLA:GPU once reported -1 for unknown costs: negative counts are None too.
  """
  if analysis is None:
    return None
  if isinstance(analysis, (list, tuple)):
    entries = [entry for entry in analysis if isinstance(entry, dict) and "flops" in entry]
    if not entries:
      return None
    analysis = entries[0]
  if not isinstance(analysis, dict) or "flops" not in analysis:
    return None
  flops = float(analysis["flops"])
  return flops if flops >= 0 else None


def _lowered(jitted_fn: Callable, args, kwargs):
  if not hasattr(jitted_fn, "lower"):  # a plain function: jit it here
    jitted_fn = jax.jit(jitted_fn)
  return jitted_fn.lower(*args, **kwargs)


def compiled_flops(jitted_fn: Callable, *args, **kwargs) -> float | None:
  """FLOPs of one call of `jitted_fn(*args, **kwargs)` as XLA compiled it, or None.

  Lowers and compiles the function for these arguments (arrays or
  jax.ShapeDtypeStruct; nothing runs) and reads XLA's cost analysis of the
  compiled program. It counts what the program computes: for a train step,
  forward + backward + optimizer update (and anything else inside the jit,
  such as an EMA). What XLA counts, and does not:
    - a matmul [m, k] x [k, n] is 2 m k n; a convolution counts only the taps
      that land inside the input, so 'SAME' borders make it a little less than
      2 * outputs * kernel volume * input channels;
    - a while loop (lax.scan / fori_loop that is not unrolled) counts its body
      ONCE, whatever its trip count: time and count one step, or unroll;
    - on a program partitioned over several devices, XLA analyses the
      partitioned program: one device's share (a matmul sharded 8 ways
      counts 1/8 of 2 m k n);
    - XLA:GPU has had releases whose counts missed library calls (cuBLAS,
      cuDNN): compare with `lowered_flops` on a new backend before trusting it.
  Returns None where the backend offers no cost analysis.
  """
  compiled = _lowered(jitted_fn, args, kwargs).compile()
  try:
    analysis = compiled.cost_analysis()
  except NotImplementedError:  # some versions raise instead of returning None
    return None
  return _flops_of(analysis)


def lowered_flops(jitted_fn: Callable, *args, **kwargs) -> float | None:
  """FLOPs of the program before XLA's optimizations (the same caveats), or None.

  A cross-check for `compiled_flops`: the count of the ops as written, before
  fusion or rewriting into library calls. jax 0.10 offers it only for
  backends not reached through the PJRT C API (plugins): None elsewhere.
  """
  try:
    analysis = _lowered(jitted_fn, args, kwargs).cost_analysis()
  except NotImplementedError:
    return None
  return _flops_of(analysis)


@dataclasses.dataclass(frozen=True)
class Peak:
  """One accelerator's peak: FLOP/s and where the figure comes from."""

  name: str
  flops_per_second: float | None
  precision: str
  source: str


# Dense (no 2:4 sparsity) tensor-unit peaks: NVIDIA's datasheets quote the
# sparse figure, twice the dense one; the dense one is what a training step can
# reach, so each figure here is half the datasheet's (989.4 for the H100/H200
# SXM, as the H100 whitepaper's dense 989.4 of its sparse 1,978.9).
# device_kind strings are JAX's (the CUDA device name on GPUs); the patterns
# are searched, case-insensitively, in order: the first that matches wins.
PEAK_FLOPS: tuple[tuple[str, Peak], ...] = (
    (r"\bh100\b.*\bpcie\b",
     Peak("NVIDIA H100 PCIe", 756.5e12, "bf16",
          "NVIDIA H100 Tensor Core GPU datasheet: BF16 1,513 TFLOPS with sparsity")),
    (r"\bh100\b.*\bnvl\b",
     Peak("NVIDIA H100 NVL", 835.5e12, "bf16",
          "NVIDIA H100 Tensor Core GPU datasheet: BF16 1,671 TFLOPS with sparsity")),
    (r"\bh100\b",  # "NVIDIA H100 80GB HBM3": the SXM5 board
     Peak("NVIDIA H100 SXM", 989.4e12, "bf16",
          "NVIDIA H100 Tensor Core GPU datasheet: BF16 1,979 TFLOPS with sparsity "
          "(989.4 dense in the H100 architecture whitepaper)")),
    (r"\bh200\b.*\bnvl\b",
     Peak("NVIDIA H200 NVL", 835.5e12, "bf16",
          "NVIDIA H200 Tensor Core GPU datasheet: BF16 1,671 TFLOPS with sparsity")),
    (r"\bh200\b",  # "NVIDIA H200": the SXM board
     Peak("NVIDIA H200 SXM", 989.4e12, "bf16",
          "NVIDIA H200 Tensor Core GPU datasheet: BF16 1,979 TFLOPS with sparsity")),
    (r"\ba100\b",  # every A100 board: -SXM4-40GB, -SXM4-80GB, -PCIE-40GB, 80GB PCIe
     Peak("NVIDIA A100", 312e12, "bf16",
          "NVIDIA A100 Tensor Core GPU datasheet: BF16 312 TFLOPS (624 with sparsity)")),
    (r"\bl4\b",  # not L40 / L40S
     Peak("NVIDIA L4", 121e12, "bf16",
          "NVIDIA L4 Tensor Core GPU datasheet: BF16 242 TFLOPS with sparsity")),
    (r"\ba10g\b",
     Peak("NVIDIA A10G", None, "bf16",
          "no published figure: the A10G is AWS's variant of the A10 with different "
          "tensor throughput, and neither NVIDIA nor AWS publishes a datasheet for it")),
    (r"\ba10\b",
     Peak("NVIDIA A10", 125e12, "bf16",
          "NVIDIA A10 Tensor Core GPU datasheet: BF16 125 TFLOPS (250 with sparsity)")),
    (r"\bt4\b",  # "Tesla T4": Turing has no bf16; its fp16 tensor peak instead
     Peak("NVIDIA T4", 65e12, "fp16 (no bf16 on Turing)",
          "NVIDIA T4 Tensor Core GPU datasheet: mixed precision (FP16/FP32) 65 TFLOPS")),
    (r"^tpu v4$",
     Peak("TPU v4", 275e12, "bf16", "Google Cloud TPU v4 documentation: 275 TFLOPS bf16 per chip")),
    (r"^tpu v5 ?(lite|e)$",
     Peak("TPU v5e", 197e12, "bf16",
          "Google Cloud TPU v5e documentation: 197 TFLOPS bf16 per chip")),
    (r"^tpu v5p?$",  # v5p reports itself as "TPU v5"
     Peak("TPU v5p", 459e12, "bf16",
          "Google Cloud TPU v5p documentation: 459 TFLOPS bf16 per chip")),
    (r"^tpu v6 ?(lite|e)$",
     Peak("TPU v6e (Trillium)", 918e12, "bf16",
          "Google Cloud TPU v6e documentation: 918 TFLOPS bf16 per chip")),
)


def find_peak(device_kind: str) -> Peak | None:
  """The PEAK_FLOPS entry whose pattern matches `device_kind` (e.g. "NVIDIA H100
  80GB HBM3", "TPU v5 lite"), or None for a kind the table does not know."""
  kind = " ".join(device_kind.lower().split())
  for pattern, peak in PEAK_FLOPS:
    if re.search(pattern, kind):
      return peak
  return None


def measure_cpu_matmul_flops(size: int = 2048, dtype: str = "float32",
                             repeats: int = 5) -> float:
  """FLOP/s of a jitted [size, size] x [size, size] matmul on the default CPU device.

  2 size^3 FLOPs per call; the best of `repeats` timed calls after a warm-up
  one (the best, since other processes on a shared machine only slow calls
  down). All the CPU cores XLA uses take part, as in training.
  """
  cpu = jax.devices("cpu")[0]
  keys = jax.random.split(jax.random.PRNGKey(0))
  a, b = (jax.device_put(jax.random.normal(key, (size, size), dtype), cpu) for key in keys)
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best


_CPU_PEAK: dict[str, float] = {}


def cpu_peak_flops() -> float:
  """measure_cpu_matmul_flops() with its defaults, measured once per process."""
  if "float32" not in _CPU_PEAK:
    _CPU_PEAK["float32"] = measure_cpu_matmul_flops()
  return _CPU_PEAK["float32"]


def mfu(flops_per_second: float, device) -> tuple[float | None, str]:
  """(achieved / peak, what the peak is) for a jax Device, or its device_kind string.

  Accelerators: over PEAK_FLOPS' dense figure; (None, why) for a kind the
  table does not know or has no figure for. CPU (platform "cpu", or the kind
  "cpu"): over cpu_peak_flops(), measured here, so values near 1 are
  possible, and above 1 where the measured matmul was slowed by a neighbour.
  """
  platform = getattr(device, "platform", None)
  kind = getattr(device, "device_kind", device)
  if platform == "cpu" or (platform is None and str(kind).lower() == "cpu"):
    peak = cpu_peak_flops()
    return (flops_per_second / peak,
            f"measured float32 2048x2048 jitted matmul on this CPU: {peak / 1e9:.1f} GFLOP/s")
  entry = find_peak(str(kind))
  if entry is None:
    return None, f"no peak known for device kind {kind!r} (see gen.train.compute.PEAK_FLOPS)"
  if entry.flops_per_second is None:
    return None, f"{entry.name}: {entry.source}"
  return (flops_per_second / entry.flops_per_second,
          f"{entry.name} dense {entry.precision} peak {entry.flops_per_second / 1e12:g} "
          f"TFLOP/s ({entry.source})")


def machine_summary(other_libraries: tuple[str, ...] = ()) -> list[str]:
  """Lines saying what decides speed on this host's CPU, for a benchmark's head:
  the CPU model, its AVX-512 / AMX flags (Linux), its logical CPUs, and the
  versions of jax, jaxlib, flax, optax and `other_libraries`."""
  import importlib
  import os
  import platform
  import sys

  model, cpu_flags = platform.processor() or "unknown", []
  try:
    with open("/proc/cpuinfo") as file:
      for line in file:
        if line.startswith("model name") and model in ("unknown", "", "x86_64"):
          model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not cpu_flags:
          cpu_flags = line.split(":", 1)[1].split()
  except OSError:
    pass
  wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
            "amx_int8")
  present = [f for f in wanted if f in cpu_flags]
  absent = [f for f in wanted if f not in cpu_flags]
  versions = []
  for name in ("jax", "jaxlib", "flax", "optax", *other_libraries):
    try:
      versions.append(f"{name} {importlib.import_module(name).__version__}")
    except ImportError:
      versions.append(f"{name} not installed")
  return [f"CPU: {model}; {os.cpu_count()} logical CPUs, all used by every framework",
          f"ISA flags present: {', '.join(present) or 'none read'}; absent: {', '.join(absent)}",
          f"versions: {', '.join(versions)}; python {sys.version.split()[0]}"]
