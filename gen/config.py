"""Checks a run's config before anything is built, naming the key at fault."""

from __future__ import annotations

import ml_collections

from gen.data.preprocess import BINARIZE, SCALES
from gen.errors import ConfigError
from gen.train.optim import OPTIMIZERS, SCHEDULES


def _default():
  from configs import default  # the schema: every known key outside config.model
  return default.get_config()


def _unknown_keys(config, schema, prefix: str) -> list[str]:
  unknown = []
  for key, value in config.items():
    name = f"{prefix}.{key}"
    if name == "config.model":
      continue  # checked against the chosen model's fields (gen.families.base)
    if key not in schema:
      unknown.append(name)
    elif isinstance(value, ml_collections.ConfigDict) and isinstance(
        schema[key], ml_collections.ConfigDict):
      unknown.extend(_unknown_keys(value, schema[key], name))
  return unknown


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (a ValueError) naming every unknown key or impossible value."""
  schema = _default()
  problems = [f"{name} is not a known setting" for name in _unknown_keys(config, schema, "config")]

  def need(condition: bool, key: str, message: str):
    if not condition:
      problems.append(f"config.{key}={_get(config, key)!r}: {message}")

  train, data, opt, ckpt = config.train, config.data, config.optimizer, config.checkpoint
  for key in ("train.batch_size", "train.num_steps", "train.eval_every", "train.log_every",
              "eval.batch_size", "checkpoint.every_steps", "checkpoint.keep"):
    need(isinstance(_get(config, key), int) and _get(config, key) > 0, key,
         "must be a positive integer")
  for key in ("train.steps_per_call", "train.unroll_steps"):
    value = _get(config, key)
    need(value == "auto" or (isinstance(value, int) and value > 0), key,
         "must be a positive integer or 'auto'")
  need(isinstance(config.eval.num_images, int) and config.eval.num_images >= 0,
       "eval.num_images", "must be >= 0")
  need(isinstance(config.eval.iw_samples, int) and config.eval.iw_samples >= 0,
       "eval.iw_samples", "must be an integer >= 0 (0 skips the importance-weighted bound)")
  need(isinstance(config.eval.iw_chunk, int) and config.eval.iw_chunk > 0,
       "eval.iw_chunk", "must be a positive integer")
  if config.eval.iw_samples and config.eval.iw_chunk > 0:
    need(config.eval.iw_samples % config.eval.iw_chunk == 0, "eval.iw_samples",
         f"must be a multiple of config.eval.iw_chunk={config.eval.iw_chunk}")
  need(len(config.eval.temperatures) > 0
       and all(isinstance(t, (int, float)) and t > 0 for t in config.eval.temperatures),
       "eval.temperatures", "must be a non-empty list of numbers > 0")
  need(isinstance(train.skip_nonfinite, bool), "train.skip_nonfinite", "must be True or False")
  need(train.compute_dtype in ("float32", "bfloat16"), "train.compute_dtype",
       "valid: float32, bfloat16")
  need(0.0 <= train.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1); 0 disables EMA")
  if not problems and isinstance(train.steps_per_call, int):
    for key in ("train.num_steps", "train.eval_every", "train.log_every",
                "checkpoint.every_steps"):
      need(_get(config, key) % train.steps_per_call == 0, key,
           f"must be a multiple of config.train.steps_per_call={train.steps_per_call}")
  need(opt.name in OPTIMIZERS, "optimizer.name", f"valid: {', '.join(OPTIMIZERS)}")
  need(opt.schedule in SCHEDULES, "optimizer.schedule", f"valid: {', '.join(SCHEDULES)}")
  need(opt.learning_rate > 0, "optimizer.learning_rate", "must be > 0")
  need(opt.warmup_steps >= 0, "optimizer.warmup_steps", "must be >= 0")
  need(opt.grad_clip_norm >= 0, "optimizer.grad_clip_norm", "must be >= 0 (0 disables)")
  need(0.0 <= opt.end_factor <= 1.0, "optimizer.end_factor", "must be in [0, 1]")
  need(0.0 <= opt.momentum < 1.0, "optimizer.momentum", "must be in [0, 1)")
  need(0.0 < opt.rho < 1.0, "optimizer.rho", "must be in (0, 1)")
  need(opt.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0")
  need(data.scale in SCALES, "data.scale", f"valid: {', '.join(SCALES)}")
  need(data.binarize in BINARIZE, "data.binarize", f"valid: {', '.join(BINARIZE)}")
  need(not (data.binarize != "none" and data.dequantize), "data.dequantize",
       "dequantization adds noise to 8-bit pixels; it cannot be combined with "
       "config.data.binarize")
  need(data.validation_size > 0, "data.validation_size", "must be > 0")
  need(data.prefetch >= 0, "data.prefetch", "must be >= 0 (0 disables)")
  need(ckpt.best_mode in ("min", "max"), "checkpoint.best_mode", "valid: min, max")
  need(isinstance(config.model.get("name"), str), "model.name", "must name a model")
  if problems:
    raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def _get(config, dotted: str):
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value
