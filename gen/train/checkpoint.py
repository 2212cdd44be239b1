"""orbax checkpoints of the train state: the last K, the best one, never a NaN."""

from __future__ import annotations

import logging
import errno
import math
import os
import shutil
import time
from typing import Any

from absl import logging as absl_logging
import jax
import jax.numpy as jnp
import ml_collections
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from gen.errors import UserError
from gen.train.state import all_finite


def quiet_orbax_log() -> None:
  """Drops orbax's per-save INFO chatter and its expected warnings (below)
  from absl's log; its other warnings and errors still show. For launch
  scripts (experiments/*.py)."""
  absl_logging.get_absl_handler().addFilter(_QuietOrbax())


# Periodic saves between evaluations carry no metrics by design (the keep-last
# policy holds them), and orbax warns about each one when a best metric is set.
_EXPECTED_ORBAX_WARNINGS = ("did not provide metrics",)


class _QuietOrbax(logging.Filter):
  def filter(self, record):
    if "/orbax/" not in record.pathname:
      return True
    if record.levelno <= logging.INFO:
      return False
    message = record.getMessage()
    # A full disk: the loop ends with one line that says so (workdir.disk_full_error).
    if "No space left on device" in message:
      return False
    return not any(text in message for text in _EXPECTED_ORBAX_WARNINGS)


# Room a checkpoint must leave on its disk beyond its own size (metrics,
# pictures and orbax's metadata are written too).
_ROOM_MARGIN_BYTES = 64 * 1024


class NonFiniteCheckpointError(FloatingPointError):
  pass


class IncompatibleCheckpointError(UserError):
  """A readable checkpoint whose arrays do not fit this run's train state."""


# One compiled check of the leaves a process does not hold whole: op by op,
# each leaf shape would compile its own isfinite and reduction.
_all_finite = jax.jit(all_finite)


def _finite(tree) -> bool:
  """Every floating leaf of `tree` is finite. Numpy leaves (what _host_copy
  made) are checked in numpy: compiling the check costs more (1.2 s for the
  digits U-Net's state) than running it, for a state the save copies anyway.
  Every process takes part in the compiled check of the other leaves."""
  leaves = jax.tree_util.tree_leaves(tree)
  floating = lambda leaf: jnp.issubdtype(leaf.dtype, jnp.inexact)
  on_host = all(np.isfinite(leaf).all() for leaf in leaves
                if isinstance(leaf, np.ndarray) and floating(leaf))
  on_device = [leaf for leaf in leaves if isinstance(leaf, jax.Array)]
  return bool(_all_finite(on_device)) and on_host if on_device else on_host


def _host_copy(tree):
  """Leaves this process holds whole, as numpy; others (multi-host) unchanged.

  Given arrays replicated over several devices, orbax compiles a slicing
  program per leaf shape to pick one replica (seconds per run for a U-Net's
  state); restore() re-shards the copies onto the target's devices.
  """
  return jax.tree_util.tree_map(
      lambda leaf: (np.asarray(leaf) if isinstance(leaf, jax.Array) and leaf.is_fully_addressable
                    else leaf), tree)


class Checkpointer:
  """Saves to `<workdir>/checkpoints/<step>`, restores the newest by itself.

  Keeps the newest `config.keep` checkpoints and, besides them, the one with
  the best `config.best_metric` among those saved with metrics. Saves run in
  the background (orbax's async mode); orbax writes each into a temporary
  directory and renames it when complete, so a run killed mid-save leaves the
  previous checkpoints intact.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.best_metric = config.best_metric
    keep_policies = [ocp.checkpoint_managers.LatestN(n=config.keep)]
    if config.best_metric:
      keep_policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics[self.best_metric],
          # BestN keeps the end of an ascending sort; for "min" sort descending.
          reverse=config.best_mode == "min",
          n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(keep_policies),
        # best_fn/best_mode only make best_step() answer; keeping is the policy's.
        best_fn=(lambda metrics: metrics[self.best_metric]) if config.best_metric else None,
        best_mode=config.best_mode,
        create=True,
        enable_async_checkpointing=True)
    # The handler named up front: without it a fresh manager cannot describe a
    # checkpoint (item_metadata) before its first save or restore.
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_handlers=ocp.StandardCheckpointHandler())
    # Checkpoints that could not be read and were moved aside (restore_latest).
    self.set_aside: list[dict] = []

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    if not self.best_metric:
      return None
    ranked = [s for s in self.manager.all_steps() if self.manager.metrics(s)]
    return self.manager.best_step() if ranked else None

  def save(self, step: int, state: Any, metrics: dict[str, float] | None = None) -> None:
    """Saves `state` at `step`; refuses (raises) if any parameter is not finite."""
    state = _host_copy(state)
    if not _finite((state.params, state.ema_params, state.opt_state)):
      raise NonFiniteCheckpointError(
          f"refusing to write checkpoint {step}: the state holds NaN or inf; "
          f"last good checkpoint: {self.describe_latest()}")
    if metrics is not None:
      metrics = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
      if self.best_metric and self.best_metric not in metrics:
        metrics = None  # ranked only when it has the metric it is ranked by
    if step in self.manager.all_steps():
      return
    self._check_room(state)
    self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)

  def _check_room(self, state: Any) -> None:
    """Raises ENOSPC before writing a checkpoint the disk has no room for: the
    size of the newest one on disk (else the state's raw bytes), with a
    margin. A save that fails part-way leaves a half-written folder and pages
    of orbax and tensorstore errors; this leaves neither."""
    steps = self.manager.all_steps()
    if steps:
      newest = os.path.join(self.directory, str(max(steps)))
      need = sum(os.path.getsize(os.path.join(folder, name))
                 for folder, _, names in os.walk(newest) for name in names)
    else:
      need = sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree_util.tree_leaves(state))
    need = int(need * 1.2) + _ROOM_MARGIN_BYTES
    free = shutil.disk_usage(self.directory).free
    if free < need:
      raise OSError(errno.ENOSPC, f"No space left on device: {free} bytes free in "
                    f"{self.directory}, a checkpoint needs about {need}")

  def restore(self, target: Any, step: int | None = None) -> Any:
    """Restores `step` (default: newest) into the structure and shardings of `target`."""
    step = self.manager.latest_step() if step is None else step
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def restore_latest(self, target: Any) -> tuple[Any, int | None]:
    """The newest checkpoint that reads, restored like `target`: (state, step),
    or (target, None) when there is none.

    A checkpoint that cannot be read (a crash mid-write on a filesystem
    without atomic renames, a bad disk) is moved to
    `<workdir>/checkpoints_damaged/`, never deleted, with a warning that says
    why, and the one before it is tried. A readable checkpoint whose arrays
    do not fit `target` is not damaged: that is an IncompatibleCheckpointError
    naming the arrays.
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        differences = self._structure_differences(step, target)
      except Exception:  # noqa: BLE001 - an unreadable description: the restore decides
        differences = []
      if differences:
        raise IncompatibleCheckpointError(
            f"checkpoint {os.path.join(self.directory, str(step))} does not fit this run's "
            f"model or train state: {'; '.join(differences[:8])}"
            f"{'; ...' if len(differences) > 8 else ''}. Start this config in a new "
            f"--workdir")
      try:
        return self.restore(target, step), step
      except Exception as error:  # noqa: BLE001 - damaged files, whatever orbax raises
        self._set_aside(step, error)
    return target, None

  def _structure_differences(self, step: int, target: Any) -> list[str]:
    stored = ocp.tree.to_flat_dict(self.manager.item_metadata(step).tree)
    wanted = ocp.tree.to_flat_dict(ocp.tree.serialize_tree(target, keep_empty_nodes=True))
    differences = []
    for key in sorted(set(stored) | set(wanted), key=str):
      name = "/".join(str(k) for k in key)
      have, want = stored.get(key), wanted.get(key)
      if have is None and want is not None:
        differences.append(f"{name} is not in the checkpoint")
      elif want is None and have is not None:
        differences.append(f"{name} is in the checkpoint but not in this run's state")
      elif have is not None and tuple(have.shape) != tuple(np.shape(want)):
        differences.append(f"{name} has shape {tuple(have.shape)} in the checkpoint and "
                           f"{tuple(np.shape(want))} here")
    return differences

  def _set_aside(self, step: int, error: Exception) -> None:
    source = os.path.join(self.directory, str(step))
    damaged = os.path.join(os.path.dirname(self.directory), "checkpoints_damaged")
    target = os.path.join(damaged, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    if jax.process_index() == 0:  # one process moves it; every process failed to read it
      os.makedirs(damaged, exist_ok=True)
      shutil.move(source, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"gen: checkpoint {step} set aside")
    self.manager.reload()
    self.set_aside.append({"step": step, "moved_to": target,
                           "error": f"{type(error).__name__}: {str(error)[:300]}"})
    absl_logging.warning("checkpoint %s could not be read (%s: %s); moved to %s (kept, "
                         "not deleted) and trying the one before it", source,
                         type(error).__name__, str(error).splitlines()[0][:300] if str(error)
                         else "", target)

  def describe_latest(self) -> str:
    step = self.manager.latest_step()
    if step is None:
      return "none (no checkpoint was written yet)"
    return os.path.join(self.directory, str(step))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
