"""Settings whose best value depends on the accelerator: "auto" resolves here.

A choice measured on XLA:CPU (where every figure of this project so far was
taken) must not be forced on a GPU or TPU. Each setting below may be "auto";
`resolve` replaces it by the value for `jax.default_backend()` and returns,
for each, the measurement that chose it, which the run logs and records in
results.json. Where nothing was measured on a platform, the value is the
native form there, and the reason says so.
"""

from __future__ import annotations

import importlib.util
import os

import jax
import ml_collections
from absl import logging

AUTO = "auto"

# XLA:CPU compiler flags for a CPU-only JAX, set before JAX starts its
# backends (gen/__init__.py calls use_cpu_xla_flags): flag -> why.
CPU_XLA_FLAGS = {
    "--xla_cpu_experimental_ynn_fusion_type=": (
        "no YNNPACK library fusions: XLA:CPU's own kernels trained faster, examples/s with "
        "against without (experiments/benchmarks/twin_benchmark.py --xla_variant=none, "
        "2 interleaved rounds, 2-core AMD EPYC): dense autoencoder 158,015 vs 75,160, "
        "RealNVP 183 vs 157, DDPM 277 vs 224, DCGAN 276 vs 264, conv autoencoder 2,395 vs 2,379"),
}
# Installed accelerator plugins: with one, the platform is not known before
# the backends start, and the CPU flags were measured on a CPU only.
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu", "jax_plugins")
_added_flags: dict[str, str] = {}

# With YNNPACK fusions off for the process (CPU_XLA_FLAGS), the models for
# whose train and evaluation steps some of them measured faster get them back,
# per compiled step: model name -> (fusion types, why). Measured with
# experiments/benchmarks/twin_benchmark.py --xla_variant=... (2 interleaved
# rounds, 2-core AMD EPYC).
_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_YNN_DOT, _YNN_CONV = ("LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
                       "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION")
_CPU_YNN_BY_MODEL = {
    "vae": (f"{_YNN_DOT},{_YNN_CONV}", "YNNPACK's dots and convolutions (XLA's default) "
            "trained the dense VAE at 17,750 examples/s against 16,481 without them"),
    "conv_vae": (f"{_YNN_DOT},{_YNN_CONV}", "YNNPACK's dots and convolutions (XLA's default) "
                 "trained the conv VAE at 2,136 examples/s against 1,960 without them"),
    "unet": (_YNN_DOT, "YNNPACK's dots alone trained the DDPM U-Net at 279 examples/s, none "
             "at 264, dots and convolutions at 233"),
    "realnvp": (_YNN_DOT, "YNNPACK's dots alone trained RealNVP at 192 examples/s, none at "
                "185, dots and convolutions at 156"),
}

# (value, why) by backend; "other" is every backend without its own entry.
_CONV_TRANSPOSE = {
    "cpu": ("phases",
            "XLA:CPU differentiates flax's input-dilated transposed convolution 10-20x slower "
            "than a plain one; the phase form trained the conv autoencoder at 1,544 against "
            "374 examples/s (experiments/benchmarks/benchmark.py, jax_conv_scan10 vs "
            "jax_conv_dilated; README, Benchmark)"),
    "other": ("dilated",
              "flax's own lax.conv_transpose, the native form on GPU and TPU; the CPU-tuned "
              "phase form has not been measured on them"),
}
_UNROLL = {
    "cpu": (10,
            "XLA:CPU runs convolutions inside a while loop ~3x slower: the conv autoencoder "
            "trained at 506 examples/s with 10 steps per call in a loop, 1,544 unrolled "
            "(experiments/benchmarks/benchmark.py, jax_conv_scan10_loop vs jax_conv_scan10)"),
    "other": (1, "a rolled loop (compile time does not grow with steps_per_call), the native "
                 "form on GPU and TPU; not measured there"),
}
# Models whose CPU step is short enough for dispatch to matter, and what was measured.
_STEPS_PER_CALL_CPU = {
    "conv_autoencoder": (10, "10 steps per compiled call trained the conv autoencoder at "
                             "1,565 against 1,143 examples/s for one "
                             "(experiments/benchmarks/benchmark.py, 3 interleaved rounds)"),
}
_STEPS_PER_CALL = {
    "cpu": (1, "one step per call: for this model a step is long enough that dispatch is a "
               "small share (the dense autoencoder, the smallest, gained within noise from 10: "
               "45,287 against 40,990 examples/s, ranges overlapping)"),
    "other": (1, "one step per call, the native form; several steps per call have not been "
                 "measured on GPU or TPU"),
}


def use_cpu_xla_flags(environ=os.environ) -> dict[str, str]:
  """Adds CPU_XLA_FLAGS to environ["XLA_FLAGS"] for a CPU-only JAX; returns {flag: why}
  of those added.

  A flag the user already gives (its name, before "=") is left as given;
  one given exactly as gen sets it (inherited from a parent that imported
  gen) counts as gen's. GEN_CPU_XLA_FLAGS=0 in the environment adds none.
  Nothing is added where an accelerator plugin is installed (the flags were
  measured on a CPU) or JAX_PLATFORMS names another platform, nor once JAX's
  backends have started, when XLA_FLAGS is no longer read (logged).
  """
  if environ.get("GEN_CPU_XLA_FLAGS", "1") == "0":  # opted out (an A/B of the flags)
    return {}
  platforms = environ.get("JAX_PLATFORMS", "")
  if (platforms and platforms.split(",")[0] != "cpu") or (
      not platforms and any(importlib.util.find_spec(p) for p in _ACCELERATOR_PLUGINS)):
    return {}
  given = environ.get("XLA_FLAGS", "").split()
  # Our own flag, as we set it, inherited from a parent process that imported
  # gen (a launcher, a test runner): still ours, so the per-model options apply.
  inherited = {flag: why for flag, why in CPU_XLA_FLAGS.items() if flag in given}
  _added_flags.update(inherited)
  named = {flag.split("=", 1)[0] for flag in given}
  wanted = {flag: why for flag, why in CPU_XLA_FLAGS.items()
            if flag.split("=", 1)[0] not in named}
  if not wanted:
    return {}
  from jax._src import xla_bridge
  if xla_bridge.backends_are_initialized():
    logging.info("JAX's backends started before gen was imported: XLA_FLAGS %s not set "
                 "(import gen first for the CPU defaults)", " ".join(wanted))
    return {}
  environ["XLA_FLAGS"] = " ".join([*given, *wanted])
  _added_flags.update(wanted)
  return wanted


def compiler_options(model_name: str) -> dict[str, str] | None:
  """XLA options for the train and evaluation steps of `model_name`: on a CPU
  where use_cpu_xla_flags turned YNNPACK fusions off, those measured faster
  for this model (_CPU_YNN_BY_MODEL); None otherwise (the process's flags)."""
  if not _added_flags or model_name not in _CPU_YNN_BY_MODEL or jax.default_backend() != "cpu":
    return None
  return {_YNN_OPTION: _CPU_YNN_BY_MODEL[model_name][0]}


def xla_flag_choices(model_name: str | None = None) -> dict[str, dict]:
  """{"XLA_FLAGS": {"value", "why"}} for the flags use_cpu_xla_flags added, and
  the train and evaluation steps' own options for `model_name`, as `resolve`
  reports config settings; {} when it added none."""
  if not _added_flags:
    return {}
  choices = {"XLA_FLAGS": {"value": " ".join(_added_flags),
                           "why": "cpu: " + "; ".join(_added_flags.values())}}
  options = compiler_options(model_name) if model_name else None
  if options:
    choices["step_compiler_options"] = {"value": options,
                                        "why": "cpu: " + _CPU_YNN_BY_MODEL[model_name][1]}
  return choices


def _pick(table: dict, backend: str):
  return table.get(backend, table["other"])


def _fit_steps_per_call(config, wanted: int) -> int:
  """The largest k <= wanted that divides every step count k must divide."""
  counts = (config.train.num_steps, config.train.eval_every, config.train.log_every,
            config.checkpoint.every_steps)
  for k in range(wanted, 0, -1):
    if all(isinstance(n, int) and n % k == 0 for n in counts):
      return k
  return 1


def resolve(config: ml_collections.ConfigDict,
            backend: str | None = None) -> tuple[ml_collections.ConfigDict, dict[str, dict]]:
  """A copy of `config` with every "auto" replaced for `backend` (default:
  jax.default_backend()), and {setting: {"value", "why"}} for each replaced."""
  backend = backend or jax.default_backend()
  # Rebuilt from a plain dict: a ConfigDict keeps each field's first type, and
  # these fields start as the string "auto".
  values = config.to_dict()
  _integers_from_flags(values)
  chosen: dict[str, dict] = {}
  config = ml_collections.ConfigDict(values)

  def set_value(section, key, value, why):
    values[section][key] = value
    chosen[f"{section}.{key}"] = {"value": value, "why": f"{backend}: {why}"}

  if config.model.get("conv_transpose_impl") == AUTO:
    set_value("model", "conv_transpose_impl", *_pick(_CONV_TRANSPOSE, backend))
  if config.train.get("unroll_steps") == AUTO:
    set_value("train", "unroll_steps", *_pick(_UNROLL, backend))
  if config.train.get("steps_per_call") == AUTO:
    value, why = _pick(_STEPS_PER_CALL, backend)
    if backend == "cpu" and config.model.name in _STEPS_PER_CALL_CPU:
      value, why = _STEPS_PER_CALL_CPU[config.model.name]
    fitted = _fit_steps_per_call(config, value)
    if fitted != value:
      why += (f"; {fitted}, the largest count up to {value} that divides num_steps, "
              f"eval_every, log_every and checkpoint.every_steps")
    set_value("train", "steps_per_call", fitted, why)
  return ml_collections.ConfigDict(values), chosen


def _integers_from_flags(values: dict) -> None:
  """--config.train.steps_per_call=10 arrives as the string "10" (the field's
  default is the string "auto"): such strings become integers."""
  for key in ("steps_per_call", "unroll_steps"):
    value = values["train"].get(key)
    if isinstance(value, str) and value.strip().isdigit():
      values["train"][key] = int(value)
