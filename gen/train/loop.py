"""The one train/evaluate loop that every family runs through.

    train_and_evaluate(config, workdir)

trains `config.model.name` on `config.data.name`, evaluates on validation
every `config.train.eval_every` steps and on test at the end, checkpoints
with orbax, and resumes by itself from the newest checkpoint in `workdir`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from gen import config as config_lib
from gen import data as data_lib
from gen import families
from gen.evaluate import fidelity, plots
from gen.train import checkpoint as checkpoint_lib
from gen.train import metrics_io, sharding
from gen.train.state import TrainState


class NonFiniteLossError(FloatingPointError):
  pass


def make_train_fn(family, tx, mesh, unroll: int = 10):
  """Compiled `k` train steps: (state, batches [k, b, ...]) -> (state, metrics [k]).

  Up to `unroll` steps are laid out one after another in the program; more
  run in a while loop (lax.scan) whose body holds `unroll` steps. XLA:CPU
  runs convolutions inside a while loop about 2.5x slower
  (experiments/benchmark.py), but compile time and memory grow with the
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
  return jax.jit(run_steps, donate_argnums=0, out_shardings=(replicated, replicated))


def init_state(family, tx, config: ml_collections.ConfigDict, mesh) -> TrainState:
  """The step-0 train state of `config.seed`, replicated over `mesh`.

  Built by one compiled call: run op by op, a model's initializers each
  compile on their own (seconds for a U-Net), and the values are the same.
  """
  def make_state(seed_rng):
    init_rng, state_rng = jax.random.split(seed_rng)
    params = family.init_params(init_rng)
    return TrainState(
        step=jnp.array(0, jnp.int32), params=params,
        opt_state=family.init_opt_state(tx, params), rng=state_rng,
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
    mask = batch["mask"]
    sums = {"count": jnp.sum(mask)}
    for key, values in per_example.items():
      finite = jnp.isfinite(values)
      # Non-finite values are excluded from the mean but counted and reported.
      sums[key] = jnp.sum(jnp.where(finite, values, 0.0) * mask)
      sums[f"nonfinite/{key}"] = jnp.sum((~finite) * mask)
    return sums

  return jax.jit(eval_batch, out_shardings=sharding.replicated(mesh))


def evaluate_split(eval_fn, params, dataset, split: str, batch_size: int, mesh) -> dict:
  """Mean of each per-example metric over every example of `split`."""
  totals: dict[str, float] = {}
  for batch in dataset.eval_batches(split, batch_size):
    sums = jax.device_get(eval_fn(params, sharding.put_batch(batch, mesh)))
    for key, value in sums.items():
      totals[key] = totals.get(key, 0.0) + float(value)
  count = totals.pop("count")
  metrics = {}
  for key, value in totals.items():
    if key.startswith("nonfinite/"):
      if value:
        metrics[key] = value
        logging.warning("%s: %d of %d examples gave a non-finite %s; excluded from its "
                        "mean", split, value, count, key.split("/", 1)[1])
    else:
      finite = count - totals.get(f"nonfinite/{key}", 0.0)
      metrics[key] = value / finite if finite else float("nan")
  return metrics


class _Preemption:
  """Turns SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    logging.warning("SIGTERM: saving a checkpoint, then stopping")
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _write_config(config, workdir: str) -> None:
  path = os.path.join(workdir, "config.json")
  new = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as file:
      old = json.load(file)
    changed = sorted(_diff(old, new))
    if changed:
      logging.warning("workdir %s was started with a different config; changed: %s",
                      workdir, ", ".join(changed))
  with open(path, "w") as file:
    json.dump(new, file, indent=2, sort_keys=True)
  with open(os.path.join(workdir, "config.txt"), "w") as file:
    file.write(str(config))


def _diff(old, new, prefix="config"):
  for key in set(old) | set(new):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      yield from _diff(a, b, f"{prefix}.{key}")
    elif a != b:
      yield f"{prefix}.{key}"


def _save_pictures(visualize, params, dataset, config, workdir, step, mesh) -> None:
  if not config.eval.num_images:
    return
  count = config.eval.num_images
  # Enough rows for the grid, rounded to the device count so the batch splits.
  size = -(-count // mesh.size) * mesh.size
  batch = next(dataset.eval_batches("val", size))
  pictures = visualize(params, sharding.put_batch(batch, mesh), jax.random.PRNGKey(step))
  os.makedirs(os.path.join(workdir, "images"), exist_ok=True)
  for name, value in jax.device_get(pictures).items():
    value = np.asarray(value)
    for path in (os.path.join(workdir, f"{name}.png"),
                 os.path.join(workdir, "images", f"{name}_{step:07d}.png")):
      if value.ndim == 4:
        plots.save_image_grid(path, value, columns=8)
      else:
        plots.save_scatter(path, value, title=f"{name}, step {step}")


def _format_seconds(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices: list | None = None) -> dict[str, Any]:
  """Trains, evaluates and checkpoints; returns the final results (also in results.json).

  Args:
    config: a config derived from configs/default.py.
    workdir: where checkpoints, metrics, pictures and results go; a workdir
      that holds checkpoints is resumed from the newest one.
    devices: devices of the data-parallel mesh (default: all).
  """
  config_lib.validate(config)
  os.makedirs(workdir, exist_ok=True)
  _write_config(config, workdir)
  mesh = sharding.make_mesh(devices)
  sharding.check_divisible(config.train.batch_size, mesh, "config.train.batch_size")
  sharding.check_divisible(config.eval.batch_size, mesh, "config.eval.batch_size")

  dataset = data_lib.load(config)
  family = families.make(config, dataset.info)
  for warning in family.check_config():
    logging.warning("%s", warning)
  logging.info("data %s: %d train / %d val / %d test examples of shape %s; %d device(s)",
               dataset.info.name, dataset.num_examples("train"), dataset.num_examples("val"),
               dataset.num_examples("test"), dataset.info.shape, mesh.size)

  tx = family.make_optimizer()
  state = init_state(family, tx, config, mesh)
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
  logging.info("model %s (%s family): %d parameters", config.model.name,
               type(family).__name__, num_params)

  checkpoints = checkpoint_lib.Checkpointer(workdir, config.checkpoint)
  if checkpoints.latest_step() is not None:
    state = checkpoints.restore(state)
    logging.info("resumed from %s", checkpoints.describe_latest())
  start_step = int(state.step)
  writer = metrics_io.MetricWriter(workdir, start_step)

  train_fn = make_train_fn(family, tx, mesh, config.train.unroll_steps)
  eval_fn = make_eval_fn(family, mesh)
  # One compiled program each, however many evaluations there are.
  final_eval_fn = make_eval_fn(family, mesh, final=True) if family.final_eval_differs else eval_fn
  visualize = jax.jit(family.visualize)
  num_steps, per_call = config.train.num_steps, config.train.steps_per_call

  def batches():
    for step in range(start_step, num_steps, per_call):
      host = dataset.train.stacked(step, per_call)
      yield step, sharding.put_batch(host, mesh, batch_dim=1)

  window: dict[str, list[float]] = {}
  skipped = 0
  val_metrics: dict[str, float] = {}
  window_start, window_step = time.time(), start_step
  stopped_early = False
  with _Preemption() as preemption, contextlib.closing(writer):
    for step, batch in data_lib.pipeline.prefetch(batches(), config.data.prefetch):
      compile_start = time.time()
      state, metrics = train_fn(state, batch)
      metrics = jax.device_get(metrics)
      if step == start_step:
        logging.info("first call (compile + %d step(s)): %.1f s", per_call,
                     time.time() - compile_start)
        window_start = time.time()
        window_step = step + per_call
      new_step = step + per_call
      finite = np.asarray(metrics.pop("finite"))
      if not finite.all():
        bad_step = step + int(np.argmin(finite)) + 1
        if not config.train.skip_nonfinite:
          checkpoints.wait()
          raise NonFiniteLossError(
              f"non-finite loss or gradient at step {bad_step}; the update was not "
              f"applied and the run stopped. Last good checkpoint: "
              f"{checkpoints.describe_latest()}. Set config.train.skip_nonfinite=True "
              f"to skip such updates instead.")
        skipped += int((~finite).sum())
        logging.warning("step %d: non-finite loss or gradient; update skipped (%d so far)",
                        bad_step, skipped)
      for key, values in metrics.items():
        values = np.asarray(values, np.float64)[finite]
        window.setdefault(key, []).extend(values.tolist())

      if new_step % config.train.log_every == 0 or new_step == num_steps:
        means = {key: float(np.mean(v)) for key, v in window.items() if v}
        if skipped:
          means["skipped_updates"] = skipped
        writer.write(new_step, "train", means)
        elapsed = time.time() - window_start
        rate = (new_step - window_step) / elapsed if elapsed > 0 and new_step > window_step else 0.0
        left = (num_steps - new_step) / rate if rate else 0.0
        logging.info("step %d/%d | %.1f steps/s | %.0f examples/s | left %s | %s",
                     new_step, num_steps, rate, rate * config.train.batch_size,
                     _format_seconds(left),
                     " ".join(f"{k}={v:.5g}" for k, v in means.items()))
        window = {}
        window_start, window_step = time.time(), new_step

      evaluated_now = False
      if new_step % config.train.eval_every == 0 or new_step == num_steps:
        val_metrics = evaluate_split(eval_fn, state.eval_params(), dataset, "val",
                                     config.eval.batch_size, mesh)
        writer.write(new_step, "val", val_metrics)
        logging.info("step %d val: %s", new_step,
                     " ".join(f"{k}={v:.5g}" for k, v in val_metrics.items()))
        _save_pictures(visualize, state.eval_params(), dataset, config, workdir, new_step,
                       mesh)
        plots.save_loss_curves(workdir)
        evaluated_now = True

      if (new_step % config.checkpoint.every_steps == 0 or new_step == num_steps
          or preemption.requested):
        ranked = {f"val/{k}": v for k, v in val_metrics.items()} if evaluated_now else None
        checkpoints.save(new_step, state, ranked)
      if preemption.requested:
        stopped_early = True
        break

    checkpoints.wait()
    if stopped_early:
      checkpoints.close()
      logging.warning("stopped at step %d on SIGTERM; checkpoint %s", int(state.step),
                      checkpoints.describe_latest())
      return {"step": int(state.step), "preempted": True}

    final_step = int(state.step)
    if not val_metrics:  # a finished run started again: evaluate what it has
      val_metrics = evaluate_split(eval_fn, state.eval_params(), dataset, "val",
                                   config.eval.batch_size, mesh)
    test_metrics = evaluate_split(final_eval_fn, state.eval_params(),
                                  dataset, "test", config.eval.batch_size, mesh)
    writer.write(final_step, "test", test_metrics)
    logging.info("test: %s", " ".join(f"{k}={v:.5g}" for k, v in test_metrics.items()))
    report = family.report(state.eval_params(), dataset, mesh, workdir, final_step)
    quality = fidelity.family_sample_quality(family, state.eval_params(), dataset, config)
    if quality:
      report["sample_quality"] = quality
    if report:
      logging.info("report: %s", json.dumps(report))
  plots.save_loss_curves(workdir)
  results = {"step": final_step, "val": val_metrics, "test": test_metrics,
             "skipped_updates": skipped, "best_checkpoint_step": checkpoints.best_step(),
             "num_params": int(num_params), "devices": mesh.size, **report}
  checkpoints.close()
  with open(os.path.join(workdir, "results.json"), "w") as file:
    json.dump(results, file, indent=2)
  return results
