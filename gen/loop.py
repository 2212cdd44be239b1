"""The top of the program: the one train/evaluate loop that every family runs through.

    train_and_evaluate(config, workdir)

trains `config.model.name` on `config.data.name`, evaluates on validation
every `config.train.eval_every` steps and on test at the end, checkpoints
with orbax, and resumes by itself from the newest checkpoint in `workdir`.
It calls everything below it (families, data, evaluation, the compiled
steps of gen.train); nothing below imports it.
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
import ml_collections
import numpy as np
from absl import logging

from gen import config as config_lib
from gen import data as data_lib
from gen import families, platform
from gen.errors import EvaluationStopped
from gen.evaluate import fidelity, plots
from gen.families import classifier as classifier_lib
from gen.families import latent
from gen.train import checkpoint as checkpoint_lib
from gen.train import metrics_io, sharding
from gen.train import workdir as workdir_lib
from gen.train.steps import (NonFiniteLossError, evaluate_split, init_state, make_eval_fn,
                             make_train_fn)

__all__ = ["train_and_evaluate", "NonFiniteLossError"]


class _Interruption:
  """Turns SIGTERM and a first Ctrl-C (SIGINT) into a flag the loop checks
  between steps: it then saves a checkpoint and stops cleanly. A second
  Ctrl-C stops at once (KeyboardInterrupt), without saving."""

  def __init__(self):
    self.requested: str | None = None
    self._previous: dict = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if signum == signal.SIGINT and self.requested:
      logging.warning("second Ctrl-C: stopping now, without saving")
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt
    logging.warning("%s: saving a checkpoint after this step, then stopping%s", name,
                    " (Ctrl-C again to stop at once, without saving)"
                    if signum == signal.SIGINT else "")
    self.requested = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else name

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


class _NoWriter:
  """What processes other than 0 write metrics with: nothing."""

  def write(self, *args):
    pass

  def close(self):
    pass


def _save_pictures(visualize, params, dataset, config, workdir, step, mesh,
                   write: bool) -> None:
  """Every process computes the pictures (one sharded program); `write` saves them."""
  if not config.eval.num_images:
    return
  count = config.eval.num_images
  # Enough rows for the grid, rounded to the device count so the batch splits.
  size = -(-count // mesh.size) * mesh.size
  batch = next(dataset.eval_batches("val", size, sharding.process_rows(mesh, size)))
  pictures = visualize(params, sharding.put_batch(batch, mesh), jax.random.PRNGKey(step))
  pictures = sharding.to_host(pictures)
  if not write:
    return
  os.makedirs(os.path.join(workdir, "images"), exist_ok=True)
  for name, value in pictures.items():
    value = np.asarray(value)
    for path in (os.path.join(workdir, f"{name}.png"),
                 os.path.join(workdir, "images", f"{name}_{step:07d}.png")):
      if value.ndim == 4:
        plots.save_image_grid(path, value, columns=8)
      else:
        plots.save_scatter(path, value, title=f"{name}, step {step}")


def _sample_quality(family, params, dataset, config, stop=None) -> dict:
  """Sample-quality figures of the family's sampler in the dataset classifier's
  features; {"skipped": why} when there is no classifier yet."""
  if not config.eval.fid_samples or dataset.info.kind != "image":
    return {}
  sampler = family.sampler(params, dataset)
  if sampler is None:
    return {}
  classifier, why = classifier_lib.find_classifier(config, dataset)
  if classifier is None:
    logging.info("sample quality not measured: %s", why)
    return {"skipped": why}
  sample_fn, sampler_params = sampler
  quality = fidelity.sample_quality(sample_fn, sharding.single_device(sampler_params), dataset,
                                    config, classifier, family.to_pixels, stop=stop)
  if hasattr(family, "reconstructor") and quality and "skipped" not in quality:
    quality["reconstruction"] = fidelity.reconstruction_quality(
        family.reconstructor(sharding.single_device(params)), dataset, config, classifier,
        family.to_pixels)
  return quality


def _format_seconds(seconds: float) -> str:
  if seconds < 60:
    return f"{seconds:.1f} s"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _format_metrics(metrics: dict) -> str:
  return " ".join(f"{k}={v:.5g}" for k, v in metrics.items())


def _log_summary(workdir: str, config, family, num_params: int, results: dict,
                 train_seconds: float, steps_run: int) -> None:
  """What a person reads last: what was trained, the test numbers, where the files are."""
  logging.info("done: %s (%s family, %s parameters) on %s, %d steps (%d this session, "
               "%s); workdir %s", config.model.name, type(family).__name__.lower(),
               f"{num_params:,}", config.data.name, results["step"], steps_run,
               _format_seconds(train_seconds), workdir)
  logging.info("test: %s", _format_metrics(results["test"]))
  quality = results.get("sample_quality")
  if quality and "fid" in quality:
    logging.info("sample quality: FID %.4g (baseline %.4g), precision %.3f, recall %.3f",
                 quality["fid"], quality["fid_val_vs_test"], quality["precision"],
                 quality["recall"])
  elif quality:
    logging.info("sample quality: not measured (%s)", quality["skipped"])
  pictures = sorted(f for f in os.listdir(workdir) if f.endswith(".png"))
  logging.info("files: %s; pictures: %s; metrics.jsonl and tensorboard/ for the curves",
               os.path.join(workdir, "results.json"), ", ".join(pictures) or "none")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices: list | None = None) -> dict[str, Any]:
  """Trains, evaluates and checkpoints; returns the final results (also in results.json).

  Args:
    config: a config derived from configs/default.py.
    workdir: where checkpoints, metrics, pictures and results go; a workdir
      that holds checkpoints is resumed from the newest one that reads.
    devices: devices of the data-parallel mesh (default: all).
  """
  config, chosen = platform.resolve(config)
  config_lib.validate(config)
  for key, choice in chosen.items():
    logging.info("config.%s=auto -> %r (%s)", key, choice["value"], choice["why"])
  for key, choice in platform.xla_flag_choices(config.model.name).items():
    logging.info("%s += %s (%s)", key, choice["value"], choice["why"])
    chosen = {**chosen, key: choice}
  if latent.is_latent(config):
    # The first stage first, in its own workdir, when it holds no finished run.
    config = latent.prepare_first_stage(
        config, workdir, lambda first, first_workdir: train_and_evaluate(first, first_workdir,
                                                                         devices))
  workdir = workdir_lib.prepare(workdir)
  # Process 0 holds the lock for the job; the others write nothing of their own.
  lock = workdir_lib.WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock:
    try:
      return _train_and_evaluate(config, workdir, devices, chosen)
    except Exception as error:  # noqa: BLE001 - a full disk becomes one line, others rise
      if workdir_lib.disk_full(error):
        raise workdir_lib.disk_full_error(workdir) from None
      raise


def _train_and_evaluate(config, workdir: str, devices, auto_settings: dict) -> dict[str, Any]:
  # With several processes all compute; process 0 alone writes files and reports.
  main = jax.process_index() == 0
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
  # The whole step-0 batch, which every process can draw: the same initial
  # parameters everywhere, whatever each process trains on.
  init_batch = ({key: value[0] for key, value in dataset.train.stacked(0, 1).items()}
                if family.data_dependent_init else None)
  state = init_state(family, tx, config, mesh, init_batch)
  num_params = family.num_params(state.params)
  logging.info("model %s (%s family): %d parameters", config.model.name,
               type(family).__name__, num_params)

  checkpoints = checkpoint_lib.Checkpointer(workdir, config.checkpoint)
  new_config = json.loads(config.to_json_best_effort())
  if checkpoints.latest_step() is not None:
    # Before restoring: a changed model is an error that names the keys.
    workdir_lib.check_resume(workdir_lib.read_config(workdir), new_config, workdir)
    state, step = checkpoints.restore_latest(state)
    if step is not None:
      logging.info("resumed from %s", os.path.join(checkpoints.directory, str(step)))
  if main:
    _write_config(config, new_config, workdir)
  start_step = int(state.step)
  writer = metrics_io.MetricWriter(workdir, start_step) if main else _NoWriter()

  train_fn = make_train_fn(family, tx, mesh, config.train.unroll_steps)
  eval_fn = make_eval_fn(family, mesh)
  # One compiled program each, however many evaluations there are.
  final_eval_fn = make_eval_fn(family, mesh, final=True) if family.final_eval_differs else eval_fn
  visualize = jax.jit(family.visualize, out_shardings=sharding.replicated(mesh))
  num_steps, per_call = config.train.num_steps, config.train.steps_per_call
  # The rows of each global batch that this process reads (all, with one).
  part = sharding.process_rows(mesh, config.train.batch_size)

  def batches():
    for step in range(start_step, num_steps, per_call):
      host = dataset.train.stacked(step, per_call, part)
      yield step, sharding.put_batch(host, mesh, batch_dim=1)

  def save_curves():
    if main:
      plots.save_loss_curves(workdir, *family.curve_keys)

  window: dict[str, list[float]] = {}
  val_metrics: dict[str, float] = {}
  window_start, window_step = time.time(), start_step
  train_seconds, first_call_seconds = 0.0, 0.0
  with _Interruption() as interruption, contextlib.closing(writer):
    stop_requested = lambda: interruption.requested is not None
    for step, batch in data_lib.pipeline.prefetch(batches(), config.data.prefetch):
      call_start = time.time()
      skipped_before = int(state.skipped_updates)
      state, metrics = train_fn(state, batch)
      metrics = sharding.to_host(metrics)
      train_seconds += time.time() - call_start
      if step == start_step:
        first_call_seconds = time.time() - call_start
        logging.info("first call (compile + %d step(s)): %.1f s", per_call, first_call_seconds)
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
        logging.warning("step %d: non-finite loss or gradient; update skipped (%d in this "
                        "run so far)", bad_step, skipped_before + int((~finite).sum()))
      for key, values in metrics.items():
        values = np.asarray(values, np.float64)[finite]
        window.setdefault(key, []).extend(values.tolist())

      if new_step % config.train.log_every == 0 or new_step == num_steps:
        means = {key: float(np.mean(v)) for key, v in window.items() if v}
        skipped = int(state.skipped_updates)
        if skipped:
          means["skipped_updates"] = skipped
        writer.write(new_step, "train", means)
        elapsed = time.time() - window_start
        rate = (new_step - window_step) / elapsed if elapsed > 0 and new_step > window_step else 0.0
        left = (num_steps - new_step) / rate if rate else 0.0
        logging.info("step %d/%d | %.1f steps/s | %.0f examples/s | left %s | %s",
                     new_step, num_steps, rate, rate * config.train.batch_size,
                     _format_seconds(left), _format_metrics(means))
        window = {}
        window_start, window_step = time.time(), new_step

      evaluated_now = False
      if new_step % config.train.eval_every == 0 or new_step == num_steps:
        try:
          val_metrics = evaluate_split(eval_fn, state.eval_params(), dataset, "val",
                                       config.eval.batch_size, mesh, stop=stop_requested)
        except EvaluationStopped as stopped:
          logging.warning("%s; the checkpoint is saved unevaluated", stopped)
        else:
          writer.write(new_step, "val", val_metrics)
          logging.info("step %d val: %s", new_step, _format_metrics(val_metrics))
          _save_pictures(visualize, state.eval_params(), dataset, config, workdir, new_step,
                         mesh, write=main)
          save_curves()
          evaluated_now = True

      if (new_step % config.checkpoint.every_steps == 0 or new_step == num_steps
          or interruption.requested):
        ranked = {f"val/{k}": v for k, v in val_metrics.items()} if evaluated_now else None
        checkpoints.save(new_step, state, ranked)
      if interruption.requested:
        break

    checkpoints.wait()
    if interruption.requested:
      checkpoints.close()
      logging.warning("stopped at step %d on %s; checkpoint saved in %s. Run the same "
                      "command again to resume from it", int(state.step),
                      interruption.requested, checkpoints.describe_latest())
      return {"step": int(state.step), "preempted": True}

    final_step = int(state.step)
    final_start = time.time()
    try:
      if not val_metrics:  # a finished run started again: evaluate what it has
        val_metrics = evaluate_split(eval_fn, state.eval_params(), dataset, "val",
                                     config.eval.batch_size, mesh, stop=stop_requested)
      test_metrics = evaluate_split(final_eval_fn, state.eval_params(), dataset, "test",
                                    config.eval.batch_size, mesh, stop=stop_requested)
    except EvaluationStopped as stopped:
      checkpoints.close()
      logging.warning("%s on %s; the checkpoint of step %d is saved in %s: run the same "
                      "command again to evaluate it", stopped, interruption.requested,
                      final_step, checkpoints.describe_latest())
      return {"step": final_step, "preempted": True}
    writer.write(final_step, "test", test_metrics)
    logging.info("test: %s", _format_metrics(test_metrics))
    report = {}
    if main:
      # Samples, pictures and sample quality: process 0 alone, on its own
      # devices, from its copy of the (replicated) parameters.
      params = sharding.to_host(state.eval_params())
      report = family.report(params, dataset, sharding.local_mesh(), workdir, final_step)
      try:
        quality = _sample_quality(family, params, dataset, config, stop_requested)
      except EvaluationStopped as stopped:
        checkpoints.close()
        logging.warning("%s on %s; run the same command again to measure them (the "
                        "checkpoint of step %d is saved)", stopped, interruption.requested,
                        final_step)
        return {"step": final_step, "preempted": True}
      if quality:
        report["sample_quality"] = quality
  save_curves()
  results = {"step": final_step, "val": val_metrics, "test": test_metrics,
             "skipped_updates": int(state.skipped_updates),
             "best_checkpoint_step": checkpoints.best_step(),
             "num_params": int(num_params), "devices": mesh.size,
             "processes": jax.process_count(),
             "timing": _timing(train_seconds, first_call_seconds, final_step - start_step,
                               per_call, config.train.batch_size),
             **report}
  # What the end of a run costs beside training: the test split (a VAE's
  # importance-weighted bounds), samples, pictures and sample quality.
  final_seconds = time.time() - final_start
  results["timing"]["final_evaluation_seconds"] = final_seconds
  logging.info("final evaluation: %s", _format_seconds(final_seconds))
  if checkpoints.set_aside:
    results["damaged_checkpoints_set_aside"] = checkpoints.set_aside
  if auto_settings:
    results["auto_settings"] = auto_settings
  checkpoints.close()
  if main:
    with open(os.path.join(workdir, "results.json"), "w") as file:
      json.dump(results, file, indent=2)
    _log_summary(workdir, config, family, num_params, results, train_seconds,
                 final_step - start_step)
  return results


def _timing(train_seconds: float, first_call_seconds: float, steps: int, per_call: int,
            batch_size: int) -> dict:
  """Seconds spent in train steps this session (the first call compiles), and
  the examples/s of the calls after it (0 when there were none)."""
  later_steps = max(steps - per_call, 0)
  later_seconds = train_seconds - first_call_seconds
  return {"train_seconds": train_seconds, "first_call_seconds": first_call_seconds,
          "steps_this_session": steps,
          "examples_per_second": (later_steps * batch_size / later_seconds
                                  if later_steps and later_seconds > 0 else 0.0)}


def _write_config(config, as_dict: dict, workdir: str) -> None:
  with open(os.path.join(workdir, "config.json"), "w") as file:
    json.dump(as_dict, file, indent=2, sort_keys=True)
  with open(os.path.join(workdir, "config.txt"), "w") as file:
    file.write(str(config))
