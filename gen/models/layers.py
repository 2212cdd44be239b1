"""Small pieces shared by several models."""

import flax.linen as nn
import jax

ACTIVATIONS = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "tanh": jax.numpy.tanh,
    "leaky_relu": nn.leaky_relu,
    "elu": nn.elu,
}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"config.model.activation={name!r} is not known; "
                     f"valid: {', '.join(sorted(ACTIVATIONS))}")
  return ACTIVATIONS[name]
