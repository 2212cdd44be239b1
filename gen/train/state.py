"""The train state: everything a run needs to continue exactly where it stopped."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  """step: [] int32, the number of train steps taken (and batches consumed).
  params: the model's parameter pytree.
  opt_state: the optax state (one per optimizer; a dict of them for a GAN).
  rng: [2] uint32 base key; step s draws from fold_in(rng, s).
  ema_params: exponential moving average of params, or None when disabled.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  ema_params: Any = None

  def eval_params(self):
    """The parameters to evaluate and sample with: EMA when there is one."""
    return self.params if self.ema_params is None else self.ema_params


def all_finite(*trees) -> jax.Array:
  """[] bool: every floating leaf of every tree is finite."""
  leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(trees)
            if jnp.issubdtype(leaf.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
