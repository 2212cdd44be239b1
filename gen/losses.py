"""The course's table of losses and output activations, as per-example functions.

  loss                             fits output activation
  mean_squared_error               linear (any real output)
  mean_absolute_error              linear (any real output)
  mean_squared_logarithmic_error   linear (predictions below 0 are clipped to 0)
  binary_crossentropy              sigmoid
  categorical_crossentropy         sigmoid or softmax (normalized over the last axis)
  kullback_leibler                 sigmoid or softmax (normalized over the last axis)

Models return logits (pre-activation outputs). When the activation is the one
a cross-entropy is defined through (sigmoid for binary, softmax for
categorical and KL), the loss is computed from the logits, which stays finite
for logits of any size; otherwise it is computed on the activated outputs,
clipped to [EPSILON, 1 - EPSILON] as Keras, the course's framework, does.

Every loss returns one value per example: the mean over all non-batch axes,
except the categorical ones, which sum over the last axis (the distribution)
and then average over the others.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

EPSILON = 1e-7

ACTIVATIONS: dict[str, Callable] = {
    "linear": lambda z: z,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "softmax": lambda z: jax.nn.softmax(z, axis=-1),
    "tanh": jnp.tanh,
}

# Which output activations each loss fits; the first is the one to suggest.
_FITTING = {
    "mean_squared_error": ("linear", "sigmoid", "relu", "tanh", "softmax"),
    "mean_absolute_error": ("linear", "sigmoid", "relu", "tanh", "softmax"),
    "mean_squared_logarithmic_error": ("linear", "relu", "sigmoid", "softmax"),
    "binary_crossentropy": ("sigmoid",),
    "categorical_crossentropy": ("softmax", "sigmoid"),
    "kullback_leibler": ("softmax", "sigmoid"),
}
_NEEDS = {
    "mean_squared_logarithmic_error": "it takes log(1 + prediction), and predictions "
                                      "below 0 are clipped away",
    "binary_crossentropy": "it compares probabilities in [0, 1]",
    "categorical_crossentropy": "it compares probability distributions",
    "kullback_leibler": "it compares probability distributions",
}


def _mean_over_examples(values):
  return jnp.mean(values, axis=tuple(range(1, values.ndim)))


def mean_squared_error(pred, target):
  return _mean_over_examples((pred - target) ** 2)


def mean_absolute_error(pred, target):
  return _mean_over_examples(jnp.abs(pred - target))


def mean_squared_logarithmic_error(pred, target):
  # log(1 + y) is undefined below -1; Keras clips both sides at 0 (EPSILON).
  log_pred = jnp.log1p(jnp.maximum(pred, EPSILON))
  log_target = jnp.log1p(jnp.maximum(target, EPSILON))
  return _mean_over_examples((log_pred - log_target) ** 2)


def binary_crossentropy(prob, target):
  prob = jnp.clip(prob, EPSILON, 1.0 - EPSILON)
  return _mean_over_examples(-(target * jnp.log(prob) + (1.0 - target) * jnp.log1p(-prob)))


def binary_crossentropy_from_logits(logits, target):
  # -[t log s(z) + (1-t) log(1-s(z))] = max(z, 0) - z t + log(1 + exp(-|z|)).
  values = jnp.maximum(logits, 0.0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  return _mean_over_examples(values)


def _normalize(prob):
  prob = prob / jnp.sum(prob, axis=-1, keepdims=True)
  return jnp.clip(prob, EPSILON, 1.0 - EPSILON)


def categorical_crossentropy(prob, target):
  return _mean_over_examples(-jnp.sum(target * jnp.log(_normalize(prob)), axis=-1))


def categorical_crossentropy_from_logits(logits, target):
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  return _mean_over_examples(-jnp.sum(target * log_prob, axis=-1))


def kullback_leibler(prob, target):
  target = jnp.clip(target, EPSILON, 1.0)
  prob = jnp.clip(prob, EPSILON, 1.0)
  return _mean_over_examples(jnp.sum(target * jnp.log(target / prob), axis=-1))


def kullback_leibler_from_logits(logits, target):
  # 0 log 0 = 0 exactly (xlogy), so one-hot targets give the cross-entropy.
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  values = jax.scipy.special.xlogy(target, target) - target * log_prob
  return _mean_over_examples(jnp.sum(values, axis=-1))


LOSSES: dict[str, Callable] = {
    "mean_squared_error": mean_squared_error,
    "mean_absolute_error": mean_absolute_error,
    "mean_squared_logarithmic_error": mean_squared_logarithmic_error,
    "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "kullback_leibler": kullback_leibler,
}

# (loss, activation) pairs computed from logits, for stability.
_FROM_LOGITS = {
    ("binary_crossentropy", "sigmoid"): binary_crossentropy_from_logits,
    ("categorical_crossentropy", "softmax"): categorical_crossentropy_from_logits,
    ("kullback_leibler", "softmax"): kullback_leibler_from_logits,
}


def apply_activation(activation: str, logits):
  return ACTIVATIONS[activation](logits)


def reconstruction_loss(loss: str, activation: str, logits, target):
  """Per-example loss [batch] of the activated `logits` against `target`."""
  from_logits = _FROM_LOGITS.get((loss, activation))
  if from_logits is not None:
    return from_logits(logits, target)
  return LOSSES[loss](apply_activation(activation, logits), target)


def check_pairing(loss: str, activation: str) -> str | None:
  """A warning when the table says `activation` does not fit `loss`, else None."""
  fitting = _FITTING[loss]
  if activation in fitting:
    return None
  return (f"config.model.loss={loss!r} with config.model.output_activation={activation!r} "
          f"contradicts the loss table: {_NEEDS[loss]}; "
          f"use output_activation={' or '.join(repr(a) for a in fitting)}")

