"""Generative families, chosen by the family its model registers with."""

import ml_collections

from gen import models
from gen.data import SourceInfo
from gen.families.base import Family
from gen.registry import Registry

FAMILIES = Registry("family", "family")


def make(config: ml_collections.ConfigDict, info: SourceInfo) -> Family:
  """The family that trains `config.model.name`, set up for data `info`."""
  _import_all()
  family_cls = FAMILIES.get(models.get(config.model.name).family)
  return family_cls(config, info)


def _import_all():
  from gen.families import autoencoder, classifier, ddpm, flow, gan, vae  # noqa: F401
