"""Flax modules, chosen by `config.model.name`.

Each model registers under a name together with the family (gen.families)
that trains it. A model's config keys are its dataclass fields, plus the keys
its family reads (`Family.config_keys`).
"""

import dataclasses

from gen.registry import Registry

MODELS = Registry("model", "config.model.name")


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  module: type
  family: str


def register(name: str, family: str):
  def add(module):
    MODELS.register(name)(ModelEntry(module, family))
    return module
  return add


def get(name: str) -> ModelEntry:
  _import_all()
  return MODELS.get(name)


def _import_all():
  # Imported here, not at the top, so registering never imports in a cycle.
  from gen.models import autoencoder, classifier, flow, gan, residual_mlp, unet, vae  # noqa: F401
