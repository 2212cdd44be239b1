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
  skipped_updates: [] int32, steps whose update was skipped because the loss
    or a gradient was not finite (config.train.skip_nonfinite); kept in the
    state so that a resumed run counts from where it stopped.
  ema_params: exponential moving average of params (`ema_update`), or None
    when disabled.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  skipped_updates: jax.Array
  ema_params: Any = None

  def eval_params(self):
    """The parameters to evaluate and sample with: EMA when there is one."""
    return self.params if self.ema_params is None else self.ema_params


def ema_update(ema, params, decay: float, count):
  """The debiased exponential moving average after its `count`-th update.

  A plain EMA that starts from the initial weights, e <- d e + (1 - d) p,
  still holds d^t of them after t updates (13.5% at t = 2000 for d = 0.999).
  This is the average with Adam's bias correction instead,

    e_t = sum_{i=1..t} (1 - d) d^(t-i) p_i / (1 - d^t),

  computed by its recursion e_t = (1 - w_t) e_{t-1} + w_t p_t with
  w_t = (1 - d) / (1 - d^t): w_1 = 1, so the initial weights carry no weight
  at all, and w_t falls to 1 - d as t grows.

  Args:
    ema, params: pytrees of the same structure.
    decay: d in [0, 1).
    count: [] int, t >= 1, the number of parameter values averaged including
      `params` (the step count after this update).
  """
  count = jnp.asarray(count, jnp.float32)
  # Both sides in float32, so that w_1 is exactly 1.
  decay = jnp.float32(decay)
  weight = (1.0 - decay) / (1.0 - jnp.power(decay, count))
  return jax.tree_util.tree_map(lambda e, p: (1.0 - weight) * e + weight * p, ema, params)


def all_finite(*trees) -> jax.Array:
  """[] bool: every floating leaf of every tree is finite."""
  leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(trees)
            if jnp.issubdtype(leaf.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
