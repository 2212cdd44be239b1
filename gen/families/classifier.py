"""Classifiers of the dataset: not generative, but trained by the same loop.

They give sample-quality metrics a feature space (gen.evaluate.fidelity) and
label generated samples for the class histogram. Training them through the
generic loop gives them its checkpoints, resume and data parallelism.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from gen.families import FAMILIES
from gen.families.base import Family


@FAMILIES.register("classifier")
class Classifier(Family):

  def check_config(self) -> list[str]:
    if self.info.kind != "image" or not self.info.num_classes:
      raise ValueError(f"config.data.name={self.info.name!r}: a classifier needs labelled "
                       f"images")
    if self.model.num_classes != self.info.num_classes:
      raise ValueError(f"config.model.num_classes={self.model.num_classes} but "
                       f"{self.info.name} has {self.info.num_classes} classes")
    if self.config.data.binarize != "none" or self.config.data.dequantize:
      raise ValueError("a classifier for sample metrics sees 8-bit pixels: set "
                       "config.data.binarize='none' and config.data.dequantize=False")
    return []

  def init_params(self, rng):
    dummy = jnp.zeros((1, *self.info.shape), jnp.float32)
    return self.model.init({"params": rng}, dummy)["params"]

  def logits(self, params, x, rng=None):
    train = rng is not None
    return self.model.apply({"params": params}, x, train=train,
                            rngs={"dropout": rng} if train else {})

  def loss(self, params, batch, rng, step):
    data_rng, dropout_rng = jax.random.split(rng)
    x = self.prepare(batch, data_rng, train=True)
    logits = self.logits(params, x, dropout_rng)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return loss, {"accuracy": accuracy}

  def evaluate(self, params, batch, rng, final=False):
    logits = self.logits(params, self.prepare(batch, rng, train=False))
    return {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]),
            "accuracy": (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)}
