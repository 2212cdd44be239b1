"""Generative families, chosen by the family its model registers with."""

import ml_collections

from gen import models
from gen.data import SourceInfo
from gen.families.base import Family
from gen.registry import Registry

FAMILIES = Registry("family", "family")


def make(config: ml_collections.ConfigDict, info: SourceInfo) -> Family:
  """The family that trains `config.model.name`, set up for data `info`; with
  config.latent.first_stage set, that family on a first stage's codes
  (gen.families.latent)."""
  _import_all()
  if config.get("latent") and config.latent.get("first_stage"):
    return FAMILIES.get("latent")(config, info)
  family_cls = FAMILIES.get(models.get(config.model.name).family)
  return family_cls(config, info)


def _import_all():
  from gen.families import (autoencoder, classifier, ddpm, flow, gan, latent,  # noqa: F401
                            vae)
