"""Settings whose best value depends on the accelerator: "auto" resolves here.

A choice measured on XLA:CPU (where every figure of this project so far was
taken) must not be forced on a GPU or TPU. Each setting below may be "auto";
`resolve` replaces it by the value for `jax.default_backend()` and returns,
for each, the measurement that chose it, which the run logs and records in
results.json. Where nothing was measured on a platform, the value is the
native form there, and the reason says so.
"""

from __future__ import annotations

import jax
import ml_collections

AUTO = "auto"

# (value, why) by backend; "other" is every backend without its own entry.
_CONV_TRANSPOSE = {
    "cpu": ("phases",
            "XLA:CPU differentiates flax's input-dilated transposed convolution 10-20x slower "
            "than a plain one; the phase form trained the conv autoencoder at 1,544 against "
            "374 examples/s (experiments/benchmark.py, jax_conv_scan10 vs jax_conv_dilated; "
            "README, Benchmark)"),
    "other": ("dilated",
              "flax's own lax.conv_transpose, the native form on GPU and TPU; the CPU-tuned "
              "phase form has not been measured on them"),
}
_UNROLL = {
    "cpu": (10,
            "XLA:CPU runs convolutions inside a while loop ~3x slower: the conv autoencoder "
            "trained at 506 examples/s with 10 steps per call in a loop, 1,544 unrolled "
            "(experiments/benchmark.py, jax_conv_scan10_loop vs jax_conv_scan10)"),
    "other": (1, "a rolled loop (compile time does not grow with steps_per_call), the native "
                 "form on GPU and TPU; not measured there"),
}
# Models whose CPU step is short enough for dispatch to matter, and what was measured.
_STEPS_PER_CALL_CPU = {
    "conv_autoencoder": (10, "10 steps per compiled call trained the conv autoencoder at "
                             "1,565 against 1,143 examples/s for one (experiments/benchmark.py, "
                             "3 interleaved rounds)"),
}
_STEPS_PER_CALL = {
    "cpu": (1, "one step per call: for this model a step is long enough that dispatch is a "
               "small share (the dense autoencoder, the smallest, gained within noise from 10: "
               "45,287 against 40,990 examples/s, ranges overlapping)"),
    "other": (1, "one step per call, the native form; several steps per call have not been "
                 "measured on GPU or TPU"),
}


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
