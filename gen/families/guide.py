"""Autoguidance (Karras et al., 2024): a diffusion or flow-matching model
guided by a weaker model of the same data.

With `config.eval.guide_workdir` naming a run (or a bundle) of a smaller or
shorter-trained model, sampling uses

  output = guide + config.eval.guidance_scale * (model - guide)

on the raw network outputs (noise, v or velocity: the combination is linear,
so it is the same guidance for every objective). Where the two models err
alike (the guide more), the difference points away from those errors, so it
sharpens an unconditional model as classifier-free guidance sharpens a
conditional one, without the loss of variety that comes with conditioning
on a class. A conditional model's guide sees the same labels when it is
conditional too; an unconditional guide of a conditional model is
classifier-free guidance by a separate unconditional model.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from gen import models
from gen.errors import UserError
from gen.families.latent import is_latent

# What makes two diffusion models' raw outputs the same quantity at the same x_t.
_PATH_KEYS = ("objective", "timesteps", "noise_schedule", "beta_start", "beta_end")


@dataclasses.dataclass
class Guide:
  """The guiding model: its diffusion family (a latent run's second stage),
  evaluation parameters, where it came from and its step."""
  family: Any
  params: Any
  path: str
  step: int


def load_guide(config: ml_collections.ConfigDict, path: str) -> Guide:
  """The run or bundle in `path`, checked to fit the model of `config`."""
  from gen import bundle, restore  # both build families: imported when a guide is loaded
  key = f"config.eval.guide_workdir={path!r}"
  from_bundle = bundle.is_bundle(path)
  if from_bundle:
    loaded = bundle.load(path)
    guide_config, family, params, step = loaded.config, loaded.family, loaded.params, loaded.step
  elif os.path.exists(os.path.join(path, "config.json")):
    run = restore.load_run(path)
    guide_config, family, params, step = run.config, run.family, run.params, run.step
  else:
    raise UserError(f"{key}: neither a run's workdir nor a bundle")
  check_guide(guide_config, config, key, from_bundle)
  return Guide(getattr(family, "inner", family), params, path, step)


def check_guide(guide_config, config, key: str, from_bundle: bool = False) -> None:
  """One line naming the key when the guide's outputs cannot be mixed with the model's."""
  family = models.get(guide_config.model.name).family
  if family != "ddpm":
    raise UserError(f"{key} holds a {guide_config.model.name!r} run ({family} family); a "
                    f"guide is a diffusion or flow-matching model")
  if guide_config.data.name != config.data.name:
    raise UserError(f"{key} was trained on {guide_config.data.name!r}, but "
                    f"config.data.name={config.data.name!r}")
  defaults = {"objective": "eps"}
  for name in _PATH_KEYS:
    mine = config.model.get(name, defaults.get(name))
    theirs = guide_config.model.get(name, defaults.get(name))
    if mine != theirs:
      raise UserError(f"{key} has config.model.{name}={theirs!r}, this model {mine!r}: "
                      f"their outputs are not the same quantity")
  latent_model, latent_guide = is_latent(config), is_latent(guide_config)
  if latent_model != latent_guide:
    raise UserError(f"{key}: {'a' if latent_guide else 'no'} latent model guiding "
                    f"{'a' if latent_model else 'no'} latent model; both must model the same "
                    f"space")
  if latent_model and not from_bundle:
    mine = os.path.abspath(config.latent.get("first_stage_workdir") or "")
    theirs = os.path.abspath(guide_config.latent.get("first_stage_workdir") or "")
    if mine != theirs:
      raise UserError(f"{key} models the codes of the first stage in {theirs}, this model "
                      f"those in {mine} (config.latent.first_stage_workdir): not the same codes")
  classes = config.model.get("num_classes", 0)
  guide_classes = guide_config.model.get("num_classes", 0)
  if guide_classes and guide_classes != classes:
    raise UserError(f"{key} is conditioned on {guide_classes} classes, this model on "
                    f"{classes or 'none'} (config.model.num_classes)")
