"""The compiled programs of a run: its initial state, train steps and evaluation.

Each builder takes a family (gen.families.base.Family) and the device mesh
and returns a jitted function; gen.loop strings them together.
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from gen import platform
from gen.errors import EvaluationStopped
from gen.train import sharding
from gen.train.state import TrainState


class NonFiniteLossError(FloatingPointError):
  pass


def make_train_fn(family, tx, mesh, unroll: int = 10):
  """Compiled `k` train steps: (state, batches [k, b, ...]) -> (state, metrics [k]).

  Up to `unroll` steps are laid out one after another in the program; more
  run in a while loop (lax.scan) whose body holds `unroll` steps. XLA:CPU
  runs convolutions inside a while loop about 2.5x slower
  (experiments/benchmarks/benchmark.py), but compile time and memory grow with the
  steps laid out. A single step never needs the loop.
  """

  def one_step(state, batch):
    # The key of step s depends only on (seed, s): resume draws the same noise.
    rng = jax.random.fold_in(state.rng, state.step)
    return family.train_step(state, batch, rng, tx)

  def run_steps(state: TrainState, batches: dict):
    count = jax.tree_util.tree_leaves(batches)[0].shape[0]
    if count == 1:
      state, metrics = one_step(state, jax.tree_util.tree_map(lambda b: b[0], batches))
      return state, jax.tree_util.tree_map(lambda m: m[None], metrics)
    return jax.lax.scan(one_step, state, batches, unroll=True if count <= unroll else unroll)

  replicated = sharding.replicated(mesh)
  return jax.jit(run_steps, donate_argnums=0, out_shardings=(replicated, replicated),
                 compiler_options=_compiler_options(family))


def _compiler_options(family) -> dict | None:
  """XLA options measured for this family's model (gen/platform.py); a family
  built without a config (a test's stub) gets none."""
  config = getattr(family, "config", None)
  return platform.compiler_options(config.model.name) if config is not None else None


def init_state(family, tx, config: ml_collections.ConfigDict, mesh,
               init_batch: dict | None = None) -> TrainState:
  """The step-0 train state of `config.seed`, replicated over `mesh`.

  Built by one compiled call: run op by op, a model's initializers each
  compile on their own (seconds for a U-Net), and the values are the same.
  init_batch: a raw train batch for a family that initializes from data
  (`Family.data_dependent_init`), the same on every process.
  """
  def make_state(seed_rng):
    init_rng, state_rng = jax.random.split(seed_rng)
    if family.data_dependent_init and init_batch is not None:
      params = family.init_params(init_rng, init_batch)
    else:
      params = family.init_params(init_rng)
    return TrainState(
        step=jnp.array(0, jnp.int32), params=params,
        opt_state=family.init_opt_state(tx, params), rng=state_rng,
        skipped_updates=jnp.array(0, jnp.int32),
        # A copy: the step donates its state, and one buffer cannot be donated twice.
        ema_params=(jax.tree_util.tree_map(jnp.copy, params) if config.train.ema_decay > 0
                    else None))
  return jax.jit(make_state, out_shardings=sharding.replicated(mesh))(
      jax.random.PRNGKey(config.seed))


def make_eval_fn(family, mesh, final: bool = False):
  """Compiled (params, batch) -> sums over real rows of each metric, and counts.

  final=True is the end-of-run test evaluation (see Family.evaluate).
  """

  def eval_batch(params, batch):
    per_example = family.evaluate(params, batch, jax.random.PRNGKey(0), final=final)
    real = batch["mask"] > 0
    sums = {"count": jnp.sum(real)}
    for key, values in per_example.items():
      # Every real row counts, finite or not: a mean over finite values only
      # would improve exactly when the model fails (an inf NLL where the true
      # density is zero). Padding rows are left out with where, not by
      # multiplying (nan * 0 is nan).
      sums[key] = jnp.sum(jnp.where(real, values.astype(jnp.float32), 0.0))
      sums[f"nonfinite/{key}"] = jnp.sum(real & ~jnp.isfinite(values))
    return sums

  return jax.jit(eval_batch, out_shardings=sharding.replicated(mesh),
                 compiler_options=_compiler_options(family))


# An evaluation logs its progress at most this often (and not at all when
# it ends sooner).
PROGRESS_SECONDS = 10.0


def evaluate_split(eval_fn, params, dataset, split: str, batch_size: int, mesh,
                   stop: Callable[[], bool] | None = None) -> dict:
  """Mean of each per-example metric over every example of `split`.

  A non-finite value makes its mean non-finite (inf, or nan for inf - inf
  or a nan): the honest figure for a model that fails on some examples.
  `nonfinite/<metric>` says how many examples did, when any did. Progress is
  logged every PROGRESS_SECONDS; when `stop()` turns true (a signal), the
  evaluation ends at the next batch with EvaluationStopped.
  """
  totals: dict[str, float] = {}
  part = sharding.process_rows(mesh, batch_size)
  count = getattr(dataset, "num_examples", None)
  total = -(-count(split) // batch_size) if count else "?"
  start = last_log = time.time()
  for index, batch in enumerate(dataset.eval_batches(split, batch_size, part)):
    if stop is not None and stop():
      raise EvaluationStopped(f"{split} evaluation stopped after {index} of {total} batches")
    sums = sharding.to_host(eval_fn(params, sharding.put_batch(batch, mesh)))
    for key, value in sums.items():
      totals[key] = totals.get(key, 0.0) + float(value)
    if time.time() - last_log > PROGRESS_SECONDS:
      last_log = time.time()
      logging.info("evaluating %s: %d/%d batches, %.0f s", split, index + 1, total,
                   last_log - start)
  count = totals.pop("count")
  metrics = {}
  for key, value in totals.items():
    if key.startswith("nonfinite/"):
      if value:
        metrics[key] = value
        logging.warning("%s: %d of %d examples gave a non-finite %s; its mean is %s",
                        split, value, count, key.split("/", 1)[1],
                        totals[key.split("/", 1)[1]] / count)
    else:
      metrics[key] = value / count
  return metrics
